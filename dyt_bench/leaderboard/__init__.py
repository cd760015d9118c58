"""``dyt-bench leaderboard``: tables computed only from ``result.json`` files (mean ± std over seeds, Diverge, Δ vs a
baseline with a significance test, the paper's numbers), in the terminal or as Markdown, CSV, JSON, HTML or PNG."""

from dyt_bench.leaderboard.cli import build_parser, main, resolve_options
from dyt_bench.leaderboard.collect import LeaderboardError, Record, collect, declared_modes, fid_extractor, find_results
from dyt_bench.leaderboard.render import (
    FORMATS,
    RENDERERS,
    SUFFIX_FORMATS,
    Renderer,
    cell_lines,
    records_of,
    render,
    render_csv,
    render_html,
    render_json,
    render_markdown,
    render_png,
    render_terminal,
)
from dyt_bench.leaderboard.stats import (
    LOWER_IS_BETTER,
    MODES,
    TESTS,
    VALUES,
    CellStats,
    Comparison,
    bootstrap_ci,
    cell_stats,
    compare,
    guess_mode,
    welch_p,
)
from dyt_bench.leaderboard.tables import DEFAULT_METRIC, Options, Table, TableCell, build_tables, infer_axes

__all__ = [
    "DEFAULT_METRIC", "FORMATS", "LOWER_IS_BETTER", "MODES", "RENDERERS", "SUFFIX_FORMATS", "TESTS", "VALUES",
    "CellStats", "Comparison", "LeaderboardError", "Options", "Record", "Renderer", "Table", "TableCell",
    "bootstrap_ci", "build_parser", "build_tables", "cell_lines", "cell_stats", "collect", "compare",
    "declared_modes", "fid_extractor", "find_results", "guess_mode", "infer_axes", "main", "records_of", "render",
    "render_csv", "render_html", "render_json", "render_markdown", "render_png", "render_terminal",
    "resolve_options", "welch_p",
]
