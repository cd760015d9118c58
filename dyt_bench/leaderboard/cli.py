"""Leaderboard tables from result.json files: mean ± std, Diverge / Stalled, Δ with a 95% CI and a corrected test.

``dyt-bench leaderboard PATH…`` prints them in the terminal or writes Markdown, CSV, JSON, a self-contained HTML page
or a PNG bar chart; ``--curves`` draws each table's validation curves, ``--show`` adds throughput / peak memory;
options can also come from a YAML file (``--config``). Exit status 0, or 2 for bad input.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from dyt_bench.grid.spec import GridError
from dyt_bench.leaderboard.collect import LeaderboardError, Record, collect, declared_modes
from dyt_bench.leaderboard.curves import RESOURCES
from dyt_bench.leaderboard.render import DEFAULT_FORMAT, FORMATS, RENDERERS, SUFFIX_FORMATS, Extras, render
from dyt_bench.leaderboard.stats import (
    BOOTSTRAP_MIN_RUNS,
    DEFAULT_ALPHA,
    DEFAULT_STALL_MARGIN,
    DEFAULT_TEST,
    DEFAULT_VALUE,
    MODES,
    TESTS,
    VALUES,
)
from dyt_bench.leaderboard.tables import DEFAULT_METRIC, Options, build_tables

PROG = "dyt-bench leaderboard"
EXIT_BAD_INPUT = 2


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog=PROG,
        description="Tables from result.json files: one per grid and task, mean ± std over seeds, divergence and "
                    "stalls as outcomes, Δ against the baseline with a 95% CI and a Holm-corrected test, the paper's "
                    "numbers beside ours.")
    p.add_argument("--config", action=ActionConfigFile, help="a YAML file of these options (paths: [...], metric: ...)")
    p.add_argument("paths", nargs="+", help="result directories (searched recursively), result.json files, and/or "
                                            "grid files (their output directory, axes, baseline and paper values)")
    p.add_argument("--metric", help=f"metric name as logged (default: the grid's, else {DEFAULT_METRIC})")
    p.add_argument("--value", choices=VALUES, help=f"a run's value at its final validation (default: "
                                                   f"{DEFAULT_VALUE}) or its best over validations (optimistic)")
    p.add_argument("--mode", choices=MODES, help="direction of the metric (default: as the runs' task declares it "
                                                 "in result.json; required where none does)")
    p.add_argument("--rows", help="comma-separated axes for rows (default: the grid's, else the first axis)")
    p.add_argument("--cols", help="comma-separated axes for columns (default: the grid's, else the other axes)")
    p.add_argument("--argbest", metavar="AXIS",
                   help="show, per cell of the other axes, the value of AXIS with the best metric")
    p.add_argument("--baseline", action="append", metavar="AXIS=VALUE",
                   help="the cell to compare against (repeatable; default: the grid's baseline)")
    p.add_argument("--test", choices=TESTS,
                   help="Welch t-test (default), paired t-test over seed-matched runs, or a percentile bootstrap "
                        f"(only with >= {BOOTSTRAP_MIN_RUNS} runs per cell); every Δ gets a 95% CI, and p-values are "
                        "Holm-corrected over the table's comparisons")
    p.add_argument("--alpha", type=float, help=f"significance level of the Holm-adjusted p (default {DEFAULT_ALPHA:g})")
    p.add_argument("--stall-margin", type=float | None, default=DEFAULT_STALL_MARGIN,
                   help="a completed run whose final value is no better than its task's chance level by more than "
                        "this (in the metric's units) counts as stalled (default %(default)s; null: no stall check)")
    p.add_argument("--scale", type=float, help="multiply values for display, e.g. 100 for percent (default: the "
                                               "grid's, else 1)")
    p.add_argument("--digits", type=int, help="decimals shown (default 2 when scaled, else 4)")
    p.add_argument("--format", choices=FORMATS, help="output format (default: from --output's suffix, else terminal)")
    p.add_argument("--output", "-o", help="write to this file instead of the terminal")
    p.add_argument("--curves", metavar="FILE.png",
                   help="also draw each table's validation curves (the metric against the step, from every run's "
                        "metrics.csv; mean ± std over seeds per cell): one PNG per table, FILE.png for one table, "
                        "FILE-<n>-<title>.png for several")
    p.add_argument("--show", help=f"comma-separated resource lines for every cell: {', '.join(RESOURCES)} (mean "
                                  "training samples/s and peak memory of its runs, from result.json)")
    return p


def _show(text: str | None) -> tuple[str, ...]:
    items = tuple(s.strip() for s in (text or "").split(",") if s.strip())
    for item in items:
        _choice("--show", item, RESOURCES)
    return items


def _curves_path(path: str | None) -> Path | None:
    if path is None:
        return None
    if Path(path).suffix.lower() != ".png":
        raise LeaderboardError(f"--curves must name a .png file; got {path!r}")
    return Path(path)


def _choice(field_name: str, value: Any, allowed: tuple[str, ...]) -> Any:
    if value not in allowed:
        raise LeaderboardError(f"{field_name} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def _metric_mode(metric: str, records: list[Record]) -> str:
    """The direction the runs' tasks declare for ``metric``; an error asking for --mode when none or both are."""
    declared = declared_modes(records, metric)
    if len(declared) > 1:
        raise LeaderboardError(f"--mode: the results declare both {' and '.join(sorted(declared))} for {metric!r}; "
                               f"give --mode {{{','.join(MODES)}}}")
    if not declared:
        raise LeaderboardError(f"--mode: no result declares whether {metric!r} is better high or low (its task does "
                               "not record it, or the result files predate metric_modes); give --mode max or "
                               "--mode min")
    return declared.pop()


