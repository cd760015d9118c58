"""``dyt-bench leaderboard``: tables computed only from ``result.json`` files (mean ± std over seeds, Diverge and
Stalled as outcomes, Δ vs a baseline with a 95% CI and a Holm-corrected test, the paper's numbers), in the terminal
or as Markdown, CSV, JSON, HTML or PNG."""

from dyt_bench.leaderboard.cli import build_parser, main, resolve_options
from dyt_bench.leaderboard.collect import LeaderboardError, Record, collect, declared_modes, fid_extractor, find_results
from dyt_bench.leaderboard.render import (
    FORMATS,
    RENDERERS,
    SUFFIX_FORMATS,
    Renderer,
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
    BOOTSTRAP_MIN_RUNS,
    MODES,
    TESTS,
    VALUES,
    CellStats,
    Comparison,
    bootstrap,
    cell_stats,
    compare,
    fisher,
    holm,
    paired,
    welch,
)
from dyt_bench.leaderboard.tables import DEFAULT_METRIC, Options, Table, TableCell, build_tables, infer_axes
from dyt_bench.leaderboard.text import cell_lines

__all__ = [
    "BOOTSTRAP_MIN_RUNS", "DEFAULT_METRIC", "FORMATS", "MODES", "RENDERERS", "SUFFIX_FORMATS", "TESTS", "VALUES",
    "CellStats", "Comparison", "LeaderboardError", "Options", "Record", "Renderer", "Table", "TableCell",
    "bootstrap", "build_parser", "build_tables", "cell_lines", "cell_stats", "collect", "compare", "declared_modes",
    "fid_extractor", "find_results", "fisher", "holm", "infer_axes", "main", "paired", "records_of", "render",
    "render_csv", "render_html", "render_json", "render_markdown", "render_png", "render_terminal",
    "resolve_options", "welch",
]
