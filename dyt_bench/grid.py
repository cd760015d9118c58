"""``dyt-bench grid FILE``: expand a grid file (base config × axes × seeds) into cells and run each cell's
``dyt-bench fit`` in its own process — locally (N at once, one GPU each) or on SLURM through submitit.

Every cell writes ``<output>/<cell id>/result.json``; re-running the grid skips cells that already completed or
diverged, so a killed or interrupted grid is finished by running the same command again.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import product
from pathlib import Path
from typing import Any

import yaml

from dyt_bench.results import (
    FINISHED_STATUSES,
    RESULT_FILE,
    STATUSES,
    RunResult,
    atomic_write_text,
    read_result,
    write_result,
)

GRID_SUMMARY_FILE = "grid.json"
CELL_FILE = "cell.json"
LOCK_FILE = ".lock"
STDOUT_LOG = "stdout.log"
STDERR_LOG = "stderr.log"
ATTEMPTS_DIR = "attempts"  # earlier failed / interrupted result.json files of a cell, kept out of the leaderboard

GRID_KEYS = ("name", "description", "base", "axes", "seeds", "output", "overrides", "baseline", "paper",
             "leaderboard", "slurm")
LEADERBOARD_KEYS = ("rows", "cols", "metric", "value", "mode", "scale", "digits", "test", "alpha")
PAPER_KEYS = ("source", "metric", "values")
SLURM_KEYS = ("partition", "time", "gpus", "nodes", "account", "cpus_per_task", "mem_gb", "array_parallelism", "qos",
              "constraint", "additional")
CONFIG_ROOTS = ("model", "data", "trainer", "seed_everything", "optimizer", "lr_scheduler", "ckpt_path")
LAUNCHERS = ("local", "slurm", "submitit-local")
LABEL_KEY = "label"  # a tied axis value may name itself: {label: ViT, model.model: vit_tiny_patch16_224, ...}


class GridError(ValueError):
    """A grid file or a grid option is wrong; the message names the field and what is allowed."""


# ---------------------------------------------------------------------------------------------------------------
# Dotted config keys
# ---------------------------------------------------------------------------------------------------------------
def lookup(config: dict[str, Any], dotted: str) -> Any:
    """Value of a dotted key in a resolved LightningCLI config; ``model.norm.kind`` also finds
    ``model.init_args.norm.kind`` (subclass mode). Raises KeyError when absent."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict):
            raise KeyError(dotted)
        if part in node:
            node = node[part]
        elif isinstance(node.get("init_args"), dict) and part in node["init_args"]:
            node = node["init_args"][part]
        else:
            raise KeyError(dotted)
    return node


def assign(config: dict[str, Any], dotted: str, value: Any) -> None:
    """Set a dotted key in a config dict, going through ``init_args`` where the node is a ``class_path`` node."""
    parts = dotted.split(".")
    node = config
    for part in parts[:-1]:
        if "class_path" in node and part not in ("class_path", "init_args"):
            node = node.setdefault("init_args", {})
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = node[part] = {}
        node = nxt
    if "class_path" in node and parts[-1] not in ("class_path", "init_args"):
        node = node.setdefault("init_args", {})
    node[parts[-1]] = value


