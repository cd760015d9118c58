"""Image datamodule: ``digits`` (scikit-learn's 1,797 real 8×8 digits, offline), ``synthetic`` tensors, ``imagefolder``
(ImageNet-style ``train/`` + ``val/`` class folders) and ``cifar10`` / ``cifar100`` (torchvision's format)."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from dyt_bench.datamodules.base import SplitDataModule
from dyt_bench.norms.spec import check_choice

IMAGE_SOURCES = ("digits", "synthetic", "imagefolder", "cifar10", "cifar100")
FILE_SOURCES = ("imagefolder", "cifar10", "cifar100")
ON_CORRUPT = ("skip", "error")  # what reading an image file that does not decode does
CIFAR_STATS = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
               "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))}
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass
class AugmentConfig:
    """Training augmentation for the file sources, built by timm's ``create_transform`` (the paper's Table 9 recipe).

    ``auto_augment``: a timm RandAugment string (``rand-m9-mstd0.5-inc1`` is RandAugment(9, 0.5)) or null.
    ``re_prob``: random-erasing probability. ``scale``: RandomResizedCrop area range. ``crop_pct``: centre-crop ratio
    at evaluation (0.875 = resize to img_size / 0.875, crop img_size). ``enabled: false`` keeps only resize,
    crop and normalisation.
    """

    enabled: bool = True
    auto_augment: str | None = "rand-m9-mstd0.5-inc1"
    re_prob: float = 0.25
    hflip: float = 0.5
    scale: tuple[float, float] = (0.08, 1.0)
    color_jitter: float = 0.0
    interpolation: str = "bicubic"
    crop_pct: float = 0.875

    def __post_init__(self) -> None:
        if not 0 <= self.re_prob <= 1:
            raise ValueError(f"data.augment.re_prob must be in [0, 1]; got {self.re_prob}")
        if not 0 < self.crop_pct <= 1:
            raise ValueError(f"data.augment.crop_pct must be in (0, 1]; got {self.crop_pct}")


class Upsample:
    """Resize a (C, h, w) image to (C, size, size) with bilinear interpolation (the digits are 8×8)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if img.shape[-1] == self.size and img.shape[-2] == self.size:
            return img
        return F.interpolate(img[None], size=(self.size, self.size), mode="bilinear", align_corners=False)[0]


class TensorImageDataset(Dataset):
    """Images and labels held as tensors, with an optional per-image transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = self.images[i]
        if self.transform is not None:
            img = self.transform(img)
        return img, self.labels[i]


class CorruptImageError(ValueError):
    """An image file of an ``imagefolder`` data set does not decode (truncated, or not an image at all)."""


class CheckedImages(Dataset):
    """An ``ImageFolder`` whose unreadable files are named: ``on_corrupt: error`` stops with the file's path, ``skip``
    leaves the file out (one warning per file, listed in ``skipped``) and serves the next readable image instead."""

    def __init__(self, folder, on_corrupt: str = "skip") -> None:
        self.folder, self.on_corrupt = folder, on_corrupt
        self.skipped: list[str] = []

    def __len__(self) -> int:
        return len(self.folder)

    def __getattr__(self, name: str):  # classes, samples, targets, ... of the folder
        if name == "folder":
            raise AttributeError(name)
        return getattr(self.folder, name)

    def __getitem__(self, index: int):
        n = len(self.folder)
        for offset in range(n):
            i = (index + offset) % n
            try:
                return self.folder[i]
            except (OSError, SyntaxError, ValueError) as e:  # PIL: truncated, unidentified, broken header
                path = self.folder.samples[i][0]
                if self.on_corrupt == "error":
                    raise CorruptImageError(f"data: cannot read image {path}: {e} (data.on_corrupt: skip leaves such "
                                            "files out)") from None
                if path not in self.skipped:
                    self.skipped.append(path)
                    warnings.warn(f"data: skipped corrupt image {path} ({e}); {len(self.skipped)} skipped so far "
                                  "(data.on_corrupt: error stops instead)", stacklevel=2)
        raise CorruptImageError(f"data: no image under {self.folder.root} can be read ({len(self.skipped)} corrupt)")


def check_class_folders(split_dir: str, split: str) -> None:
    """Every class folder of an ``imagefolder`` split holds at least one file (else one error naming it)."""
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    if not classes:
        raise FileNotFoundError(f"data.root: {split}/ split {split_dir} has no class folders (expected "
                                f"{split_dir}/<class>/<image>)")
    for name in classes:
        folder = os.path.join(split_dir, name)
        if not any(e.is_file() for e in os.scandir(folder)):
            raise FileNotFoundError(f"data.root: class folder {name!r} of the {split}/ split is empty: {folder}")


def digits_split_indices(labels, val_fraction: float, split_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of a train/val split stratified by class, fixed by ``split_seed``."""
    from sklearn.model_selection import train_test_split

    labels = torch.as_tensor(labels)
    idx_train, idx_val = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=val_fraction, random_state=split_seed, stratify=labels.numpy()
    )
    return torch.as_tensor(idx_train), torch.as_tensor(idx_val)


