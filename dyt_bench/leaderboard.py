"""``dyt-bench leaderboard PATH…``: tables computed only from ``result.json`` files — mean ± std over seeds, "Diverge"
entries, Δ against a baseline with a Welch t-test (or a bootstrap CI), the paper's numbers beside ours — printed in
the terminal or written as Markdown, CSV, JSON, HTML or a PNG bar chart.
"""

from __future__ import annotations

import argparse
import csv
import html
import io
import json
import math
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from dyt_bench.grid import (
    ATTEMPTS_DIR,
    GRID_SUMMARY_FILE,
    Axis,
    AxisValue,
    GridError,
    GridSpec,
    canonical,
    format_value,
    load_grid,
    parse_baseline,
    spec_from_summary,
)
from dyt_bench.results import RESULT_FILE, RunResult, read_result

FORMATS = ("terminal", "md", "csv", "json", "html", "png")
SUFFIX_FORMATS = {".md": "md", ".csv": "csv", ".json": "json", ".html": "html", ".htm": "html", ".png": "png",
                  ".txt": "terminal"}
MODES = ("max", "min")
TESTS = ("welch", "bootstrap")
VALUES = ("best", "final")
# Config keys that say where or how verbosely a run writes, not what it computes: never table axes.
NON_AXIS_KEYS = ("config", "seed_everything", "ckpt_path", "trainer.default_root_dir", "trainer.logger",
                 "trainer.callbacks", "trainer.enable_progress_bar", "trainer.enable_model_summary",
                 "trainer.enable_checkpointing", "trainer.log_every_n_steps", "__path__")
LOWER_IS_BETTER = ("loss", "err", "fid", "ppl", "perplexity", "wer", "nll")


class LeaderboardError(ValueError):
    """Bad input to the leaderboard; the message names the field and the allowed values."""


# ---------------------------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class CellStats:
    """One table cell: the metric over seeds of the finished, non-diverged runs, plus what else happened."""

    values: list[float] = field(default_factory=list)
    seeds: list[int | None] = field(default_factory=list)
    diverged: int = 0
    failed: int = 0
    interrupted: int = 0
    missing: int = 0  # completed runs without the metric
    diverged_best: list[float] = field(default_factory=list)  # best metric seen before diverging, where logged

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def runs(self) -> int:
        return self.n + self.diverged

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof=1); NaN with fewer than two runs."""
        return float(np.std(self.values, ddof=1)) if self.n >= 2 else math.nan


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided Welch t-test p-value (unequal variances); None when either side has fewer than two runs."""
    if len(a) < 2 or len(b) < 2:
        return None
    import warnings

    from scipy import stats

    with warnings.catch_warnings():  # near-identical seeds (e.g. all at chance) trip a precision warning, not an error
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return None if math.isnan(p) else p


