"""DNA data: a character tokenizer, a ``genome`` datamodule streaming fixed-length windows from a FASTA file
(``.fa`` / ``.fa.gz``) split by chromosome, and a ``genomic_benchmarks`` datamodule reading the layout that the
``genomic-benchmarks`` package writes. Both have a ``synthetic`` source that generates its data offline.

The genome is never held in memory: a first pass streams the FASTA line by line into a 1-byte-per-base token file,
which later runs memory-map (cached by path, size and modification time).
"""

from __future__ import annotations

import bisect
import gzip
import hashlib
import io
import json
import os
import re
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from dyt_bench.norms.spec import check_choice

# ---------------------------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------------------------
SPECIAL_TOKENS = ("[PAD]", "[CLS]", "[SEP]", "[BOS]", "[EOS]", "[MASK]", "[UNK]")
BASES = "ACGTN"
PAD_ID, CLS_ID, SEP_ID, BOS_ID, EOS_ID, MASK_ID, UNK_ID = range(len(SPECIAL_TOKENS))
BASE_IDS = {b: len(SPECIAL_TOKENS) + i for i, b in enumerate(BASES)}
A_ID, C_ID, G_ID, T_ID, N_ID = (BASE_IDS[b] for b in BASES)
DNA_VOCAB_SIZE = len(SPECIAL_TOKENS) + len(BASES)  # 12
IUPAC_AMBIGUOUS = "RYKMSWBDHV"  # ambiguity codes: read as N


def _byte_table() -> bytes:
    table = bytearray([UNK_ID] * 256)
    for base, tid in BASE_IDS.items():
        table[ord(base)] = table[ord(base.lower())] = tid
    for code in IUPAC_AMBIGUOUS:
        table[ord(code)] = table[ord(code.lower())] = N_ID
    return bytes(table)


_ENCODE_TABLE = _byte_table()
_COMPLEMENT = np.arange(DNA_VOCAB_SIZE, dtype=np.int64)
_COMPLEMENT[[A_ID, C_ID, G_ID, T_ID]] = [T_ID, G_ID, C_ID, A_ID]


class DNATokenizer:
    """Character-level DNA tokenizer: 7 special tokens then A, C, G, T, N (12 ids). Lower case (soft-masked
    repeats) reads as upper case; IUPAC ambiguity codes read as N; any other character is [UNK]."""

    vocab = SPECIAL_TOKENS + tuple(BASES)
    vocab_size = DNA_VOCAB_SIZE
    pad_id, eos_id, n_id = PAD_ID, EOS_ID, N_ID

    @staticmethod
    def encode_bytes(data: bytes) -> bytes:
        """Token ids of ASCII sequence bytes, one byte per base (fast: a single C-level translate)."""
        return data.translate(_ENCODE_TABLE)

    def encode(self, sequence: str, add_eos: bool = False) -> np.ndarray:
        ids = np.frombuffer(self.encode_bytes(sequence.encode("ascii", errors="replace")), dtype=np.uint8).astype(np.int64)
        return np.append(ids, EOS_ID) if add_eos else ids

    def decode(self, ids) -> str:
        return "".join(self.vocab[int(i)] if int(i) >= len(SPECIAL_TOKENS) else "" for i in ids)


def reverse_complement(ids: torch.Tensor | np.ndarray):
    """Reverse complement of a token sequence (last dim): A↔T, C↔G, N and special tokens unchanged."""
    if isinstance(ids, torch.Tensor):
        comp = torch.as_tensor(_COMPLEMENT, device=ids.device)[ids.long()].to(ids.dtype)
        return comp.flip(-1)
    return _COMPLEMENT[np.asarray(ids, dtype=np.int64)][..., ::-1].copy()


