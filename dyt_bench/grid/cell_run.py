"""One cell's lifecycle: its lock, the earlier result shelved, logs and ``cell.json``, the ``dyt-bench fit`` process,
and the result it leaves (the run's own, or one the grid writes when the run never could). Both launchers end a cell
through :func:`finish_cell`."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from dyt_bench.config_keys import assign, lookup
from dyt_bench.grid.spec import (
    ATTEMPTS_DIR,
    CELL_FILE,
    LOCK_FILE,
    STDERR_LOG,
    STDOUT_LOG,
    Cell,
    GridSpec,
    spec_from_summary,
)
from dyt_bench.grid.state import CellOutcome, GridState
from dyt_bench.results import (
    FINISHED_STATUSES,
    RESULT_FILE,
    RunResult,
    atomic_write_text,
    make_result,
    pending_writes,
    read_result,
    recover_pending_write,
    utc_now,
    write_result,
)

if TYPE_CHECKING:
    from dyt_bench.grid.progress import ProgressView

# Exit codes of a `dyt-bench fit` that a signal stopped (its own 143 / 130, or the raw signal when it had no time
# to handle it) -> the signal's name
STOPPED_BY = {143: "SIGTERM", -signal.SIGTERM: "SIGTERM", 130: "SIGINT", -signal.SIGINT: "SIGINT",
              -signal.SIGKILL: "SIGKILL"}
_OOM_MARKERS = ("CUDA out of memory", "OutOfMemoryError", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED")


def cells_to_run(cells: list[Cell], retry_failed: bool) -> list[Cell]:
    """Cells without a finished result; failed cells only with ``retry_failed`` (a failure usually repeats)."""
    skip = set(FINISHED_STATUSES) | (set() if retry_failed else {"failed"})
    return [c for c in cells if c.status() not in skip]


def recover_results(cells: list[Cell]) -> int:
    """Rename into place the complete result.json a killed write left as a temporary file (a cell whose run finished
    but was killed between writing and renaming its result), under each cell's lock; how many were recovered."""
    recovered = 0
    for cell in cells:
        path = cell.dir / RESULT_FILE
        if path.exists() or not pending_writes(path):
            continue
        fd = try_lock(cell.dir)
        if fd is None:  # its run is going on: that process finishes its own write
            continue
        try:
            recovered += recover_pending_write(path)
        except OSError:
            pass
        finally:
            os.close(fd)
    return recovered


def failed_out_of_memory(cell: Cell) -> bool:
    """True when the cell's recorded error is the GPU running out of memory (e.g. too many cells on one GPU)."""
    try:
        error = read_result(cell.dir / RESULT_FILE).error or ""
    except (OSError, ValueError, TypeError):
        return False
    return any(marker in error for marker in _OOM_MARKERS)


# ---------------------------------------------------------------------------------------------------------------
# Before the run
# ---------------------------------------------------------------------------------------------------------------
def prepare_cell_process() -> None:
    """Runs in the forked cell process before exec: Ctrl-C semantics even when the grid runs with SIGINT ignored
    (nohup, `&`), and on Linux a SIGINT (→ Lightning records 'interrupted') if the grid dies, even by SIGKILL."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
        except Exception:  # noqa: BLE001 - best effort; elsewhere the cell lock keeps a rerun from overlapping
            pass


def try_lock(cell_dir: Path) -> int | None:
    """Take the cell's lock (an flock the cell process inherits); None when another process holds it."""
    import fcntl

    cell_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(cell_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def shelve_previous_result(cell_dir: Path) -> None:
    """Move an earlier (failed / interrupted) result.json aside, so the new attempt's result is the only one read."""
    path = cell_dir / RESULT_FILE
    if not path.exists():
        return
    attempts = cell_dir / ATTEMPTS_DIR
    attempts.mkdir(exist_ok=True)
    try:
        status = read_result(path).status
    except (OSError, ValueError, TypeError):
        status = "unreadable"
    n = len(list(attempts.glob("*.json"))) + 1
    os.replace(path, attempts / f"{n:02d}-{status}.json")


def write_cell_file(spec: GridSpec, cell: Cell, command: list[str]) -> None:
    """``cell.json``: the cell's axes, assignments, seed and the exact command it runs."""
    atomic_write_text(cell.dir / CELL_FILE, json.dumps({
        "grid": spec.name, "id": cell.id, "axes": cell.labels, "assignments": cell.assignments, "seed": cell.seed,
        "command": shlex.join(command), "base": str(spec.base), "overrides": spec.overrides}, indent=2, default=str) + "\n")


def open_logs(cell: Cell, command: list[str]) -> tuple[Any, Any]:
    """The cell's stdout / stderr logs, opened for appending, each starting with a header naming the attempt."""
    cell.dir.mkdir(parents=True, exist_ok=True)
    out = open(cell.dir / STDOUT_LOG, "a", encoding="utf-8")
    err = open(cell.dir / STDERR_LOG, "a", encoding="utf-8")
    header = f"\n===== {utc_now()} {shlex.join(command)}\n"
    out.write(header)
    err.write(header)
    out.flush()
    err.flush()
    return out, err


# ---------------------------------------------------------------------------------------------------------------
# After the run
# ---------------------------------------------------------------------------------------------------------------
def _tail(path: Path, chars: int = 3000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - chars * 4))
            return f.read().decode("utf-8", "replace")[-chars:]
    except OSError:
        return ""


