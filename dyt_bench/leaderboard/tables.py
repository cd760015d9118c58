"""Leaderboard tables: results grouped by grid and task, placed on the grid's axes (or on the config keys that differ
between them), laid out as rows × columns × facets, with each cell's statistics and its comparison to the baseline."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

from dyt_bench.config_keys import NON_SEMANTIC_KEYS, REPLICATE_KEYS, flatten
from dyt_bench.grid.spec import (
    Axis,
    AxisValue,
    GridError,
    GridSpec,
    canonical,
    find_axis,
    format_value,
    parse_baseline,
)
from dyt_bench.leaderboard.collect import LeaderboardError, Record, fid_extractor
from dyt_bench.leaderboard.stats import (
    DEFAULT_ALPHA,
    DEFAULT_STALL_MARGIN,
    DEFAULT_TEST,
    DEFAULT_VALUE,
    CellStats,
    cell_stats,
    compare,
    fisher,
    holm,
    is_better,
)
from dyt_bench.results import DEFAULT_METRIC

AXIS_EXCLUDED_KEYS = NON_SEMANTIC_KEYS + REPLICATE_KEYS  # config keys that never become an inferred axis

Labels = tuple[str, ...]  # one value label per row (or column) axis
Baseline = list[dict[str, dict[str, str]]]  # [{"when": {axis: label}, "ref": {axis: label}}], as a grid spec holds it


@dataclass
class Options:
    """What a leaderboard shows and how: the resolved command-line options."""

    metric: str = DEFAULT_METRIC
    value: str = DEFAULT_VALUE
    mode: str = "max"
    scale: float = 1.0
    digits: int = 4
    test: str = DEFAULT_TEST
    alpha: float = DEFAULT_ALPHA
    stall_margin: float | None = DEFAULT_STALL_MARGIN  # None: no run counts as stalled
    rows: list[str] | None = None
    cols: list[str] | None = None
    argbest: str | None = None
    baseline: dict[str, str] | None = None  # from --baseline AXIS=VALUE (replaces the grid's)


@dataclass
class TableCell:
    """One cell: its runs' statistics and, against its baseline, Δ with its 95% CI, the test's raw and
    Holm-adjusted p, and Fisher's test of the diverged-or-stalled rate (raw and Holm-adjusted)."""

    labels: dict[str, str]
    stats: CellStats
    is_baseline: bool = False
    base: CellStats | None = None  # the baseline cell's statistics, where this cell is compared with one
    delta: float | None = None
    ci95: tuple[float, float] | None = None
    p: float | None = None
    p_holm: float | None = None
    significant: bool = False  # Holm-adjusted p < α, and every run of both cells trained
    note: str | None = None  # why a comparison has no test (n<2, no spread)
    fisher_p: float | None = None
    fisher_p_holm: float | None = None
    fisher_significant: bool = False
    paper: Any = None
    best_in_row: bool = False
    argbest: str | None = None  # with --argbest: the winning value of that axis
    runner_up: str | None = None
    untrained: dict[str, CellStats] = field(default_factory=dict)  # with --argbest: values whose runs diverged/stalled


@dataclass
class Table:
    title: str
    grid: str | None
    task: str
    facet: dict[str, str]
    row_axes: list[Axis]
    col_axes: list[Axis]
    rows: list[Labels]
    cols: list[Labels]
    cells: dict[tuple[Labels, Labels], TableCell]
    notes: list[str] = field(default_factory=list)
    comparisons: int = 0  # the Holm family: comparisons of a mean with a test in this table
    fisher_tests: int = 0  # the Fisher family: comparisons where either cell has diverged or stalled runs
    paper_version: str | None = None  # which version of the paper the paper values come from, where shown
    chance: float | None = None  # the metric's chance level, as the runs recorded it


# ---------------------------------------------------------------------------------------------------------------
# Axes
# ---------------------------------------------------------------------------------------------------------------
def infer_axes(records: list[Record]) -> list[Axis]:
    """Config keys whose values differ between the results: the axes of a table without a grid file."""
    flats = [flatten(r.result.config, AXIS_EXCLUDED_KEYS) for r in records]
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


def axis_by_name(axes: list[Axis], name: str, where: str) -> Axis:
    """The axis called ``name`` (its dotted key or its last part); ``where`` names the option in the error."""
    found = find_axis(axes, name)
    if found is not None:
        return found
    raise LeaderboardError(f"{where}: unknown axis {name!r}; the axes of this table are: "
                           + (", ".join(a.name for a in axes) or "(none: every result has the same config)"))


