"""BenchTask: what every task shares — the norm spec, AdamW with warmup + cosine, the divergence guard, result recording."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from dyt_bench.callbacks import AlphaTracker, DivergenceGuard, ResultWriter, SaturationMonitor
from dyt_bench.norms import NormSpec, replace_norms
from dyt_bench.norms.spec import check_choice
from dyt_bench.norms.surgery import NormReplacementReport, describe_norm


@dataclass
class OptimConfig:
    """AdamW with linear warmup then a cosine, linear or constant learning rate, stepped every optimizer step.

    Warmup length: ``warmup_steps``, else ``warmup_epochs``, else ``warmup_fraction`` of all training steps.
    ``lr_base_batch``: when set, ``lr`` is the rate at that global batch and is scaled linearly to the real one
    (batch size × gradient accumulation × devices), e.g. the paper's 4e-3 at 4096.
    ``no_decay_norms_and_biases`` keeps weight decay off norm / DyT parameters and biases (1-D tensors).
    """

    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int | None = None
    warmup_epochs: float | None = None
    warmup_fraction: float = 0.05
    lr_base_batch: int | None = None
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    min_lr_ratio: float = 0.0
    no_decay_norms_and_biases: bool = True

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"optim.lr must be > 0; got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"optim.weight_decay must be >= 0; got {self.weight_decay}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"optim.warmup_fraction must be in [0, 1); got {self.warmup_fraction}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise ValueError(f"optim.warmup_steps must be >= 0; got {self.warmup_steps}")
        if self.warmup_epochs is not None and self.warmup_epochs < 0:
            raise ValueError(f"optim.warmup_epochs must be >= 0; got {self.warmup_epochs}")
        if self.lr_base_batch is not None and self.lr_base_batch < 1:
            raise ValueError(f"optim.lr_base_batch must be >= 1; got {self.lr_base_batch}")
        check_choice("optim.schedule", self.schedule, ("cosine", "linear", "constant"))
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"optim.min_lr_ratio must be in [0, 1]; got {self.min_lr_ratio}")


@dataclass
class DivergenceConfig:
    """When a run counts as diverged: NaN/inf loss, or a loss moving average above ``max_loss_ratio`` × its best."""

    enabled: bool = True
    max_loss_ratio: float | None = 10.0
    min_steps: int = 20


def lr_lambda(step: int, total_steps: int, warmup_steps: int, schedule: str, min_lr_ratio: float) -> float:
    """Learning-rate multiplier at ``step``: linear warmup from 0, then a cosine or linear decay to ``min_lr_ratio`` at
    ``total_steps`` (linear: fairseq's polynomial decay of power 1), or constant."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "linear":
        return min_lr_ratio + (1 - min_lr_ratio) * (1 - progress)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class BenchTask(pl.LightningModule):
    """Base of every task. A task builds its network, passes it through :meth:`place_norms`, and adds loss and metrics.

    ``track_alpha: true`` adds the :class:`~dyt_bench.callbacks.AlphaTracker` (α vs 1/std of each DyT layer's input);
    ``track_saturation: true`` the :class:`~dyt_bench.callbacks.SaturationMonitor` (fraction of saturated inputs).
    Subclasses set ``task_name``, ``model_name`` and ``metric_modes`` (logged metric → "max" | "min"; the
    result writer tracks the best value of each).
    """

    task_name = "task"
    metric_modes: dict[str, str] = {}

    def __init__(
        self,
        norm: NormSpec | None = None,
        optim: OptimConfig | None = None,
        divergence: DivergenceConfig | None = None,
        track_alpha: bool = False,
        track_saturation: bool = False,
    ) -> None:
        super().__init__()
        self.track_alpha = track_alpha
        self.track_saturation = track_saturation
        self.norm_spec = NormSpec.coerce(norm) if norm is not None else NormSpec()
        self.optim_config = optim if optim is not None else OptimConfig()
        self.divergence_config = divergence if divergence is not None else DivergenceConfig()
        self.norm_report: NormReplacementReport | None = None
        self.model_name = ""
        self.run_config: dict | None = None  # set by the CLI: the resolved config, recorded in result.json
        # Facts about how this run measures its metrics (e.g. the FID extractor), recorded as result.json "evaluation"
        self.evaluation: dict = {}

    def place_norms(self, model: nn.Module, **kwargs) -> nn.Module:
        """Replace every norm of ``model`` by the configured kind, log what was replaced, return the model."""
        self.norm_report = replace_norms(model, self.norm_spec, **kwargs)
        rank_zero_info(str(self.norm_report))
        return model

    # --- optimisation -------------------------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict]:
        """Two AdamW groups: with weight decay (matrices, kernels) and without (norm / DyT parameters, biases)."""
        cfg = self.optim_config
        if not cfg.no_decay_norms_and_biases:
            return [{"params": [p for p in self.parameters() if p.requires_grad], "weight_decay": cfg.weight_decay}]
        no_decay_ids = set()
        for module in self.modules():
            if describe_norm(module) is not None:
                no_decay_ids.update(id(p) for p in module.parameters(recurse=False))
            # timm's convention: a model lists parameters such as position embeddings that take no weight decay
            skip = getattr(module, "no_weight_decay", None)
            if callable(skip) and module is not self:
                names = skip()
                params = dict(module.named_parameters())
                no_decay_ids.update(id(params[n]) for n in names if n in params)
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            if id(p) in no_decay_ids or p.ndim <= 1 or name.endswith(".bias"):
                no_decay.append(p)
            else:
                decay.append(p)
        return [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def global_batch_size(self) -> int | None:
        """Samples per optimizer step: datamodule batch size × gradient accumulation × devices (None if unknown)."""
        if self._trainer is None or self.trainer.datamodule is None:
            return None
        batch = getattr(self.trainer.datamodule, "batch_size", None)
        if batch is None:
            return None
        return int(batch) * int(self.trainer.accumulate_grad_batches) * int(self.trainer.world_size)

    def configure_optimizers(self):
        cfg = self.optim_config
        lr = cfg.lr
        if cfg.lr_base_batch is not None:
            global_batch = self.global_batch_size()
            if global_batch is None:
                raise ValueError("optim.lr_base_batch needs a datamodule with a batch_size to scale the learning rate")
            lr = cfg.lr * global_batch / cfg.lr_base_batch
            rank_zero_info(f"learning rate {cfg.lr:g} at batch {cfg.lr_base_batch} → {lr:.4g} at global batch {global_batch}")
        optimizer = torch.optim.AdamW(self.parameter_groups(), lr=lr, betas=tuple(cfg.betas), eps=cfg.eps)
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        if not math.isfinite(total) or total <= 0:
            total = 1
        if cfg.warmup_steps is not None:
            warmup = cfg.warmup_steps
        elif cfg.warmup_epochs is not None and self._trainer is not None and (self.trainer.max_epochs or 0) > 0:
            warmup = int(cfg.warmup_epochs * total / self.trainer.max_epochs)
        else:
            warmup = int(cfg.warmup_fraction * total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_lambda(step, total, warmup, cfg.schedule, cfg.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_callbacks(self):
        callbacks: list[pl.Callback] = [ResultWriter()]
        div = self.divergence_config
        if div.enabled:
            callbacks.insert(0, DivergenceGuard(max_loss_ratio=div.max_loss_ratio, min_steps=div.min_steps))
        if self.track_alpha:
            callbacks.append(AlphaTracker())
        if self.track_saturation:
            callbacks.append(SaturationMonitor())
        return callbacks

    def probe_forward(self, batch):
        """Run the network on a batch as in validation (used by the norm probe); tasks with other batches override it."""
        inputs = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(inputs.to(self.device))

    def check_datamodule(self, **expected) -> None:
        """Fail before training when the datamodule disagrees with the model (e.g. num_classes, img_size)."""
        dm = self.trainer.datamodule if self._trainer is not None else None
        if dm is None:
            return
        for name, value in expected.items():
            have = getattr(dm, name, None)
            if have is not None and have != value:
                raise ValueError(f"model.{name}={value} but data.{name}={have}; set both to the same value")


__all__ = ["BenchTask", "DivergenceConfig", "OptimConfig", "lr_lambda"]
