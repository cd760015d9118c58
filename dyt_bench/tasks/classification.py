"""Image classification task: cross-entropy with label smoothing, top-1 / top-5 accuracy."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from dyt_bench.models.image import build_image_model
from dyt_bench.norms import NormSpec

from .base import BenchTask, DivergenceConfig, OptimConfig


class ImageClassification(BenchTask):
    """Classify images with any timm / torchvision model whose norms are replaced by ``norm``.

    Args:
        model: timm or torchvision model name (see ``dyt_bench.models.image.build_image_model``).
        num_classes, img_size, in_chans: the data's shape (checked against the datamodule before training).
        model_kwargs: extra constructor arguments (e.g. ``patch_size``, ``embed_dim``, ``depth``, ``num_heads``).
        small_input: 3×3 stride-1 stem without max-pool for torchvision ResNets on tiny images.
        label_smoothing: cross-entropy label smoothing.
        norm, optim, divergence, track_alpha: see ``BenchTask``.
    """

    task_name = "image_classification"
    metric_modes = {"val/acc1": "max", "val/acc5": "max", "val/loss": "min"}

    def __init__(
        self,
        model: str = "vit_tiny_patch16_224",
        num_classes: int = 1000,
        img_size: int = 224,
        in_chans: int = 3,
        model_kwargs: dict[str, Any] | None = None,
        small_input: bool = False,
        label_smoothing: float = 0.0,
        norm: NormSpec | None = None,
        optim: OptimConfig | None = None,
        divergence: DivergenceConfig | None = None,
        track_alpha: bool = False,
    ) -> None:
        super().__init__(norm=norm, optim=optim, divergence=divergence, track_alpha=track_alpha)
        if num_classes < 2:
            raise ValueError(f"model.num_classes must be >= 2; got {num_classes}")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"model.label_smoothing must be in [0, 1); got {label_smoothing}")
        self.save_hyperparameters()
        self.model_name = model
        self.num_classes, self.img_size, self.in_chans = num_classes, img_size, in_chans
        self.label_smoothing = label_smoothing
        net = build_image_model(model, num_classes=num_classes, img_size=img_size, in_chans=in_chans,
                                small_input=small_input, **(model_kwargs or {}))
        self.net = self.place_norms(net)
        top5 = min(5, num_classes)
        self.val_acc1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_acc5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")
        self.test_acc1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.test_acc5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")

    def setup(self, stage: str) -> None:
        self.check_datamodule(num_classes=self.num_classes, img_size=self.img_size, in_chans=self.in_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc1", (logits.argmax(-1) == y).float().mean())
        return loss

    def _evaluate(self, batch, stage: str, acc1: MulticlassAccuracy, acc5: MulticlassAccuracy) -> None:
        x, y = batch
        logits = self(x)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), prog_bar=stage == "val")
        acc1(logits, y)
        acc5(logits, y)
        self.log(f"{stage}/acc1", acc1, prog_bar=stage == "val")
        self.log(f"{stage}/acc5", acc5)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_acc1, self.val_acc5)

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_acc1, self.test_acc5)
