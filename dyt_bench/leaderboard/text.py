"""The words of a leaderboard table, shared by every text format: each cell's lines, the header that says what is
measured and tested, and the legend that says what every mark means."""

from __future__ import annotations

from dyt_bench.grid.spec import Axis
from dyt_bench.leaderboard.stats import CONFIDENCE, CellStats
from dyt_bench.leaderboard.tables import Options, Table, TableCell, short_name

BEST_MARK = "▸ "  # the best cell of a row, among those where every run trained
STAR = "★"  # significant after Holm's correction
TEST_NAMES = {"welch": "Welch t-test", "paired": "paired t-test over seeds", "bootstrap": "percentile bootstrap"}
VALUE_NAMES = {"final": "final validation", "best": "best validation (the best of several on one set: optimistic)"}

# Row label and, per column, the cell and its text lines.
Body = list[tuple[str, list[tuple[TableCell, list[str]]]]]


def num(x: float, opts: Options, signed: bool = False) -> str:
    v = x * opts.scale
    return f"{v:+.{opts.digits}f}".replace("-", "−") if signed else f"{v:.{opts.digits}f}"


def p_text(p: float) -> str:
    """A p-value with enough decimals near the usual thresholds."""
    return "<0.001" if p < 0.001 else f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def _nums(values: list[float], opts: Options) -> str:
    return ", ".join(num(v, opts) for v in values)


def _outcomes(s: CellStats, opts: Options) -> list[str]:
    """`k/n diverged (reached …)` and `k/n stalled (at …)`, where there are any."""
    parts = []
    if s.diverged:
        parts.append(f"{s.diverged}/{s.runs} diverged" + (f" (reached {_nums(s.diverged_best, opts)})"
                                                          if s.diverged_best else ""))
    if s.stalled:
        parts.append(f"{s.stalled}/{s.runs} stalled (at {_nums(s.stalled_values, opts)})")
    return parts


def _other_runs(s: CellStats) -> list[str]:
    return [f"{k} {v}" for k, v in (("failed", s.failed), ("interrupted", s.interrupted), ("no metric", s.missing))
            if v]


def value_line(cell: TableCell, opts: Options, axis_short: str | None = None) -> str:
    """The cell's first line: mean ± std (n), or Diverge / Stalled with what the runs reached, and the counts."""
    s = cell.stats
    if s.n:
        main = num(s.mean, opts) + (f" ± {num(s.std, opts)}" if s.n >= 2 else "") + f" ({s.n})"
        if cell.argbest is not None:
            main = f"{axis_short or 'best'}={cell.argbest}: {main}"
        extra = _outcomes(s, opts) + _other_runs(s)
        return (BEST_MARK if cell.best_in_row else "") + main + (" · " + ", ".join(extra) if extra else "")
    if s.not_trained:
        if not s.stalled:
            main = f"Diverge ({s.diverged}/{s.runs})" + (f" · reached {_nums(s.diverged_best, opts)}"
                                                         if s.diverged_best else "")
        elif not s.diverged:
            main = f"Stalled ({s.stalled}/{s.runs}) · at {_nums(s.stalled_values, opts)}"
        else:
            main = "Diverge/Stalled · " + ", ".join(_outcomes(s, opts))
        return main + "".join(f" · {x}" for x in _other_runs(s))
    return ", ".join(_other_runs(s)) or "—"


def comparison_lines(cell: TableCell, opts: Options) -> list[str]:
    """Δ against the baseline with its 95% CI; then the raw and Holm-adjusted p, and ★ / n.s. / why neither."""
    delta = f"Δ {num(cell.delta, opts, signed=True)}"
    if cell.ci95 is not None:
        delta += f" [{num(cell.ci95[0], opts, True)}, {num(cell.ci95[1], opts, True)}]"
    if cell.p is None:
        return [delta + (f" ({cell.note})" if cell.note else "")]
    test = f"p={p_text(cell.p)}" if cell.p >= 0.001 else "p<0.001"
    if cell.p_holm is not None:
        test += f" (Holm {p_text(cell.p_holm)})"
    if cell.significant:
        test += f" {STAR}"
    elif cell.stats.not_trained or (cell.base is not None and cell.base.not_trained):
        test += " survivors only"
    else:
        test += " n.s."
    return [delta, test]


