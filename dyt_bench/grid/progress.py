"""What a running grid shows: one plain line per event (logs, non-terminal output) or a live rich panel with the
counts by status, an ETA and the running cells."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from dyt_bench.results import DEFAULT_METRIC

if TYPE_CHECKING:
    from dyt_bench.grid.spec import Cell
    from dyt_bench.grid.state import CellOutcome, GridState


def _fmt_seconds(s: float | None) -> str:
    if s is None or s != s:
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


class ProgressView:
    """Plain progress lines (for logs and non-TTY output); RichProgressView redraws a live panel instead."""

    def __init__(self, state: GridState, to_run: int, workers: int, metric: str = DEFAULT_METRIC) -> None:
        self.state, self.to_run, self.workers, self.metric = state, to_run, workers, metric
        self.t0 = time.perf_counter()
        self.done_here: list[float] = []

    def eta(self) -> float | None:
        remaining = self.to_run - len(self.done_here)  # cells of this invocation still to finish
        if remaining <= 0:
            return 0.0
        if not self.done_here:
            return None
        per_cell = sum(self.done_here) / len(self.done_here)
        running = [time.perf_counter() - t for cid, t in self.state.started.items()
                   if self.state.status.get(cid) == "running"]
        left = remaining * per_cell - sum(min(r, per_cell) for r in running)
        return max(0.0, left / max(1, self.workers))

    def summary(self) -> str:
        c = self.state.counts()
        finished = c["completed"] + c["diverged"]
        return (f"{finished}/{len(self.state.cells)} finished (completed {c['completed']}, diverged {c['diverged']}), "
                f"failed {c['failed']}, interrupted {c['interrupted']}, running {c['running']}, pending {c['pending']}"
                f" | elapsed {_fmt_seconds(time.perf_counter() - self.t0)}, ETA {_fmt_seconds(self.eta())}")

    def __enter__(self) -> ProgressView:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def started(self, cell: Cell, device: str | None) -> None:
        on = f" on GPU {device}" if device is not None else ""
        print(f"[grid {self.state.spec.name}] {'start':<11} {cell.id}{on}", flush=True)

    def _elapsed(self, cell: Cell, outcome: CellOutcome) -> float:
        """The cell's wall time as the grid saw it (process start-up included), which is what the ETA needs."""
        t = self.state.started.get(cell.id)
        elapsed = time.perf_counter() - t if t is not None else outcome.wall_time_s
        self.done_here.append(elapsed)
        return elapsed

    def finished(self, cell: Cell, outcome: CellOutcome) -> None:
        elapsed = self._elapsed(cell, outcome)
        value = outcome.metrics.get(self.metric)
        shown = f" best {self.metric}={value:.4g}" if value is not None else ""
        print(f"[grid {self.state.spec.name}] {outcome.status:<11} {cell.id} ({_fmt_seconds(elapsed)}){shown}"
              f" | {self.summary()}", flush=True)

    def message(self, text: str) -> None:
        print(f"[grid {self.state.spec.name}] {text}", flush=True)

    def refresh(self) -> None:
        pass


class RichProgressView(ProgressView):
    """A live panel: progress bar, counts by status, ETA, and the running cells."""

    def __enter__(self) -> RichProgressView:
        from rich.console import Console
        from rich.live import Live

        self.console = Console()
        # auto_refresh off: no background thread while cell processes are forked
        self.live = Live(self._render(), console=self.console, auto_refresh=False, transient=False)
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.update(self._render(), refresh=True)
        self.live.__exit__(*exc)

    def _render(self):
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        c = self.state.counts()
        total = len(self.state.cells)
        done = total - c["pending"] - c["running"]
        head = Text.assemble((f"grid {self.state.spec.name}  ", "bold"), f"{done}/{total} cells  ",
                             ("completed ", "green"), str(c["completed"]), "  ", ("diverged ", "yellow"),
                             str(c["diverged"]), "  ", ("failed ", "red"), str(c["failed"]), "  ",
                             ("interrupted ", "magenta"), str(c["interrupted"]), "  ", ("running ", "cyan"),
                             str(c["running"]), "  pending ", str(c["pending"]),
                             f"   elapsed {_fmt_seconds(time.perf_counter() - self.t0)}  ETA {_fmt_seconds(self.eta())}")
        bar = ProgressBar(total=max(total, 1), completed=done, width=60)
        running = [(cid, t) for cid, t in self.state.started.items() if self.state.status.get(cid) == "running"]
        if not running:
            return Group(head, bar)
        table = Table(box=None, show_header=True, header_style="dim", pad_edge=False)
        for col in ("running cell", "elapsed", "gpu"):
            table.add_column(col)
        for cid, t in running:
            table.add_row(Text(cid), _fmt_seconds(time.perf_counter() - t), self.state.device.get(cid, "-"))
        return Group(head, bar, table)

    def started(self, cell: Cell, device: str | None) -> None:
        self.refresh()

    def finished(self, cell: Cell, outcome: CellOutcome) -> None:
        from rich.markup import escape

        elapsed = self._elapsed(cell, outcome)
        value = outcome.metrics.get(self.metric)
        colour = {"completed": "green", "diverged": "yellow", "failed": "red"}.get(outcome.status, "magenta")
        shown = f" best {self.metric}={value:.4g}" if value is not None else ""
        self.live.console.print(f"[{colour}]{outcome.status:<11}[/{colour}] {escape(cell.id)} "
                                f"({_fmt_seconds(elapsed)}){escape(shown)}")
        self.refresh()

    def message(self, text: str) -> None:
        from rich.markup import escape

        self.live.console.print(escape(text))  # paths and errors are text, never Rich markup
        self.refresh()

    def refresh(self) -> None:
        self.live.update(self._render(), refresh=True)
