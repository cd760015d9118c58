"""Sequence classification on GenomicBenchmarks: reading the ``<dataset>/{train,test}/<class>/*.txt`` layout that
the ``genomic-benchmarks`` package writes, left-padded sequences with masks, and the datamodule."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from dyt_bench.datamodules.base import SplitDataModule
from dyt_bench.norms.spec import check_choice
from dyt_bench.versions import MissingExtraError, install_hint, require

from .synthetic import write_synthetic_benchmark
from .tokenizer import DNA_VOCAB_SIZE, PAD_ID, DNATokenizer, reverse_complement

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


def _distributed() -> bool:
    """True inside a multi-process run (then data preparation belongs to ``prepare_data``, not ``setup``)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def read_benchmark_split(folder: Path, tokenizer: DNATokenizer,
                         progress: bool = True) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Token arrays, labels and class names of one split folder (``<split>/<class>/*.txt``; classes sorted by name);
    a rich progress bar counts the files (the larger datasets hold 10⁵ of them) unless ``progress`` is false."""
    from rich.markup import escape
    from rich.progress import track

    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(f"{folder} has no class folders (expected {folder}/<class>/*.txt)")
    files = [(label, f) for label, cls in enumerate(classes)
             for f in sorted((folder / cls).glob("*.txt"), key=lambda p: (len(p.stem), p.stem))]
    seqs, labels = [], []
    for label, f in track(files, description=escape(f"[dna] reading {folder.parent.name}/{folder.name}"),
                          disable=not progress):
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


class GenomicBenchmarksDataModule(SplitDataModule):
    """Sequence classification on a GenomicBenchmarks dataset, read from
    ``<root>/<dataset>/{train,test}/<class>/*.txt``.

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

    def prepare_data(self) -> None:
        """Download (or generate) the dataset, once per node (Lightning calls this on one process before ``setup``,
        which then only reads it on every rank)."""
        self.dataset_folder()

    def dataset_folder(self, build: bool = True) -> Path:
        """The dataset's folder; downloads or generates it when absent (``build: false``: refuse to)."""
        hp = self.hparams
        if hp.source == "synthetic":
            key = (f"v2-{hp.synthetic_classes}c-{hp.synthetic_train_per_class}-{hp.synthetic_test_per_class}-"
                   f"{hp.synthetic_length[0]}_{hp.synthetic_length[1]}-m{hp.synthetic_motif_length}x"
                   f"{hp.synthetic_copies}-s{hp.synthetic_seed}")
            root = self.cache_dir / "synthetic_benchmarks" / key
            folder = root / "synthetic_motifs"
            if not (folder / "motifs.json").exists() and not build:
                raise FileNotFoundError(f"{folder} is missing: prepare_data generates it before setup")
            if not (folder / "motifs.json").exists():
                tmp_root = root.parent / f"{key}.{os.getpid()}.tmp"
                write_synthetic_benchmark(tmp_root, "synthetic_motifs", hp.synthetic_classes,
                                          hp.synthetic_train_per_class, hp.synthetic_test_per_class,
                                          tuple(hp.synthetic_length),
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
        if hp.download and build:
            self._download(root)
            if (folder / "train").is_dir() and (folder / "test").is_dir():
                return folder
        raise FileNotFoundError(
            f"GenomicBenchmarks dataset {hp.dataset!r} not found at {folder} (expected {folder}/train/<class>/*.txt "
            f"and {folder}/test/<class>/*.txt). Get it with the dna extra ({install_hint('dna')}, i.e. pip install "
            f"genomic-benchmarks), then: python -c \"from "
            f"genomic_benchmarks.loc2seq import download_dataset; download_dataset('{hp.dataset}', version=0, "
            f"dest_path='{root}')\" — or set data.root to where it is, or data.source: synthetic for an offline run")

    def _download(self, root: Path) -> None:
        hp = self.hparams
        if hp.dataset not in GENOMIC_BENCHMARKS:
            return
        try:
            download_dataset = require("genomic_benchmarks.loc2seq", "dna",
                                       f"downloading {hp.dataset} (data.download: true)").download_dataset
        except MissingExtraError as e:  # the not-found error that follows says how to get the data
            rank_zero_info(f"[dna] {e}")
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
        folder = self.dataset_folder(build=not _distributed())  # in a multi-process run prepare_data fetched it
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

    def loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        batch = self.batch_size if shuffle else (self.hparams.eval_batch_size or self.batch_size)
        return DataLoader(dataset, batch_size=batch, shuffle=shuffle, num_workers=self.hparams.num_workers,
                          drop_last=False, persistent_workers=self.hparams.num_workers > 0)

    def val_dataloader(self):
        if not self.hparams.test_each_validation:
            return self.loader(self.val_set, False)
        return [self.loader(self.val_set, False), self.loader(self.test_set, False)]


__all__ = ["GENOMIC_BENCHMARKS", "GenomicBenchmarksDataModule", "PaddedSequences", "read_benchmark_split"]
