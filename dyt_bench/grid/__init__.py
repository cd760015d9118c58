"""Ablation grids: a grid file (base config × axes × seeds) expanded into cells, each cell one ``dyt-bench fit`` run
in its own process, launched locally or as a SLURM job array, with its status in ``<output>/grid.json``."""

from typing import Any

from dyt_bench.config_keys import assign, lookup
from dyt_bench.grid.cell_run import (
    cells_to_run,
    failed_out_of_memory,
    fallback_result,
    finalize_cell,
    finish_cell,
    run_cell_job,
)
from dyt_bench.grid.launch_local import run_local
from dyt_bench.grid.launch_slurm import run_submitit, slurm_parameters
from dyt_bench.grid.progress import ProgressView, RichProgressView
from dyt_bench.grid.spec import (
    ATTEMPTS_DIR,
    CELL_FILE,
    CONFIG_ROOTS,
    GRID_KEYS,
    GRID_SUMMARY_FILE,
    LABEL_KEY,
    LAUNCHERS,
    LEADERBOARD_KEYS,
    LOCK_FILE,
    PAPER_KEYS,
    SLURM_KEYS,
    STDERR_LOG,
    STDOUT_LOG,
    Axis,
    AxisValue,
    Cell,
    GridError,
    GridSpec,
    canonical,
    cell_id,
    cli_value,
    format_value,
    load_grid,
    parse_baseline,
    parse_grid,
    spec_from_summary,
)
from dyt_bench.grid.state import CellOutcome, GridState

__all__ = [
    "ATTEMPTS_DIR", "CELL_FILE", "CONFIG_ROOTS", "GRID_KEYS", "GRID_SUMMARY_FILE", "LABEL_KEY", "LAUNCHERS",
    "LEADERBOARD_KEYS", "LOCK_FILE", "PAPER_KEYS", "SLURM_KEYS", "STDERR_LOG", "STDOUT_LOG",
    "Axis", "AxisValue", "Cell", "CellOutcome", "GridError", "GridSpec", "GridState", "ProgressView",
    "RichProgressView", "assign", "build_parser", "canonical", "cell_id", "cells_to_run", "cli_value",
    "failed_out_of_memory", "fallback_result", "finalize_cell", "finish_cell", "format_value", "load_grid", "lookup",
    "main", "parse_baseline", "parse_grid", "preflight", "run_cell_job", "run_local", "run_submitit",
    "slurm_parameters", "spec_from_summary",
]

_COMMAND_NAMES = ("build_parser", "main", "preflight")


def __getattr__(name: str) -> Any:
    # The command module is imported on first use, so that `python -m dyt_bench.grid.cli` runs it as __main__ cleanly.
    if name in _COMMAND_NAMES:
        from dyt_bench.grid import cli

        return getattr(cli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
