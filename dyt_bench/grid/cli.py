"""Run every cell (axes × seeds) of an ablation grid file, each as its own ``dyt-bench fit`` process, locally or as
a SLURM job array; re-running skips the cells that already completed or diverged.

Every cell writes ``<output>/<cell id>/result.json``, so a killed or interrupted grid is finished by running the same
command again. Nothing here imports torch or Lightning: the cells do, in their own processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import yaml
from jsonargparse import ActionConfigFile, ArgumentParser

from dyt_bench.grid.cell_run import cells_to_run, failed_out_of_memory, recover_results
from dyt_bench.grid.launch_local import run_local
from dyt_bench.grid.launch_slurm import TIME_FORMATS, run_submitit
from dyt_bench.grid.progress import ProgressView, RichProgressView
from dyt_bench.grid.spec import (
    GRID_SUMMARY_FILE,
    LAUNCHERS,
    Cell,
    GridError,
    GridSpec,
    canonical,
    check_dotted,
    load_grid,
)
from dyt_bench.grid.state import GridState
from dyt_bench.results import DEFAULT_METRIC, atomic_write_text, pending_writes


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="dyt-bench grid",
        description="Run every cell (axes × seeds) of a grid file, each as its own `dyt-bench fit` process. "
                    "Re-running skips cells whose result.json says completed or diverged.")
    p.add_argument("--config", action=ActionConfigFile, help="read these options from a YAML file")
    p.add_argument("grid_file", help="grid YAML (name, base, axes, seeds, output, …; see configs/grids/)")
    p.add_argument("--dry-run", action="store_true", help="list the cells, their status and commands; run nothing")
    p.add_argument("--workers", type=int, default=None,
                   help="cells run at once (default: the number of --devices, else 1)")
    p.add_argument("--devices", default=None,
                   help="comma-separated GPU ids, e.g. 0,1,2,3: each running cell sees one (CUDA_VISIBLE_DEVICES)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads per local cell (OMP_NUM_THREADS); default: cores ÷ workers when --workers > 1 "
                        "(several cells sharing cores with too many threads each run far slower), else torch's own")
    p.add_argument("--launcher", default="local", choices=LAUNCHERS,
                   help="local processes (default), a SLURM job array through submitit, or submitit's local "
                        "executor (all cells at once; to try the SLURM path without a cluster)")
    p.add_argument("--partition", help="SLURM partition (overrides slurm.partition)")
    p.add_argument("--time", help=f"SLURM time limit per cell: {TIME_FORMATS} (overrides slurm.time)")
    p.add_argument("--gpus", type=int, help="GPUs per cell on SLURM (overrides slurm.gpus; default 1)")
    p.add_argument("--account", help="SLURM account (overrides slurm.account)")
    p.add_argument("--no-wait", action="store_true", help="SLURM: submit and return without following the jobs")
    p.add_argument("--retry-failed", action="store_true",
                   help="also re-run cells whose result is 'failed' (interrupted and missing cells always run)")
    p.add_argument("--output", help="output directory (overrides the grid file's `output`)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="add a fixed override for every cell, e.g. --set data.root=/datasets/imagenet (repeatable; "
                        "VALUE is read as YAML)")
    p.add_argument("--progress", choices=("auto", "rich", "plain"), default="auto",
                   help="live panel (rich) or one line per event (plain); auto: rich on a terminal")
    p.add_argument("--no-check", action="store_true",
                   help="skip building every distinct cell config (no training) before launching")
    return p


PREFLIGHT_CACHE = ".preflight.json"  # in the output dir: hashes of cell configs that already built


def distinct_configs(spec: GridSpec, cells: list[Cell]) -> dict[str, Cell]:
    """One cell per distinct config (seeds aside), keyed by a hash of what it runs: the base config file's bytes,
    the grid's overrides and the cell's values."""
    try:
        base = Path(spec.base).read_bytes()
    except OSError as e:
        raise GridError(f"base: cannot read {spec.base}: {e.strerror}") from None
    out: dict[str, Cell] = {}
    for cell in cells:
        key = hashlib.sha256(base + canonical({**spec.overrides, **cell.assignments}).encode()).hexdigest()[:16]
        out.setdefault(key, cell)
    return out


def _read_cache(path: Path) -> set[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    return {str(k) for k in data} if isinstance(data, list) else set()


def preflight(spec: GridSpec, cells: list[Cell], timeout_s: float = 600) -> int:
    """Parse and build (on the meta device, no training) the config of every distinct cell, in one process, so that a
    typo or a bad value fails once, before any cell runs. Configs that built before (``.preflight.json``) are
    skipped. Returns how many configs were checked."""
    configs = distinct_configs(spec, cells)
    cache_path = spec.output / PREFLIGHT_CACHE
    done = _read_cache(cache_path)
    todo = {k: c for k, c in configs.items() if k not in done}
    if not todo:
        return 0
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as f:
        json.dump([{"id": k, "args": c.fit_args(spec)} for k, c in todo.items()], f)
    try:
        proc = subprocess.run([sys.executable, "-m", "dyt_bench.lightning_cli", f.name], capture_output=True,
                              text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise GridError(f"checking the {len(todo)} cell configs took over {timeout_s:.0f} s; --no-check skips it") from None
    finally:
        os.unlink(f.name)
    errors: dict[str, str] = {}
    built: list[str] = []
    for line in proc.stdout.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("id") in todo:
            (built.append(row["id"]) if row.get("error") is None else errors.__setitem__(row["id"], row["error"]))
    if errors:
        first = next(iter(errors))
        raise GridError(f"the config of cell {todo[first].id} does not parse or build ({len(errors)} of "
                        f"{len(configs)} distinct cell configs fail): {errors[first]}")
    if len(built) != len(todo):
        raise GridError(f"checking the cell configs failed (exit {proc.returncode}): "
                        f"{proc.stderr.strip()[-2000:]}")
    with contextlib.suppress(OSError):
        atomic_write_text(cache_path, json.dumps(sorted(done | set(built))) + "\n")
    return len(todo)


def check_writable(output: Path) -> None:
    """The output directory can be created and written, checked before anything slow runs."""
    try:
        output.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output, prefix=".write-check-"):
            pass
    except OSError as e:
        raise GridError(f"output: cannot write to {output} ({e.strerror or e}); give a writable --output") from None


def remove_stale_writes(output: Path, min_age_s: float = 60.0) -> None:
    """Remove what killed writes of grid.json / the preflight cache left behind (older than a minute: not a write
    another grid process is doing now)."""
    now = time.time()
    for name in (GRID_SUMMARY_FILE, PREFLIGHT_CACHE):
        for tmp in pending_writes(output / name):
            with contextlib.suppress(OSError):
                if now - tmp.stat().st_mtime > min_age_s:
                    tmp.unlink()


def _parse_devices(text: str | int | None) -> list[str] | None:
    if text is None:
        return None
    devices = [d.strip() for d in str(text).split(",") if d.strip()]
    if not devices or not all(d.isdigit() for d in devices):
        raise GridError(f"--devices: a comma-separated list of GPU ids such as 0,1,2,3; got {text!r}")
    return devices


def main(argv: list[str] | None = None) -> int:
    """``dyt-bench grid``: 0 when every cell ran, 1 when some failed, 130 when interrupted, 2 for a bad grid file or
    option."""
    args = build_parser().parse_args(argv)
    try:
        spec = load_grid(args.grid_file, output=args.output)
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep:
                raise GridError(f"--set must be KEY=VALUE (e.g. data.root=/datasets/imagenet); got {item!r}")
            spec.overrides[check_dotted("--set", key.strip())] = yaml.safe_load(value) if value else ""
        devices = _parse_devices(args.devices)
        workers = args.workers if args.workers is not None else (len(devices) if devices else 1)
        if workers < 1:
            raise GridError(f"--workers must be >= 1; got {workers}")
        cells = spec.cells()
        recover_results(cells)
        todo = cells_to_run(cells, args.retry_failed)
        if args.threads is not None and args.threads < 1:
            raise GridError(f"--threads must be >= 1; got {args.threads}")
        if args.dry_run:
            return _dry_run(spec, cells, todo)
        done = len(cells) - len(todo)
        print(f"[grid {spec.name}] {len(cells)} cells ({' × '.join(str(len(a.values)) for a in spec.axes)} × "
              f"{len(spec.seeds)} seeds); {done} already done, {len(todo)} to run; output {spec.output}",
              flush=True)
        check_writable(spec.output)
        remove_stale_writes(spec.output)
        if todo and not args.no_check:  # before any cell runs: a config error costs seconds, not a grid
            checked = preflight(spec, todo)
            if checked:
                print(f"[grid {spec.name}] checked {checked} distinct cell config(s): they parse and build", flush=True)
        state = GridState(spec, cells, args.launcher)
        if not state.write():
            raise GridError(state.write_error or "cannot write grid.json")
        if not todo:
            failed = state.counts()["failed"]
            print(f"[grid {spec.name}] nothing to run" + (f" ({failed} failed; --retry-failed runs them again)"
                                                          if failed else "")
                  + f"; `dyt-bench leaderboard {spec.output}` shows the results")
            return 1 if failed else 0
    except GridError as e:
        print(f"dyt-bench grid: error: {e}", file=sys.stderr)
        return 2
    use_rich = args.progress == "rich" or (args.progress == "auto" and sys.stdout.isatty())
    metric = spec.leaderboard.get("metric", DEFAULT_METRIC)
    view_cls = RichProgressView if use_rich else ProgressView
    try:
        with view_cls(state, len(todo), workers if args.launcher == "local" else len(todo), metric) as view:
            if args.launcher == "local":
                threads = args.threads
                if threads is None and workers > 1 and "OMP_NUM_THREADS" not in os.environ:
                    threads = max(1, (os.cpu_count() or 1) // workers)
                code = run_local(spec, state, todo, workers, devices, view, threads=threads)
            else:
                code = run_submitit(spec, state, todo, args, view)
    except GridError as e:
        print(f"dyt-bench grid: error: {e}", file=sys.stderr)
        return 2
    except Exception:  # keep grid.json truthful even if the launcher itself breaks
        state.write()
        traceback.print_exc()
        return 1
    failed = _report(spec, state, cells, workers, code)
    if code == 0 and args.launcher != "local" and args.no_wait:
        return 0
    print(f"[grid {spec.name}] results: dyt-bench leaderboard {spec.output}", flush=True)
    return 1 if code == 0 and failed else code


def _report(spec: GridSpec, state: GridState, cells: list[Cell], workers: int, code: int) -> int:
    """Print how the grid ended (counts, failed cells, an out-of-memory hint); the number of failed cells."""
    c = state.counts()
    print(f"[grid {spec.name}] {'interrupted' if code == 130 else 'done'}: completed {c['completed']}, "
          f"diverged {c['diverged']}, failed {c['failed']}, interrupted {c['interrupted']}, "
          f"pending {c['pending'] + c['running']}; summary {spec.output / GRID_SUMMARY_FILE}", flush=True)
    if c["failed"]:
        failed = [cell.id for cell in cells if state.status[cell.id] == "failed"]
        print(f"[grid {spec.name}] failed cells (logs in each cell dir; --retry-failed runs them again): "
              + ", ".join(failed[:10]) + (" …" if len(failed) > 10 else ""), flush=True)
        oom = [cell for cell in cells if state.status[cell.id] == "failed" and failed_out_of_memory(cell)]
        if oom:
            print(f"[grid {spec.name}] {len(oom)} of them ran out of GPU memory"
                  + (f" with {workers} cells at a time: re-run with --retry-failed and fewer --workers"
                     if workers > 1 else ": re-run with --retry-failed once the GPU is free, or with a smaller "
                     "batch"), flush=True)
    return c["failed"]


def _dry_run(spec: GridSpec, cells: list[Cell], todo: list[Cell]) -> int:
    todo_ids = {c.id for c in todo}
    print(f"grid {spec.name}: {len(cells)} cells, {len(todo)} to run, output {spec.output}")
    for cell in cells:
        status = cell.status() or "pending"
        action = "run " if cell.id in todo_ids else "skip"
        print(f"  [{action}] {cell.id}  ({status})")
        print(f"         {shlex.join(cell.command(spec))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