# ---------------------------------------------------------------------------------------------------------------
# FASTA → memory-mapped tokens
# ---------------------------------------------------------------------------------------------------------------
def open_fasta(path: Path):
    """A binary line reader of a plain or gzip-compressed FASTA file."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def fasta_to_tokens(fasta: Path, out: Path) -> dict[str, tuple[int, int]]:
    """Stream ``fasta`` into ``out`` (one token byte per base); return {record name: (offset, length)}.

    Memory use is one line at a time, so a 3 Gb genome converts on any machine.
    """
    index: dict[str, tuple[int, int]] = {}
    name, start, written = None, 0, 0
    buffer = io.BytesIO()
    with open_fasta(fasta) as src, open(out, "wb") as dst:
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
        if name is not None:
            index[name] = (start, written - start)
        dst.write(buffer.getvalue())
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


def write_synthetic_genome(path: Path, chromosomes: dict[str, int], seed: int = 0, line_width: int = 60,
                           n_run: int = 500) -> None:
    """Write a FASTA genome whose bases follow a fixed random order-3 Markov chain (learnable: its entropy is well
    below 2 bits per base), with runs of N at each chromosome's ends and middle, and soft-masked (lower-case) stretches."""
    rng = np.random.default_rng(seed)
    # transition table of an order-3 chain: each 3-mer context strongly prefers one or two next bases
    probs = rng.dirichlet(np.full(4, 0.3), size=64)
    letters = np.frombuffer(b"ACGT", dtype=np.uint8)
    with open(path, "w", encoding="ascii") as f:
        for name, length in chromosomes.items():
            seq = np.empty(length, dtype=np.uint8)
            ctx = 0
            u = rng.random(length).tolist()
            cum = np.cumsum(probs, axis=1).tolist()
            for i in range(length):
                b = min(bisect.bisect_right(cum[ctx], u[i]), 3)
                seq[i] = b
                ctx = ((ctx << 2) | b) & 63
            chars = letters[seq].copy()
            for lo in (0, length // 2 - n_run // 2, length - n_run):
                chars[max(0, lo):max(0, lo) + n_run] = ord("N")
            lower = slice(length // 4, length // 4 + 200)
            chars[lower] = np.frombuffer(bytes(chars[lower]).lower(), dtype=np.uint8)
            f.write(f">{name} synthetic\n")
            text = bytes(chars).decode("ascii")
            for j in range(0, length, line_width):
                f.write(text[j:j + line_width] + "\n")


PRIMARY_CHROMOSOMES = r"^chr([0-9]+|X|Y)$"


class GenomeDataModule(pl.LightningDataModule):
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

    def load_tokens(self) -> tuple[np.ndarray, dict[str, tuple[int, int]]]:
        """The genome as a memory-mapped token array and its record index, converting the FASTA on first use."""
        fasta = self.fasta_path()
        st = fasta.stat()
        key = hashlib.sha256(f"{fasta.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:16]
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tokens_path = self.cache_dir / f"{fasta.name}-{key}.tokens"
        index_path = self.cache_dir / f"{fasta.name}-{key}.index.json"
        if tokens_path.exists() and index_path.exists():
            self.cache_hits += 1
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
        self.tokens, self.index = self.load_tokens()
        train, val = self.split_records()
        self.train_set = self._windows(train, True)
        self.val_set = self._windows(val, False)
        if len(self.train_set) == 0 or len(self.val_set) == 0:
            raise ValueError(f"too little sequence for data.seq_len={self.seq_len}: {len(self.train_set)} train and "
                             f"{len(self.val_set)} val windows (N-filtered at data.max_n_fraction="
                             f"{self.hparams.max_n_fraction})")
        rank_zero_info(f"[dna] {self.dataset_name}: {len(self.train_set)} train windows from {len(train)} records, "
                       f"{len(self.val_set)} val windows from {val}")

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.hparams.num_workers,
                          drop_last=shuffle, persistent_workers=self.hparams.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False)


# ---------------------------------------------------------------------------------------------------------------
# GenomicBenchmarks
# ---------------------------------------------------------------------------------------------------------------
# The eight datasets of the DyT paper's Table 6: {name: (number of classes, median length)} (Grešová et al. 2023).
GENOMIC_BENCHMARKS: dict[str, dict[str, int]] = {
    "dummy_mouse_enhancers_ensembl": {"num_classes": 2, "median_length": 2381},
    "demo_coding_vs_intergenomic_seqs": {"num_classes": 2, "median_length": 200},
    "demo_human_or_worm": {"num_classes": 2, "median_length": 200},
    "human_enhancers_cohn": {"num_classes": 2, "median_length": 500},
    "human_enhancers_ensembl": {"num_classes": 2, "median_length": 269},
    "human_ensembl_regulatory": {"num_classes": 3, "median_length": 401},
    "human_nontata_promoters": {"num_classes": 2, "median_length": 251},
    "human_ocr_ensembl": {"num_classes": 2, "median_length": 315},
}


def write_synthetic_benchmark(root: Path, name: str = "synthetic_motifs", num_classes: int = 2, train_per_class: int = 200,
                              test_per_class: int = 100, length: tuple[int, int] = (80, 160), motif_length: int = 6,
                              copies: int = 2, seed: int = 0) -> Path:
    """Write a GenomicBenchmarks-layout dataset ``root/name/{train,test}/<class>/<i>.txt``: uniform random
    sequences, each carrying ``copies`` copies of its class's motif (a fixed random ``motif_length``-mer) at random
    positions.

    The motifs are orderings of one multiset of bases, so base composition is the same in every class and only the
    order of bases in the motif tells the classes apart. Returns the dataset folder.
    """
    rng = np.random.default_rng(seed)
    letters = np.array(list("ACGT"))
    # every class's motif is a different ordering of the same bases, so that no class differs in base composition
    first = rng.choice(letters, motif_length)
    motifs = ["".join(first)]
    for _ in range(1000 * num_classes):
        if len(motifs) == num_classes:
            break
        m = "".join(rng.permutation(first))
        if m not in motifs:
            motifs.append(m)
    if len(motifs) < num_classes:
        raise ValueError(f"cannot make {num_classes} distinct motifs of length {motif_length}; use a longer motif")
    folder = Path(root) / name
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        for c in range(num_classes):
            out = folder / split / f"class{c}"
            out.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                n = int(rng.integers(length[0], length[1] + 1))
                seq = "".join(rng.choice(letters, n))
                for _ in range(copies):
                    pos = int(rng.integers(0, n - motif_length + 1))
                    seq = seq[:pos] + motifs[c] + seq[pos + motif_length:]
                (out / f"{i}.txt").write_text(seq)
    (folder / "motifs.json").write_text(json.dumps({f"class{c}": m for c, m in enumerate(motifs)}))
    return folder


def read_benchmark_split(folder: Path, tokenizer: DNATokenizer) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Token arrays, labels and class names of one split folder (``<split>/<class>/*.txt``; classes sorted by name)."""
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(f"{folder} has no class folders (expected {folder}/<class>/*.txt)")
    seqs, labels = [], []
    for label, cls in enumerate(classes):
        files = sorted((folder / cls).glob("*.txt"), key=lambda p: (len(p.stem), p.stem))
        for f in files:
            seqs.append(np.frombuffer(tokenizer.encode_bytes(f.read_bytes().strip()), dtype=np.uint8))
            labels.append(label)
    return seqs, np.asarray(labels, dtype=np.int64), classes


class PaddedSequences(Dataset):
    """Sequences cut to ``max_length`` (keeping the start) and left-padded, with their attention masks and labels;
    reverse-complemented with probability 0.5 when ``rc_aug``."""

    def __init__(self, seqs: list[np.ndarray], labels: np.ndarray, max_length: int, rc_aug: bool = False) -> None:
        self.seqs, self.labels, self.max_length, self.rc_aug = seqs, labels, max_length, rc_aug

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, i: int):
        ids = torch.from_numpy(self.seqs[i][: self.max_length].astype(np.int64))
        if self.rc_aug and torch.rand(()) < 0.5:
            ids = reverse_complement(ids)
        out = torch.full((self.max_length,), PAD_ID, dtype=torch.int64)
        mask = torch.zeros(self.max_length, dtype=torch.bool)
        if len(ids):
            out[-len(ids):] = ids
            mask[-len(ids):] = True
        return out, mask, torch.tensor(self.labels[i])


class GenomicBenchmarksDataModule(pl.LightningDataModule):
    """Sequence classification on a GenomicBenchmarks dataset, read from ``<root>/<dataset>/{train,test}/<class>/*.txt``.

    Args:
        source: ``files`` (``root``/``dataset``; downloaded through the ``genomic-benchmarks`` package when absent and
            ``download`` is true) or ``synthetic`` (a generated dataset with planted class motifs, written to the
            cache directory and read back through the same layout).
        dataset: one of the eight Table 6 datasets (any folder name under ``root`` is accepted for ``files``).
        root: folder holding the datasets (default ``~/.genomic_benchmarks``, where the package puts them).
        max_length: sequences are cut to this many bases (keeping the start) and left-padded (500 in the paper).
        val_fraction: fraction of the training split held out for validation, drawn with ``split_seed``
            (default: the run's seed, ``seed_everything``, else 0 — as Caduceus's cross-validation over seeds).
        rc_aug: reverse-complement training sequences with probability 0.5.
        test_each_validation: evaluate the test split at every validation as a second loader, so a run records the
            test accuracy at its best validation epoch (the task logs ``test/acc_at_best_val``).
        synthetic_*: size of the generated dataset.
    """

    def __init__(
        self,
        source: Literal["files", "synthetic"] = "files",
        dataset: str = "human_nontata_promoters",
        root: str | None = None,
        download: bool = True,
        max_length: int = 500,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        val_fraction: float = 0.1,
        split_seed: int | None = None,
        rc_aug: bool = False,
        test_each_validation: bool = True,
        synthetic_classes: int = 2,
        synthetic_train_per_class: int = 200,
        synthetic_test_per_class: int = 100,
        synthetic_length: tuple[int, int] = (80, 160),
        synthetic_motif_length: int = 6,
        synthetic_copies: int = 2,
        synthetic_seed: int = 0,
        cache_dir: str | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        check_choice("data.source", source, ("files", "synthetic"))
        if max_length < 1:
            raise ValueError(f"data.max_length must be >= 1; got {max_length}")
        if not 0 < val_fraction < 1:
            raise ValueError(f"data.val_fraction must be in (0, 1); got {val_fraction}")
        if source == "files" and "/" in dataset:
            raise ValueError(f"data.dataset must be a dataset name (a folder under data.root); got {dataset!r}")
        self.save_hyperparameters()
        self.batch_size = batch_size
        self.cache_dir = Path(os.path.expanduser(cache_dir or os.path.join("~", ".cache", "dyt-bench", "dna")))
        self.tokenizer = DNATokenizer()
        self.class_names: list[str] = []
        self.train_set = self.val_set = self.test_set = None

    vocab_size = DNA_VOCAB_SIZE

    @property
    def dataset_name(self) -> str:
        return "synthetic_motifs" if self.hparams.source == "synthetic" else self.hparams.dataset

    @property
    def num_classes(self) -> int | None:
        hp = self.hparams
        if self.class_names:
            return len(self.class_names)
        if hp.source == "synthetic":
            return hp.synthetic_classes
        return GENOMIC_BENCHMARKS.get(hp.dataset, {}).get("num_classes")

    def dataset_folder(self) -> Path:
        hp = self.hparams
        if hp.source == "synthetic":
            key = (f"v2-{hp.synthetic_classes}c-{hp.synthetic_train_per_class}-{hp.synthetic_test_per_class}-"
                   f"{hp.synthetic_length[0]}_{hp.synthetic_length[1]}-m{hp.synthetic_motif_length}x"
                   f"{hp.synthetic_copies}-s{hp.synthetic_seed}")
            root = self.cache_dir / "synthetic_benchmarks" / key
            folder = root / "synthetic_motifs"
            if not (folder / "motifs.json").exists():
                tmp_root = root.parent / f"{key}.{os.getpid()}.tmp"
                write_synthetic_benchmark(tmp_root, "synthetic_motifs", hp.synthetic_classes, hp.synthetic_train_per_class,
                                          hp.synthetic_test_per_class, tuple(hp.synthetic_length),
                                          hp.synthetic_motif_length, hp.synthetic_copies, seed=hp.synthetic_seed)
                root.mkdir(parents=True, exist_ok=True)
                try:
                    os.replace(tmp_root / "synthetic_motifs", folder)
                except OSError:  # written meanwhile by a concurrent run
                    pass
            return folder
        root = Path(os.path.expanduser(hp.root or os.path.join("~", ".genomic_benchmarks")))
        folder = root / hp.dataset
        if (folder / "train").is_dir() and (folder / "test").is_dir():
            return folder
        if hp.download:
            self._download(root)
            if (folder / "train").is_dir() and (folder / "test").is_dir():
                return folder
        raise FileNotFoundError(
            f"GenomicBenchmarks dataset {hp.dataset!r} not found at {folder} (expected {folder}/train/<class>/*.txt and "
            f"{folder}/test/<class>/*.txt). Get it with: pip install genomic-benchmarks && python -c \"from "
            f"genomic_benchmarks.loc2seq import download_dataset; download_dataset('{hp.dataset}', version=0, "
            f"dest_path='{root}')\" — or set data.root to where it is, or data.source: synthetic for an offline run")

    def _download(self, root: Path) -> None:
        hp = self.hparams
        try:
            from genomic_benchmarks.loc2seq import download_dataset
        except ImportError:
            rank_zero_info("[dna] the genomic-benchmarks package is not installed; cannot download")
            return
        if hp.dataset not in GENOMIC_BENCHMARKS:
            return
        try:
            rank_zero_info(f"[dna] downloading {hp.dataset} into {root} through genomic-benchmarks")
            download_dataset(hp.dataset, version=0, dest_path=str(root))
        except Exception as e:  # no network, or the package's servers unreachable: fall through to the clear error
            rank_zero_info(f"[dna] download of {hp.dataset} failed: {type(e).__name__}: {e}")

    def split_seed(self) -> int:
        if self.hparams.split_seed is not None:
            return int(self.hparams.split_seed)
        return int(os.environ.get("PL_GLOBAL_SEED", 0))

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        folder = self.dataset_folder()
        train_seqs, train_labels, classes = read_benchmark_split(folder / "train", self.tokenizer)
        test_seqs, test_labels, test_classes = read_benchmark_split(folder / "test", self.tokenizer)
        if classes != test_classes:
            raise ValueError(f"{folder}: train classes {classes} differ from test classes {test_classes}")
        self.class_names = classes
        order = np.random.default_rng(self.split_seed()).permutation(len(train_seqs))
        n_val = max(1, int(round(len(order) * hp.val_fraction)))
        val_idx, train_idx = order[:n_val], order[n_val:]
        self.train_set = PaddedSequences([train_seqs[i] for i in train_idx], train_labels[train_idx], hp.max_length,
                                         rc_aug=hp.rc_aug)
        self.val_set = PaddedSequences([train_seqs[i] for i in val_idx], train_labels[val_idx], hp.max_length)
        self.test_set = PaddedSequences(test_seqs, test_labels, hp.max_length)
        rank_zero_info(f"[dna] {self.dataset_name}: {len(self.train_set)} train / {len(self.val_set)} val (seed "
                       f"{self.split_seed()}) / {len(self.test_set)} test sequences, classes {classes}")

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        batch = self.batch_size if shuffle else (self.hparams.eval_batch_size or self.batch_size)
        return DataLoader(dataset, batch_size=batch, shuffle=shuffle, num_workers=self.hparams.num_workers,
                          drop_last=False, persistent_workers=self.hparams.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True)

    def val_dataloader(self):
        if not self.hparams.test_each_validation:
            return self._loader(self.val_set, False)
        return [self._loader(self.val_set, False), self._loader(self.test_set, False)]

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False)


__all__ = ["DNA_VOCAB_SIZE", "GENOMIC_BENCHMARKS", "DNATokenizer", "GenomeDataModule", "GenomicBenchmarksDataModule",
           "fasta_to_tokens", "reverse_complement", "write_synthetic_benchmark", "write_synthetic_genome"]