def load_digits_split(val_fraction: float, split_seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The scikit-learn digits as (N, 1, 8, 8) float images in [0, 1], split train/val stratified by class."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(data.target, dtype=torch.long)
    idx_train, idx_val = digits_split_indices(labels, val_fraction, split_seed)
    return images[idx_train], labels[idx_train], images[idx_val], labels[idx_val]


class ImageDataModule(SplitDataModule):
    """Image classification data.

    Args:
        source: ``digits`` (real, shipped with scikit-learn: 1,797 8×8 grey digits, 10 classes; a fixed stratified
            train/val split; the validation split also serves as the test split) or ``synthetic`` (random images
            and labels of any shape, for throughput work).
        img_size: side of the images the model sees (digits are upsampled bilinearly from 8×8).
        in_chans: channels (digits: 1, or 3 to repeat the grey channel).
        num_classes: classes (digits: must be 10).
        synthetic_samples: training samples of the synthetic source (validation gets a quarter as many).
        root: data folder of the file sources: ``imagefolder`` expects ``root/train/<class>/*`` and
            ``root/val/<class>/*``; ``cifar10``/``cifar100`` torchvision's ``cifar-10-batches-py`` /
            ``cifar-100-python`` inside ``root`` (``download: true`` fetches them).
        augment: training augmentation of the file sources (default: the paper's recipe, see ``AugmentConfig``).
        on_corrupt: an ``imagefolder`` image that does not decode is left out with a warning (``skip``) or stops
            the run with an error naming the file (``error``).
        num_workers, pin_memory, persistent_workers: DataLoader settings.
    """

    def __init__(
        self,
        source: Literal["digits", "synthetic", "imagefolder", "cifar10", "cifar100"] = "digits",
        img_size: int = 16,
        in_chans: int = 1,
        num_classes: int = 10,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        val_fraction: float = 0.2,
        split_seed: int = 0,
        synthetic_samples: int = 1024,
        normalize: bool = True,
        root: str | None = None,
        download: bool = False,
        augment: AugmentConfig | None = None,
        persistent_workers: bool = True,
        on_corrupt: Literal["skip", "error"] = "skip",
    ) -> None:
        super().__init__()
        check_choice("data.source", source, IMAGE_SOURCES)
        check_choice("data.on_corrupt", on_corrupt, ON_CORRUPT)
        for name, value, low in (("img_size", img_size, 1), ("in_chans", in_chans, 1), ("num_classes", num_classes, 2),
                                 ("num_workers", num_workers, 0), ("synthetic_samples", synthetic_samples, 1)):
            if value < low:
                raise ValueError(f"data.{name} must be >= {low}; got {value}")
        if eval_batch_size is not None and eval_batch_size < 1:
            raise ValueError(f"data.eval_batch_size must be >= 1 (or null: batch_size); got {eval_batch_size}")
        if source == "digits":
            if num_classes != 10:
                raise ValueError(f"data.num_classes must be 10 for source 'digits'; got {num_classes}")
            check_choice("data.in_chans (digits)", in_chans, (1, 3))
        if source in FILE_SOURCES and not root:
            raise ValueError(f"data.root is required for source {source!r} (the folder that holds the data)")
        if source in ("cifar10", "cifar100"):
            if num_classes != int(source[5:]):
                raise ValueError(f"data.num_classes must be {source[5:]} for source {source!r}; got {num_classes}")
            check_choice(f"data.in_chans ({source})", in_chans, (3,))
        if not 0 < val_fraction < 1:
            raise ValueError(f"data.val_fraction must be in (0, 1); got {val_fraction}")
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1; got {batch_size}")
        self.save_hyperparameters()
        self.source, self.img_size, self.in_chans, self.num_classes = source, img_size, in_chans, num_classes
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.augment = augment if augment is not None else AugmentConfig()
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    @property
    def dataset_name(self) -> str:
        return self.source

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        if self.source == "digits":
            x_tr, y_tr, x_va, y_va = load_digits_split(hp.val_fraction, hp.split_seed)
            if hp.normalize:
                mean, std = x_tr.mean(), x_tr.std()
                x_tr, x_va = (x_tr - mean) / std, (x_va - mean) / std
            if self.in_chans == 3:
                x_tr, x_va = x_tr.repeat(1, 3, 1, 1), x_va.repeat(1, 3, 1, 1)
            transform = Upsample(self.img_size)
            self.train_set = TensorImageDataset(x_tr, y_tr, transform)
            self.val_set = TensorImageDataset(x_va, y_va, transform)
        elif self.source in FILE_SOURCES:
            self._setup_files()
        else:
            gen = torch.Generator().manual_seed(hp.split_seed)
            n_val = max(1, hp.synthetic_samples // 4)
            shape = (self.in_chans, self.img_size, self.img_size)
            self.train_set = TensorImageDataset(torch.randn(hp.synthetic_samples, *shape, generator=gen),
                                                torch.randint(0, self.num_classes, (hp.synthetic_samples,), generator=gen))
            self.val_set = TensorImageDataset(torch.randn(n_val, *shape, generator=gen),
                                              torch.randint(0, self.num_classes, (n_val,), generator=gen))

    def transforms(self, mean, std):
        """(train, eval) transforms of the file sources, from timm."""
        from timm.data import create_transform

        aug = self.augment
        eval_tf = create_transform(self.img_size, is_training=False, interpolation=aug.interpolation, mean=mean,
                                   std=std, crop_pct=aug.crop_pct)
        if not aug.enabled:
            return eval_tf, eval_tf
        train_tf = create_transform(
            self.img_size, is_training=True, scale=tuple(aug.scale), hflip=aug.hflip, color_jitter=aug.color_jitter,
            auto_augment=aug.auto_augment, interpolation=aug.interpolation, mean=mean, std=std, re_prob=aug.re_prob,
            re_mode="pixel",
        )
        return train_tf, eval_tf

    def _setup_files(self) -> None:
        from torchvision import datasets

        root = os.path.expanduser(self.hparams.root)
        if self.source == "imagefolder":
            missing = [d for d in ("train", "val") if not os.path.isdir(os.path.join(root, d))]
            if missing:
                raise FileNotFoundError(
                    f"data.root={root!r} has no {'/ or '.join(missing)}/ folder; source 'imagefolder' expects "
                    f"root/train/<class>/<image> and root/val/<class>/<image> (the ImageNet layout)"
                )
            for split in ("train", "val"):
                check_class_folders(os.path.join(root, split), split)
            train_tf, eval_tf = self.transforms(*IMAGENET_STATS)
            on_corrupt = self.hparams.on_corrupt
            self.train_set = CheckedImages(datasets.ImageFolder(os.path.join(root, "train"), transform=train_tf),
                                           on_corrupt)
            self.val_set = CheckedImages(datasets.ImageFolder(os.path.join(root, "val"), transform=eval_tf), on_corrupt)
            found = len(self.train_set.classes)
            if found != self.num_classes:
                raise ValueError(f"data.num_classes={self.num_classes} but {root}/train has {found} class folders")
            return
        cls = datasets.CIFAR10 if self.source == "cifar10" else datasets.CIFAR100
        folder = os.path.join(root, cls.base_folder)
        if not self.hparams.download and not os.path.isdir(folder):
            raise FileNotFoundError(
                f"{self.source} not found: expected {folder} (torchvision's python version of the data set). "
                f"Set data.download: true to fetch it, or point data.root at the folder that contains {cls.base_folder}"
            )
        train_tf, eval_tf = self.transforms(*CIFAR_STATS[self.source])
        self.train_set = cls(root, train=True, transform=train_tf, download=self.hparams.download)
        self.val_set = cls(root, train=False, transform=eval_tf, download=False)

    def loader(self, dataset: Dataset, train: bool) -> DataLoader:
        hp, shuffle = self.hparams, train
        batch_size = self.batch_size if train else self.eval_batch_size
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=hp.num_workers,
                          pin_memory=hp.pin_memory, persistent_workers=hp.persistent_workers and hp.num_workers > 0,
                          drop_last=shuffle and self.source in FILE_SOURCES)
