"""DINO pretraining task: a student ViT + head learns to match, on every other crop, the centred and sharpened output
of a teacher that is the EMA of the student. The configured norm replaces every LayerNorm of the backbone (and of
the head, when it has them)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from dyt_bench.coerce import coerce_dataclass
from dyt_bench.models.dino import DINOHead, DINOLoss, MultiCropNet, cosine_schedule, ema_update, teacher_temperature
from dyt_bench.models.mae import build_vit_encoder
from dyt_bench.norms import NormSpec

from .base import BenchTask, DivergenceConfig
from .optim import OptimConfig
from .ssl_eval import CHECKPOINT_KEY, KnnMonitor


@dataclass
class DINOHeadConfig:
    """The projection head (DINO: 65536 prototypes, 2048 hidden, 256 bottleneck, 3 layers, no norm layers, weight-
    normalised last layer with its gain fixed)."""

    out_dim: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    nlayers: int = 3
    use_norm: bool = False
    norm_last_layer: bool = True


@dataclass
class DINOConfig:
    """The self-distillation recipe (DINO's defaults for ViTs).

    ``teacher_temp`` is reached from ``warmup_teacher_temp`` linearly over ``warmup_teacher_temp_fraction`` of the
    training steps (DINO: 30 of 100–800 epochs); the teacher momentum follows a cosine from ``momentum_teacher`` to
    1; the head's last layer gets no update during the first ``freeze_last_layer_fraction`` of the steps.
    """

    student_temp: float = 0.1
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_fraction: float = 0.0
    momentum_teacher: float = 0.996
    center_momentum: float = 0.9
    freeze_last_layer_fraction: float = 0.0

    def __post_init__(self) -> None:
        for name in ("student_temp", "teacher_temp", "warmup_teacher_temp"):
            if getattr(self, name) <= 0:
                raise ValueError(f"model.dino.{name} must be > 0; got {getattr(self, name)}")
        for name in ("momentum_teacher", "center_momentum", "warmup_teacher_temp_fraction",
                     "freeze_last_layer_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"model.dino.{name} must be in [0, 1]; got {getattr(self, name)}")


class DINOPretraining(KnnMonitor, BenchTask):
    """DINO self-distillation (Caron et al., 2021) with multi-crop batches from a ``MultiCropDataModule``.

    Args:
        model: the timm ViT backbone (``vit_small_patch16_224``: ViT-S/16; ``vit_base_patch16_224``: ViT-B/16);
            ``model_kwargs`` override its fields. The backbone takes any crop size (timm's ``dynamic_img_size``).
        img_size, in_chans: the global crops' side and channels (checked against the datamodule).
        head: the projection head (see :class:`DINOHeadConfig`).
        dino: temperatures, centring and teacher momentum (see :class:`DINOConfig`).
        global_crops: number of global crops in each batch (the teacher sees only these; must match the data's).
        knn_k, knn_temperature: the k-NN monitor on the teacher backbone (``val/knn_acc``).
        norm, optim, divergence, track_alpha, track_saturation: see ``BenchTask``.
    """

    task_name = "dino_pretraining"
    metric_modes = {"val/knn_acc": "max"}

    def __init__(
        self,
        model: str = "vit_small_patch16_224",
        img_size: int = 224,
        in_chans: int = 3,
        model_kwargs: dict[str, Any] | None = None,
        head: DINOHeadConfig | None = None,
        dino: DINOConfig | None = None,
        global_crops: int = 2,
        knn_k: int = 20,
        knn_temperature: float = 0.07,
        norm: NormSpec | None = None,
        optim: OptimConfig | None = None,
        divergence: DivergenceConfig | None = None,
        track_alpha: bool = False,
        track_saturation: bool = False,
    ) -> None:
        super().__init__(norm=norm, optim=optim, divergence=divergence, track_alpha=track_alpha,
                         track_saturation=track_saturation)
        if global_crops < 1:
            raise ValueError(f"model.global_crops must be >= 1; got {global_crops}")
        self.save_hyperparameters()
        self.img_size, self.in_chans, self.global_crops = img_size, in_chans, global_crops
        self.knn_k, self.knn_temperature = knn_k, knn_temperature
        self.head_config = coerce_dataclass(DINOHeadConfig, head, "model.head")
        self.dino = coerce_dataclass(DINOConfig, dino, "model.dino")
        kwargs = {"dynamic_img_size": True, **(model_kwargs or {})}
        backbone = build_vit_encoder(model, img_size, in_chans, kwargs, num_classes=0)
        hc = self.head_config
        head_net = DINOHead(backbone.num_features, hc.out_dim, hc.hidden_dim, hc.bottleneck_dim, hc.nlayers,
                            hc.use_norm, hc.norm_last_layer)
        self.student = self.place_norms(MultiCropNet(backbone, head_net))
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.loss_fn = DINOLoss(hc.out_dim, self.dino.student_temp, self.dino.center_momentum)
        self.arch = {"model": model, "img_size": img_size, "in_chans": in_chans, "model_kwargs": dict(model_kwargs or {})}
        self.model_name = f"dino-{model}"
        self.evaluation = {"evaluated_network": "teacher backbone", "head_out_dim": hc.out_dim}

    def setup(self, stage: str) -> None:
        self.check_datamodule(img_size=self.img_size, in_chans=self.in_chans)
        dm = self.trainer.datamodule if self._trainer is not None else None
        crops = getattr(dm, "crops", None)
        if crops is not None and crops.global_crops != self.global_crops:
            raise ValueError(f"model.global_crops={self.global_crops} but data.crops.global_crops="
                             f"{crops.global_crops}; set both to the same value")

    def _total_steps(self) -> int:
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else 1
        return int(total) if total and total != float("inf") else 1

    def encoder_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher.backbone(x)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        crops = batch[0] if isinstance(batch, (list, tuple)) and isinstance(batch[0], (list, tuple)) else batch
        if len(crops) <= self.global_crops and self.global_crops < 2:
            raise ValueError("DINO needs at least two crops per image (data.crops.global_crops + local_crops >= 2)")
        step, total = self.global_step, self._total_steps()
        temp = teacher_temperature(step, int(self.dino.warmup_teacher_temp_fraction * total),
                                   self.dino.warmup_teacher_temp, self.dino.teacher_temp)
        with torch.no_grad():
            self.teacher.train(self.student.training)
            teacher_out = self.teacher(list(crops[:self.global_crops]))
        student_out = self.student(list(crops))
        loss = self.loss_fn(student_out, teacher_out, len(crops), self.global_crops, temp)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/teacher_temp", temp)
        return loss

    def on_after_backward(self) -> None:
        if self.global_step < int(self.dino.freeze_last_layer_fraction * self._total_steps()):
            for p in (self.student.head.last_direction, self.student.head.last_gain):
                if p is not None:
                    p.grad = None

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        momentum = cosine_schedule(self.dino.momentum_teacher, 1.0, self.global_step, self._total_steps())
        ema_update(self.teacher, self.student, momentum)
        self.log("train/teacher_momentum", momentum)

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if isinstance(self.trainer.num_val_batches, list) and len(self.trainer.num_val_batches) > 1:
            self.knn_step(batch, batch_idx, dataloader_idx)

    def probe_forward(self, batch):
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self.teacher.backbone((x[0] if isinstance(x, (list, tuple)) else x).to(self.device))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = {"prefix": "teacher.backbone.", "arch": self.arch,
                                      "norm": self.norm_spec.to_dict(), "task": self.task_name}


__all__ = ["DINOConfig", "DINOHeadConfig", "DINOPretraining"]
