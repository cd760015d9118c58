"""The vocabulary of an ablation grid: a grid file validated into a GridSpec (base config × axes × seeds), and its
expansion into cells, each one run with a stable id and its own directory.

This module reads and checks grid files only; it starts nothing, so the leaderboard can use it without the launchers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import yaml

from dyt_bench.config_keys import lookup
from dyt_bench.results import RESULT_FILE, pending_writes, read_result

# What a grid's output directory holds: grid.json, and per cell its dir with these files.
GRID_SUMMARY_FILE = "grid.json"
CELL_FILE = "cell.json"
LOCK_FILE = ".lock"
STDOUT_LOG = "stdout.log"
STDERR_LOG = "stderr.log"
ATTEMPTS_DIR = "attempts"  # earlier failed / interrupted result.json files of a cell, kept out of the leaderboard

GRID_KEYS = ("name", "description", "base", "axes", "seeds", "output", "overrides", "baseline", "paper",
             "leaderboard", "slurm")
LEADERBOARD_KEYS = ("rows", "cols", "metric", "value", "mode", "scale", "digits", "test", "alpha")
PAPER_KEYS = ("source", "version", "metric", "values")
SLURM_KEYS = ("partition", "time", "gpus", "nodes", "account", "cpus_per_task", "mem_gb", "array_parallelism", "qos",
              "constraint", "additional")
CONFIG_ROOTS = ("model", "data", "trainer", "seed_everything", "optimizer", "lr_scheduler", "ckpt_path", "checkpoint")
LAUNCHERS = ("local", "slurm", "submitit-local")
LABEL_KEY = "label"  # a tied axis value may name itself: {label: ViT, model.model: vit_tiny_patch16_224, ...}


class GridError(ValueError):
    """A grid file or a grid option is wrong; the message names the field and what is allowed."""


# ---------------------------------------------------------------------------------------------------------------
# Config values
# ---------------------------------------------------------------------------------------------------------------
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
# Axes, grids and cells
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
    """One dimension of a grid: a name (a dotted config key, or a free name for tied values) and its values."""

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


def find_axis(axes, name: str) -> Axis | None:
    """The axis called ``name`` (its dotted key, or its last part), or None."""
    return next((a for a in axes if name in (a.name, a.short)), None)


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
        found = find_axis(self.axes, name)
        if found is not None:
            return found
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


CSV_LOGGER = "lightning.pytorch.loggers.CSVLogger"
# loggers whose files can be told to go to the cell's directory (their ``save_dir`` argument); others keep theirs
SAVE_DIR_LOGGERS = ("CSVLogger", "TensorBoardLogger", "WandbLogger", "MLFlowLogger", "CometLogger")


def base_logger(spec: GridSpec) -> Any:
    """The ``trainer.logger`` the grid's base config (or its fixed overrides) asks for; None when it names none."""
    if "trainer.logger" in spec.overrides:
        return spec.overrides["trainer.logger"]
    try:
        with open(spec.base, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return None
    trainer = data.get("trainer") if isinstance(data, dict) else None
    return trainer.get("logger") if isinstance(trainer, dict) else None


def cell_loggers(logger: Any, cell_dir: str) -> list[dict[str, Any]]:
    """A cell's loggers: a CSV logger writing ``metrics.csv`` into the cell directory first (the run directory, where
    result.json goes, and what the leaderboard's curves read), then the base config's own loggers, kept, with their
    files sent to the cell directory where they take a ``save_dir``."""
    def csv_logger() -> dict[str, Any]:
        return {"class_path": CSV_LOGGER, "init_args": {"save_dir": cell_dir, "name": "", "version": ""}}

    entries = logger if isinstance(logger, list) else [logger]
    out = [csv_logger()]
    for entry in entries:
        if not isinstance(entry, dict) or "class_path" not in entry:
            continue  # None / true / false / a bare name: the CSV logger alone
        class_name = str(entry["class_path"]).rsplit(".", 1)[-1]
        if class_name == "CSVLogger":
            continue
        init_args = dict(entry.get("init_args") or {})
        if class_name in SAVE_DIR_LOGGERS:
            init_args["save_dir"] = cell_dir
            if class_name == "TensorBoardLogger":
                init_args.update(name="", version="")
        out.append({"class_path": entry["class_path"], "init_args": init_args})
    return out


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
                 "--trainer.logger", json.dumps(cell_loggers(base_logger(spec), d))]
        return args

    def command(self, spec: GridSpec) -> list[str]:
        return [sys.executable, "-m", "dyt_bench.cli", *self.fit_args(spec)]

    def status(self) -> str | None:
        """Status of this cell's result.json, None when it has none (or an unreadable one)."""
        path = self.dir / RESULT_FILE
        if not path.exists():
            # a write killed before its rename leaves a complete temporary file: the run's result all the same (the
            # launcher renames it into place under the cell's lock)
            for tmp in pending_writes(path):
                with contextlib.suppress(OSError, ValueError, TypeError):
                    return read_result(tmp).status
            return None
        try:
            return read_result(path).status
        except (OSError, ValueError, TypeError):
            return None


