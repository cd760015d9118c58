"""Image classification task: cross-entropy with label smoothing (or mixup/cutmix soft targets), top-1 / top-5 accuracy,
optional model EMA evaluated in place of the model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from dyt_bench.coerce import coerce_dataclass
from dyt_bench.models.image import build_image_model
from dyt_bench.norms import NormSpec
from dyt_bench.results import DEFAULT_METRIC

from .base import BenchTask, DivergenceConfig
from .optim import OptimConfig

# The metric the paper's classification tables report (the grid and leaderboard default to it too)
PRIMARY_METRIC = DEFAULT_METRIC


@dataclass
class MixupConfig:
    """Mixup / CutMix on training batches (timm's ``Mixup``); the loss becomes soft-target cross-entropy.

    The paper's recipe: mixup 0.8, cutmix 1.0, applied to every batch, switching between them with probability 0.5.
    Label smoothing (the task's ``label_smoothing``) is folded into the soft targets.
    """

    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    prob: float = 1.0
    switch_prob: float = 0.5

    def __post_init__(self) -> None:
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError("model.mixup.mixup_alpha and cutmix_alpha must be >= 0")
        if not 0 <= self.prob <= 1 or not 0 <= self.switch_prob <= 1:
            raise ValueError("model.mixup.prob and switch_prob must be in [0, 1]")


@dataclass
class EmaConfig:
    """Exponential moving average of the weights (timm's ``ModelEmaV3``), updated after every optimizer step.

    ``evaluate: true`` validates and tests the EMA weights instead of the trained ones (the paper's recipe).
    """

    decay: float = 0.9999
    evaluate: bool = True
    warmup: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.decay < 1:
            raise ValueError(f"model.ema.decay must be in (0, 1); got {self.decay}")


class ImageClassification(BenchTask):
    """Classify images with any timm / torchvision model whose norms are replaced by ``norm``.

    Args:
        model: timm or torchvision model name (see ``dyt_bench.models.image.build_image_model``).
        num_classes, img_size, in_chans: the data's shape (checked against the datamodule before training).
        model_kwargs: extra constructor arguments (e.g. ``patch_size``, ``embed_dim``, ``depth``, ``num_heads``,
            ``drop_path_rate``, ``init_values`` for ViT LayerScale, ``ls_init_value`` for ConvNeXt).
        small_input: 3×3 stride-1 stem / pooled head for torchvision ResNet / VGG on tiny images.
        insert_norms: put a norm after every convolution of a torchvision VGG without BN.
        label_smoothing: cross-entropy label smoothing.
        mixup: mixup / cutmix settings (null: off).
        ema: model EMA settings (null: off).
        channels_last: run the network in channels-last memory format (faster convolutions on GPU).
        compile: ``torch.compile`` the network.
        norm, optim, divergence, track_alpha, track_saturation: see ``BenchTask``.
    """

    task_name = "image_classification"
    metric_modes = {PRIMARY_METRIC: "max", "val/acc5": "max", "val/loss": "min"}

    def __init__(
        self,
        model: str = "vit_tiny_patch16_224",
        num_classes: int = 1000,
        img_size: int = 224,
        in_chans: int = 3,
        model_kwargs: dict[str, Any] | None = None,
        small_input: bool = False,
        insert_norms: bool = False,
        label_smoothing: float = 0.0,
        mixup: MixupConfig | None = None,
        ema: EmaConfig | None = None,
        channels_last: bool = False,
        compile: bool = False,
        norm: NormSpec | None = None,
        optim: OptimConfig | None = None,
        divergence: DivergenceConfig | None = None,
        track_alpha: bool = False,
        track_saturation: bool = False,
    ) -> None:
        super().__init__(norm=norm, optim=optim, divergence=divergence, track_alpha=track_alpha,
                         track_saturation=track_saturation)
        if num_classes < 2:
            raise ValueError(f"model.num_classes must be >= 2; got {num_classes}")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"model.label_smoothing must be in [0, 1); got {label_smoothing}")
        self.save_hyperparameters()
        self.model_name = model
        self.num_classes, self.img_size, self.in_chans = num_classes, img_size, in_chans
        self.label_smoothing = label_smoothing
        self.channels_last = channels_last
        mixup = coerce_dataclass(MixupConfig, mixup, "model.mixup", none_is_default=False)
        ema = coerce_dataclass(EmaConfig, ema, "model.ema", none_is_default=False)
        net = build_image_model(model, num_classes=num_classes, img_size=img_size, in_chans=in_chans,
                                small_input=small_input, insert_norms=insert_norms, **(model_kwargs or {}))
        pretrained = getattr(net, "pretrained_report", None)
        if pretrained is not None:  # which tensors a weights file set (result.json: evaluation.pretrained)
            self.evaluation["pretrained"] = pretrained
        self.net = self.place_norms(net)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.mixup_fn = None
        if mixup is not None and (mixup.mixup_alpha > 0 or mixup.cutmix_alpha > 0) and mixup.prob > 0:
            from timm.data import Mixup

            self.mixup_fn = Mixup(mixup_alpha=mixup.mixup_alpha, cutmix_alpha=mixup.cutmix_alpha, prob=mixup.prob,
                                  switch_prob=mixup.switch_prob, label_smoothing=label_smoothing,
                                  num_classes=num_classes)
        self.ema_config = ema
        self.ema = None
        if ema is not None:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.net, decay=ema.decay, use_warmup=ema.warmup)
            # its weights need no gradient: without this DDP counts them as parameters the loss did not use, and stops
            self.ema.requires_grad_(False)
        if compile:
            self.net.compile()
        top5 = min(5, num_classes)
        self.val_acc1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_acc5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")
        self.test_acc1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.test_acc5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")

    def setup(self, stage: str) -> None:
        self.check_datamodule(num_classes=self.num_classes, img_size=self.img_size, in_chans=self.in_chans)

    def chance_levels(self) -> dict[str, float]:
        """Top-k accuracy of a guess uniform over the classes: k / num_classes."""
        top5 = min(5, self.num_classes) / self.num_classes
        return {f"{stage}/{name}": level for stage in ("val", "test")
                for name, level in (("acc1", 1 / self.num_classes), ("acc5", top5))}

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self._prepare(x))

    def eval_network(self) -> torch.nn.Module:
        """The network validation and test use: the EMA copy when ``ema.evaluate``, else the trained one."""
        if self.ema is not None and self.ema_config.evaluate:
            return self.ema.module
        return self.net

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.mixup_fn is not None and x.shape[0] % 2 == 0:  # timm's mixup pairs samples: needs an even batch
            x, soft = self.mixup_fn(x, y)
            logits = self(x)
            loss = torch.sum(-soft * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        else:
            logits = self(x)
            loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
            self.log("train/acc1", (logits.argmax(-1) == y).float().mean())
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.net, step=self.global_step)

    def _evaluate(self, batch, stage: str, acc1: MulticlassAccuracy, acc5: MulticlassAccuracy) -> None:
        x, y = batch
        logits = self.eval_network()(self._prepare(x))
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), prog_bar=stage == "val", sync_dist=True)
        acc1(logits, y)
        acc5(logits, y)
        self.log(f"{stage}/acc1", acc1, prog_bar=stage == "val")
        self.log(f"{stage}/acc5", acc5)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_acc1, self.val_acc5)

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_acc1, self.test_acc5)
