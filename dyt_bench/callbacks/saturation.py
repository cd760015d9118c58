"""SaturationMonitor: how much of each point-wise norm's input lands on the flat part of its curve during training.

A study of when removing LayerNorm helps ("When Does Removing LayerNorm Help?", 2026) reports that the fraction of
saturated activations early in training predicts whether DyT beats LayerNorm. This callback measures it cheaply.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only

from dyt_bench.norms import SquashNorm
from dyt_bench.ops.functions import FUNCTIONS

from .norm_hooks import NormInputHooks
from .run_files import run_dir, write_csv

CSV_NAME = "saturation.csv"
CSV_FIELDS = ("step", "layer", "saturated_fraction")
# 1 - 0.9²: the relative slope where |tanh| = 0.9, the default boundary of "saturated"
DEFAULT_THRESHOLD = 0.19


def relative_slope(z: torch.Tensor, fn: str) -> torch.Tensor:
    """f'(z) / max f' for each point-wise function (1 on the linear part, → 0 where the curve is flat)."""
    function = FUNCTIONS.get(fn)
    if function is None:
        raise ValueError(f"no slope for fn {fn!r}")
    return function.relative_slope(z)


def sample_elements(x: torch.Tensor, max_elements: int) -> torch.Tensor:
    """At most ``max_elements`` elements of ``x``, evenly strided over the whole tensor (a view, no full pass)."""
    flat = x.detach().reshape(-1)
    if flat.numel() <= max_elements:
        return flat
    return flat[:: flat.numel() // max_elements][:max_elements]


def saturated_fraction(layer: SquashNorm, x: torch.Tensor, threshold: float = DEFAULT_THRESHOLD,
                       max_elements: int | None = None) -> float:
    """Fraction of ``layer``'s input elements whose relative slope f'(α·x + s) / max f' is below ``threshold``."""
    xs = sample_elements(x, max_elements) if max_elements else x.detach().reshape(-1)
    z = layer.alpha.detach().float().reshape(()) * xs.float()
    if layer.shift is not None:
        z = z + layer.shift.detach().float().reshape(())
    return float((relative_slope(z, layer.fn) < threshold).float().mean()) if z.numel() else float("nan")


class SaturationMonitor(pl.Callback):
    """Every ``every_n_steps`` training steps, logs each point-wise norm layer's saturated fraction (``sat/<layer>``)
    and their mean (``sat/mean``), measured on at most ``max_elements`` strided elements of the layer's input, and
    keeps them in ``<run dir>/saturation.csv``; a plot over steps (``saturation.png``) is written when fit ends.

    ``threshold``: the relative slope below which an element counts as saturated (default 0.19: |tanh| > 0.9).
    """

    def __init__(self, every_n_steps: int = 50, threshold: float = DEFAULT_THRESHOLD, max_elements: int = 65536) -> None:
        if every_n_steps < 1:
            raise ValueError(f"saturation.every_n_steps must be >= 1; got {every_n_steps}")
        if not 0 < threshold <= 1:
            raise ValueError(f"saturation.threshold must be in (0, 1]; got {threshold}")
        self.every_n_steps, self.threshold, self.max_elements = every_n_steps, threshold, max_elements
        self.rows: list[dict] = []
        self._hooks: NormInputHooks | None = None
        self._step = 0

    def _measure(self, layer: SquashNorm, x: torch.Tensor) -> float:
        return saturated_fraction(layer, x, self.threshold, self.max_elements)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step % self.every_n_steps:
            return
        self._step = trainer.global_step
        self._hooks = NormInputHooks(pl_module, self._measure).attach()  # one value per layer: its first call

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int) -> None:
        hooks, self._hooks = self._hooks, None
        if hooks is None:
            return
        hooks.remove()
        current = hooks.results
        if not current:
            return
        metrics = {f"sat/{name}": value for name, value in current.items()}
        metrics["sat/mean"] = sum(current.values()) / len(current)
        pl_module.log_dict(metrics, on_step=True, on_epoch=False)
        self.rows.extend({"step": self._step, "layer": name, "saturated_fraction": value}
                         for name, value in current.items())
        self._write_csv(trainer)

    @rank_zero_only
    def _write_csv(self, trainer: pl.Trainer) -> None:
        write_csv(run_dir(trainer) / CSV_NAME, self.rows, CSV_FIELDS)

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.rows:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.5, 3.5))
        for name in dict.fromkeys(r["layer"] for r in self.rows):
            rows = [r for r in self.rows if r["layer"] == name]
            ax.plot([r["step"] for r in rows], [r["saturated_fraction"] for r in rows], lw=1, label=name)
        ax.set_xlabel("step")
        ax.set_ylabel(f"saturated fraction (slope < {self.threshold:g})")
        ax.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(run_dir(trainer) / "saturation.png", dpi=130)
        plt.close(fig)
