"""The local launcher: a grid's cells as processes on this machine, N at a time, each optionally on its own GPU.

Ctrl-C, SIGINT and SIGTERM stop the running cells (recorded ``interrupted``) and keep every finished result."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from dyt_bench.grid.cell_run import (
    finish_cell,
    open_logs,
    prepare_cell_process,
    shelve_previous_result,
    try_lock,
    write_cell_file,
)
from dyt_bench.grid.progress import ProgressView
from dyt_bench.grid.spec import Cell, GridSpec
from dyt_bench.grid.state import CellOutcome, GridState
from dyt_bench.results import FINISHED_STATUSES, RESULT_FILE, recover_pending_write, utc_now


@dataclass
class _Running:
    cell: Cell
    proc: subprocess.Popen
    lock_fd: int
    logs: tuple[Any, Any]
    t0: float
    started_at: str
    slot: int


def _sigterm_as_interrupt(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt


def run_local(spec: GridSpec, state: GridState, todo: list[Cell], workers: int, devices: list[str] | None,
              view: ProgressView, threads: int | None = None, poll_s: float = 0.2, grace_s: float = 60.0) -> int:
    """Run ``todo`` cells, ``workers`` at a time (slot i on GPU devices[i % len(devices)], ``threads`` CPU threads
    each when given); 130 when interrupted."""
    pending: deque[Cell] = deque(todo)
    running: dict[int, _Running] = {}
    waiting: set[str] = set()

    def launch(cell: Cell, slot: int) -> str:
        """'started', 'finished' (done by another process meanwhile) or 'busy' (another process runs it now)."""
        fd = try_lock(cell.dir)
        if fd is None:  # another grid process, or a cell orphaned by a killed grid, still runs this cell
            if cell.id not in waiting:
                waiting.add(cell.id)
                view.message(f"cell {cell.id} is being run by another process; waiting for it to end")
            return "busy"
        waiting.discard(cell.id)
        try:
            recover_pending_write(cell.dir / RESULT_FILE)  # a result whose writer was killed before its rename
            if cell.status() in FINISHED_STATUSES:
                os.close(fd)
                state.status[cell.id] = cell.status() or "completed"
                state.write()
                return "finished"
            shelve_previous_result(cell.dir)
            command = cell.command(spec)
            write_cell_file(spec, cell, command)
            logs = open_logs(cell, command)
        except OSError as e:  # the cell's directory cannot be written (a full disk, ...): the cell fails, saying why
            os.close(fd)
            outcome = CellOutcome("failed", 0.0, {}, f"could not prepare {cell.dir}: {e.strerror or e}")
            state.finish(cell, outcome)
            view.finished(cell, outcome)
            return "finished"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if threads:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
        device = devices[slot % len(devices)] if devices else None
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = device
        proc = subprocess.Popen(command, stdout=logs[0], stderr=logs[1], stdin=subprocess.DEVNULL, env=env,
                                pass_fds=(fd,), start_new_session=True, preexec_fn=prepare_cell_process)
        running[slot] = _Running(cell, proc, fd, logs, time.perf_counter(), utc_now(), slot)
        state.start(cell, device)
        view.started(cell, device)
        return "started"

    def reap(r: _Running, returncode: int | None, interrupted: bool = False) -> None:
        for f in r.logs:
            f.close()
        try:
            finish_cell(spec, state, view, r.cell, returncode, time.perf_counter() - r.t0, r.started_at, interrupted)
        finally:
            os.close(r.lock_fd)

    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    # SIGINT too, even when the grid was started with it ignored (a background job of a script: `dyt-bench grid … &`),
    # so that `kill -INT` stops it as cleanly as Ctrl-C does
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while pending or running:
            if state.write_error and pending:  # the output disk refuses writes: start nothing more
                view.message(f"stopping: {state.write_error}; {len(pending)} cell(s) left pending (re-run the grid "
                             "once there is space)")
                pending.clear()
            busy: list[Cell] = []
            for slot in range(workers):
                while slot not in running and pending:
                    cell = pending.popleft()
                    outcome = launch(cell, slot)
                    if outcome == "busy":
                        busy.append(cell)
            pending.extend(busy)
            for slot, r in list(running.items()):
                code = r.proc.poll()
                if code is not None:
                    del running[slot]
                    reap(r, code)
            view.refresh()
            time.sleep(poll_s if running else 1.0)
    except KeyboardInterrupt:
        view.message(f"interrupted: stopping {len(running)} running cell(s); finished results are kept")
        deadline = time.perf_counter() + grace_s
        for r in running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(r.proc.pid, signal.SIGINT)
        try:
            for r in running.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    r.proc.wait(timeout=max(0.1, deadline - time.perf_counter()))
        except KeyboardInterrupt:
            pass
        for r in running.values():
            if r.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(r.proc.pid, signal.SIGKILL)
                r.proc.wait()
            reap(r, r.proc.returncode, interrupted=True)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    return 1 if state.write_error else 0
