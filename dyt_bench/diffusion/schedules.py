"""β schedules and timestep respacing of a diffusion process: DDPM's linear schedule and improved DDPM's even
respacing (e.g. 250 of 1000 steps)."""

from __future__ import annotations

import torch

BETA_SCHEDULES = ("linear",)


def linear_beta_schedule(num_timesteps: int) -> torch.Tensor:
    """DDPM's linear schedule from 1e-4 to 0.02, rescaled so that any number of steps spans the same noise range
    (float64)."""
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1; got {num_timesteps}")
    scale = 1000.0 / num_timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=torch.float64)


def space_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """``steps`` timesteps of the original ``num_timesteps``, evenly spaced and including the first and last (the
    improved-DDPM respacing DiT samples with, e.g. 250 of 1000)."""
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"sampling steps must be in [1, {num_timesteps}]; got {steps}")
    if steps == 1:
        return [0]
    stride = (num_timesteps - 1) / (steps - 1)
    return sorted({round(i * stride) for i in range(steps)})


__all__ = ["BETA_SCHEDULES", "linear_beta_schedule", "space_timesteps"]
