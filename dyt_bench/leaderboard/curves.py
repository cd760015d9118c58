"""What a table's numbers do not show: each cell's validation curve (the metric against the step, read from every run's
metrics CSV, mean ± std over seeds; one PNG per table), and the throughput and peak memory its runs recorded.

The runs of a cell are found again from the table's value labels (``Record.labels``, set when the table was built).
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from dyt_bench.grid.spec import ATTEMPTS_DIR
from dyt_bench.leaderboard.collect import Record
from dyt_bench.leaderboard.tables import Labels, Options, Table

METRICS_FILE = "metrics.csv"  # what Lightning's CSVLogger writes into its log directory
STEP_COLUMN = "step"
RESOURCES = ("throughput", "memory")  # the resource columns a leaderboard can show (--show)

CellKey = tuple[Labels, Labels]


@dataclass
class Curve:
    """One run's validation metric against the optimizer step (sorted by step; the last value logged at a step)."""

    steps: list[float]
    values: list[float]
    seed: int | None = None


@dataclass
class Band:
    """A cell's curves combined: at each step, the mean and std over the seeds whose runs reached it."""

    steps: list[float]
    mean: list[float]
    std: list[float]  # 0 where one run reached the step
    n: list[int]
    runs: int  # runs with a curve


# ---------------------------------------------------------------------------------------------------------------
# The runs of each cell
# ---------------------------------------------------------------------------------------------------------------
def cell_records(table: Table, records: list[Record]) -> dict[CellKey, list[Record]]:
    """The records behind each cell of ``table``: same grid and task, and the cell's value label on every axis."""
    out: dict[CellKey, list[Record]] = {}
    mine = [r for r in records if (r.grid.name if r.grid else None) == table.grid and r.result.task == table.task]
    for key, cell in table.cells.items():
        out[key] = [r for r in mine if r.labels and all(r.labels.get(k) == v for k, v in cell.labels.items())]
    return out


# ---------------------------------------------------------------------------------------------------------------
# Curves
# ---------------------------------------------------------------------------------------------------------------
def metrics_file(record: Record) -> Path | None:
    """The run's metrics CSV: ``metrics.csv`` beside its result.json, else the newest one below its directory
    (e.g. ``lightning_logs/version_0/``), leaving out a cell's earlier attempts."""
    run_dir = record.path.parent
    direct = run_dir / METRICS_FILE
    if direct.is_file():
        return direct
    found = [p for p in run_dir.rglob(METRICS_FILE) if ATTEMPTS_DIR not in p.relative_to(run_dir).parts]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _number(text: str | None) -> float | None:
    if text is None or text.strip() == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value


def read_curve(path: Path, metric: str) -> Curve | None:
    """``metric`` against ``step`` from a metrics CSV (rows where the metric is empty skipped); None if the file has
    no such column or no value. A value that is not finite (a diverged run) ends the curve."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or metric not in reader.fieldnames or STEP_COLUMN not in reader.fieldnames:
            return None
        by_step: dict[float, float] = {}
        for row in reader:
            value, step = _number(row.get(metric)), _number(row.get(STEP_COLUMN))
            if value is None or step is None:
                continue
            if not math.isfinite(value):
                break
            by_step[step] = value
    if not by_step:
        return None
    steps = sorted(by_step)
    return Curve(steps, [by_step[s] for s in steps])


def band(curves: list[Curve]) -> Band | None:
    """Mean ± std over ``curves`` at every step any of them logged; a curve counts at the steps inside its own range,
    linearly interpolated between its points (runs validating at other steps still line up)."""
    import numpy as np

    curves = [c for c in curves if c.steps]
    if not curves:
        return None
    grid = np.array(sorted({s for c in curves for s in c.steps}), dtype=float)
    stack = np.full((len(curves), len(grid)), np.nan)
    for i, c in enumerate(curves):
        inside = (grid >= c.steps[0]) & (grid <= c.steps[-1])
        stack[i, inside] = np.interp(grid[inside], c.steps, c.values)
    n = (~np.isnan(stack)).sum(axis=0)
    mean = np.nanmean(stack, axis=0)
    centred = np.where(np.isnan(stack), 0.0, stack - mean)
    std = np.sqrt((centred ** 2).sum(axis=0) / np.maximum(n - 1, 1))
    std[n < 2] = 0.0
    return Band(grid.tolist(), mean.tolist(), std.tolist(), n.astype(int).tolist(), len(curves))


def table_bands(table: Table, records: list[Record], metric: str) -> tuple[dict[CellKey, Band], list[str]]:
    """Each cell's band of ``metric`` and notes on the runs without a metrics CSV or without the metric in it."""
    bands, without_file, without_metric = {}, 0, 0
    for key, recs in cell_records(table, records).items():
        curves = []
        for r in recs:
            path = metrics_file(r)
            if path is None:
                without_file += 1
                continue
            curve = read_curve(path, metric)
            if curve is None:
                without_metric += 1
                continue
            curve.seed = r.result.seed
            curves.append(curve)
        b = band(curves)
        if b is not None:
            bands[key] = b
    notes = []
    if without_file:
        notes.append(f"{without_file} run(s) have no {METRICS_FILE} (a logger other than CSVLogger, or results copied "
                     "without it): no curve")
    if without_metric:
        notes.append(f"{without_metric} run(s) never logged {metric} against {STEP_COLUMN}")
    return bands, notes


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()[:60] or "table"