def bootstrap_ci(a: list[float], b: list[float], confidence: float = 0.95, n_resamples: int = 9999,
                 seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap CI of mean(a) − mean(b), resampling each side independently; None below two runs each."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy import stats

    def diff(x, y, axis):
        return np.mean(x, axis=axis) - np.mean(y, axis=axis)

    res = stats.bootstrap((np.asarray(a, float), np.asarray(b, float)), diff, n_resamples=n_resamples,
                          confidence_level=confidence, method="percentile", vectorized=True,
                          rng=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return None if math.isnan(lo) or math.isnan(hi) else (lo, hi)


# ---------------------------------------------------------------------------------------------------------------
# Collecting results
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Record:
    path: Path
    result: RunResult
    grid: GridSpec | None
    labels: dict[str, str] = field(default_factory=dict)  # axis name → value label


def find_results(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob(RESULT_FILE) if ATTEMPTS_DIR not in p.relative_to(root).parts[:-1])


def _grid_of(path: Path, cache: dict[Path, GridSpec | None]) -> GridSpec | None:
    """The grid a result belongs to: the nearest ancestor directory holding a grid.json."""
    for parent in list(path.parents)[:4]:
        if parent in cache:
            return cache[parent]
        summary = parent / GRID_SUMMARY_FILE
        if summary.is_file():
            try:
                spec = spec_from_summary(json.loads(summary.read_text(encoding="utf-8")), parent)
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise LeaderboardError(f"{summary} is not a readable grid summary: {e}") from None
            cache[parent] = spec
            return spec
    return None


def collect(paths: list[str]) -> tuple[list[Record], list[str]]:
    """Read every result.json under ``paths`` (grid files given among them lend their axes, baseline, paper values)."""
    specs: list[GridSpec] = []
    roots: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.suffix in (".yaml", ".yml") and path.is_file():
            try:
                specs.append(load_grid(path))
            except GridError as e:
                raise LeaderboardError(f"grid file {path}: {e}") from None
        elif path.exists():
            roots.append(path)
        else:
            raise LeaderboardError(f"no such file or directory: {p} (give result directories, result.json files or "
                                   "grid files)")
    if not roots:
        roots = [s.output for s in specs]
        missing = [str(r) for r in roots if not r.exists()]
        if missing:
            raise LeaderboardError(f"no results yet under {', '.join(missing)}; run `dyt-bench grid <grid file>` first")
    by_name = {s.name: s for s in specs}
    cache: dict[Path, GridSpec | None] = {}
    records, notes = [], []
    seen: set[Path] = set()
    for root in roots:
        for path in find_results(root):
            path = path.resolve()
            if path in seen:
                continue
            seen.add(path)
            try:
                result = read_result(path)
            except (OSError, ValueError, TypeError) as e:
                notes.append(f"skipped unreadable {path}: {e}")
                continue
            grid = _grid_of(path, cache)
            if grid is not None and grid.name in by_name:
                grid = by_name[grid.name]  # the grid file may carry newer paper values / leaderboard settings
            elif grid is None and len(specs) == 1:
                grid = specs[0]
            records.append(Record(path, result, grid))
    if not records:
        raise LeaderboardError(f"no {RESULT_FILE} found under {', '.join(map(str, roots))}")
    return records, notes


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a resolved config, ``init_args`` levels dropped (``model.init_args.norm.kind`` → ``model.norm.kind``)."""
    out: dict[str, Any] = {}
    if isinstance(config, dict):
        for k, v in config.items():
            key = prefix if k == "init_args" else (f"{prefix}.{k}" if prefix else str(k))
            if any(key == n or key.startswith(n + ".") for n in NON_AXIS_KEYS):
                continue
            if isinstance(v, dict) and v:
                out.update(_flatten(v, key))
            else:
                out[key] = v
    return out


def infer_axes(records: list[Record]) -> list[Axis]:
    """Config keys whose values differ between the results: the axes of a table without a grid file."""
    flats = [_flatten(r.result.config) for r in records]
    keys: list[str] = []
    for f in flats:
        keys += [k for k in f if k not in keys]
    axes = []
    for key in keys:
        values: dict[str, Any] = {}
        for f in flats:
            if key in f:
                values.setdefault(canonical(f[key]), f[key])
        if len(values) > 1:
            ordered = sorted(values.values(), key=lambda v: (not isinstance(v, (int, float)) or isinstance(v, bool),
                                                             v if isinstance(v, (int, float)) else 0, format_value(v)))
            axes.append(Axis(key, tuple(AxisValue(format_value(v), {key: v}) for v in ordered)))
    return axes


# ---------------------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class TableCell:
    labels: dict[str, str]
    stats: CellStats
    is_baseline: bool = False
    delta: float | None = None
    p_value: float | None = None
    ci: tuple[float, float] | None = None
    significant: bool | None = None
    paper: Any = None
    best_in_row: bool = False
    argbest: str | None = None  # with --argbest: the winning value of that axis
    runner_up: str | None = None


@dataclass
class Table:
    title: str
    grid: str | None
    task: str
    facet: dict[str, str]
    row_axes: list[Axis]
    col_axes: list[Axis]
    rows: list[tuple[str, ...]]
    cols: list[tuple[str, ...]]
    cells: dict[tuple[tuple[str, ...], tuple[str, ...]], TableCell]
    notes: list[str] = field(default_factory=list)


@dataclass
class Options:
    metric: str = "val/acc1"
    value: str = "best"
    mode: str = "max"
    scale: float = 1.0
    digits: int = 4
    test: str = "welch"
    alpha: float = 0.05
    rows: list[str] | None = None
    cols: list[str] | None = None
    argbest: str | None = None
    baseline: dict[str, str] | None = None  # from --baseline AXIS=VALUE (replaces the grid's)


def _metric_of(result: RunResult, metric: str, value: str) -> float | None:
    source = result.metrics_best if value == "best" else result.metrics_final
    v = source.get(metric)
    if v is None and value == "best":
        v = result.metrics_final.get(metric)  # a metric without a tracked best: its final value
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _is_better(a: float, b: float, mode: str) -> bool:
    return a > b if mode == "max" else a < b


def _stats(records: list[Record], opts: Options) -> CellStats:
    # one result per seed: the newest, should a seed appear twice (e.g. the same run copied elsewhere)
    newest: dict[Any, Record] = {}
    for r in records:
        key = r.result.seed if r.result.seed is not None else id(r)
        if key not in newest or r.result.finished_at > newest[key].result.finished_at:
            newest[key] = r
    s = CellStats()
    for r in sorted(newest.values(), key=lambda r: (r.result.seed is None, r.result.seed or 0)):
        res = r.result
        if res.status == "diverged":
            s.diverged += 1
            v = _metric_of(res, opts.metric, "best")
            if v is not None:
                s.diverged_best.append(v)
        elif res.status == "completed":
            v = _metric_of(res, opts.metric, opts.value)
            if v is None:
                s.missing += 1
            else:
                s.values.append(v)
                s.seeds.append(res.seed)
        elif res.status == "failed":
            s.failed += 1
        else:
            s.interrupted += 1
    return s


def _axis_by_name(axes: list[Axis], name: str, where: str) -> Axis:
    for a in axes:
        if name in (a.name, a.short):
            return a
    raise LeaderboardError(f"{where}: unknown axis {name!r}; the axes of this table are: "
                           + (", ".join(a.name for a in axes) or "(none: every result has the same config)"))


def _fid_extractor(result: RunResult) -> str | None:
    """The id of the feature extractor behind a run's FID (diffusion results record it), else None."""
    info = (result.config or {}).get("fid_extractor")
    return str(info.get("id") or info.get("name")) if isinstance(info, dict) else None


def build_tables(records: list[Record], opts: Options) -> list[Table]:
    """Group results by grid and task, place each on its axes, and compute every cell's statistics. For an FID
    metric, runs whose FIDs come from different feature extractors go to separate tables: those numbers are not
    comparable."""
    is_fid = "fid" in opts.metric.lower()
    groups: dict[tuple[str | None, str, str | None], list[Record]] = {}
    for r in records:
        extractor = _fid_extractor(r.result) if is_fid else None
        groups.setdefault((r.grid.name if r.grid else None, r.result.task, extractor), []).append(r)
    tables = []
    for (grid_name, task, extractor), recs in sorted(groups.items(),
                                                     key=lambda kv: (kv[0][0] or "", kv[0][1], kv[0][2] or "")):
        spec = recs[0].grid
        axes = list(spec.axes) if spec else infer_axes(recs)
        notes = []
        placed = []
        for r in recs:
            labels = {}
            for axis in axes:
                match = next((v for v in axis.values if v.matches(r.result.config)), None)
                if match is None:
                    break
                labels[axis.name] = match.label
            else:
                r.labels = labels
                placed.append(r)
        if len(placed) < len(recs):
            notes.append(f"{len(recs) - len(placed)} result(s) match no value of this grid's axes and are left out")
        lb = spec.leaderboard if spec else {}
        where = f"table {grid_name or task}"
        argbest = _axis_by_name(axes, opts.argbest, f"--argbest ({where})") if opts.argbest else None
        rest = [a for a in axes if a is not argbest]
        if opts.rows is not None:
            row_axes = [_axis_by_name(axes, n, f"--rows ({where})") for n in opts.rows]
        elif lb.get("rows") and not (argbest and argbest.name in lb["rows"]):
            row_axes = [_axis_by_name(axes, n, f"leaderboard.rows ({where})") for n in lb["rows"]]
        else:
            row_axes = rest[:1] if len(rest) >= 2 else []
        if opts.cols is not None:
            col_axes = [_axis_by_name(axes, n, f"--cols ({where})") for n in opts.cols]
        elif lb.get("cols") and not (argbest and argbest.name in lb["cols"]):
            col_axes = [_axis_by_name(axes, n, f"leaderboard.cols ({where})") for n in lb["cols"]]
        else:
            col_axes = [a for a in rest if a not in row_axes]
        overlap = {a.name for a in row_axes} & {a.name for a in col_axes}
        if overlap:
            raise LeaderboardError(f"{where}: axis {', '.join(sorted(overlap))} is both a row and a column axis")
        if argbest and (argbest in row_axes or argbest in col_axes):
            raise LeaderboardError(f"{where}: --argbest {argbest.name} cannot also be a row or column axis")
        facet_axes = [a for a in rest if a not in row_axes and a not in col_axes]
        if opts.baseline is not None:
            try:
                baseline = parse_baseline(opts.baseline, partial(_axis_by_name, axes, where=f"--baseline ({where})"))
            except GridError as e:
                raise LeaderboardError(f"--baseline ({where}): {e}") from None
        else:
            baseline = list(spec.baseline) if spec else []
        paper = spec.paper if spec else {}
        paper_values = paper.get("values", []) if paper and paper.get("metric") in (None, opts.metric) else []
        if paper and paper.get("values") and not paper_values:
            notes.append(f"the paper's values are for {paper.get('metric')}, not {opts.metric}; not shown")

        def records_for(assignment: dict[str, str], placed: list[Record] = placed) -> list[Record]:
            return [r for r in placed if all(r.labels.get(k) == v for k, v in assignment.items())]

        for facet in _product(facet_axes):
            rows, cols = _product(row_axes), _product(col_axes)
            row_keys = [tuple(d[a.name] for a in row_axes) for d in rows]
            col_keys = [tuple(d[a.name] for a in col_axes) for d in cols]
            cells: dict[tuple[tuple[str, ...], tuple[str, ...]], TableCell] = {}
            for rd, rk in zip(rows, row_keys, strict=True):
                for cd, ck in zip(cols, col_keys, strict=True):
                    assignment = {**facet, **rd, **cd}
                    if argbest is not None:
                        cells[(rk, ck)] = _argbest_cell(assignment, argbest, records_for, opts)
                        continue
                    cell = TableCell(assignment, _stats(records_for(assignment), opts))
                    cell.paper = _paper_value(paper_values, assignment)
                    entry = next((e for e in baseline if all(assignment.get(k) == v for k, v in e["when"].items())),
                                 None)
                    if entry is not None:
                        base_assignment = {**assignment, **entry["ref"]}
                        cell.is_baseline = base_assignment == assignment
                        if not cell.is_baseline:
                            base = _stats(records_for(base_assignment), opts)
                            _compare(cell, base, opts)
                    cells[(rk, ck)] = cell
            for rk in row_keys:
                row_cells = [cells[(rk, ck)] for ck in col_keys if cells[(rk, ck)].stats.n > 0]
                if len(row_cells) > 1:
                    best = row_cells[0].stats.mean
                    for c in row_cells[1:]:
                        if _is_better(c.stats.mean, best, opts.mode):
                            best = c.stats.mean
                    for c in row_cells:
                        c.best_in_row = c.stats.mean == best
            title = " · ".join(x for x in (grid_name, task) if x)
            if extractor:
                title += f" · FID features {extractor}"
            if facet:
                title += " · " + ", ".join(f"{_short(axes, k)}={v}" for k, v in facet.items())
            table_notes = list(notes)
            if baseline and argbest is None:
                table_notes.append("Δ vs baseline " + "; ".join(
                    ", ".join(f"{_short(axes, k)}={v}" for k, v in e["ref"].items())
                    + (" for " + ", ".join(f"{_short(axes, k)}={v}" for k, v in e["when"].items()) if e["when"] else "")
                    for e in baseline))
            if paper_values and paper.get("source"):
                table_notes.append(f"paper: {paper['source']}")
            tables.append(Table(title, grid_name, task, facet, row_axes, col_axes, row_keys, col_keys, cells,
                                table_notes))
    return tables


def _short(axes: list[Axis], name: str) -> str:
    shorts = [a.short for a in axes]
    short = name.rsplit(".", 1)[-1]
    return short if shorts.count(short) == 1 else name


def _product(axes: list[Axis]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = [{}]
    for a in axes:
        out = [{**d, a.name: v.label} for d in out for v in a.values]
    return out


def _paper_value(entries: list[dict[str, Any]], assignment: dict[str, str]) -> Any:
    for e in entries:
        if all(assignment.get(k) == v for k, v in e.items() if k != "value"):
            return e["value"]
    return None


def _compare(cell: TableCell, base: CellStats, opts: Options) -> None:
    if cell.stats.n == 0 or base.n == 0:
        return
    cell.delta = cell.stats.mean - base.mean
    if opts.test == "welch":
        cell.p_value = welch_p(cell.stats.values, base.values)
        if cell.p_value is not None:
            cell.significant = cell.p_value < opts.alpha
    else:
        cell.ci = bootstrap_ci(cell.stats.values, base.values, confidence=1 - opts.alpha)
        if cell.ci is not None:
            cell.significant = not (cell.ci[0] <= 0 <= cell.ci[1])


def _argbest_cell(assignment: dict[str, str], axis: Axis, records_for, opts: Options) -> TableCell:
    candidates = [(v.label, _stats(records_for({**assignment, axis.name: v.label}), opts)) for v in axis.values]
    ranked = [c for c in candidates if c[1].n > 0]
    ranked.sort(key=lambda c: c[1].mean, reverse=opts.mode == "max")
    if not ranked:
        merged = CellStats()
        for _, s in candidates:
            merged.diverged += s.diverged
            merged.failed += s.failed
            merged.interrupted += s.interrupted
        return TableCell(assignment, merged)
    label, stats = ranked[0]
    cell = TableCell({**assignment, axis.name: label}, stats, argbest=label)
    if len(ranked) > 1:  # is the winner distinguishable from the runner-up?
        cell.runner_up = ranked[1][0]
        _compare(cell, ranked[1][1], opts)
    return cell


# ---------------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------------
def _num(x: float, opts: Options, signed: bool = False) -> str:
    v = x * opts.scale
    return f"{v:+.{opts.digits}f}".replace("-", "−") if signed else f"{v:.{opts.digits}f}"


def _p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}" if p < 0.1 else f"p={p:.2f}"  # 3 decimals near 0.05


def cell_lines(cell: TableCell, opts: Options, axis_short: str | None = None) -> list[str]:
    """The text of one cell: value line, then comparison and paper lines where there are any."""
    s = cell.stats
    lines = []
    if s.n:
        main = _num(s.mean, opts)
        main += f" ± {_num(s.std, opts)}" if s.n >= 2 else ""
        main += f" ({s.n})"
        if cell.argbest is not None:
            main = f"{axis_short or 'best'}={cell.argbest}: {main}"
        extra = []
        if s.diverged:
            extra.append(f"Diverge {s.diverged}/{s.runs}")
        if s.failed:
            extra.append(f"failed {s.failed}")
        if s.interrupted:
            extra.append(f"interrupted {s.interrupted}")
        if s.missing:
            extra.append(f"no metric {s.missing}")
        lines.append(main + (" · " + ", ".join(extra) if extra else ""))
    elif s.diverged:
        lines.append("Diverge" + (f" ({s.diverged}/{s.diverged})" if s.diverged > 1 else "")
                     + (f" · failed {s.failed}" if s.failed else ""))
    elif s.failed or s.interrupted or s.missing:
        parts = [f"{k} {v}" for k, v in (("failed", s.failed), ("interrupted", s.interrupted),
                                          ("no metric", s.missing)) if v]
        lines.append(", ".join(parts))
    else:
        lines.append("—")
    if cell.is_baseline:
        lines.append("baseline")
    elif cell.delta is not None:
        cmp = f"Δ {_num(cell.delta, opts, signed=True)}"
        if cell.runner_up is not None:
            cmp += f" vs {cell.runner_up}"
        if cell.p_value is not None:
            cmp += f" {_p(cell.p_value)}"
        if cell.ci is not None:
            cmp += f" [{_num(cell.ci[0], opts, True)}, {_num(cell.ci[1], opts, True)}]"
        if cell.significant is False:
            cmp += " n.s."
        elif cell.significant is None:
            cmp += " (n<2)"
        lines.append(cmp)
    if cell.paper is not None:
        lines.append(f"paper {cell.paper}")
    return lines


def _header(axes: list[Axis], all_axes_short) -> str:
    return " / ".join(all_axes_short(a.name) for a in axes)


def _legend(opts: Options) -> str:
    test = ("Welch t-test p" if opts.test == "welch" else f"bootstrap {100 * (1 - opts.alpha):g}% CI of Δ")
    scale = f" ×{opts.scale:g}" if opts.scale != 1 else ""
    return (f"{opts.metric} ({opts.value}{scale}, {opts.mode} is better): mean ± std (n seeds, sample std); "
            f"Diverge = every seed diverged; ★ best in row; Δ with {test}; n.s. = not significant at α={opts.alpha:g}")


def _table_grid(table: Table, opts: Options, axes_short) -> tuple[list[str], list[tuple[str, list[tuple[TableCell, list[str]]]]]]:
    """Header and rows of a table: each row is its label and, per column, the cell and its text lines."""
    argbest_short = opts.argbest.rsplit(".", 1)[-1] if opts.argbest else None
    header = [_header(table.row_axes, axes_short) or " "]
    header += [" · ".join(ck) if ck else opts.metric for ck in table.cols]
    body = []
    for rk in table.rows:
        row = []
        for ck in table.cols:
            cell = table.cells[(rk, ck)]
            lines = cell_lines(cell, opts, argbest_short)
            if cell.best_in_row:
                lines[0] = "★ " + lines[0]
            row.append((cell, lines))
        body.append((" · ".join(rk) if rk else "all", row))
    return header, body


def render_terminal(tables: list[Table], opts: Options, file=None, width: int | None = None) -> None:
    from rich.console import Console
    from rich.table import Table as RichTable
    from rich.text import Text

    console = Console(file=file, width=width, force_terminal=None if file is None else False)
    for table in tables:
        short = _shorter(table)
        header, body = _table_grid(table, opts, short)
        rt = RichTable(title=table.title, title_justify="left", title_style="bold", show_lines=True)
        for i, h in enumerate(header):
            rt.add_column(h, justify="left" if i == 0 else "right")
        for row_label, row in body:
            cells = [Text(row_label, style="bold")]
            for cell, lines in row:
                text = Text()
                for j, line in enumerate(lines):
                    style = ""
                    if j == 0 and cell.best_in_row:
                        style = "bold green"
                    elif line.startswith("Diverge"):
                        style = "yellow"
                    elif line.startswith("paper"):
                        style = "dim"
                    elif "n.s." in line:
                        style = "dim italic"
                    text.append(("\n" if j else "") + line, style=style)
                cells.append(text)
            rt.add_row(*cells)
        console.print(rt)
        console.print(Text("\n".join([_legend(opts), *table.notes]), style="dim"))
        console.print()


def _shorter(table: Table):
    axes = table.row_axes + table.col_axes

    def short(name: str) -> str:
        return _short(axes, name)

    return short


def render_markdown(tables: list[Table], opts: Options) -> str:
    out = []
    for table in tables:
        header, body = _table_grid(table, opts, _shorter(table))
        out.append(f"**{table.title}**\n")
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        for row_label, row in body:
            cells = [row_label]
            for _, lines in row:
                lines = [ln.replace("|", "\\|") for ln in lines]
                if lines[0].startswith("★ "):
                    lines[0] = f"**{lines[0]}**"
                cells.append("<br>".join(lines))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        out.append(_legend(opts) + ("; " + "; ".join(table.notes) if table.notes else "") + ".")
        out.append("")
    return "\n".join(out)


def render_html(tables: list[Table], opts: Options) -> str:
    parts = ["<!doctype html><meta charset='utf-8'><title>dyt-bench leaderboard</title>",
             "<style>body{font-family:sans-serif}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #bbb;padding:4px 8px;text-align:right;vertical-align:top}"
             "td:first-child,th:first-child{text-align:left}.best{font-weight:bold;color:#064}"
             ".paper,.ns{color:#777}.div{color:#a60}caption{font-weight:bold;text-align:left}</style>"]
    for table in tables:
        header, body = _table_grid(table, opts, _shorter(table))
        parts.append(f"<table><caption>{html.escape(table.title)}</caption><tr>"
                     + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
        for row_label, row in body:
            parts.append(f"<tr><th>{html.escape(row_label)}</th>")
            for _, lines in row:
                spans = []
                for j, line in enumerate(lines):
                    cls = ("best" if j == 0 and line.startswith("★") else "div" if line.startswith("Diverge")
                           else "paper" if line.startswith("paper") else "ns" if "n.s." in line else "")
                    spans.append(f"<span class='{cls}'>{html.escape(line)}</span>")
                parts.append("<td>" + "<br>".join(spans) + "</td>")
            parts.append("</tr>")
        parts.append("</table>")
        parts.append(f"<p>{html.escape(_legend(opts))}" + "".join(f"<br>{html.escape(n)}" for n in table.notes)
                     + "</p>")
    return "\n".join(parts) + "\n"


def records_of(tables: list[Table], opts: Options) -> list[dict[str, Any]]:
    """One flat record per table cell (the CSV rows and the JSON ``cells``)."""
    out = []
    for table in tables:
        for (rk, ck), cell in table.cells.items():
            s = cell.stats
            out.append({
                "table": table.title, "grid": table.grid, "task": table.task, "metric": opts.metric,
                "value": opts.value, "mode": opts.mode, "row": " · ".join(rk), "col": " · ".join(ck),
                "axes": dict(cell.labels), "n": s.n, "mean": s.mean if s.n else None,
                "std": s.std if s.n >= 2 else None, "values": s.values, "seeds": s.seeds, "diverged": s.diverged,
                "failed": s.failed, "interrupted": s.interrupted, "status": "Diverge" if (s.diverged and not s.n) else
                ("ok" if s.n else "missing"), "baseline": cell.is_baseline, "delta": cell.delta,
                "p_value": cell.p_value, "ci_low": cell.ci[0] if cell.ci else None,
                "ci_high": cell.ci[1] if cell.ci else None, "significant": cell.significant, "paper": cell.paper,
                "best_in_row": cell.best_in_row, "argbest": cell.argbest, "runner_up": cell.runner_up,
                "scale": opts.scale,
            })
    return out


def render_csv(tables: list[Table], opts: Options) -> str:
    rows = records_of(tables, opts)
    axis_names: list[str] = []
    for r in rows:
        axis_names += [k for k in r["axes"] if k not in axis_names]
    fields = ["table", "grid", "task", *axis_names, "metric", "value", "mode", "n", "mean", "std", "diverged",
              "failed", "interrupted", "status", "baseline", "delta", "p_value", "ci_low", "ci_high", "significant",
              "paper", "best_in_row", "argbest", "values", "seeds"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        flat = {**r, **r["axes"], "values": " ".join(f"{v:.6g}" for v in r["values"]),
                "seeds": " ".join(str(s) for s in r["seeds"])}
        writer.writerow(flat)
    return buf.getvalue()


def render_json(tables: list[Table], opts: Options) -> str:
    return json.dumps({"metric": opts.metric, "value": opts.value, "mode": opts.mode, "test": opts.test,
                       "alpha": opts.alpha, "tables": [{"title": t.title, "grid": t.grid, "task": t.task,
                                                         "facet": t.facet, "rows": [a.name for a in t.row_axes],
                                                         "cols": [a.name for a in t.col_axes], "notes": t.notes}
                                                        for t in tables],
                       "cells": records_of(tables, opts)}, indent=2, default=str) + "\n"


def render_png(tables: list[Table], opts: Options, path: Path) -> None:
    """Grouped bars (groups = rows, bars = columns) with ±std error bars; the paper's numeric values as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(len(tables), 1, figsize=(max(6.0, 1.6 * max(len(t.rows) * len(t.cols) for t in tables)),
                                                     3.8 * len(tables)), squeeze=False)
    for ax, table in zip(axs[:, 0], tables, strict=True):
        n_cols = max(1, len(table.cols))
        outlined = []
        width = 0.8 / n_cols
        x = np.arange(len(table.rows))
        for j, ck in enumerate(table.cols):
            cells = [table.cells[(rk, ck)] for rk in table.rows]
            means = np.array([c.stats.mean * opts.scale if c.stats.n else 0.0 for c in cells])
            stds = np.array([c.stats.std * opts.scale if c.stats.n >= 2 else 0.0 for c in cells])
            pos = x - 0.4 + width * (j + 0.5)
            label = " · ".join(ck) if ck else opts.metric
            bars = ax.bar(pos, means, width * 0.92, yerr=stds, capsize=3, label=label)
            for p, c, bar in zip(pos, cells, bars, strict=True):
                if not c.stats.n and (c.stats.diverged or c.stats.failed):
                    ax.text(p, ax.get_ylim()[0], "Diverge" if c.stats.diverged else "failed", rotation=90,
                            ha="center", va="bottom", fontsize=8)
                elif c.best_in_row:
                    outlined.append(bar)
                if isinstance(c.paper, (int, float)) and not isinstance(c.paper, bool):
                    ax.plot(p, c.paper, marker="D", mfc="none", mec="black", ms=5)
        ax.set_xticks(x)
        ax.set_xticklabels([" · ".join(rk) if rk else "all" for rk in table.rows])
        ax.set_title(table.title, fontsize=10)
        ax.set_ylabel(opts.metric + (f" ×{opts.scale:g}" if opts.scale != 1 else ""))
        finite = [c.stats.mean * opts.scale for c in table.cells.values() if c.stats.n]
        if finite and opts.mode == "max":
            lo = min(finite) - 0.15 * (max(finite) - min(finite) + 1e-9) - 3 * max(
                (c.stats.std * opts.scale for c in table.cells.values() if c.stats.n >= 2), default=0)
            ax.set_ylim(bottom=max(0.0, lo))
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        for bar in outlined:  # after the legend, so its swatches stay plain
            bar.set_edgecolor("black")
            bar.set_linewidth(1.5)
    fig.suptitle("bars: mean ± std over seeds; ◇ the paper's value; outlined: best in row", fontsize=8)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dyt-bench leaderboard",
        description="Tables from result.json files: one per grid and task, mean ± std over seeds, Δ against the "
                    "baseline with a significance test, the paper's numbers beside ours.")
    p.add_argument("paths", nargs="+", help="result directories (searched recursively), result.json files, and/or "
                                            "grid files (their output directory, axes, baseline and paper values)")
    p.add_argument("--metric", help="metric name as logged (default: the grid's, else val/acc1)")
    p.add_argument("--value", choices=VALUES, help="a run's best value over validations (default) or its final one")
    p.add_argument("--mode", choices=MODES, help="direction of the metric (default: min for losses/errors, else max)")
    p.add_argument("--rows", help="comma-separated axes for rows (default: the grid's, else the first axis)")
    p.add_argument("--cols", help="comma-separated axes for columns (default: the grid's, else the other axes)")
    p.add_argument("--argbest", metavar="AXIS",
                   help="show, per cell of the other axes, the value of AXIS with the best metric")
    p.add_argument("--baseline", action="append", metavar="AXIS=VALUE",
                   help="the cell to compare against (repeatable; default: the grid's baseline)")
    p.add_argument("--test", choices=TESTS, help="Welch t-test p-value (default) or bootstrap CI of Δ")
    p.add_argument("--alpha", type=float, help="significance level (default 0.05)")
    p.add_argument("--scale", type=float, help="multiply values for display, e.g. 100 for percent (default: the "
                                               "grid's, else 1)")
    p.add_argument("--digits", type=int, help="decimals shown (default 2 when scaled, else 4)")
    p.add_argument("--format", choices=FORMATS, help="output format (default: from --output's suffix, else terminal)")
    p.add_argument("--output", "-o", help="write to this file instead of the terminal")
    return p


def _choice(field_name: str, value: Any, allowed: tuple[str, ...]) -> Any:
    if value not in allowed:
        raise LeaderboardError(f"{field_name} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def resolve_options(args: argparse.Namespace, records: list[Record]) -> Options:
    lb: dict[str, Any] = {}
    for r in records:
        if r.grid is not None:
            lb = r.grid.leaderboard
            break
    metric = args.metric or lb.get("metric") or "val/acc1"
    known = sorted({k for r in records for k in (*r.result.metrics_best, *r.result.metrics_final)})
    if metric not in known:
        raise LeaderboardError(f"--metric: unknown metric {metric!r}; metrics in these results: "
                               + (", ".join(known) or "(none: no run logged a metric)"))
    mode = args.mode or lb.get("mode") or ("min" if any(s in metric.lower() for s in LOWER_IS_BETTER) else "max")
    scale = args.scale if args.scale is not None else float(lb.get("scale", 1.0))
    digits = args.digits if args.digits is not None else int(lb.get("digits", 2 if scale != 1 else 4))
    alpha = args.alpha if args.alpha is not None else float(lb.get("alpha", 0.05))
    if not 0 < alpha < 1:
        raise LeaderboardError(f"--alpha must be in (0, 1); got {alpha}")
    baseline = None
    if args.baseline:
        baseline = {}
        for item in args.baseline:
            if "=" not in item:
                raise LeaderboardError(f"--baseline must be AXIS=VALUE (e.g. model.norm.kind=layernorm); got {item!r}")
            k, v = item.split("=", 1)
            baseline[k.strip()] = v.strip()
    return Options(
        metric=metric, value=_choice("--value", args.value or lb.get("value", "best"), VALUES),
        mode=_choice("--mode", mode, MODES), scale=scale, digits=digits,
        test=_choice("--test", args.test or lb.get("test", "welch"), TESTS), alpha=alpha,
        rows=[s.strip() for s in args.rows.split(",") if s.strip()] if args.rows is not None else None,
        cols=[s.strip() for s in args.cols.split(",") if s.strip()] if args.cols is not None else None,
        argbest=args.argbest, baseline=baseline)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        fmt = args.format
        if fmt is None and args.output:
            suffix = Path(args.output).suffix.lower()
            if suffix not in SUFFIX_FORMATS:
                raise LeaderboardError(f"--output {args.output!r}: cannot tell the format from {suffix or 'no suffix'!r}; "
                                       f"use a suffix in {', '.join(SUFFIX_FORMATS)} or --format "
                                       f"{{{','.join(FORMATS)}}}")
            fmt = SUFFIX_FORMATS[suffix]
        fmt = _choice("--format", fmt or "terminal", FORMATS)
        if fmt == "png" and not args.output:
            raise LeaderboardError("--format png needs --output FILE.png")
        records, notes = collect(args.paths)
        opts = resolve_options(args, records)
        tables = build_tables(records, opts)
    except (LeaderboardError, GridError) as e:
        print(f"dyt-bench leaderboard: error: {e}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"dyt-bench leaderboard: {note}", file=sys.stderr)
    out = Path(args.output) if args.output else None
    if fmt == "png":
        out.parent.mkdir(parents=True, exist_ok=True)
        render_png(tables, opts, out)
    elif fmt == "terminal":
        if out is None:
            render_terminal(tables, opts)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            with open(out, "w", encoding="utf-8") as f:
                render_terminal(tables, opts, file=f, width=200)
    else:
        text = {"md": render_markdown, "csv": render_csv, "json": render_json, "html": render_html}[fmt](tables, opts)
        if out is None:
            sys.stdout.write(text)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text, encoding="utf-8")
    if out is not None:
        print(f"dyt-bench leaderboard: wrote {out} ({fmt}, {len(tables)} table(s))", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