def fisher_line(cell: TableCell) -> str:
    s, b = cell.stats, cell.base
    text = (f"not trained {s.not_trained}/{s.runs} vs {b.not_trained}/{b.runs}: Fisher p={p_text(cell.fisher_p)}"
            + (f" (Holm {p_text(cell.fisher_p_holm)})" if cell.fisher_p_holm is not None else ""))
    return text + (f" {STAR}" if cell.fisher_significant else "")


def _untrained_line(cell: TableCell, axis_short: str | None) -> str:
    parts = []
    for label, s in cell.untrained.items():
        what = ", ".join(x for x in (f"{s.diverged}/{s.runs} diverged" if s.diverged else "",
                                     f"{s.stalled}/{s.runs} stalled" if s.stalled else "") if x)
        parts.append(f"{label} ({what})")
    return f"not trained: {axis_short or 'value'}=" + "; ".join(parts)


def cell_lines(cell: TableCell, opts: Options, axis_short: str | None = None) -> list[str]:
    """The text of one cell: value line, then comparison, divergence-rate and paper lines where there are any."""
    lines = [value_line(cell, opts, axis_short)]
    if cell.is_baseline:
        lines.append("baseline")
    elif cell.runner_up is not None:
        lines.append(f"runner-up {cell.runner_up}: Δ {num(cell.delta, opts, signed=True)}")
    elif cell.delta is not None:
        lines += comparison_lines(cell, opts)
    if cell.fisher_p is not None:
        lines.append(fisher_line(cell))
    if cell.untrained:
        lines.append(_untrained_line(cell, axis_short))
    if cell.paper is not None:
        lines.append(f"paper {cell.paper}")
    return lines


def header(table: Table, opts: Options) -> str:
    """What the table shows: the metric and which value of it, the test and its family, the paper's version."""
    scale = f" ×{opts.scale:g}" if opts.scale != 1 else ""
    parts = [f"{opts.metric}{scale} at the {VALUE_NAMES[opts.value]}, {opts.mode} is better"]
    if opts.argbest:
        parts.append(f"best {opts.argbest} per cell; Δ to the runner-up, untested (the winner is selected by it)")
    else:
        parts.append(f"{TEST_NAMES[opts.test]}, Holm over {table.comparisons} comparison"
                     + ("s" if table.comparisons != 1 else ""))
    if any(c.paper is not None for c in table.cells.values()):
        parts.append(f"paper version: {table.paper_version or 'not stated'}")
    return " · ".join(parts)


def legend(table: Table, opts: Options) -> str:
    """What every mark of the table means."""
    if opts.stall_margin is None:
        stalled = "no stall check (--stall-margin null)"
    elif table.chance is None:
        stalled = "no chance level recorded for this metric, so no run counts as stalled"
    else:
        stalled = f"Stalled = finished no better than chance {num(table.chance, opts)} + {num(opts.stall_margin, opts)}"
    parts = [
        "mean ± sample std (n runs that trained)",
        "Diverge = every run diverged (reached: its best value before)",
        stalled,
        "k/n diverged or stalled: left out of the mean; such a cell is never ranked and never gets a ★",
        f"{BEST_MARK.strip()} best in row",
    ]
    if opts.argbest:
        parts.append("runner-up: the next best value where every run trained")
    else:
        pct = f"{100 * CONFIDENCE:g}%"
        parts += [f"Δ = cell − baseline with its {pct} CI ({TEST_NAMES[opts.test]})",
                  f"p two-sided, raw and Holm-adjusted over the table's {table.comparisons} comparison(s)",
                  f"{STAR} = Holm p < {opts.alpha:g}; n.s. = not significant"]
        if table.fisher_tests:
            parts.append("not trained k/n vs k/n: Fisher's exact test of the diverged-or-stalled rate against the "
                         f"baseline, Holm over the table's {table.fisher_tests} such test(s)")
    return "; ".join(parts)


def table_grid(table: Table, opts: Options) -> tuple[list[str], Body]:
    """Header row and rows of a table: each row is its label and, per column, the cell and its text lines."""
    axes: list[Axis] = table.row_axes + table.col_axes
    argbest_short = opts.argbest.rsplit(".", 1)[-1] if opts.argbest else None
    head = [" / ".join(short_name(axes, a.name) for a in table.row_axes) or " "]
    head += [" · ".join(ck) if ck else opts.metric for ck in table.cols]
    body = []
    for rk in table.rows:
        row = [(table.cells[(rk, ck)], cell_lines(table.cells[(rk, ck)], opts, argbest_short)) for ck in table.cols]
        body.append((" · ".join(rk) if rk else "all", row))
    return head, body
