"""Text datamodule: documents → tokens (bytes by default, or a local Hugging Face tokenizer) → packed fixed-length
sequences, split train/val by document, cached as memory-mapped arrays so that a second run does not re-tokenise.

The default corpus is real text every machine has offline: the Python standard library's own source files.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import sysconfig
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dyt_bench.datamodules.base import SplitDataModule
from dyt_bench.norms.spec import check_choice

BYTE_VOCAB = 257  # 256 byte values + one end-of-document token
EOS_BYTE = 256


def stdlib_files(max_files: int | None = None) -> list[Path]:
    """The ``*.py`` files at the top of this Python's standard library, sorted by name."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    return files[:max_files] if max_files else files


def expand_paths(paths: list[str], pattern: str = "*.txt") -> list[Path]:
    """Files named in ``paths``; a directory contributes its files matching ``pattern`` (recursively)."""
    out: list[Path] = []
    for p in paths:
        path = Path(os.path.expanduser(p))
        if path.is_dir():
            out.extend(sorted(Path(f) for f in glob.glob(str(path / "**" / pattern), recursive=True)))
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"data.paths: {p} is neither a file nor a directory")
    if not out:
        raise FileNotFoundError(f"data.paths {paths} holds no file matching {pattern!r}")
    return out


class PackedSequences(Dataset):
    """Consecutive windows of ``seq_len + 1`` tokens from one long token array (input = [:-1], target = [1:])."""

    def __init__(self, tokens: np.ndarray, seq_len: int) -> None:
        self.tokens, self.seq_len = tokens, seq_len
        self.count = (len(tokens) - 1) // seq_len

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> torch.Tensor:
        start = i * self.seq_len
        return torch.from_numpy(np.asarray(self.tokens[start:start + self.seq_len + 1], dtype=np.int64))


class TextDataModule(SplitDataModule):
    """Causal language-modelling data.

    Args:
        source: ``stdlib`` (the standard library's ``*.py`` files, offline everywhere) or ``files`` (``paths``).
        paths: files or directories (their ``pattern`` files) for ``source: files``.
        tokenizer: ``bytes`` (257 tokens: the bytes and an end-of-document token) or a local Hugging Face tokenizer
            directory (loaded with ``local_files_only``).
        seq_len: tokens per training sequence.
        val_fraction: fraction of documents held out for validation (a fixed split by ``split_seed``).
        cache_dir: where the token arrays are cached (default ``~/.cache/dyt-bench/text``).
        max_files: use only the first N documents (sorted by path), for quick runs.
    """

    def __init__(
        self,
        source: Literal["stdlib", "files"] = "stdlib",
        paths: list[str] | None = None,
        pattern: str = "*.txt",
        tokenizer: str = "bytes",
        seq_len: int = 256,
        batch_size: int = 16,
        val_fraction: float = 0.05,
        split_seed: int = 0,
        cache_dir: str | None = None,
        max_files: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        check_choice("data.source", source, ("stdlib", "files"))
        if source == "files" and not paths:
            raise ValueError("data.paths is required for source 'files'")
        if seq_len < 2:
            raise ValueError(f"data.seq_len must be >= 2; got {seq_len}")
        if not 0 < val_fraction < 1:
            raise ValueError(f"data.val_fraction must be in (0, 1); got {val_fraction}")
        self.save_hyperparameters()
        self.seq_len, self.batch_size = seq_len, batch_size
        self.cache_dir = Path(os.path.expanduser(cache_dir or os.path.join("~", ".cache", "dyt-bench", "text")))
        self._tokenizer = None
        self.train_set: PackedSequences | None = None
        self.val_set: PackedSequences | None = None
        self.cache_hits = 0

    @property
    def dataset_name(self) -> str:
        return "stdlib" if self.hparams.source == "stdlib" else "text-files"

    @property
    def vocab_size(self) -> int:
        if self.hparams.tokenizer == "bytes":
            return BYTE_VOCAB
        return len(self._hf_tokenizer())

    def _hf_tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            path = os.path.expanduser(self.hparams.tokenizer)
            if not os.path.isdir(path):
                raise FileNotFoundError(f"data.tokenizer must be 'bytes' or a local tokenizer directory; {path} is neither")
            self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        return self._tokenizer

    def documents(self) -> list[Path]:
        hp = self.hparams
        files = stdlib_files() if hp.source == "stdlib" else expand_paths(hp.paths, hp.pattern)
        return files[: hp.max_files] if hp.max_files else files

    def split(self, files: list[Path]) -> tuple[list[Path], list[Path]]:
        """A fixed train/val split of the documents (by a seeded permutation of the sorted paths)."""
        order = np.random.default_rng(self.hparams.split_seed).permutation(len(files))
        n_val = max(1, round(len(files) * self.hparams.val_fraction))
        val_idx = set(order[:n_val].tolist())
        return ([f for i, f in enumerate(files) if i not in val_idx], [f for i, f in enumerate(files) if i in val_idx])

    def encode(self, text_bytes: bytes) -> np.ndarray:
        if self.hparams.tokenizer == "bytes":
            ids = np.frombuffer(text_bytes, dtype=np.uint8).astype(np.uint16)
            return np.append(ids, np.uint16(EOS_BYTE))
        tok = self._hf_tokenizer()
        ids = tok.encode(text_bytes.decode("utf-8", errors="replace"))
        if tok.eos_token_id is not None:
            ids.append(tok.eos_token_id)
        return np.asarray(ids, dtype=np.uint32 if self.vocab_size > 65535 else np.uint16)

    def _tokens(self, files: list[Path], split: str) -> np.ndarray:
        """Token array of ``files`` in order, from the cache when the files and tokenizer are unchanged."""
        key_src = json.dumps({"tokenizer": self.hparams.tokenizer, "files": [
            (str(f), f.stat().st_size, int(f.stat().st_mtime)) for f in files]})
        key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
        path = self.cache_dir / f"{split}-{key}.npy"
        if path.exists():
            self.cache_hits += 1
            return np.load(path, mmap_mode="r")
        arrays = [self.encode(f.read_bytes()) for f in files]
        tokens = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.uint16)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, tokens)
        os.replace(tmp, path)  # concurrent runs never read a half-written cache
        return np.load(path, mmap_mode="r")

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train_files, val_files = self.split(self.documents())
        self.train_set = PackedSequences(self._tokens(train_files, "train"), self.seq_len)
        self.val_set = PackedSequences(self._tokens(val_files, "val"), self.seq_len)
        if len(self.train_set) == 0 or len(self.val_set) == 0:
            raise ValueError(f"too little text for seq_len={self.seq_len}: {len(self.train_set)} train and "
                             f"{len(self.val_set)} val sequences; use more files or a shorter data.seq_len")

    def loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.hparams.num_workers,
                          drop_last=shuffle)