# ---------------------------------------------------------------------------------------------------------------
# Reading and checking a grid file
# ---------------------------------------------------------------------------------------------------------------
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


def check_dotted(where: str, key: Any) -> str:
    """``key`` when it is a dotted config key under one of the config roots; a GridError naming ``where`` if not."""
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
                assignments[check_dotted(f"axes.{name}[{i}]", key)] = v
            if not assignments:
                raise GridError(f"axes.{name}[{i}]: a tied value needs at least one dotted config key")
            label = value.get(LABEL_KEY)
            label = str(label) if label is not None else ",".join(format_value(v) for v in assignments.values())
            parsed.append(AxisValue(label, assignments))
        else:
            check_dotted(f"axes.{name}", name)
            parsed.append(AxisValue(format_value(value), {name: value}))
    labels = [v.label for v in parsed]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise GridError(f"axes.{name}: values must be distinct; repeated: {', '.join(dupes)} "
                        f"(give tied values distinct '{LABEL_KEY}'s)")
    seen: dict[str, str] = {}
    for v in parsed:  # 1 and 1.0, or the same tied values under two labels, are one config run twice
        key = canonical(v.assignments)
        if key in seen:
            raise GridError(f"axes.{name}: values {seen[key]} and {v.label} set the same config; each value of an "
                            "axis must be a distinct config")
        seen[key] = v.label
    return Axis(name, tuple(parsed))


def _keys_overlap(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def check_disjoint_axes(axes: list[Axis]) -> None:
    """No two axes set the same config key (or one a key inside the other's): the later would silently win, and the
    cell ids and tables would name values the runs never had."""
    owners: list[tuple[str, str]] = []
    for axis in axes:
        keys = {k for v in axis.values for k in v.assignments}
        for key in sorted(keys):
            for other_key, other_axis in owners:
                if other_axis != axis.name and _keys_overlap(key, other_key):
                    raise GridError(f"axes: {other_axis!r} and {axis.name!r} both set {other_key}"
                                    + (f" / {key}" if key != other_key else "")
                                    + "; every config key may belong to one axis only (tie the values into one axis)")
        owners += [(k, axis.name) for k in sorted(keys)]


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


def _parse_seeds(seeds: Any) -> list[int]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = list(range(seeds))
    if (not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
            or len(set(seeds)) != len(seeds)):
        raise GridError(f"seeds: must be a list of distinct integers (or a count n for 0..n-1); got {seeds!r}")
    return list(seeds)


def _parse_paper(paper: Any, spec: GridSpec) -> dict[str, Any]:
    if not paper:
        return {}
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
    version = paper.get("version")
    return {"source": str(paper.get("source", "")), "version": None if version is None else str(version),
            "metric": paper.get("metric"), "values": entries}


def _parse_leaderboard(lb: Any, spec: GridSpec) -> dict[str, Any]:
    lb = lb or {}
    if not isinstance(lb, dict):
        raise GridError("leaderboard: must be a mapping with keys: " + ", ".join(LEADERBOARD_KEYS))
    _check_keys("leaderboard", lb, LEADERBOARD_KEYS)
    for key in ("rows", "cols"):
        if key in lb:
            names = lb[key] if isinstance(lb[key], list) else [lb[key]]
            lb[key] = [spec.axis(n).name for n in names]
    return dict(lb)


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
    check_disjoint_axes(axes)
    seeds = _parse_seeds(data.get("seeds", [0]))
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise GridError("overrides: must be a mapping of dotted config keys to values")
    for k in overrides:
        check_dotted("overrides", k)
    out = output if output is not None else data.get("output", f"runs/grids/{name}")
    if not isinstance(out, (str, os.PathLike)):
        raise GridError(f"output: must be a directory path; got {out!r}")
    spec = GridSpec(name=name, base=_resolve_base(data["base"], path), axes=axes, seeds=seeds,
                    output=Path(out).resolve(), overrides=dict(overrides), description=str(data.get("description", "")),
                    path=path.resolve() if path else None)
    spec.baseline = parse_baseline(data.get("baseline"), spec.axis)
    spec.paper = _parse_paper(data.get("paper"), spec)
    spec.leaderboard = _parse_leaderboard(data.get("leaderboard"), spec)
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
    """Read and validate a grid file; ``output`` replaces the file's ``output`` directory."""
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
