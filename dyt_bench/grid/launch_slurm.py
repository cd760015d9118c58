"""The submitit launcher: a grid's cells as one SLURM job array (or, with ``submitit-local``, submitit's local
executor), followed until every job ends unless ``--no-wait``."""

from __future__ import annotations

import time
from typing import Any

from dyt_bench.grid.cell_run import finish_cell, run_cell_job
from dyt_bench.grid.progress import ProgressView
from dyt_bench.grid.spec import Cell, GridError, GridSpec
from dyt_bench.grid.state import GridState
from dyt_bench.results import utc_now

TIME_FORMATS = "MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"


def _minutes(t: Any) -> int:
    """A SLURM time limit in whole minutes, rounded up: any of sbatch's forms (``MM``, ``MM:SS``, ``HH:MM:SS``,
    ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``) or a number of minutes."""
    if isinstance(t, bool) or not isinstance(t, (int, float, str)):
        raise GridError(f"slurm.time: {TIME_FORMATS}; got {t!r}")
    if not isinstance(t, str):
        if t <= 0:
            raise GridError(f"slurm.time must be > 0 minutes; got {t!r}")
        return int(-(-t // 1))
    text = t.strip()
    days, dash, rest = text.partition("-")
    if not dash:
        days, rest = "0", text
    parts = rest.split(":")
    if not days.isdigit() or not all(p.isdigit() for p in parts) or len(parts) > 3:
        raise GridError(f"slurm.time: {TIME_FORMATS}; got {t!r}")
    numbers = [int(p) for p in parts]
    if dash:  # D-HH, D-HH:MM, D-HH:MM:SS
        h, m, sec = (numbers + [0, 0])[:3]
    elif len(numbers) == 1:  # MM
        h, m, sec = 0, numbers[0], 0
    elif len(numbers) == 2:  # MM:SS
        h, (m, sec) = 0, numbers
    else:  # HH:MM:SS
        h, m, sec = numbers
    total = int(days) * 24 * 60 + h * 60 + m + (1 if sec else 0)
    if total <= 0:
        raise GridError(f"slurm.time must be > 0; got {t!r}")
    return total


def slurm_parameters(spec: GridSpec, args: Any, cluster: str | None) -> dict[str, Any]:
    """submitit executor parameters from the grid file's ``slurm:`` section, with the command-line flags on top
    (``args.partition``, ``time``, ``gpus``, ``account``, ``workers``)."""
    s = dict(spec.slurm)
    for key in ("partition", "time", "gpus", "account"):
        if getattr(args, key, None) is not None:
            s[key] = getattr(args, key)
    params: dict[str, Any] = {"timeout_min": _minutes(s.get("time", 60)), "name": f"dyt-{spec.name}"}
    if cluster == "local":
        return params
    # one task per GPU: Lightning, seeing SLURM, takes its ranks from the tasks (trainer.devices × num_nodes must match)
    params["gpus_per_node"] = int(s.get("gpus", 1))
    params["tasks_per_node"] = max(1, params["gpus_per_node"])
    params["nodes"] = int(s.get("nodes", 1))
    params["slurm_array_parallelism"] = int(s.get("array_parallelism", args.workers or 64))
    for key, name in (("partition", "slurm_partition"), ("account", "slurm_account"), ("qos", "slurm_qos"),
                      ("constraint", "slurm_constraint"), ("cpus_per_task", "cpus_per_task"), ("mem_gb", "mem_gb")):
        if s.get(key) is not None:
            params[name] = s[key]
    if s.get("additional"):
        params["slurm_additional_parameters"] = dict(s["additional"])
    return params


def run_submitit(spec: GridSpec, state: GridState, todo: list[Cell], args: Any, view: ProgressView) -> int:
    """Submit ``todo`` as one job array (SLURM, or submitit's local executor) and follow it until it ends."""
    import submitit

    cluster = "local" if args.launcher == "submitit-local" else "slurm"
    executor = submitit.AutoExecutor(folder=str(spec.output / ".submitit" / "%j"), cluster=cluster)
    executor.update_parameters(**slurm_parameters(spec, args, cluster))
    payloads = [{"spec": spec.to_dict(), "output": str(spec.output), "cell_id": c.id} for c in todo]
    jobs = executor.map_array(run_cell_job, payloads)
    for cell in todo:
        state.start(cell, write=False)
    state.extra["jobs"] = {c.id: j.job_id for c, j in zip(todo, jobs, strict=True)}
    state.write()
    view.message(f"submitted {len(jobs)} cell(s) through submitit ({cluster}); job ids "
                 f"{jobs[0].job_id}…{jobs[-1].job_id}; logs under {spec.output / '.submitit'}")
    if args.no_wait:
        view.message("not waiting (--no-wait): re-run the same command later to see what is left, or run the leaderboard")
        return 0
    open_jobs = dict(zip((c.id for c in todo), jobs, strict=True))
    by_id = {c.id: c for c in todo}
    try:
        while open_jobs:
            for cid, job in list(open_jobs.items()):
                if not job.done():
                    continue
                del open_jobs[cid]
                error = None
                try:
                    job.result()  # the job ran the cell and settled its result (run_cell_job)
                except Exception as e:  # noqa: BLE001 - the job itself broke (e.g. killed by SLURM)
                    error = f"submitit job {job.job_id} failed: {e}"
                cell = by_id[cid]
                finish_cell(spec, state, view, cell, None, state.elapsed(cell), utc_now(), error=error)
            view.refresh()
            time.sleep(1.0)
    except KeyboardInterrupt:
        ids = sorted({str(j.job_id).split("_")[0] for j in open_jobs.values()})
        view.message("stopped following the jobs; they keep running" +
                     (f" (cancel with: scancel {' '.join(ids)})" if cluster == "slurm" else "") +
                     "; re-run the grid or the leaderboard later")
        return 130
    return 0