def _baseline(items: list[str] | None) -> dict[str, str] | None:
    if not items:
        return None
    baseline = {}
    for item in items:
        if "=" not in item:
            raise LeaderboardError(f"--baseline must be AXIS=VALUE (e.g. model.norm.kind=layernorm); got {item!r}")
        k, v = item.split("=", 1)
        baseline[k.strip()] = v.strip()
    return baseline


def _axis_list(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text is not None else None


def resolve_options(args: Namespace, records: list[Record]) -> Options:
    """The options in effect: the command line's, else the grid's leaderboard settings, else the defaults."""
    lb: dict[str, Any] = next((r.grid.leaderboard for r in records if r.grid is not None), {})
    metric = args.metric or lb.get("metric") or DEFAULT_METRIC
    known = sorted({k for r in records for k in (*r.result.metrics_best, *r.result.metrics_final)})
    if metric not in known:
        raise LeaderboardError(f"--metric: unknown metric {metric!r}; metrics in these results: "
                               + (", ".join(known) or "(none: no run logged a metric)"))
    mode = args.mode or lb.get("mode") or _metric_mode(metric, records)
    scale = args.scale if args.scale is not None else float(lb.get("scale", 1.0))
    digits = args.digits if args.digits is not None else int(lb.get("digits", 2 if scale != 1 else 4))
    alpha = args.alpha if args.alpha is not None else float(lb.get("alpha", DEFAULT_ALPHA))
    if not 0 < alpha < 1:
        raise LeaderboardError(f"--alpha must be in (0, 1); got {alpha}")
    margin = args.stall_margin
    if margin is not None and not margin >= 0:
        raise LeaderboardError(f"--stall-margin must be >= 0 (in the metric's units); got {margin}")
    baseline = _baseline(args.baseline)
    return Options(
        metric=metric, value=_choice("--value", args.value or lb.get("value", DEFAULT_VALUE), VALUES),
        mode=_choice("--mode", mode, MODES), scale=scale, digits=digits,
        test=_choice("--test", args.test or lb.get("test", DEFAULT_TEST), TESTS), alpha=alpha, stall_margin=margin,
        rows=_axis_list(args.rows), cols=_axis_list(args.cols), argbest=args.argbest, baseline=baseline)


def _output_format(fmt: str | None, output: str | None) -> str:
    """--format, else the one --output's suffix names, else the terminal."""
    if fmt is None and output:
        suffix = Path(output).suffix.lower()
        if suffix not in SUFFIX_FORMATS:
            raise LeaderboardError(f"--output {output!r}: cannot tell the format from {suffix or 'no suffix'!r}; "
                                   f"use a suffix in {', '.join(SUFFIX_FORMATS)} or --format {{{','.join(FORMATS)}}}")
        fmt = SUFFIX_FORMATS[suffix]
    fmt = _choice("--format", fmt or DEFAULT_FORMAT, FORMATS)
    if RENDERERS[fmt].needs_file and not output:
        raise LeaderboardError(f"--format {fmt} needs --output FILE.{fmt}")
    return fmt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        fmt = _output_format(args.format, args.output)
        show, curves = _show(args.show), _curves_path(args.curves)
        records, notes = collect(args.paths)
        opts = resolve_options(args, records)
        tables = build_tables(records, opts)
    except (LeaderboardError, GridError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for note in notes:
        print(f"{PROG}: {note}", file=sys.stderr)
    out = Path(args.output) if args.output else None
    render(tables, opts, fmt, out, Extras(records, show))
    if out is not None:
        print(f"{PROG}: wrote {out} ({fmt}, {len(tables)} table(s))", file=sys.stderr)
    if curves is not None:
        from dyt_bench.leaderboard.curves import write_curves

        for path, curve_notes in write_curves(tables, records, opts, curves):
            for note in curve_notes:
                print(f"{PROG}: {path.name}: {note}", file=sys.stderr)
            print(f"{PROG}: wrote {path} (validation curves)", file=sys.stderr)
    return 0
