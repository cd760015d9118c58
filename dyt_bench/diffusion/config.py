"""The config of the diffusion process (``model.diffusion``) and of how samples are drawn (``model.sampling``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dyt_bench.norms.spec import check_choice

from .process import SAMPLING_METHODS
from .schedules import BETA_SCHEDULES


@dataclass
class DiffusionConfig:
    """The diffusion process: ``num_timesteps`` steps of a linear β schedule (1e-4 → 0.02 at 1000 steps)."""

    num_timesteps: int = 1000
    beta_schedule: Literal["linear"] = "linear"

    def __post_init__(self) -> None:
        check_choice("model.diffusion.beta_schedule", self.beta_schedule, BETA_SCHEDULES)
        if self.num_timesteps < 2:
            raise ValueError(f"model.diffusion.num_timesteps must be >= 2; got {self.num_timesteps}")


@dataclass
class SamplingConfig:
    """How samples are drawn for FID and grids.

    ``steps``: respaced steps (DiT: 250). ``method``: ``ddpm`` (ancestral, the model's learned variance) or ``ddim``
    (``eta`` = 0: deterministic). ``cfg_scale``: classifier-free guidance scale (1 = none; DiT reports FID both at 1
    and 1.5). ``clip_denoised``: clip the predicted x_0 to [-1, 1] at every step; default: on in pixel space, off for
    latents. ``batch_size``: images per sampling batch.
    """

    steps: int = 250
    method: Literal["ddpm", "ddim"] = "ddpm"
    eta: float = 0.0
    cfg_scale: float = 1.0
    clip_denoised: bool | None = None
    batch_size: int = 64

    def __post_init__(self) -> None:
        check_choice("model.sampling.method", self.method, SAMPLING_METHODS)
        if self.steps < 1:
            raise ValueError(f"model.sampling.steps must be >= 1; got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"model.sampling.batch_size must be >= 1; got {self.batch_size}")
        if self.cfg_scale < 0:
            raise ValueError(f"model.sampling.cfg_scale must be >= 0; got {self.cfg_scale}")
        if not 0 <= self.eta <= 1:
            raise ValueError(f"model.sampling.eta must be in [0, 1]; got {self.eta}")


__all__ = ["DiffusionConfig", "SamplingConfig"]
