"""AlphaTracker: each DyT layer's α next to 1/std of its input, per validation epoch (the paper's Figures 3–4)."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only

from .norm_hooks import NormInputHooks
from .run_files import run_dir, write_csv

CSV_NAME = "alpha_tracker.csv"
CSV_FIELDS = ("epoch", "step", "layer", "alpha", "input_std", "inv_std")


class InputStats:
    """Running mean and standard deviation of every element a layer receives (float64 sums)."""

    def __init__(self, n: int = 0, total: float = 0.0, total_sq: float = 0.0) -> None:
        self.n = n
        self.total = total
        self.total_sq = total_sq

    @classmethod
    def of(cls, x: torch.Tensor) -> InputStats:
        """The statistics of one tensor."""
        stats = cls()
        stats.update(x)
        return stats

    def update(self, x: torch.Tensor) -> None:
        xd = x.detach().double()
        self.n += xd.numel()
        self.total += float(xd.sum())
        self.total_sq += float((xd * xd).sum())

    def __add__(self, other: InputStats) -> InputStats:
        return InputStats(self.n + other.n, self.total + other.total, self.total_sq + other.total_sq)

    @property
    def std(self) -> float:
        if self.n < 2:
            return float("nan")
        mean = self.total / self.n
        var = max(0.0, self.total_sq / self.n - mean * mean) * self.n / (self.n - 1)
        return math.sqrt(var)


def pearson(a: list[float], b: list[float]) -> float:
    """Pearson correlation of two equally long lists (NaN when undefined)."""
    if len(a) < 2:
        return float("nan")
    ta, tb = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    da, db = ta - ta.mean(), tb - tb.mean()
    denom = float(da.norm() * db.norm())
    return float((da * db).sum()) / denom if denom > 0 else float("nan")


class AlphaTracker(pl.Callback):
    """At each validation epoch, records every point-wise norm layer's α and 1/std of its input.

    The input statistics come from the first ``num_batches`` validation batches (all elements of the layer's input).
    Values go to the logger (``alpha/<layer>``, ``inv_std/<layer>``) and to ``<run dir>/alpha_tracker.csv``. When
    fit ends, two figures are written beside the CSV: α against 1/std across layers for the last epoch with the
    Pearson correlation in the title (``alpha_vs_inv_std.png``), and α and 1/std over epochs for ``layers``
    (default: first, middle and last; ``alpha_over_training.png``).
    """

    def __init__(self, num_batches: int = 4, layers: list[str] | None = None, log_to_logger: bool = True) -> None:
        if num_batches < 1:
            raise ValueError(f"alpha_tracker.num_batches must be >= 1; got {num_batches}")
        self.num_batches = num_batches
        self.layers = layers
        self.log_to_logger = log_to_logger
        self.rows: list[dict] = []
        self._hooks: NormInputHooks | None = None
        self._batches = 0

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._batches = 0
        self._hooks = NormInputHooks(pl_module, lambda module, x: InputStats.of(x), first_only=False).attach()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._batches += 1
        if self._hooks is not None and self._batches >= self.num_batches:
            self._hooks.remove()  # enough batches: the rest of the epoch runs without hooks

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        hooks, self._hooks = self._hooks, None
        if hooks is not None:
            hooks.remove()
        if trainer.sanity_checking or hooks is None or not hooks.layers:
            return
        metrics = {}
        for name, layer in hooks.layers.items():
            stats = sum(hooks.results.get(name, []), InputStats())
            alpha = float(layer.alpha.detach().float().item())
            inv_std = 1.0 / stats.std if stats.std > 0 else float("nan")
            self.rows.append({"epoch": trainer.current_epoch, "step": trainer.global_step, "layer": name,
                              "alpha": alpha, "input_std": stats.std, "inv_std": inv_std})
            metrics[f"alpha/{name}"] = alpha
            metrics[f"inv_std/{name}"] = inv_std
        if self.log_to_logger and trainer.logger is not None:
            trainer.logger.log_metrics(metrics, step=trainer.global_step)
        self._write_csv(trainer)

    @rank_zero_only
    def _write_csv(self, trainer: pl.Trainer) -> None:
        write_csv(run_dir(trainer) / CSV_NAME, self.rows, CSV_FIELDS)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.rows:
            self.plot(run_dir(trainer))

    @rank_zero_only
    def plot(self, out_dir: Path) -> dict[str, Path]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out_dir.mkdir(parents=True, exist_ok=True)
        last_epoch = max(r["epoch"] for r in self.rows)
        last = [r for r in self.rows if r["epoch"] == last_epoch]
        r = pearson([x["inv_std"] for x in last], [x["alpha"] for x in last])
        fig, ax = plt.subplots(figsize=(4.5, 4))
        sc = ax.scatter([x["inv_std"] for x in last], [x["alpha"] for x in last], c=range(len(last)), cmap="viridis")
        fig.colorbar(sc, ax=ax, label="layer (input → output)")
        ax.set_xlabel("1 / std of the layer's input")
        ax.set_ylabel("α")
        ax.set_title(f"α vs 1/std across layers (epoch {last_epoch}), Pearson r = {r:.3f}", fontsize=9)
        fig.tight_layout()
        scatter_path = out_dir / "alpha_vs_inv_std.png"
        fig.savefig(scatter_path, dpi=130)
        plt.close(fig)

        names = list(dict.fromkeys(x["layer"] for x in self.rows))
        chosen = [n for n in names if any(sel in n for sel in self.layers)] if self.layers else \
            sorted({names[0], names[len(names) // 2], names[-1]}, key=names.index)
        fig, axes = plt.subplots(1, len(chosen), figsize=(3.6 * len(chosen), 3.2), squeeze=False)
        for ax, name in zip(axes[0], chosen, strict=True):
            rows = [x for x in self.rows if x["layer"] == name]
            epochs = [x["epoch"] for x in rows]
            ax.plot(epochs, [x["alpha"] for x in rows], label="α")
            ax.plot(epochs, [x["inv_std"] for x in rows], "--", label="1/std")
            ax.set_title(name, fontsize=8)
            ax.set_xlabel("epoch")
            ax.legend(fontsize=7)
        fig.tight_layout()
        curve_path = out_dir / "alpha_over_training.png"
        fig.savefig(curve_path, dpi=130)
        plt.close(fig)
        return {"scatter": scatter_path, "curves": curve_path}
