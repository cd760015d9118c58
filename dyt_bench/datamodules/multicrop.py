"""Self-supervised image data: every training image becomes a list of augmented crops (DINO's multi-crop; one crop for
MAE), and validation also returns the un-augmented training images as the feature bank of a k-NN monitor.

Crops come from torchvision transforms v2; the file sources get DINO's photometric recipe (colour jitter, grey,
blur, solarisation), the tensor sources (digits, synthetic: already standardised) the geometric part only.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from dyt_bench.coerce import coerce_dataclass

from .image import FILE_SOURCES, ImageDataModule


@dataclass
class MultiCropConfig:
    """The crops of one training image: ``global_crops`` at ``img_size`` (area ``global_scale`` of the image) and
    ``local_crops`` at ``local_size`` (area ``local_scale``). DINO: 2 global (0.4–1) + 10 local 96 px (0.05–0.4);
    MAE: 1 global (0.2–1), no local. ``photometric``: DINO's colour jitter / grey / blur / solarisation (file sources
    only). ``local_size: null``: img_size × 96/224 rounded to the patch grid by the caller's config.
    """

    global_crops: int = 2
    local_crops: int = 0
    local_size: int | None = None
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.4)
    hflip: float = 0.5
    photometric: bool = True

    def __post_init__(self) -> None:
        if self.global_crops < 1:
            raise ValueError(f"data.crops.global_crops must be >= 1; got {self.global_crops}")
        if self.local_crops < 0:
            raise ValueError(f"data.crops.local_crops must be >= 0; got {self.local_crops}")
        for name in ("global_scale", "local_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi <= 1:
                raise ValueError(f"data.crops.{name} must satisfy 0 < low <= high <= 1; got {(lo, hi)}")
        if not 0 <= self.hflip <= 1:
            raise ValueError(f"data.crops.hflip must be in [0, 1]; got {self.hflip}")


def _odd(n: int) -> int:
    n = max(3, n)
    return n if n % 2 else n + 1


class MultiCropTransform:
    """One image → list of ``global_crops + local_crops`` tensors (global crops first, as DINO's loss expects)."""

    def __init__(self, cfg: MultiCropConfig, img_size: int, local_size: int, pil: bool,
                 mean=None, std=None) -> None:
        from torchvision.transforms import InterpolationMode, v2

        self.cfg = cfg

        def crop(size, scale, blur: float = 0.0, solarize: float = 0.0):
            # bicubic on images; bilinear on the tensor sources (cheaper, and their values are not bounded pixels)
            mode = InterpolationMode.BICUBIC if pil else InterpolationMode.BILINEAR
            steps = [v2.RandomResizedCrop(size, scale=tuple(scale), interpolation=mode, antialias=True),
                     v2.RandomHorizontalFlip(cfg.hflip)]
            if pil:
                if cfg.photometric:
                    steps += [v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8), v2.RandomGrayscale(0.2)]
                    if blur > 0:
                        steps.append(v2.RandomApply([v2.GaussianBlur(_odd(size // 10), sigma=(0.1, 2.0))], p=blur))
                    if solarize > 0:
                        steps.append(v2.RandomSolarize(128, p=solarize))
                steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
            return v2.Compose(steps)

        # DINO: the first global crop is always blurred, the second rarely and sometimes solarised, local crops half
        globals_ = [crop(img_size, cfg.global_scale, blur=1.0), crop(img_size, cfg.global_scale, 0.1, 0.2)]
        self.views = [globals_[min(i, 1)] for i in range(cfg.global_crops)]
        self.views += [crop(local_size, cfg.local_scale, blur=0.5) for _ in range(cfg.local_crops)]

    def __call__(self, img) -> list[torch.Tensor]:
        return [view(img) for view in self.views]


class MultiCropDataModule(ImageDataModule):
    """:class:`~dyt_bench.datamodules.ImageDataModule` for self-supervised pretraining.

    Training batches are ``(list of crop batches, labels)`` (labels unused by the tasks). Validation has two loaders:
    0 the un-augmented training images (at most ``knn_bank_size`` of them, a fixed random subset), the k-NN
    monitor's feature bank; 1 the validation images. ``knn_monitor: false`` keeps only the validation loader.

    Args:
        crops: the crops of each training image (see :class:`MultiCropConfig`).
        knn_monitor, knn_bank_size: the k-NN monitor's bank.
        Everything else: see ``ImageDataModule`` (its ``augment`` is not used: ``crops`` replaces it).
    """

    def __init__(self, *args, crops: MultiCropConfig | None = None, knn_monitor: bool = True,
                 knn_bank_size: int | None = 10000, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.crops = coerce_dataclass(MultiCropConfig, crops, "data.crops")
        if knn_bank_size is not None and knn_bank_size < 1:
            raise ValueError(f"data.knn_bank_size must be >= 1 or null; got {knn_bank_size}")
        self.knn_monitor, self.knn_bank_size = knn_monitor, knn_bank_size
        self.local_size = self.crops.local_size or max(1, round(self.img_size * 96 / 224))
        self.bank_set: Dataset | None = None

    @property
    def n_crops(self) -> int:
        return self.crops.global_crops + self.crops.local_crops

    def transforms(self, mean, std):
        """(multi-crop train, eval) transforms of the file sources (images read as PIL)."""
        _, eval_tf = super().transforms(mean, std)
        return MultiCropTransform(self.crops, self.img_size, self.local_size, pil=True, mean=mean, std=std), eval_tf

    def setup(self, stage: str | None = None) -> None:
        if self.bank_set is not None:
            return
        super().setup(stage)
        if self.source in FILE_SOURCES:
            bank = copy.copy(self.train_set)  # same files, evaluation transform
            bank.transform = self.val_set.transform
        else:  # tensor sources hold standardised tensors: geometric crops only, cut from the stored (e.g. 8×8) image
            bank = copy.copy(self.train_set)
            self.train_set.transform = MultiCropTransform(self.crops, self.img_size, self.local_size, pil=False)
        if self.knn_bank_size is not None and len(bank) > self.knn_bank_size:
            idx = torch.randperm(len(bank), generator=torch.Generator().manual_seed(self.hparams.split_seed))
            bank = Subset(bank, idx[:self.knn_bank_size].tolist())
        self.bank_set = bank

    def val_dataloader(self):
        val = self.loader(self.val_set, train=False)
        return [self.loader(self.bank_set, train=False), val] if self.knn_monitor else val

    def loader(self, dataset: Dataset, train: bool) -> DataLoader:
        loader = super().loader(dataset, train)
        if train and self.source not in FILE_SOURCES:  # a ragged last batch would break the per-crop chunking
            loader = DataLoader(dataset, batch_size=loader.batch_size, shuffle=True, num_workers=loader.num_workers,
                                pin_memory=loader.pin_memory, persistent_workers=loader.persistent_workers,
                                drop_last=len(dataset) > loader.batch_size)
        return loader


__all__ = ["MultiCropConfig", "MultiCropDataModule", "MultiCropTransform"]
