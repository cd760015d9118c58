"""Text datamodule: documents → tokens (bytes by default, or a local Hugging Face tokenizer) → packed fixed-length
sequences, split train/val by document, cached as memory-mapped arrays so that a second run does not re-tokenise.

Tokenisation streams: documents are encoded a batch at a time (a fast Hugging Face tokenizer encodes a batch on all
cores) and appended to a token file on disk, so the corpus is never held in memory; a progress bar counts the bytes.

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
from dyt_bench.versions import require

BYTE_VOCAB = 257  # 256 byte values + one end-of-document token
EOS_BYTE = 256
TOKEN_FILE_VERSION = 2  # v1: one .npy array written from memory; v2: a raw token file and its .json description


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

    def __getstate__(self) -> dict:
        # a worker started by spawn gets the token file's path, not a pickled copy of the corpus
        state = dict(self.__dict__)
        if isinstance(self.tokens, np.memmap) and self.tokens.filename:
            state["tokens"] = ("memmap", self.tokens.filename, self.tokens.dtype.name, self.tokens.shape)
        return state

    def __setstate__(self, state: dict) -> None:
        tokens = state["tokens"]
        if isinstance(tokens, tuple) and tokens and tokens[0] == "memmap":
            state["tokens"] = np.memmap(tokens[1], dtype=tokens[2], mode="r", shape=tokens[3])
        self.__dict__.update(state)

    def __getitem__(self, i: int) -> torch.Tensor:
        start = i * self.seq_len
        return torch.from_numpy(np.asarray(self.tokens[start:start + self.seq_len + 1], dtype=np.int64))


def _distributed() -> bool:
    """True inside a multi-process run (then data preparation belongs to ``prepare_data``, not ``setup``)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


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
        tokenize_batch_bytes: documents are read and encoded in batches of about this many bytes.
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
        tokenize_batch_bytes: int = 1 << 24,
    ) -> None:
        super().__init__()
        check_choice("data.source", source, ("stdlib", "files"))
        if source == "files" and not paths:
            raise ValueError("data.paths is required for source 'files'")
        if seq_len < 2:
            raise ValueError(f"data.seq_len must be >= 2; got {seq_len}")
        if not 0 < val_fraction < 1:
            raise ValueError(f"data.val_fraction must be in (0, 1); got {val_fraction}")
        if tokenize_batch_bytes < 1:
            raise ValueError(f"data.tokenize_batch_bytes must be >= 1; got {tokenize_batch_bytes}")
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
            AutoTokenizer = require("transformers", "language", "data.tokenizer (a Hugging Face tokenizer)").AutoTokenizer
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

    @property
    def token_dtype(self) -> np.dtype:
        return np.dtype(np.uint32 if self.vocab_size > 65535 else np.uint16)

    def encode(self, text_bytes: bytes) -> np.ndarray:
        """One document's tokens, ended by the end-of-document token."""
        return self.encode_batch([text_bytes])[0]

    def encode_batch(self, docs: list[bytes]) -> list[np.ndarray]:
        """Several documents' tokens, each ended by the end-of-document token; a Hugging Face tokenizer encodes the
        batch in one call (in parallel for a fast tokenizer)."""
        if self.hparams.tokenizer == "bytes":
            return [np.append(np.frombuffer(d, dtype=np.uint8).astype(np.uint16), np.uint16(EOS_BYTE)) for d in docs]
        tok = self._hf_tokenizer()
        batch = tok([d.decode("utf-8", errors="replace") for d in docs])["input_ids"]
        eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
        return [np.asarray(list(ids) + eos, dtype=self.token_dtype) for ids in batch]

    def _batches(self, files: list[Path]):
        """The files in order, grouped into batches of about ``tokenize_batch_bytes``."""
        batch: list[Path] = []
        size = 0
        for f in files:
            batch.append(f)
            size += f.stat().st_size
            if size >= self.hparams.tokenize_batch_bytes:
                yield batch
                batch, size = [], 0
        if batch:
            yield batch

    def _tokens(self, files: list[Path], split: str, build: bool = True) -> np.ndarray:
        """Token array of ``files`` in order (memory-mapped), from the cache when the files and tokenizer are
        unchanged; otherwise encoded batch by batch into the cache's token file first (``build: false``: refuse
        to, the cache must exist)."""
        from rich.markup import escape
        from rich.progress import Progress

        key_src = json.dumps({"version": TOKEN_FILE_VERSION, "tokenizer": self.hparams.tokenizer, "files": [
            (str(f), f.stat().st_size, int(f.stat().st_mtime)) for f in files]})
        key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
        path = self.cache_dir / f"{split}-{key}.tokens"
        meta_path = path.with_suffix(".json")
        if not (path.exists() and meta_path.exists()):
            if not build:  # prepare_data (one process per node) builds it; setup on every rank only reads
                raise FileNotFoundError(f"{path} is missing: prepare_data builds the token cache before setup (is "
                                        f"data.cache_dir on a disk every process of this node sees?)")
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            dtype, count = self.token_dtype, 0
            total = sum(f.stat().st_size for f in files)
            with open(tmp, "wb") as out, Progress() as bar:
                task = bar.add_task(escape(f"[text] tokenizing {split} ({len(files)} documents)"), total=total)
                for batch in self._batches(files):
                    docs = [f.read_bytes() for f in batch]
                    for ids in self.encode_batch(docs):
                        out.write(ids.astype(dtype, copy=False).tobytes())
                        count += len(ids)
                    bar.advance(task, sum(len(d) for d in docs))
            os.replace(tmp, path)
            tmp_meta = meta_path.with_suffix(f".{os.getpid()}.tmp")
            tmp_meta.write_text(json.dumps({"dtype": dtype.name, "count": count, "documents": len(files)}))
            os.replace(tmp_meta, meta_path)  # written last: its presence means the token file is complete
        else:
            self.cache_hits += 1
        meta = json.loads(meta_path.read_text())
        if meta["count"] == 0:
            return np.zeros(0, dtype=meta["dtype"])
        return np.memmap(path, dtype=meta["dtype"], mode="r", shape=(meta["count"],))

    def prepare_data(self) -> None:
        """Tokenize the documents into the cache: once per node (Lightning calls it on one process), before
        ``setup`` reads the cache on every rank."""
        train_files, val_files = self.split(self.documents())
        self._tokens(train_files, "train", build=True)
        self._tokens(val_files, "val", build=True)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train_files, val_files = self.split(self.documents())
        build = not _distributed()  # in a multi-process run prepare_data has built the cache: only read it
        self.train_set = PackedSequences(self._tokens(train_files, "train", build), self.seq_len)
        self.val_set = PackedSequences(self._tokens(val_files, "val", build), self.seq_len)
        if len(self.train_set) == 0 or len(self.val_set) == 0:
            raise ValueError(f"too little text for seq_len={self.seq_len}: {len(self.train_set)} train and "
                             f"{len(self.val_set)} val sequences; use more files or a shorter data.seq_len")

    def loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.hparams.num_workers,
                          drop_last=shuffle)
