"""DivergenceGuard: stop a run cleanly when its training loss turns non-finite or blows up, and say why."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn


class DivergenceGuard(pl.Callback):
    """Watches ``train/loss`` after every step.

    A run diverges when the loss is NaN/inf, or when its moving average exceeds ``max_loss_ratio`` times the lowest
    moving average seen so far (checked after ``min_steps`` steps). The trainer then stops at the end of that step
    and the result is recorded with status ``diverged``, like the "Diverge" entries of the paper's tables.
    """

    def __init__(self, max_loss_ratio: float | None = 10.0, min_steps: int = 20, smoothing: float = 0.9) -> None:
        if max_loss_ratio is not None and max_loss_ratio <= 1:
            raise ValueError(f"divergence.max_loss_ratio must be > 1 (or null to only catch NaN/inf); got {max_loss_ratio}")
        if not 0 <= smoothing < 1:
            raise ValueError(f"divergence.smoothing must be in [0, 1); got {smoothing}")
        self.max_loss_ratio = max_loss_ratio
        self.min_steps = min_steps
        self.smoothing = smoothing
        self.reason: str | None = None
        self._ema: float | None = None
        self._best_ema = math.inf
        self._seen = 0

    @property
    def diverged(self) -> bool:
        return self.reason is not None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None or self.diverged:
            return
        value = float(loss.detach().float().item()) if isinstance(loss, torch.Tensor) else float(loss)
        step = trainer.global_step
        if not math.isfinite(value):
            self._stop(trainer, f"non-finite training loss ({value}) at step {step}")
            return
        self._seen += 1
        self._ema = value if self._ema is None else self.smoothing * self._ema + (1 - self.smoothing) * value
        if self._seen >= self.min_steps:
            if self.max_loss_ratio is not None and self._ema > self.max_loss_ratio * self._best_ema:
                self._stop(trainer, f"training loss blew up at step {step}: moving average {self._ema:.4g} > "
                                    f"{self.max_loss_ratio:g} × its best {self._best_ema:.4g}")
                return
            self._best_ema = min(self._best_ema, self._ema)

    def _stop(self, trainer: pl.Trainer, reason: str) -> None:
        self.reason = reason
        trainer.should_stop = True
        rank_zero_warn(f"Run diverged: {reason}. Stopping; the result is recorded with status 'diverged'.")

    def state_dict(self) -> dict:
        return {"reason": self.reason, "ema": self._ema, "best_ema": self._best_ema, "seen": self._seen}

    def load_state_dict(self, state_dict: dict) -> None:
        self.reason = state_dict.get("reason")
        self._ema = state_dict.get("ema")
        self._best_ema = state_dict.get("best_ema", math.inf)
        self._seen = state_dict.get("seen", 0)
