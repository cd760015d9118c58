"""DivergenceGuard: stop a run cleanly when its training loss turns non-finite or blows up, and say why.

The loss statistics stay on the loss's device (no host sync per step); every ``check_every_n_steps`` steps, and when
training ends, they are read once and the decision is taken jointly by every rank
(``trainer.strategy.reduce_boolean_decision``), so one rank's NaN stops all ranks at the same step."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn


class DivergenceGuard(pl.Callback):
    """Watches ``train/loss`` after every step.

    A run diverges when the loss is NaN/inf, or when its moving average exceeds ``max_loss_ratio`` times the lowest
    moving average seen so far (checked after ``min_steps`` steps). The trainer then stops at the next check and the
    result is recorded with status ``diverged``, like the "Diverge" entries of the paper's tables.
    """

    def __init__(self, max_loss_ratio: float | None = 10.0, min_steps: int = 20, smoothing: float = 0.9,
                 check_every_n_steps: int = 10) -> None:
        if max_loss_ratio is not None and max_loss_ratio <= 1:
            raise ValueError(f"divergence.max_loss_ratio must be > 1 (or null to only catch NaN/inf); got {max_loss_ratio}")
        if not 0 <= smoothing < 1:
            raise ValueError(f"divergence.smoothing must be in [0, 1); got {smoothing}")
        if check_every_n_steps < 1:
            raise ValueError(f"divergence.check_every_n_steps must be >= 1; got {check_every_n_steps}")
        self.max_loss_ratio = max_loss_ratio
        self.min_steps = min_steps
        self.smoothing = smoothing
        self.check_every_n_steps = check_every_n_steps
        self.reason: str | None = None
        self._state: torch.Tensor | None = None  # on device: [ema, best ema, seen, first bad step, kind, bad value]
        self._restored: list[float] | None = None

    @property
    def diverged(self) -> bool:
        return self.reason is not None

    # --- the per-step update: tensor ops only --------------------------------------------------------------------
    def _init_state(self, device: torch.device) -> torch.Tensor:
        values = self._restored or [math.nan, math.inf, 0.0, -1.0, 0.0, math.nan]
        self._restored = None
        return torch.tensor(values, dtype=torch.float64, device=device)

    def observe(self, loss: torch.Tensor, step: int) -> None:
        """Fold one step's loss into the device-side state (a NaN / inf, or a blow-up, is remembered with its step)."""
        value = loss.detach().to(torch.float64).reshape(())
        if self._state is None or self._state.device != value.device:
            self._state = self._init_state(value.device)
        ema, best, seen, first_bad, kind, bad_value = self._state.unbind()
        finite = torch.isfinite(value)
        not_yet = first_bad < 0
        new_seen = seen + finite.to(seen.dtype)
        new_ema = torch.where(torch.isnan(ema), value, self.smoothing * ema + (1 - self.smoothing) * value)
        new_ema = torch.where(finite, new_ema, ema)
        checked = finite & (new_seen >= self.min_steps)
        blew_up = torch.zeros_like(finite)
        if self.max_loss_ratio is not None:
            blew_up = checked & (new_ema > self.max_loss_ratio * best)
        new_best = torch.where(checked & ~blew_up, torch.minimum(best, new_ema), best)
        bad_now = not_yet & (~finite | blew_up)
        step_t = torch.full_like(first_bad, float(step))
        new_first = torch.where(bad_now, step_t, first_bad)
        new_kind = torch.where(bad_now, torch.where(finite, 2.0, 1.0).to(kind.dtype), kind)
        new_bad_value = torch.where(bad_now, torch.where(finite, new_ema, value), bad_value)
        self._state = torch.stack([new_ema, new_best, new_seen, new_first, new_kind, new_bad_value])

    # --- the joint decision: one host read every N steps ------------------------------------------------------
    def check(self, trainer: pl.Trainer) -> bool:
        """Read the state, agree across ranks (any rank diverged → all stop); True when the run diverged."""
        if self.diverged:
            return True
        local = self._state.tolist() if self._state is not None else None
        bad_here = local is not None and local[3] >= 0
        if not trainer.strategy.reduce_boolean_decision(bad_here, all=False):
            return False
        if bad_here:
            ema, best, _, step, kind, value = local
            if kind == 1.0:
                self.reason = f"non-finite training loss ({value}) at step {int(step)}"
            else:
                self.reason = (f"training loss blew up at step {int(step)}: moving average {value:.4g} > "
                               f"{self.max_loss_ratio:g} × its best {best:.4g}")
        else:
            self.reason = f"non-finite or blown-up training loss on another rank (checked at step {trainer.global_step})"
        trainer.should_stop = True
        rank_zero_warn(f"Run diverged: {self.reason}. Stopping; the result is recorded with status 'diverged'.")
        return True

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if self.diverged:
            return
        if loss is not None:
            if not isinstance(loss, torch.Tensor):
                loss = torch.tensor(float(loss))
            self.observe(loss, trainer.global_step)
        if trainer.global_step % self.check_every_n_steps == 0:  # the same steps on every rank: a collective is safe
            self.check(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check(trainer)  # whatever the last periodic check missed

    def state_dict(self) -> dict:
        state = self._state.tolist() if self._state is not None else self._restored
        return {"reason": self.reason, "state": state}

    def load_state_dict(self, state_dict: dict) -> None:
        self.reason = state_dict.get("reason")
        self._restored = state_dict.get("state")
        self._state = None