def short_name(axes: list[Axis], name: str) -> str:
    """An axis's last key part where that is unambiguous among ``axes``, else its full dotted name."""
    shorts = [a.short for a in axes]
    short = name.rsplit(".", 1)[-1]
    return short if shorts.count(short) == 1 else name


def _product(axes: list[Axis]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = [{}]
    for a in axes:
        out = [{**d, a.name: v.label} for d in out for v in a.values]
    return out


@dataclass
class _Layout:
    argbest: Axis | None  # with --argbest: the axis whose best value each cell shows
    rows: list[Axis]
    cols: list[Axis]
    facets: list[Axis]  # in neither rows nor columns: one table per combination of their values


def _chosen_axes(axes: list[Axis], from_option: list[str] | None, from_grid: Any, argbest: Axis | None, side: str,
                 where: str) -> list[Axis] | None:
    """The row (or column) axes named by --rows / --cols, else by the grid's leaderboard settings; None if neither."""
    if from_option is not None:
        return [axis_by_name(axes, n, f"--{side} ({where})") for n in from_option]
    if from_grid and not (argbest and argbest.name in from_grid):
        return [axis_by_name(axes, n, f"leaderboard.{side} ({where})") for n in from_grid]
    return None


def _layout(axes: list[Axis], settings: dict[str, Any], opts: Options, where: str) -> _Layout:
    argbest = axis_by_name(axes, opts.argbest, f"--argbest ({where})") if opts.argbest else None
    rest = [a for a in axes if a is not argbest]
    rows = _chosen_axes(axes, opts.rows, settings.get("rows"), argbest, "rows", where)
    if rows is None:
        rows = rest[:1] if len(rest) >= 2 else []
    cols = _chosen_axes(axes, opts.cols, settings.get("cols"), argbest, "cols", where)
    if cols is None:
        cols = [a for a in rest if a not in rows]
    overlap = {a.name for a in rows} & {a.name for a in cols}
    if overlap:
        raise LeaderboardError(f"{where}: axis {', '.join(sorted(overlap))} is both a row and a column axis")
    if argbest and (argbest in rows or argbest in cols):
        raise LeaderboardError(f"{where}: --argbest {argbest.name} cannot also be a row or column axis")
    return _Layout(argbest, rows, cols, [a for a in rest if a not in rows and a not in cols])


# ---------------------------------------------------------------------------------------------------------------
# One group of results (a grid and task, and for FID a feature extractor)
# ---------------------------------------------------------------------------------------------------------------
GroupKey = tuple[str | None, str, str | None]  # grid name, task, FID feature extractor


@dataclass
class _Group:
    grid_name: str | None
    task: str
    extractor: str | None
    axes: list[Axis]
    placed: list[Record]  # the results that match a value of every axis, with their labels set
    layout: _Layout
    baseline: Baseline
    paper: dict[str, Any]
    paper_values: list[dict[str, Any]]  # the paper's values for the metric shown; empty if they are for another
    notes: list[str]

    def stats_for(self, assignment: dict[str, str], opts: Options) -> CellStats:
        results = [r.result for r in self.placed if all(r.labels.get(k) == v for k, v in assignment.items())]
        return cell_stats(results, opts.metric, opts.value, opts.mode, opts.stall_margin)


def _groups(records: list[Record], metric: str) -> list[tuple[GroupKey, list[Record]]]:
    """Results by grid and task. For an FID metric, runs whose FIDs come from different feature extractors go to
    separate groups: those numbers are not comparable."""
    is_fid = "fid" in metric.lower()
    groups: dict[GroupKey, list[Record]] = {}
    for r in records:
        extractor = fid_extractor(r.result) if is_fid else None
        groups.setdefault((r.grid.name if r.grid else None, r.result.task, extractor), []).append(r)
    return sorted(groups.items(), key=lambda kv: (kv[0][0] or "", kv[0][1], kv[0][2] or ""))


def _place(records: list[Record], axes: list[Axis]) -> list[Record]:
    """The records that match a value of every axis, each given its value labels."""
    placed = []
    for r in records:
        labels = {}
        for axis in axes:
            match = next((v for v in axis.values if v.matches(r.result.config)), None)
            if match is None:
                break
            labels[axis.name] = match.label
        else:
            r.labels = labels
            placed.append(r)
    return placed


def _baseline(axes: list[Axis], spec: GridSpec | None, opts: Options, where: str) -> Baseline:
    if opts.baseline is None:
        return list(spec.baseline) if spec else []
    try:
        return parse_baseline(opts.baseline, partial(axis_by_name, axes, where=f"--baseline ({where})"))
    except GridError as e:
        raise LeaderboardError(f"--baseline ({where}): {e}") from None


def _group(key: GroupKey, records: list[Record], opts: Options) -> _Group:
    grid_name, task, extractor = key
    spec = records[0].grid
    axes = list(spec.axes) if spec else infer_axes(records)
    notes = []
    placed = _place(records, axes)
    if len(placed) < len(records):
        notes.append(f"{len(records) - len(placed)} result(s) match no value of this grid's axes and are left out")
    where = f"table {grid_name or task}"
    layout = _layout(axes, spec.leaderboard if spec else {}, opts, where)
    baseline = _baseline(axes, spec, opts, where)
    paper = spec.paper if spec else {}
    paper_values = paper.get("values", []) if paper and paper.get("metric") in (None, opts.metric) else []
    if paper and paper.get("values") and not paper_values:
        notes.append(f"the paper's values are for {paper.get('metric')}, not {opts.metric}; not shown")
    return _Group(grid_name, task, extractor, axes, placed, layout, baseline, paper, paper_values, notes)


# ---------------------------------------------------------------------------------------------------------------
# Cells and tables
# ---------------------------------------------------------------------------------------------------------------
def _where(assignment: dict[str, str], axes: list[Axis]) -> str:
    return " (" + ", ".join(f"{short_name(axes, k)}={v}" for k, v in assignment.items()) + ")" if assignment else ""


def _set_comparison(cell: TableCell, base: CellStats, opts: Options, where: str) -> None:
    cell.base = base
    comparison = compare(cell.stats, base, opts.test, where)
    if comparison is not None:
        cell.delta, cell.ci95, cell.p, cell.note = comparison.delta, comparison.ci95, comparison.p, comparison.note


def _paper_value(entries: list[dict[str, Any]], assignment: dict[str, str]) -> Any:
    for e in entries:
        if all(assignment.get(k) == v for k, v in e.items() if k != "value"):
            return e["value"]
    return None


def _cell(group: _Group, assignment: dict[str, str], opts: Options) -> TableCell:
    """The cell of one assignment of axis values, compared with its baseline cell where the baseline covers it."""
    cell = TableCell(assignment, group.stats_for(assignment, opts))
    cell.paper = _paper_value(group.paper_values, assignment)
    entry = next((e for e in group.baseline if all(assignment.get(k) == v for k, v in e["when"].items())), None)
    if entry is not None:
        base_assignment = {**assignment, **entry["ref"]}
        cell.is_baseline = base_assignment == assignment
        if not cell.is_baseline:
            _set_comparison(cell, group.stats_for(base_assignment, opts), opts, _where(assignment, group.axes))
    return cell


def _argbest_cell(group: _Group, assignment: dict[str, str], opts: Options) -> TableCell:
    """The best value of the --argbest axis for one assignment of the others (among the values where every run
    trained), Δ to the runner-up without a test (the winner was chosen by its mean), and the values whose runs
    diverged or stalled."""
    axis = group.layout.argbest
    candidates = [(v.label, group.stats_for({**assignment, axis.name: v.label}, opts)) for v in axis.values]
    untrained = {label: s for label, s in candidates if s.not_trained}
    ranked = sorted(((label, s) for label, s in candidates if s.n and not s.not_trained),
                    key=lambda c: c[1].mean, reverse=opts.mode == "max")
    if not ranked:
        merged = CellStats()
        for _, s in candidates:
            for name in ("diverged", "stalled", "failed", "interrupted", "missing"):
                setattr(merged, name, getattr(merged, name) + getattr(s, name))
        return TableCell(assignment, merged, untrained=untrained, paper=_paper_value(group.paper_values, assignment))
    label, stats = ranked[0]
    cell = TableCell({**assignment, axis.name: label}, stats, argbest=label, untrained=untrained)
    cell.paper = _paper_value(group.paper_values, assignment)  # e.g. the paper's best α0 for this width and depth
    if len(ranked) > 1:
        cell.runner_up = ranked[1][0]
        cell.delta = stats.mean - ranked[1][1].mean
    return cell


def _adjust(cells: list[TableCell], alpha: float) -> tuple[int, int]:
    """Holm over the table's mean comparisons and, apart, over its Fisher tests; a ★ only where both cells trained on
    every run. Returns the sizes of the two families."""
    compared = [c for c in cells if c.base is not None]
    for c, adjusted in zip(compared, holm([c.p for c in compared]), strict=True):
        c.p_holm = adjusted
        c.significant = adjusted is not None and adjusted < alpha and not c.stats.not_trained \
            and not c.base.not_trained
    with_outcomes = [c for c in compared if (c.stats.not_trained or c.base.not_trained) and c.stats.runs
                     and c.base.runs]
    for c in with_outcomes:
        c.fisher_p = fisher(c.stats.not_trained, c.stats.runs, c.base.not_trained, c.base.runs)
    for c, adjusted in zip(with_outcomes, holm([c.fisher_p for c in with_outcomes]), strict=True):
        c.fisher_p_holm = adjusted
        c.fisher_significant = adjusted is not None and adjusted < alpha
    return sum(c.p is not None for c in compared), len(with_outcomes)


def _mark_best_in_row(cells: dict[tuple[Labels, Labels], TableCell], row_keys: list[Labels],
                      col_keys: list[Labels], mode: str) -> None:
    """The best mean of each row among the cells where every run trained (a survivors' mean is not comparable)."""
    for rk in row_keys:
        row_cells = [c for c in (cells[(rk, ck)] for ck in col_keys) if c.stats.n and not c.stats.not_trained]
        if len(row_cells) > 1:
            best = row_cells[0].stats.mean
            for c in row_cells[1:]:
                if is_better(c.stats.mean, best, mode):
                    best = c.stats.mean
            for c in row_cells:
                c.best_in_row = c.stats.mean == best


def _title(group: _Group, facet: dict[str, str]) -> str:
    title = " · ".join(x for x in (group.grid_name, group.task) if x)
    if group.extractor:
        title += f" · FID features {group.extractor}"
    if facet:
        title += " · " + ", ".join(f"{short_name(group.axes, k)}={v}" for k, v in facet.items())
    return title


def _notes(group: _Group) -> list[str]:
    notes = list(group.notes)
    if group.baseline and group.layout.argbest is None:
        def values(assignment: dict[str, str]) -> str:
            return ", ".join(f"{short_name(group.axes, k)}={v}" for k, v in assignment.items())

        notes.append("Δ vs baseline " + "; ".join(
            values(e["ref"]) + (" for " + values(e["when"]) if e["when"] else "") for e in group.baseline))
    if group.paper_values and group.paper.get("source"):
        notes.append(f"paper: {group.paper['source']}")
    return notes


def _facet_table(group: _Group, facet: dict[str, str], opts: Options) -> Table:
    layout = group.layout
    rows, cols = _product(layout.rows), _product(layout.cols)
    row_keys = [tuple(d[a.name] for a in layout.rows) for d in rows]
    col_keys = [tuple(d[a.name] for a in layout.cols) for d in cols]
    make_cell = _argbest_cell if layout.argbest is not None else _cell
    cells = {(rk, ck): make_cell(group, {**facet, **rd, **cd}, opts)
             for rd, rk in zip(rows, row_keys, strict=True) for cd, ck in zip(cols, col_keys, strict=True)}
    comparisons, fisher_tests = _adjust(list(cells.values()), opts.alpha)
    _mark_best_in_row(cells, row_keys, col_keys, opts.mode)
    chances = {c.stats.chance for c in cells.values() if c.stats.chance is not None}
    version = group.paper.get("version") if group.paper_values else None
    return Table(_title(group, facet), group.grid_name, group.task, facet, layout.rows, layout.cols, row_keys,
                 col_keys, cells, _notes(group), comparisons, fisher_tests,
                 str(version) if version is not None else None, chances.pop() if len(chances) == 1 else None)


def build_tables(records: list[Record], opts: Options) -> list[Table]:
    """One table per grid and task (and FID feature extractor) and per combination of facet-axis values, with every
    cell's statistics computed."""
    tables = []
    for key, group_records in _groups(records, opts.metric):
        group = _group(key, group_records, opts)
        tables += [_facet_table(group, facet, opts) for facet in _product(group.layout.facets)]
    return tables
