"""A leaderboard's input: every ``result.json`` under the given paths, the grid spec each belongs to, and the facts
the results record about their metrics (direction, FID feature extractor)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dyt_bench.grid.spec import ATTEMPTS_DIR, GRID_SUMMARY_FILE, GridError, GridSpec, load_grid, spec_from_summary
from dyt_bench.results import RESULT_FILE, RunResult, read_result

GRID_FILE_SUFFIXES = (".yaml", ".yml")
GRID_SEARCH_DEPTH = 4  # how many parent directories of a result are searched for its grid's grid.json


class LeaderboardError(ValueError):
    """Bad input to the leaderboard; the message names the field and the allowed values."""


@dataclass
class Record:
    """One result file, the grid it belongs to (if any) and, once placed in a table, its value label per axis."""

    path: Path
    result: RunResult
    grid: GridSpec | None
    labels: dict[str, str] = field(default_factory=dict)  # axis name → value label


def find_results(root: Path) -> list[Path]:
    """``root`` itself if it is a file, else every result.json below it except a cell's shelved earlier attempts."""
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob(RESULT_FILE) if ATTEMPTS_DIR not in p.relative_to(root).parts[:-1])


def _grid_of(path: Path, cache: dict[Path, GridSpec | None]) -> GridSpec | None:
    """The grid a result belongs to: the nearest ancestor directory holding a grid.json."""
    for parent in list(path.parents)[:GRID_SEARCH_DEPTH]:
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


def _split_paths(paths: list[str]) -> tuple[list[GridSpec], list[Path]]:
    """Grid files (loaded) and result roots among the paths given on the command line."""
    specs: list[GridSpec] = []
    roots: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.suffix in GRID_FILE_SUFFIXES and path.is_file():
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
    return specs, roots


def _say(text: str) -> None:
    print(f"dyt-bench leaderboard: {text}", file=sys.stderr, flush=True)


def collect(paths: list[str], report: Callable[[str], None] | None = _say) -> tuple[list[Record], list[str]]:
    """Read every result.json under ``paths`` (grid files given among them lend their axes, baseline, paper values).

    A file that is not a valid result (truncated, not a JSON object, a metric that is not a number, ...) is skipped
    and named at once through ``report`` (stderr by default; so that it is seen even when a later check fails);
    the returned notes count them. Returns the records and those notes."""
    specs, roots = _split_paths(paths)
    by_name = {s.name: s for s in specs}
    cache: dict[Path, GridSpec | None] = {}
    records, notes = [], []
    skipped: list[str] = []
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
                reason = str(e).replace(f"{path}: ", "")
                skipped.append(f"skipped malformed {path}: {reason}")
                if report is not None:
                    report(skipped[-1])
                else:
                    notes.append(skipped[-1])
                continue
            grid = _grid_of(path, cache)
            if grid is not None and grid.name in by_name:
                grid = by_name[grid.name]  # the grid file may carry newer paper values / leaderboard settings
            elif grid is None and len(specs) == 1:
                grid = specs[0]
            records.append(Record(path, result, grid))
    if skipped:
        notes.append(f"{len(skipped)} malformed {RESULT_FILE} file(s) skipped (named above)" if report is not None
                     else f"{len(skipped)} malformed {RESULT_FILE} file(s) skipped")
    if not records:
        if skipped:
            raise LeaderboardError(f"none of the {len(skipped)} {RESULT_FILE} file(s) under "
                                   f"{', '.join(map(str, roots))} is a valid result; first: {skipped[0]}")
        raise LeaderboardError(f"no {RESULT_FILE} found under {', '.join(map(str, roots))}")
    return records, notes


def fid_extractor(result: RunResult) -> str | None:
    """The id of the feature extractor behind a run's FID (diffusion results record it), else None."""
    info = (result.evaluation or {}).get("fid_extractor")
    if info is None:  # result files written before RunResult had `evaluation` kept it in the config
        info = (result.config or {}).get("fid_extractor")
    return str(info.get("id") or info.get("name")) if isinstance(info, dict) else None


def declared_modes(records: list[Record], metric: str) -> set[str]:
    """The directions ("max" / "min") the results' tasks declare for ``metric``; empty when none declares it."""
    return {r.result.metric_modes[metric] for r in records if metric in (r.result.metric_modes or {})}