def _task_name(class_path: str) -> str:
    """The ``task_name`` a task class records in its results (so a cell that failed early joins its task's table).

    Read from the class itself: it is the task's own declaration, and no rule on class names reproduces it."""
    if not class_path:
        return ""
    import importlib

    module, _, name = class_path.rpartition(".")
    try:
        return str(getattr(getattr(importlib.import_module(module or "dyt_bench.tasks"), name), "task_name", name))
    except (ImportError, AttributeError, ValueError):
        return name


def fallback_result(spec_base: Path, overrides: dict[str, Any], cell: Cell, status: str, error: str,
                    wall_time_s: float, started_at: str) -> RunResult:
    """The result a cell gets when its process ended without writing one (e.g. a config error before training):
    its config is the base config with the grid's overrides and the cell's values and seed applied."""
    config: dict[str, Any] = {}
    with contextlib.suppress(OSError, yaml.YAMLError):
        loaded = yaml.safe_load(Path(spec_base).read_text(encoding="utf-8"))
        if isinstance(loaded, dict):
            config = loaded
    for key, value in {**overrides, **cell.assignments}.items():
        assign(config, key, value)
    config["seed_everything"] = cell.seed

    def get(key: str, default: Any = "") -> Any:
        try:
            return lookup(config, key)
        except KeyError:
            return default

    norm = get("model.norm", {})
    data = get("data", {})
    return make_result(
        task=_task_name(str(get("model.class_path", ""))), model=str(get("model.model", "")),
        dataset=str(data.get("init_args", data).get("source", "")) if isinstance(data, dict) else "",
        norm=norm if isinstance(norm, dict) else {}, status=status, config=config, started_at=started_at,
        seed=cell.seed, wall_time_s=wall_time_s, error=error)


def finalize_cell(spec: GridSpec, cell: Cell, returncode: int | None, wall_time_s: float, started_at: str,
                  interrupted: bool = False, error: str | None = None) -> CellOutcome:
    """Read the cell's result.json after its process ended; write one (failed / interrupted) when there is none.

    ``error`` says why the cell failed when the grid knows better than the process's exit code (a broken job)."""
    path = cell.dir / RESULT_FILE
    result = None
    if path.exists():
        with contextlib.suppress(OSError, ValueError, TypeError):
            result = read_result(path)
    if result is None:
        if interrupted:
            status, error = "interrupted", "grid interrupted (Ctrl-C / SIGTERM) before the run recorded a result"
        elif returncode in STOPPED_BY:
            status = "interrupted"
            error = f"dyt-bench fit was stopped by {STOPPED_BY[returncode]} before it recorded a result"
        else:
            status = "failed"
            error = error or (f"dyt-bench fit exited with code {returncode} without writing {RESULT_FILE}; "
                              f"end of {STDERR_LOG}:\n{_tail(cell.dir / STDERR_LOG)}")
        result = fallback_result(spec.base, spec.overrides, cell, status, error, wall_time_s, started_at)
        written = _write_or_reason(cell, result)
        if written is not None:  # the cell's result could not be recorded (a full disk, ...): it failed, and says why
            return CellOutcome("failed", wall_time_s, {}, f"{written}; the run: {result.status}: {result.error}")
    elif interrupted and result.status not in FINISHED_STATUSES and result.status != "interrupted":
        result.status, result.error = "interrupted", (result.error or "") + "\n(grid interrupted)"
        _write_or_reason(cell, result)
    return CellOutcome(result.status, result.wall_time_s or wall_time_s, dict(result.metrics_best), result.error)


def _write_or_reason(cell: Cell, result: RunResult) -> str | None:
    """Write the cell's result.json; None when written, else why not (the grid carries on without it)."""
    try:
        write_result(cell.dir, result)
    except OSError as e:
        return f"could not write {cell.dir / RESULT_FILE}: {e.strerror or e}"
    return None


