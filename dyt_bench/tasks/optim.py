"""The optimizer every task uses: AdamW settings (OptimConfig), the weight-decay parameter groups, and the warmup
then cosine / linear / constant learning-rate schedule, as plain functions of the config and the run's length."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from torch import nn

from dyt_bench.norms.spec import check_choice
from dyt_bench.norms.surgery import describe_norm

SCHEDULES = ("cosine", "linear", "constant")


@dataclass
class OptimConfig:
    """AdamW with linear warmup then a cosine, linear or constant learning rate, stepped every optimizer step.

    Warmup length: ``warmup_steps``, else ``warmup_epochs``, else ``warmup_fraction`` of all training steps.
    ``lr_base_batch``: when set, ``lr`` is the rate at that global batch and is scaled linearly to the real one
    (batch size × gradient accumulation × devices), e.g. the paper's 4e-3 at 4096.
    ``no_decay_norms_and_biases`` keeps weight decay off norm / DyT parameters and biases (1-D tensors).
    ``fused``: torch's one-kernel AdamW step. ``null`` (default): fused when every parameter is on a CUDA device and
    the strategy keeps whole parameters on each device (not FSDP, DeepSpeed or model parallelism), else torch's
    per-list (foreach) step;
    ``true`` / ``false`` force it. The two compute the same update up to floating-point rounding; the fused one
    launches a handful of kernels per step where foreach launches several per parameter chunk, which shows in
    host-bound models.
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
    fused: bool | None = None

    def __post_init__(self) -> None:
        if self.fused is not None and not isinstance(self.fused, bool):
            raise ValueError(f"optim.fused must be true, false or null; got {self.fused!r}")
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
        check_choice("optim.schedule", self.schedule, SCHEDULES)
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"optim.min_lr_ratio must be in [0, 1]; got {self.min_lr_ratio}")


SHARDING_STRATEGIES = ("FSDP", "DeepSpeed", "ModelParallel")  # Lightning strategies that shard or wrap parameters


def fused_adamw_fits(params: list, strategy: str = "") -> bool:
    """``optim.fused: null``'s choice: every parameter a plain floating tensor on a CUDA device, and a strategy
    (its class name) that keeps whole parameters on each device; sharded (DTensor) parameters take foreach."""
    if any(name in strategy for name in SHARDING_STRATEGIES) or not params:
        return False
    return all(p.is_cuda and p.is_floating_point() and "DTensor" not in type(p.data).__name__ for p in params)


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


def warmup_length(config: OptimConfig, total_steps: int, max_epochs: int | None) -> int:
    """Warmup steps: ``warmup_steps``, else ``warmup_epochs`` (when the run's epochs are known), else
    ``warmup_fraction`` of ``total_steps``."""
    if config.warmup_steps is not None:
        return config.warmup_steps
    if config.warmup_epochs is not None and (max_epochs or 0) > 0:
        return int(config.warmup_epochs * total_steps / max_epochs)
    return int(config.warmup_fraction * total_steps)


def scaled_lr(config: OptimConfig, global_batch: int | None) -> float:
    """``lr``, scaled linearly from ``lr_base_batch`` to ``global_batch`` when ``lr_base_batch`` is set."""
    if config.lr_base_batch is None:
        return config.lr
    if global_batch is None:
        raise ValueError("optim.lr_base_batch needs a datamodule with a batch_size to scale the learning rate")
    return config.lr * global_batch / config.lr_base_batch


def parameter_groups(model: nn.Module, config: OptimConfig) -> list[dict]:
    """Two AdamW groups of ``model``'s trainable parameters: with weight decay (matrices, kernels) and without (norm /
    DyT parameters, biases, 1-D tensors, and what a submodule's ``no_weight_decay()`` names); one group when
    ``no_decay_norms_and_biases`` is off."""
    if not config.no_decay_norms_and_biases:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": config.weight_decay}]
    no_decay_ids = set()
    for module in model.modules():
        if describe_norm(module) is not None:
            no_decay_ids.update(id(p) for p in module.parameters(recurse=False))
        # timm's convention: a model lists parameters such as position embeddings that take no weight decay
        skip = getattr(module, "no_weight_decay", None)
        if callable(skip) and module is not model:
            names = skip()
            params = dict(module.named_parameters())
            no_decay_ids.update(id(params[n]) for n in names if n in params)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in no_decay_ids or p.ndim <= 1 or name.endswith(".bias"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


__all__ = ["SCHEDULES", "SHARDING_STRATEGIES", "OptimConfig", "fused_adamw_fits", "lr_lambda", "parameter_groups", "scaled_lr",
           "warmup_length"]
