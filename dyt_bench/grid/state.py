"""GridState: the status of every cell of a grid as it runs, mirrored atomically into ``<output>/grid.json``."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from dyt_bench.grid.spec import GRID_SUMMARY_FILE, Cell, GridSpec
from dyt_bench.results import RESULT_FILE, STATUSES, atomic_write_text, read_result, utc_now


@dataclass
class CellOutcome:
    """How a cell ended, as the grid records it in grid.json and shows it."""

    status: str
    wall_time_s: float
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None


class GridState:
    """Statuses of every cell, mirrored atomically into ``<output>/grid.json`` on each change."""

    def __init__(self, spec: GridSpec, cells: list[Cell], launcher: str) -> None:
        self.spec, self.cells, self.launcher = spec, cells, launcher
        self.status: dict[str, str] = {}
        self.wall: dict[str, float] = {}
        self.metrics: dict[str, dict[str, float]] = {}
        self.started: dict[str, float] = {}  # cell id -> time.perf_counter() when it started (or was submitted)
        self.device: dict[str, str] = {}
        self.extra: dict[str, Any] = {}
        self.errors: dict[str, str] = {}  # cell id -> the first line of why it failed
        self.created = utc_now()
        self.write_error: str | None = None  # why grid.json could not be written (a full disk, ...), once it failed
        for cell in cells:
            self.status[cell.id] = cell.status() or "pending"
            if self.status[cell.id] in STATUSES:
                with contextlib.suppress(OSError, ValueError, TypeError):
                    r = read_result(cell.dir / RESULT_FILE)
                    self.wall[cell.id], self.metrics[cell.id] = r.wall_time_s, dict(r.metrics_best)

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in ("pending", "running", *STATUSES)}
        for s in self.status.values():
            out[s] = out.get(s, 0) + 1
        return out

    def start(self, cell: Cell, device: str | None = None, write: bool = True) -> None:
        """Mark ``cell`` running (on GPU ``device`` when given)."""
        self.status[cell.id] = "running"
        self.started[cell.id] = time.perf_counter()
        if device is not None:
            self.device[cell.id] = device
        if write:
            self.write()

    def finish(self, cell: Cell, outcome: CellOutcome) -> None:
        """Record how ``cell`` ended and rewrite grid.json."""
        self.status[cell.id] = outcome.status
        self.wall[cell.id], self.metrics[cell.id] = outcome.wall_time_s, outcome.metrics
        if outcome.status == "failed" and outcome.error:
            self.errors[cell.id] = outcome.error.strip().splitlines()[0][:300]
        else:
            self.errors.pop(cell.id, None)
        self.write()

    def elapsed(self, cell: Cell) -> float:
        """Seconds since ``cell`` started (0 when it never did)."""
        t = self.started.get(cell.id)
        return time.perf_counter() - t if t is not None else 0.0

    def write(self) -> bool:
        """Rewrite grid.json; False (and ``write_error`` says why) when it cannot be written."""
        spec = self.spec
        cells = [{"id": c.id, "dir": c.dir.name, "axes": c.labels, "seed": c.seed, "status": self.status[c.id],
                  "wall_time_s": self.wall.get(c.id), "metrics_best": self.metrics.get(c.id, {}),
                  **({"error": self.errors[c.id]} if c.id in self.errors else {})}
                 for c in self.cells]
        summary = {"name": spec.name, "grid_file": str(spec.path) if spec.path else None, "launcher": self.launcher,
                   "created": self.created, "updated": utc_now(), "counts": self.counts(), "spec": spec.to_dict(),
                   "cells": cells, **self.extra}
        try:
            atomic_write_text(spec.output / GRID_SUMMARY_FILE, json.dumps(summary, indent=2, default=str) + "\n")
        except OSError as e:  # grid.json keeps its last complete version; the launcher stops starting cells
            self.write_error = f"could not write {spec.output / GRID_SUMMARY_FILE}: {e.strerror or e}"
            return False
        self.write_error = None
        return True