def canonical(value: Any) -> str:
    """A comparable form of a config value (1 == 1.0, key order ignored)."""
    def norm(v: Any) -> Any:
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, dict):
            return {str(k): norm(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [norm(x) for x in v]
        return str(v)

    return json.dumps(norm(value), sort_keys=True)


def format_value(value: Any) -> str:
    """How an axis value is shown in tables and cell ids."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def cli_value(value: Any) -> str:
    """A config value as one LightningCLI argument (jsonargparse parses JSON / YAML)."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


# ---------------------------------------------------------------------------------------------------------------
# Grid specification
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AxisValue:
    """One value of an axis: the dotted config keys it sets, and its label in ids and tables."""

    label: str
    assignments: dict[str, Any]

    def matches(self, config: dict[str, Any]) -> bool:
        for key, want in self.assignments.items():
            try:
                have = lookup(config, key)
            except KeyError:
                return False
            if canonical(have) != canonical(want):
                return False
        return True


@dataclass(frozen=True)
class Axis:
    name: str
    values: tuple[AxisValue, ...]

    @property
    def short(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    def find(self, value: Any) -> AxisValue:
        """The axis value named by ``value`` (a label or the raw value of a one-key axis)."""
        for v in self.values:
            if isinstance(value, str) and value == v.label:
                return v
        for v in self.values:
            if len(v.assignments) == 1 and canonical(next(iter(v.assignments.values()))) == canonical(value):
                return v
            if isinstance(value, dict) and canonical(v.assignments) == canonical(
                    {k: x for k, x in value.items() if k != LABEL_KEY}):
                return v
        raise GridError(f"{value!r} is not a value of axis {self.name!r}; allowed: "
                        + ", ".join(v.label for v in self.values))


@dataclass
class GridSpec:
    """A validated grid file."""

    name: str
    base: Path
    axes: list[Axis]
    seeds: list[int]
    output: Path
    overrides: dict[str, Any] = field(default_factory=dict)
    # reference cells for Δ: [{"when": {axis: label}, "ref": {axis: label}}]; a cell uses the first entry whose
    # `when` it matches, and its baseline is the cell with `ref` substituted
    baseline: list[dict[str, dict[str, str]]] = field(default_factory=list)
    paper: dict[str, Any] = field(default_factory=dict)  # source, metric, values: [{axis: label, ..., value: x}]
    leaderboard: dict[str, Any] = field(default_factory=dict)
    slurm: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    path: Path | None = None

    def axis(self, name: str) -> Axis:
        for a in self.axes:
            if name in (a.name, a.short):
                return a
        raise GridError(f"unknown axis {name!r}; the axes of grid {self.name!r} are: "
                        + ", ".join(a.name for a in self.axes))

    def cells(self) -> list[Cell]:
        out = []
        combos = [(c, s) for c in product(*(a.values for a in self.axes)) for s in self.seeds]
        for index, (combo, seed) in enumerate(combos):
            assignments: dict[str, Any] = {}
            for value in combo:
                assignments.update(value.assignments)
            labels = {a.name: v.label for a, v in zip(self.axes, combo, strict=True)}
            out.append(Cell(cell_id(combo, seed), index, labels, assignments, seed, self.output / cell_id(combo, seed)))
        return out

    def to_dict(self) -> dict[str, Any]:
        """What the leaderboard needs to rebuild the tables from ``grid.json`` alone."""
        return {
            "name": self.name, "description": self.description, "base": str(self.base),
            "axes": {a.name: [dict(v.assignments, **{LABEL_KEY: v.label}) for v in a.values] for a in self.axes},
            "seeds": self.seeds, "overrides": self.overrides, "baseline": self.baseline, "paper": self.paper,
            "leaderboard": self.leaderboard, "slurm": self.slurm,
        }


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "-", text).strip("-")


def cell_id(combo: tuple[AxisValue, ...], seed: int) -> str:
    """Readable and stable: ``kind=tanh_learnable_alpha=true_s0-1a2b3c`` (the hash keeps ids unique)."""
    parts = []
    for value in combo:
        if len(value.assignments) == 1:
            key, raw = next(iter(value.assignments.items()))
            parts.append(f"{key.rsplit('.', 1)[-1]}={_slug(format_value(raw))[:24]}")
        else:
            parts.append(_slug(value.label)[:24])
    readable = "_".join(p for p in parts if p)[:100] + f"_s{seed}"
    digest = hashlib.sha1(
        json.dumps([canonical(v.assignments) for v in combo] + [seed]).encode()).hexdigest()[:6]
    return f"{readable}-{digest}"


@dataclass
class Cell:
    """One run of the grid: an assignment of every axis plus a seed, in its own directory."""

    id: str
    index: int
    labels: dict[str, str]
    assignments: dict[str, Any]
    seed: int
    dir: Path

    def fit_args(self, spec: GridSpec) -> list[str]:
        """The ``dyt-bench`` arguments of this cell: base config, fixed overrides, axis values, seed, run dir."""
        args = ["fit", "--config", str(spec.base)]
        for key, value in {**spec.overrides, **self.assignments}.items():
            args += [f"--{key}", cli_value(value)]
        d = str(self.dir)
        args += ["--seed_everything", str(self.seed), "--trainer.default_root_dir", d,
                 "--trainer.logger.class_path", "lightning.pytorch.loggers.CSVLogger",
                 "--trainer.logger.init_args.save_dir", d, "--trainer.logger.init_args.name", "",
                 "--trainer.logger.init_args.version", ""]
        return args

    def command(self, spec: GridSpec) -> list[str]:
        return [sys.executable, "-m", "dyt_bench.cli", *self.fit_args(spec)]

    def status(self) -> str | None:
        """Status of this cell's result.json, None when it has none (or an unreadable one)."""
        path = self.dir / RESULT_FILE
        if not path.exists():
            return None
        try:
            return read_result(path).status
        except (OSError, ValueError, TypeError):
            return None


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise GridError(f"grid file not found: {path}") from None
    except yaml.YAMLError as e:
        raise GridError(f"grid file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise GridError(f"grid file {path} must be a YAML mapping with keys: {', '.join(GRID_KEYS)}")
    return data


def _check_keys(where: str, data: dict, allowed: tuple[str, ...]) -> None:
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise GridError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}")


def _check_dotted(where: str, key: Any) -> str:
    if not isinstance(key, str) or not key or key.split(".")[0] not in CONFIG_ROOTS:
        raise GridError(f"{where}: {key!r} is not a dotted config key; it must start with one of "
                        f"{', '.join(CONFIG_ROOTS)} (e.g. model.norm.kind)")
    return key


def _parse_axis(name: Any, values: Any) -> Axis:
    if not isinstance(name, str) or not name:
        raise GridError(f"axes: axis names must be strings; got {name!r}")
    if not isinstance(values, list) or not values:
        raise GridError(f"axes.{name}: must be a non-empty list of values (or of dicts of dotted keys for tied values)")
    parsed = []
    for i, value in enumerate(values):
        if isinstance(value, dict):
            assignments = {}
            for key, v in value.items():
                if key == LABEL_KEY:
                    continue
                assignments[_check_dotted(f"axes.{name}[{i}]", key)] = v
            if not assignments:
                raise GridError(f"axes.{name}[{i}]: a tied value needs at least one dotted config key")
            label = value.get(LABEL_KEY)
            label = str(label) if label is not None else ",".join(format_value(v) for v in assignments.values())
            parsed.append(AxisValue(label, assignments))
        else:
            _check_dotted(f"axes.{name}", name)
            parsed.append(AxisValue(format_value(value), {name: value}))
    labels = [v.label for v in parsed]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise GridError(f"axes.{name}: values must be distinct; repeated: {', '.join(dupes)} "
                        f"(give tied values distinct '{LABEL_KEY}'s)")
    return Axis(name, tuple(parsed))


def _resolve_base(base: Any, grid_path: Path | None) -> Path:
    if not isinstance(base, str) or not base:
        raise GridError("base: must be the path of a LightningCLI config (relative to the grid file or the cwd)")
    candidates = [Path(base)] if Path(base).is_absolute() else (
        ([grid_path.parent / base] if grid_path else []) + [Path.cwd() / base])
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise GridError(f"base: config {base!r} not found (looked in: {', '.join(str(c) for c in candidates)}); "
                    "the base config is a dyt-bench fit config, relative to the grid file or the cwd")


def parse_grid(data: dict[str, Any], path: Path | None = None, output: str | os.PathLike | None = None) -> GridSpec:
    """Validate a grid mapping (as loaded from YAML) into a GridSpec; errors name the field and what is allowed."""
    _check_keys("grid file", data, GRID_KEYS)
    for required in ("name", "base", "axes"):
        if required not in data:
            raise GridError(f"grid file: missing required key {required!r} (required: name, base, axes)")
    name = data["name"]
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise GridError(f"name: must be a non-empty string of letters, digits, '.', '_' or '-'; got {name!r}")
    axes_data = data["axes"]
    if not isinstance(axes_data, dict) or not axes_data:
        raise GridError("axes: must be a mapping of dotted config keys (or axis names) to lists of values")
    axes = [_parse_axis(k, v) for k, v in axes_data.items()]
    seeds = data.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = list(range(seeds))
    if (not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
            or len(set(seeds)) != len(seeds)):
        raise GridError(f"seeds: must be a list of distinct integers (or a count n for 0..n-1); got {seeds!r}")
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise GridError("overrides: must be a mapping of dotted config keys to values")
    for k in overrides:
        _check_dotted("overrides", k)
    out = output if output is not None else data.get("output", f"runs/grids/{name}")
    if not isinstance(out, (str, os.PathLike)):
        raise GridError(f"output: must be a directory path; got {out!r}")
    spec = GridSpec(name=name, base=_resolve_base(data["base"], path), axes=axes, seeds=list(seeds),
                    output=Path(out).resolve(), overrides=dict(overrides), description=str(data.get("description", "")),
                    path=path.resolve() if path else None)

    spec.baseline = parse_baseline(data.get("baseline"), spec.axis)

    paper = data.get("paper") or {}
    if paper:
        if not isinstance(paper, dict):
            raise GridError("paper: must be a mapping with keys: " + ", ".join(PAPER_KEYS))
        _check_keys("paper", paper, PAPER_KEYS)
        values = paper.get("values") or []
        if not isinstance(values, list):
            raise GridError("paper.values: must be a list of {<axis>: <value>, ..., value: <paper's number or text>}")
        entries = []
        for i, entry in enumerate(values):
            if not isinstance(entry, dict) or "value" not in entry:
                raise GridError(f"paper.values[{i}]: must be a mapping of axis values plus 'value'")
            e = {spec.axis(k).name: spec.axis(k).find(v).label for k, v in entry.items() if k != "value"}
            e["value"] = entry["value"]
            entries.append(e)
        spec.paper = {"source": str(paper.get("source", "")), "metric": paper.get("metric"), "values": entries}

    lb = data.get("leaderboard") or {}
    if not isinstance(lb, dict):
        raise GridError("leaderboard: must be a mapping with keys: " + ", ".join(LEADERBOARD_KEYS))
    _check_keys("leaderboard", lb, LEADERBOARD_KEYS)
    for key in ("rows", "cols"):
        if key in lb:
            names = lb[key] if isinstance(lb[key], list) else [lb[key]]
            lb[key] = [spec.axis(n).name for n in names]
    spec.leaderboard = dict(lb)

    slurm = data.get("slurm") or {}
    if not isinstance(slurm, dict):
        raise GridError("slurm: must be a mapping with keys: " + ", ".join(SLURM_KEYS))
    _check_keys("slurm", slurm, SLURM_KEYS)
    spec.slurm = dict(slurm)
    return spec


def parse_baseline(baseline: Any, axis_of) -> list[dict[str, dict[str, str]]]:
    """``{axis: value}`` (one reference for every cell) or a list of them, each optionally with ``when: {axis: value}``
    (the reference for the cells matching it, e.g. batchnorm for the ResNet, layernorm for the ViT)."""
    if not baseline:
        return []
    entries = baseline if isinstance(baseline, list) else [baseline]
    out = []
    for i, entry in enumerate(entries):
        where = "baseline" if isinstance(baseline, dict) else f"baseline[{i}]"
        if not isinstance(entry, dict):
            raise GridError(f"{where}: must be a mapping of axis name → value, e.g. {{model.norm.kind: layernorm}}, "
                            "or a list of them with optional `when: {axis: value}`")
        when = entry.get("when") or {}
        if not isinstance(when, dict):
            raise GridError(f"{where}.when: must be a mapping of axis name → value")
        ref = {k: v for k, v in entry.items() if k != "when"}
        if not ref:
            raise GridError(f"{where}: names no axis value to compare against")
        out.append({"when": {axis_of(k).name: axis_of(k).find(v).label for k, v in when.items()},
                    "ref": {axis_of(k).name: axis_of(k).find(v).label for k, v in ref.items()}})
    return out


def load_grid(path: str | os.PathLike, output: str | os.PathLike | None = None) -> GridSpec:
    path = Path(path)
    return parse_grid(_load_yaml(path), path, output)


def spec_from_summary(summary: dict[str, Any], output: Path) -> GridSpec:
    """Rebuild a GridSpec from a ``grid.json`` (what the leaderboard does when given a grid's output directory)."""
    s = summary["spec"]
    axes = [Axis(name, tuple(AxisValue(v[LABEL_KEY], {k: x for k, x in v.items() if k != LABEL_KEY}) for v in values))
            for name, values in s["axes"].items()]
    return GridSpec(name=s["name"], base=Path(s["base"]), axes=axes, seeds=list(s["seeds"]), output=output,
                    overrides=s.get("overrides") or {}, baseline=s.get("baseline") or [], paper=s.get("paper") or {},
                    leaderboard=s.get("leaderboard") or {}, slurm=s.get("slurm") or {},
                    description=s.get("description", ""))


# ---------------------------------------------------------------------------------------------------------------
# Running one cell
# ---------------------------------------------------------------------------------------------------------------
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _prepare_cell_process() -> None:
    """Runs in the forked cell process before exec: Ctrl-C semantics even when the grid runs with SIGINT ignored
    (nohup, `&`), and on Linux a SIGINT (→ Lightning records 'interrupted') if the grid dies, even by SIGKILL."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGINT)  # PR_SET_PDEATHSIG
        except Exception:  # noqa: BLE001 - best effort; elsewhere the cell lock keeps a rerun from overlapping
            pass


def _try_lock(cell_dir: Path) -> int | None:
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


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - chars * 4))
            return f.read().decode("utf-8", "replace")[-chars:]
    except OSError:
        return ""


def _shelve_previous_result(cell_dir: Path) -> None:
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


def _task_name(class_path: str) -> str:
    """The ``task_name`` a task class records in its results (so a cell that failed early joins its task's table)."""
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
    """The result a cell gets when its process ended without writing one (e.g. a config error before training)."""
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
    return RunResult(
        task=_task_name(str(get("model.class_path", ""))), model=str(get("model.model", "")),
        dataset=str(data.get("init_args", data).get("source", "")) if isinstance(data, dict) else "",
        norm=norm if isinstance(norm, dict) else {}, status=status, seed=cell.seed, wall_time_s=wall_time_s,
        config=json.loads(json.dumps(config, default=str)), error=error, started_at=started_at, finished_at=_now())


@dataclass
class CellOutcome:
    status: str
    wall_time_s: float
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def finalize_cell(spec: GridSpec, cell: Cell, returncode: int | None, wall_time_s: float, started_at: str,
                  interrupted: bool = False) -> CellOutcome:
    """Read the cell's result.json after its process ended; write one (failed / interrupted) when there is none."""
    path = cell.dir / RESULT_FILE
    result = None
    if path.exists():
        with contextlib.suppress(OSError, ValueError, TypeError):
            result = read_result(path)
    if result is None:
        if interrupted:
            status, error = "interrupted", "grid interrupted (Ctrl-C / SIGTERM) before the run recorded a result"
        else:
            status = "failed"
            error = (f"dyt-bench fit exited with code {returncode} without writing {RESULT_FILE}; "
                     f"end of {STDERR_LOG}:\n{_tail(cell.dir / STDERR_LOG)}")
        result = fallback_result(spec.base, spec.overrides, cell, status, error, wall_time_s, started_at)
        write_result(cell.dir, result)
    elif interrupted and result.status not in FINISHED_STATUSES and result.status != "interrupted":
        result.status, result.error = "interrupted", (result.error or "") + "\n(grid interrupted)"
        write_result(cell.dir, result)
    return CellOutcome(result.status, result.wall_time_s or wall_time_s, dict(result.metrics_best), result.error)


def _open_logs(cell: Cell, command: list[str]) -> tuple[Any, Any]:
    cell.dir.mkdir(parents=True, exist_ok=True)
    out = open(cell.dir / STDOUT_LOG, "a", encoding="utf-8")
    err = open(cell.dir / STDERR_LOG, "a", encoding="utf-8")
    header = f"\n===== {_now()} {shlex.join(command)}\n"
    out.write(header)
    err.write(header)
    out.flush()
    err.flush()
    return out, err


def _write_cell_file(spec: GridSpec, cell: Cell, command: list[str]) -> None:
    atomic_write_text(cell.dir / CELL_FILE, json.dumps({
        "grid": spec.name, "id": cell.id, "axes": cell.labels, "assignments": cell.assignments, "seed": cell.seed,
        "command": shlex.join(command), "base": str(spec.base), "overrides": spec.overrides}, indent=2, default=str) + "\n")


def run_cell_job(payload: dict[str, Any]) -> str:
    """Run one cell to the end in this process's child (the function a SLURM array task executes); its status."""
    spec = spec_from_summary({"spec": payload["spec"]}, Path(payload["output"]))
    spec.base = Path(payload["spec"]["base"])
    cell = next(c for c in spec.cells() if c.id == payload["cell_id"])
    command = cell.command(spec)
    command[0] = sys.executable
    rank = int(os.environ.get("SLURM_PROCID", "0"))
    if rank:  # one of several tasks of a multi-GPU cell: run this rank, leave the bookkeeping to rank 0
        cell.dir.mkdir(parents=True, exist_ok=True)
        with open(cell.dir / f"stdout.rank{rank}.log", "a") as out, open(cell.dir / f"stderr.rank{rank}.log", "a") as err:
            code = subprocess.call(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return f"rank {rank} exited with code {code}"
    _shelve_previous_result(cell.dir)
    _write_cell_file(spec, cell, command)
    out, err = _open_logs(cell, command)
    started_at, t0 = _now(), time.perf_counter()
    try:
        proc = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
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


# ---------------------------------------------------------------------------------------------------------------
# Grid summary (grid.json)
# ---------------------------------------------------------------------------------------------------------------
class GridState:
    """Statuses of every cell, mirrored atomically into ``<output>/grid.json`` on each change."""

    def __init__(self, spec: GridSpec, cells: list[Cell], launcher: str) -> None:
        self.spec, self.cells, self.launcher = spec, cells, launcher
        self.status: dict[str, str] = {}
        self.wall: dict[str, float] = {}
        self.metrics: dict[str, dict[str, float]] = {}
        self.started: dict[str, float] = {}
        self.device: dict[str, str] = {}
        self.extra: dict[str, Any] = {}
        self.created = _now()
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

    def write(self) -> None:
        spec = self.spec
        cells = [{"id": c.id, "dir": c.dir.name, "axes": c.labels, "seed": c.seed, "status": self.status[c.id],
                  "wall_time_s": self.wall.get(c.id), "metrics_best": self.metrics.get(c.id, {})}
                 for c in self.cells]
        summary = {"name": spec.name, "grid_file": str(spec.path) if spec.path else None, "launcher": self.launcher,
                   "created": self.created, "updated": _now(), "counts": self.counts(), "spec": spec.to_dict(),
                   "cells": cells, **self.extra}
        atomic_write_text(spec.output / GRID_SUMMARY_FILE, json.dumps(summary, indent=2, default=str) + "\n")


# ---------------------------------------------------------------------------------------------------------------
# Progress views
# ---------------------------------------------------------------------------------------------------------------
def _fmt_seconds(s: float | None) -> str:
    if s is None or s != s:
        return "?"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{sec:02d}s" if m else f"{sec}s")


class ProgressView:
    """Plain progress lines (for logs and non-TTY output); RichProgressView redraws a live panel instead."""

    def __init__(self, state: GridState, to_run: int, workers: int, metric: str = "val/acc1") -> None:
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
            table.add_row(cid, _fmt_seconds(time.perf_counter() - t), self.state.device.get(cid, "-"))
        return Group(head, bar, table)

    def started(self, cell: Cell, device: str | None) -> None:
        self.refresh()

    def finished(self, cell: Cell, outcome: CellOutcome) -> None:
        elapsed = self._elapsed(cell, outcome)
        value = outcome.metrics.get(self.metric)
        colour = {"completed": "green", "diverged": "yellow", "failed": "red"}.get(outcome.status, "magenta")
        shown = f" best {self.metric}={value:.4g}" if value is not None else ""
        self.live.console.print(f"[{colour}]{outcome.status:<11}[/{colour}] {cell.id} ({_fmt_seconds(elapsed)}){shown}")
        self.refresh()

    def message(self, text: str) -> None:
        self.live.console.print(text)
        self.refresh()

    def refresh(self) -> None:
        self.live.update(self._render(), refresh=True)


# ---------------------------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class _Running:
    cell: Cell
    proc: subprocess.Popen
    lock_fd: int
    logs: tuple[Any, Any]
    t0: float
    started_at: str
    slot: int


_OOM_MARKERS = ("CUDA out of memory", "OutOfMemoryError", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED")


def failed_out_of_memory(cell: Cell) -> bool:
    """True when the cell's recorded error is the GPU running out of memory (e.g. too many cells on one GPU)."""
    try:
        error = read_result(cell.dir / RESULT_FILE).error or ""
    except (OSError, ValueError, TypeError):
        return False
    return any(marker in error for marker in _OOM_MARKERS)


def cells_to_run(cells: list[Cell], retry_failed: bool) -> list[Cell]:
    """Cells without a finished result; failed cells only with ``retry_failed`` (a failure usually repeats)."""
    skip = set(FINISHED_STATUSES) | (set() if retry_failed else {"failed"})
    return [c for c in cells if c.status() not in skip]


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
        fd = _try_lock(cell.dir)
        if fd is None:  # another grid process, or a cell orphaned by a killed grid, still runs this cell
            if cell.id not in waiting:
                waiting.add(cell.id)
                view.message(f"cell {cell.id} is being run by another process; waiting for it to end")
            return "busy"
        waiting.discard(cell.id)
        if cell.status() in FINISHED_STATUSES:
            os.close(fd)
            state.status[cell.id] = cell.status() or "completed"
            state.write()
            return "finished"
        _shelve_previous_result(cell.dir)
        command = cell.command(spec)
        _write_cell_file(spec, cell, command)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if threads:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
        device = devices[slot % len(devices)] if devices else None
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = device
            state.device[cell.id] = device
        logs = _open_logs(cell, command)
        proc = subprocess.Popen(command, stdout=logs[0], stderr=logs[1], stdin=subprocess.DEVNULL, env=env,
                                pass_fds=(fd,), start_new_session=True, preexec_fn=_prepare_cell_process)
        running[slot] = _Running(cell, proc, fd, logs, time.perf_counter(), _now(), slot)
        state.status[cell.id] = "running"
        state.started[cell.id] = time.perf_counter()
        state.write()
        view.started(cell, device)
        return "started"

    def reap(r: _Running, returncode: int | None, interrupted: bool = False) -> None:
        for f in r.logs:
            f.close()
        outcome = finalize_cell(spec, r.cell, returncode, time.perf_counter() - r.t0, r.started_at, interrupted)
        os.close(r.lock_fd)
        state.status[r.cell.id] = outcome.status
        state.wall[r.cell.id], state.metrics[r.cell.id] = outcome.wall_time_s, outcome.metrics
        state.write()
        view.finished(r.cell, outcome)

    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    # SIGINT too, even when the grid was started with it ignored (a background job of a script: `dyt-bench grid … &`),
    # so that `kill -INT` stops it as cleanly as Ctrl-C does
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while pending or running:
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
    return 0


def _slurm_parameters(spec: GridSpec, args: argparse.Namespace, cluster: str | None) -> dict[str, Any]:
    s = dict(spec.slurm)
    for key in ("partition", "time", "gpus", "account"):
        if getattr(args, key, None) is not None:
            s[key] = getattr(args, key)
    t = s.get("time", 60)
    if isinstance(t, str) and t.strip().isdigit():
        t = int(t)
    elif isinstance(t, str):
        parts = [int(p) for p in t.split(":") if p.isdigit()]
        if len(parts) not in (2, 3) or len(parts) != len(t.split(":")):
            raise GridError(f"slurm.time: minutes, MM:SS or HH:MM:SS; got {t!r}")
        h, m, sec = ([0] * (3 - len(parts)) + parts)
        t = h * 60 + m + (1 if sec else 0)
    params: dict[str, Any] = {"timeout_min": int(t), "name": f"dyt-{spec.name}"}
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


def run_submitit(spec: GridSpec, state: GridState, todo: list[Cell], args: argparse.Namespace,
                 view: ProgressView) -> int:
    """Submit ``todo`` as one job array (SLURM, or submitit's local executor) and follow it until it ends."""
    import submitit

    cluster = "local" if args.launcher == "submitit-local" else "slurm"
    executor = submitit.AutoExecutor(folder=str(spec.output / ".submitit" / "%j"), cluster=cluster)
    executor.update_parameters(**_slurm_parameters(spec, args, cluster))
    payloads = [{"spec": spec.to_dict(), "output": str(spec.output), "cell_id": c.id} for c in todo]
    jobs = executor.map_array(run_cell_job, payloads)
    for cell in todo:
        state.status[cell.id] = "running"
        state.started[cell.id] = time.perf_counter()
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
                if job.done():
                    del open_jobs[cid]
                    cell = by_id[cid]
                    try:
                        job.result()
                    except Exception as e:  # noqa: BLE001 - the job itself broke (e.g. killed by SLURM)
                        if cell.status() is None:
                            write_result(cell.dir, fallback_result(spec.base, spec.overrides, cell, "failed",
                                                                   f"submitit job {job.job_id} failed: {e}", 0.0, _now()))
                    outcome = finalize_cell(spec, cell, None, time.perf_counter() - state.started[cid], _now())
                    state.status[cid] = outcome.status
                    state.wall[cid], state.metrics[cid] = outcome.wall_time_s, outcome.metrics
                    state.write()
                    view.finished(cell, outcome)
            view.refresh()
            time.sleep(1.0)
    except KeyboardInterrupt:
        ids = sorted({str(j.job_id).split("_")[0] for j in open_jobs.values()})
        view.message("stopped following the jobs; they keep running" +
                     (f" (cancel with: scancel {' '.join(ids)})" if cluster == "slurm" else "") +
                     "; re-run the grid or the leaderboard later")
        return 130
    return 0


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dyt-bench grid",
        description="Run every cell (axes × seeds) of a grid file, each as its own `dyt-bench fit` process. "
                    "Re-running skips cells whose result.json says completed or diverged.")
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
    p.add_argument("--time", help="SLURM time limit per cell: minutes, MM:SS or HH:MM:SS (overrides slurm.time)")
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
                   help="skip parsing the first cell's config (`--print_config`) before launching")
    return p


def preflight(spec: GridSpec, cell: Cell) -> None:
    """Parse the first cell's full config (no training) so a typo in a key fails once, before any cell runs."""
    command = [*cell.command(spec), "--print_config"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise GridError(f"the config of cell {cell.id} does not parse (base, overrides or axis keys):\n"
                        f"{proc.stderr.strip()[-3000:]}\ncommand: {shlex.join(command)}")


def _parse_devices(text: str | None) -> list[str] | None:
    if text is None:
        return None
    devices = [d.strip() for d in text.split(",") if d.strip()]
    if not devices or not all(d.isdigit() for d in devices):
        raise GridError(f"--devices: a comma-separated list of GPU ids such as 0,1,2,3; got {text!r}")
    return devices


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        spec = load_grid(args.grid_file, output=args.output)
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep:
                raise GridError(f"--set must be KEY=VALUE (e.g. data.root=/datasets/imagenet); got {item!r}")
            spec.overrides[_check_dotted("--set", key.strip())] = yaml.safe_load(value) if value else ""
        devices = _parse_devices(args.devices)
        workers = args.workers if args.workers is not None else (len(devices) if devices else 1)
        if workers < 1:
            raise GridError(f"--workers must be >= 1; got {workers}")
        cells = spec.cells()
        todo = cells_to_run(cells, args.retry_failed)
        if args.threads is not None and args.threads < 1:
            raise GridError(f"--threads must be >= 1; got {args.threads}")
        if args.dry_run:
            return _dry_run(spec, cells, todo)
        done = len(cells) - len(todo)
        print(f"[grid {spec.name}] {len(cells)} cells ({' × '.join(str(len(a.values)) for a in spec.axes)} × "
              f"{len(spec.seeds)} seeds); {done} already done, {len(todo)} to run; output {spec.output}",
              flush=True)
        if todo and not args.no_check:  # before anything is written: a config error costs seconds, not a grid
            preflight(spec, todo[0])
        spec.output.mkdir(parents=True, exist_ok=True)
        state = GridState(spec, cells, args.launcher)
        state.write()
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
    metric = spec.leaderboard.get("metric", "val/acc1")
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
    if code == 0 and args.launcher != "local" and args.no_wait:
        return 0
    print(f"[grid {spec.name}] results: dyt-bench leaderboard {spec.output}", flush=True)
    return 1 if code == 0 and c["failed"] else code


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