def finish_cell(spec: GridSpec, state: GridState, view: ProgressView, cell: Cell, returncode: int | None,
                wall_time_s: float, started_at: str, interrupted: bool = False,
                error: str | None = None) -> CellOutcome:
    """The end of a cell, whichever launcher ran it: its result settled, grid.json updated, the view told."""
    try:
        outcome = finalize_cell(spec, cell, returncode, wall_time_s, started_at, interrupted, error)
    except OSError as e:  # the cell's directory itself cannot be read or written
        outcome = CellOutcome("failed", wall_time_s, {}, f"could not settle the result of {cell.id}: {e}")
    state.finish(cell, outcome)
    view.finished(cell, outcome)
    return outcome


# ---------------------------------------------------------------------------------------------------------------
# A cell as a job (what a SLURM array task, or submitit's local executor, runs)
# ---------------------------------------------------------------------------------------------------------------
def _ignore_requeue_signal() -> None:
    """In the ``dyt-bench fit`` child of a job: SLURM signals every process of the step with submitit's USR2 before a
    time limit or pre-emption; the job's own handler stops the child with SIGTERM (it saves last.ckpt), so the child
    itself must not die of USR2's default action."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


class CellJob:
    """One cell run to the end in this process's child: the callable a SLURM array task (or submitit's local
    executor) executes. It is checkpointable in submitit's sense (``submitit.helpers.Checkpointable``'s protocol):
    on pre-emption or a time-out submitit calls :meth:`checkpoint`, which stops the run with SIGTERM (the run saves
    ``last.ckpt`` and records itself ``interrupted``) and resubmits the same cell, which then resumes from it."""

    grace_s = 80.0  # SLURM's warning comes 90 s before the kill (submitit's default --signal=USR2@90)

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {}  # a resubmission starts clean

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._proc = None

    def __call__(self, payload: dict[str, Any]) -> str:
        spec = spec_from_summary({"spec": payload["spec"]}, Path(payload["output"]))
        spec.base = Path(payload["spec"]["base"])
        cell = next(c for c in spec.cells() if c.id == payload["cell_id"])
        command = cell.command(spec)
        command[0] = sys.executable
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        rank = int(os.environ.get("SLURM_PROCID", "0"))
        if rank:  # one of several tasks of a multi-GPU cell: run this rank, leave the bookkeeping to rank 0
            cell.dir.mkdir(parents=True, exist_ok=True)
            with open(cell.dir / f"stdout.rank{rank}.log", "a") as out, \
                    open(cell.dir / f"stderr.rank{rank}.log", "a") as err:
                self._proc = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                              preexec_fn=_ignore_requeue_signal)
                code = self._proc.wait()
            return f"rank {rank} exited with code {code}"
        recover_pending_write(cell.dir / RESULT_FILE)
        if cell.status() in FINISHED_STATUSES:
            return str(cell.status())
        shelve_previous_result(cell.dir)
        write_cell_file(spec, cell, command)
        out, err = open_logs(cell, command)
        started_at, t0 = utc_now(), time.perf_counter()
        try:
            self._proc = proc = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                                 preexec_fn=_ignore_requeue_signal)
            try:
                returncode = proc.wait()
                interrupted = False
            except KeyboardInterrupt:
                proc.send_signal(signal.SIGINT)
                returncode, interrupted = proc.wait(), True
        finally:
            out.close()
            err.close()
        return finalize_cell(spec, cell, returncode, time.perf_counter() - t0, started_at, interrupted).status

    def checkpoint(self, payload: dict[str, Any]):
        """submitit's requeue hook: stop the running cell so that it saves ``last.ckpt``, then resubmit the cell."""
        import submitit

        proc = self._proc
        if proc is not None and proc.returncode is None:
            # This runs in a signal handler while __call__ waits in proc.wait(), which holds the Popen's wait lock:
            # reap the child with os.waitpid here, never with proc.wait()
            proc.send_signal(signal.SIGTERM)  # Lightning stops after this step; RunCheckpoint saves last.ckpt
            deadline = time.monotonic() + self.grace_s
            with contextlib.suppress(ChildProcessError):
                while not os.waitpid(proc.pid, os.WNOHANG)[0]:
                    if time.monotonic() > deadline:
                        proc.kill()
                        os.waitpid(proc.pid, 0)
                        break
                    time.sleep(0.2)
        return submitit.helpers.DelayedSubmission(type(self)(), payload)


run_cell_job = CellJob()  # the function the launchers submit (a cell's payload → its status)
