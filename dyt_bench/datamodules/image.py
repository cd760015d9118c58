"""Image datamodule: ``digits`` (scikit-learn's 1,797 real 8×8 handwritten digits, offline) and ``synthetic`` tensors."""

from __future__ import annotations

from typing import Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from dyt_bench.norms.spec import check_choice

IMAGE_SOURCES = ("digits", "synthetic")


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


class ImageDataModule(pl.LightningDataModule):
    """Image classification data.

    Args:
        source: ``digits`` (real, shipped with scikit-learn: 1,797 8×8 grey digits, 10 classes; a fixed stratified
            train/val split; the validation split also serves as the test split) or ``synthetic`` (random images
            and labels of any shape, for throughput work).
        img_size: side of the images the model sees (digits are upsampled bilinearly from 8×8).
        in_chans: channels (digits: 1, or 3 to repeat the grey channel).
        num_classes: classes (digits: must be 10).
        synthetic_samples: training samples of the synthetic source (validation gets a quarter as many).
    """

    def __init__(
        self,
        source: Literal["digits", "synthetic"] = "digits",
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
    ) -> None:
        super().__init__()
        check_choice("data.source", source, IMAGE_SOURCES)
        if img_size < 1:
            raise ValueError(f"data.img_size must be >= 1; got {img_size}")
        if source == "digits":
            if num_classes != 10:
                raise ValueError(f"data.num_classes must be 10 for source 'digits'; got {num_classes}")
            check_choice("data.in_chans (digits)", in_chans, (1, 3))
        if not 0 < val_fraction < 1:
            raise ValueError(f"data.val_fraction must be in (0, 1); got {val_fraction}")
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1; got {batch_size}")
        self.save_hyperparameters()
        self.source, self.img_size, self.in_chans, self.num_classes = source, img_size, in_chans, num_classes
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
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
        else:
            gen = torch.Generator().manual_seed(hp.split_seed)
            n_val = max(1, hp.synthetic_samples // 4)
            shape = (self.in_chans, self.img_size, self.img_size)
            self.train_set = TensorImageDataset(torch.randn(hp.synthetic_samples, *shape, generator=gen),
                                                torch.randint(0, self.num_classes, (hp.synthetic_samples,), generator=gen))
            self.val_set = TensorImageDataset(torch.randn(n_val, *shape, generator=gen),
                                              torch.randint(0, self.num_classes, (n_val,), generator=gen))

    def _loader(self, dataset: Dataset, shuffle: bool, batch_size: int) -> DataLoader:
        hp = self.hparams
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=hp.num_workers,
                          pin_memory=hp.pin_memory, persistent_workers=hp.num_workers > 0, drop_last=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False, self.eval_batch_size)
