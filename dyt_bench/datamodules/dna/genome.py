"""Causal-LM pretraining windows from a reference genome: FASTA (``.fa`` / ``.fa.gz``) streamed into a memory-mapped
1-byte-per-base token file (cached by path, size and modification time), N-filtered windows, a split by chromosome.

The genome is never held in memory: a first pass streams the FASTA line by line into the token file, which later
runs memory-map.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from dyt_bench.datamodules.base import SplitDataModule
from dyt_bench.norms.spec import check_choice

from .synthetic import write_synthetic_genome
from .tokenizer import DNA_VOCAB_SIZE, N_ID, DNATokenizer, reverse_complement


def _distributed() -> bool:
    """True inside a multi-process run (then data preparation belongs to ``prepare_data``, not ``setup``)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def open_fasta(path: Path):
    """A binary line reader of a plain or gzip-compressed FASTA file."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def fasta_to_tokens(fasta: Path, out: Path, progress: bool = True) -> dict[str, tuple[int, int]]:
    """Stream ``fasta`` into ``out`` (one token byte per base); return {record name: (offset, length)}.

    Memory use is one line at a time, so a 3 Gb genome converts on any machine. A rich progress bar follows the bytes
    read from the file (compressed bytes for ``.fa.gz``) unless ``progress`` is false.
    """
    from rich.markup import escape
    from rich.progress import Progress

    index: dict[str, tuple[int, int]] = {}
    name, start, written = None, 0, 0
    buffer = io.BytesIO()
    with open(fasta, "rb") as raw, open(out, "wb") as dst, Progress(disable=not progress) as bar:
        gzipped = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        src = gzip.GzipFile(fileobj=raw, mode="rb") if gzipped else raw
        task = bar.add_task(escape(f"[dna] {fasta.name} → tokens"), total=os.fstat(raw.fileno()).st_size)
        for line in src:
            if line.startswith(b">"):
                if name is not None:
                    index[name] = (start, written - start)
                name = line[1:].split()[0].decode() if line[1:].split() else f"record{len(index)}"
                if name in index:
                    raise ValueError(f"{fasta}: record {name!r} appears twice")
                start = written
                continue
            if name is None:
                if line.strip():
                    raise ValueError(f"{fasta} is not a FASTA file: sequence data before the first '>' header")
                continue
            seq = line.strip()
            buffer.write(DNATokenizer.encode_bytes(seq))
            written += len(seq)
            if buffer.tell() > (1 << 24):
                dst.write(buffer.getvalue())
                buffer = io.BytesIO()
                bar.update(task, completed=raw.tell())
        if name is not None:
            index[name] = (start, written - start)
        dst.write(buffer.getvalue())
        bar.update(task, completed=raw.tell())
    if not index:
        raise ValueError(f"{fasta} holds no FASTA record ('>' header)")
    return index


def valid_window_starts(tokens: np.ndarray, offset: int, length: int, window: int, max_n_fraction: float,
                        chunk_windows: int = 1 << 14) -> np.ndarray:
    """Start positions (absolute) of the non-overlapping ``window``-long windows of a record whose fraction of N
    bases is at most ``max_n_fraction``; read in chunks so a whole chromosome is never copied."""
    count = length // window
    keep: list[np.ndarray] = []
    for first in range(0, count, chunk_windows):
        n = min(chunk_windows, count - first)
        block = np.asarray(tokens[offset + first * window: offset + (first + n) * window]).reshape(n, window)
        n_frac = (block == N_ID).mean(axis=1) if window else np.zeros(n)
        ok = np.nonzero(n_frac <= max_n_fraction)[0]
        keep.append(offset + (first + ok).astype(np.int64) * window)
    return np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)


class GenomeWindows(Dataset):
    """Windows of ``window`` tokens starting at ``starts``; in training, each window is shifted by a random offset in
    [0, window) (staying inside its record) and reverse-complemented with probability 0.5 when ``rc_aug``."""

    def __init__(self, tokens: np.ndarray, starts: np.ndarray, ends: np.ndarray, window: int, jitter: bool = False,
                 rc_aug: bool = False) -> None:
        self.tokens, self.starts, self.ends, self.window = tokens, starts, ends, window
        self.jitter, self.rc_aug = jitter, rc_aug

    def __len__(self) -> int:
        return len(self.starts)

    def __getstate__(self) -> dict:
        # a worker started by spawn gets the token file's path, not a pickled copy of the whole genome
        state = dict(self.__dict__)
        if isinstance(self.tokens, np.memmap) and self.tokens.filename:
            state["tokens"] = ("memmap", self.tokens.filename, self.tokens.shape)
        return state

    def __setstate__(self, state: dict) -> None:
        tokens = state["tokens"]
        if isinstance(tokens, tuple) and tokens and tokens[0] == "memmap":
            state["tokens"] = np.memmap(tokens[1], dtype=np.uint8, mode="r", shape=tokens[2])
        self.__dict__.update(state)

    def __getitem__(self, i: int) -> torch.Tensor:
        start = int(self.starts[i])
        if self.jitter:
            room = int(self.ends[i]) - start - self.window
            if room > 0:
                start += int(torch.randint(0, min(room, self.window) + 1, ()).item())
        ids = torch.from_numpy(np.asarray(self.tokens[start:start + self.window], dtype=np.int64))
        if self.rc_aug and torch.rand(()) < 0.5:
            ids = reverse_complement(ids)
        return ids


PRIMARY_CHROMOSOMES = r"^chr([0-9]+|X|Y)$"


class GenomeDataModule(SplitDataModule):
    """Causal-LM pretraining windows from a reference genome (e.g. hg38), split by chromosome.

    Args:
        source: ``fasta`` (``fasta`` path, ``.fa`` or ``.fa.gz``) or ``synthetic`` (a generated genome: an order-3
            Markov chain with N runs, written to the cache directory).
        seq_len: tokens per training window (the model sees ``seq_len`` inputs and predicts the next token of each;
            a window holds ``seq_len + 1`` tokens).
        val_chromosomes: records held out for validation (and test); every other record matching ``include`` trains.
            Default: chr20 and chr21 (the last chromosome for ``synthetic``).
        include: regular expression of the record names used at all (default: the primary chromosomes chr1-22, X, Y).
        max_n_fraction: windows with a larger fraction of N bases are skipped (hg38 has megabases of N in centromeres
            and telomeres); windows that pass keep their N tokens.
        rc_aug: reverse-complement training windows with probability 0.5 (the HyenaDNA / Caduceus pretraining recipe).
        jitter: shift each training window by a random offset within its stride, so epochs see different windows.
        cache_dir: where token files are cached (default ``~/.cache/dyt-bench/dna``).
    """

    def __init__(
        self,
        source: Literal["fasta", "synthetic"] = "fasta",
        fasta: str | None = None,
        seq_len: int = 1024,
        batch_size: int = 32,
        val_chromosomes: list[str] | None = None,
        include: str = PRIMARY_CHROMOSOMES,
        max_n_fraction: float = 0.1,
        rc_aug: bool = False,
        jitter: bool = True,
        synthetic_chromosomes: int = 4,
        synthetic_length: int = 100_000,
        cache_dir: str | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_choice("data.source", source, ("fasta", "synthetic"))
        if source == "fasta" and not fasta:
            raise ValueError("data.fasta (a .fa or .fa.gz path) is required for source 'fasta'")
        if seq_len < 2:
            raise ValueError(f"data.seq_len must be >= 2; got {seq_len}")
        if source == "synthetic" and synthetic_chromosomes < 2:
            raise ValueError(f"data.synthetic_chromosomes must be >= 2 (one is held out); got {synthetic_chromosomes}")
        if not 0 <= max_n_fraction <= 1:
            raise ValueError(f"data.max_n_fraction must be in [0, 1]; got {max_n_fraction}")
        try:
            re.compile(include)
        except re.error as e:
            raise ValueError(f"data.include is not a valid regular expression: {e}") from None
        self.save_hyperparameters()
        self.seq_len, self.batch_size = seq_len, batch_size
        if val_chromosomes is None:
            val_chromosomes = [f"chr{synthetic_chromosomes}"] if source == "synthetic" else ["chr20", "chr21"]
        self.val_chromosomes = list(val_chromosomes)
        self.cache_dir = Path(os.path.expanduser(cache_dir or os.path.join("~", ".cache", "dyt-bench", "dna")))
        self.tokens: np.ndarray | None = None
        self.index: dict[str, tuple[int, int]] = {}
        self.train_set: GenomeWindows | None = None
        self.val_set: GenomeWindows | None = None
        self.cache_hits = 0

    vocab_size = DNA_VOCAB_SIZE

    @property
    def dataset_name(self) -> str:
        return "synthetic-genome" if self.hparams.source == "synthetic" else Path(self.hparams.fasta).name.split(".")[0]

    def fasta_path(self) -> Path:
        hp = self.hparams
        if hp.source == "fasta":
            path = Path(os.path.expanduser(hp.fasta))
            if not path.is_file():
                raise FileNotFoundError(
                    f"data.fasta: {path} not found. Download the reference genome first, e.g. hg38: "
                    "https://hgdownload.soe.ucsc.edu/goldenPath/hg38/bigZips/hg38.fa.gz (gzip is read as is)")
            return path
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        path = self.cache_dir / f"synthetic-genome-{hp.synthetic_chromosomes}x{hp.synthetic_length}-s{hp.seed}.fa"
        if not path.exists():
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            names = {f"chr{i + 1}": hp.synthetic_length for i in range(hp.synthetic_chromosomes)}
            write_synthetic_genome(tmp, names, seed=hp.seed)
            os.replace(tmp, path)
        return path

    def prepare_data(self) -> None:
        """Convert the FASTA to the token cache, once per node (Lightning calls this on one process before ``setup``,
        which then only reads the cache on every rank)."""
        self.load_tokens()

    def load_tokens(self, build: bool = True) -> tuple[np.ndarray, dict[str, tuple[int, int]]]:
        """The genome as a memory-mapped token array and its record index, converting the FASTA on first use
        (``build: false``: refuse to, the cache must exist)."""
        fasta = self.fasta_path()
        st = fasta.stat()
        key = hashlib.sha256(f"{fasta.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:16]
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tokens_path = self.cache_dir / f"{fasta.name}-{key}.tokens"
        index_path = self.cache_dir / f"{fasta.name}-{key}.index.json"
        if tokens_path.exists() and index_path.exists():
            self.cache_hits += 1
        elif not build:
            raise FileNotFoundError(f"{tokens_path} is missing: prepare_data converts the FASTA before setup (is "
                                    f"data.cache_dir on a disk every process of this node sees?)")
        else:
            rank_zero_info(f"[dna] converting {fasta} to tokens (once; cached in {self.cache_dir})")
            tmp = tokens_path.with_suffix(f".{os.getpid()}.tmp")
            index = fasta_to_tokens(fasta, tmp)
            os.replace(tmp, tokens_path)
            tmp_index = index_path.with_suffix(f".{os.getpid()}.tmp")
            tmp_index.write_text(json.dumps(index))
            os.replace(tmp_index, index_path)  # the index is written last: its presence means the cache is complete
        index = {k: tuple(v) for k, v in json.loads(index_path.read_text()).items()}
        size = tokens_path.stat().st_size
        tokens = np.memmap(tokens_path, dtype=np.uint8, mode="r", shape=(size,)) if size else np.zeros(0, np.uint8)
        return tokens, index

    def split_records(self) -> tuple[list[str], list[str]]:
        pattern = re.compile(self.hparams.include)
        used = [name for name in self.index if pattern.search(name)]
        missing = [c for c in self.val_chromosomes if c not in self.index]
        if missing:
            raise ValueError(f"data.val_chromosomes {missing} are not in the FASTA; it has: "
                             f"{', '.join(list(self.index)[:30])}{' …' if len(self.index) > 30 else ''}")
        val = [c for c in self.val_chromosomes]
        train = [c for c in used if c not in val]
        if not train:
            raise ValueError(f"no training record left: data.include={self.hparams.include!r} matches "
                             f"{used} and data.val_chromosomes takes {val}")
        return train, val

    def _windows(self, records: list[str], train: bool) -> GenomeWindows:
        window = self.seq_len + 1
        starts, ends = [], []
        for name in records:
            offset, length = self.index[name]
            s = valid_window_starts(self.tokens, offset, length, window, self.hparams.max_n_fraction)
            starts.append(s)
            ends.append(np.full(len(s), offset + length, dtype=np.int64))
        starts_a = np.concatenate(starts) if starts else np.zeros(0, np.int64)
        ends_a = np.concatenate(ends) if ends else np.zeros(0, np.int64)
        return GenomeWindows(self.tokens, starts_a, ends_a, window, jitter=train and self.hparams.jitter,
                             rc_aug=train and self.hparams.rc_aug)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        # in a multi-process run prepare_data has converted the FASTA: every rank only reads
        self.tokens, self.index = self.load_tokens(build=not _distributed())
        train, val = self.split_records()
        self.train_set = self._windows(train, True)
        self.val_set = self._windows(val, False)
        if len(self.train_set) == 0 or len(self.val_set) == 0:
            raise ValueError(f"too little sequence for data.seq_len={self.seq_len}: {len(self.train_set)} train and "
                             f"{len(self.val_set)} val windows (N-filtered at data.max_n_fraction="
                             f"{self.hparams.max_n_fraction})")
        rank_zero_info(f"[dna] {self.dataset_name}: {len(self.train_set)} train windows from {len(train)} records, "
                       f"{len(self.val_set)} val windows from {val}")

    def loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.hparams.num_workers,
                          drop_last=shuffle, persistent_workers=self.hparams.num_workers > 0)



__all__ = ["PRIMARY_CHROMOSOMES", "GenomeDataModule", "GenomeWindows", "fasta_to_tokens", "open_fasta",
           "valid_window_starts"]