def curve_paths(tables: list[Table], out: Path) -> list[Path]:
    """Where each table's curves go: ``out`` for a single table, else ``out``'s stem + ``-<n>-<title>`` per table."""
    if len(tables) == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i + 1}-{_slug(t.title)}{out.suffix or '.png'}") for i, t in enumerate(tables)]


def plot_curves(table: Table, records: list[Record], opts: Options, path: Path | IO[bytes]) -> list[str]:
    """One PNG of ``table``'s validation curves: a panel per row of the table, a line per column (mean over seeds)
    with a ±std band. Returns notes (runs without curves); writes the figure even when no cell has one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bands, notes = table_bands(table, records, opts.metric)
    rows = table.rows or [()]
    fig, axs = plt.subplots(1, len(rows), figsize=(max(5.0, 4.6 * len(rows)), 3.6), squeeze=False, sharey=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    for ax, rk in zip(axs[0], rows, strict=True):
        for j, ck in enumerate(table.cols or [()]):
            b = bands.get((rk, ck))
            if b is None:
                continue
            mean = [m * opts.scale for m in b.mean]
            lo = [(m - s) * opts.scale for m, s in zip(b.mean, b.std, strict=True)]
            hi = [(m + s) * opts.scale for m, s in zip(b.mean, b.std, strict=True)]
            colour = colours[j % len(colours)]
            label = (" · ".join(ck) if ck else opts.metric) + f" ({b.runs})"
            ax.plot(b.steps, mean, color=colour, label=label, lw=1.6)
            ax.fill_between(b.steps, lo, hi, color=colour, alpha=0.2, lw=0)
        ax.set_title(" · ".join(rk) if rk else table.title, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no metrics CSV", transform=ax.transAxes, ha="center", va="center", color="grey")
    axs[0, 0].set_ylabel(opts.metric + (f" ×{opts.scale:g}" if opts.scale != 1 else ""))
    fig.suptitle(f"{table.title}: {opts.metric} during training, mean ± std over seeds (runs)", fontsize=9)
    if isinstance(path, Path):
        path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight", format="png")
    plt.close(fig)
    return notes


def write_curves(tables: list[Table], records: list[Record], opts: Options, out: Path) -> list[tuple[Path, list[str]]]:
    """Every table's curves PNG (see ``curve_paths``) and its notes."""
    return [(path, plot_curves(t, records, opts, path)) for t, path in zip(tables, curve_paths(tables, out),
                                                                          strict=True)]


# ---------------------------------------------------------------------------------------------------------------
# Throughput and memory
# ---------------------------------------------------------------------------------------------------------------
def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return sum(values) / len(values) if values else None


def resources(recs: list[Record]) -> dict[str, Any]:
    """Mean training throughput (samples/s) and mean peak memory (MB) of the runs that recorded them, and how many."""
    samples = [r.result.throughput.get("train_samples_per_s") for r in recs if r.result.throughput]
    memory = [r.result.peak_memory_mb for r in recs if r.result.peak_memory_mb is not None]
    return {"samples_per_s": _mean(samples), "samples_per_s_runs": len([s for s in samples if s is not None]),
            "peak_memory_mb": _mean(memory), "peak_memory_runs": len(memory),
            "devices": sorted({r.result.device for r in recs if r.result.device})}


def table_resources(table: Table, records: list[Record]) -> dict[CellKey, dict[str, Any]]:
    return {key: resources(recs) for key, recs in cell_records(table, records).items()}


def resource_lines(summary: dict[str, Any] | None, show: tuple[str, ...]) -> list[str]:
    """The lines a cell gets for ``--show throughput,memory``."""
    if not summary:
        return []
    parts = []
    if "throughput" in show and summary.get("samples_per_s") is not None:
        parts.append(f"{summary['samples_per_s']:,.0f} samples/s")
    if "memory" in show and summary.get("peak_memory_mb") is not None:
        parts.append(f"peak {summary['peak_memory_mb']:,.0f} MB")
    return [" · ".join(parts)] if parts else []


__all__ = ["METRICS_FILE", "RESOURCES", "Band", "Curve", "band", "cell_records", "curve_paths", "metrics_file",
           "plot_curves", "read_curve", "resource_lines", "resources", "table_bands", "table_resources",
           "write_curves"]
