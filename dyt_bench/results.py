"""RunResult: the one record every run leaves behind (``<run_dir>/result.json``), written atomically, read by grid and leaderboard."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dyt_bench.config_keys import NON_SEMANTIC_KEYS, without

RESULT_FILE = "result.json"
SCHEMA_VERSION = 1
DEFAULT_METRIC = "val/acc1"  # what grids and leaderboards rank by when nothing says otherwise
STATUSES = ("completed", "diverged", "failed", "interrupted")
FINISHED_STATUSES = ("completed", "diverged")  # a grid does not run these cells again


@dataclass
class RunResult:
    """Everything a leaderboard needs about one run. ``metrics_final``/``metrics_best`` map logged names to floats.

    ``config`` is the resolved input config and nothing else; facts the run established while measuring (which FID
    feature extractor, ...) go to ``evaluation``, each metric's direction to ``metric_modes``, and the value a metric
    takes for a model that learned nothing (where the task knows it) to ``chance``.
    """

    task: str
    model: str
    dataset: str
    norm: dict[str, Any]
    status: str
    seed: int | None = None
    metrics_final: dict[str, float] = field(default_factory=dict)
    metrics_best: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    epochs: int = 0
    wall_time_s: float = 0.0  # summed over every attempt of the run (resumed from its checkpoint)
    restarts: int = 0  # times the run was resumed from its own checkpoint
    world_size: int = 1  # processes that trained it (DDP / FSDP ranks)
    strategy: str = ""  # Lightning strategy, e.g. "ddp", "fsdp", "single_device"
    throughput: dict[str, float] = field(default_factory=dict)
    peak_memory_mb: float | None = None
    device: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    config_hash: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    norm_replacement: dict[str, Any] = field(default_factory=dict)
    metric_modes: dict[str, str] = field(default_factory=dict)  # logged metric -> "max" | "min", as the task declares
    chance: dict[str, float] = field(default_factory=dict)  # logged metric -> its value at chance (e.g. 1/num_classes)
    evaluation: dict[str, Any] = field(default_factory=dict)  # how metrics were measured, e.g. {"fid_extractor": {...}}
    divergence: str | None = None
    error: str | None = None
    started_at: str = ""
    finished_at: str = ""
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}; got {self.status!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see either the old file or the complete new one, never a torn write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from the rest of a team
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def pending_writes(path: str | os.PathLike) -> list[Path]:
    """The temporary files of writes to ``path`` that never reached their rename (a kill between the two), newest
    first."""
    path = Path(path)
    try:
        found = list(path.parent.glob(f".{path.name}.*.tmp"))
    except OSError:
        return []
    return sorted(found, key=lambda p: p.stat().st_mtime if p.exists() else 0, reverse=True)


def _complete_json(tmp: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(tmp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def recover_pending_write(path: str | os.PathLike) -> bool:
    """Finish what a killed atomic write left behind: when ``path`` is missing and a temporary file of it holds a
    complete JSON object, rename it into place; remove every other temporary file of ``path``. True when ``path``
    was recovered. Call it only where no other process writes ``path`` now (e.g. holding the cell's lock)."""
    path = Path(path)
    recovered = False
    for tmp in pending_writes(path):
        if not recovered and not path.exists() and _complete_json(tmp) is not None:
            os.replace(tmp, path)
            recovered = True
            continue
        with contextlib.suppress(OSError):
            tmp.unlink()
    return recovered


def write_result(run_dir: str | os.PathLike, result: RunResult) -> Path:
    """Atomically write ``result`` as ``<run_dir>/result.json`` and return the path."""
    path = Path(run_dir) / RESULT_FILE
    atomic_write_text(path, json.dumps(result.to_dict(), indent=2, sort_keys=False, default=str) + "\n")
    return path


def read_result(path: str | os.PathLike) -> RunResult:
    """Read a result.json (or the one inside a run directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULT_FILE
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return result_from_json(data, path)


def result_from_json(data: Any, where: str | os.PathLike = RESULT_FILE) -> RunResult:
    """A RunResult from parsed JSON, checked: an object with its required fields, numbers where metrics are (a
    ValueError naming the file and the field otherwise)."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: a result must be a JSON object; got a JSON {type(data).__name__}")
    missing = [k for k in ("task", "status") if k not in data]
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(missing)}")
    for key in ("metrics_final", "metrics_best"):
        metrics = data.get(key) or {}
        if not isinstance(metrics, dict):
            raise ValueError(f"{where}: {key} must map metric names to numbers; got a {type(metrics).__name__}")
        for name, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{where}: {key}.{name} must be a number; got {value!r}")
    for key in ("norm", "config", "metric_modes", "chance", "evaluation", "throughput"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise ValueError(f"{where}: {key} must be a JSON object; got {data[key]!r:.60}")
    data = {k: v for k, v in data.items() if k not in ("model", "dataset") or v is not None}
    data.setdefault("model", "")
    data.setdefault("dataset", "")
    data.setdefault("norm", {})
    try:
        return RunResult.from_dict(data)
    except TypeError as e:
        raise ValueError(f"{where}: {e}") from None


def write_startup_result(args: list[str], signal_name: str) -> Path | None:
    """An ``interrupted`` result.json for a ``dyt-bench fit`` stopped by a signal before its trainer started, in its
    run directory when the command line or its config names one (``trainer.default_root_dir``); its path or None."""
    import yaml

    config: dict[str, Any] = {}
    root = None
    for i, arg in enumerate(args[:-1]):
        if arg in ("--config", "-c"):
            with contextlib.suppress(OSError, yaml.YAMLError), open(args[i + 1], encoding="utf-8") as f:
                loaded = yaml.safe_load(f)
                config = loaded if isinstance(loaded, dict) else config
        elif arg == "--trainer.default_root_dir":
            root = args[i + 1]
    trainer = config.get("trainer") if isinstance(config.get("trainer"), dict) else {}
    root = root or trainer.get("default_root_dir")
    if not root:
        return None
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    init = model.get("init_args", model) if isinstance(model.get("init_args", model), dict) else {}
    norm = init.get("norm") if isinstance(init.get("norm"), dict) else {}
    try:
        return write_result(root, make_result(
            task=str(model.get("class_path", "")).rsplit(".", 1)[-1], model=str(init.get("model", "")), dataset="",
            norm=norm, status="interrupted", config=config, error=f"{signal_name} before training started"))
    except OSError:
        return None


TRUST_PICKLES_ENV = "DYT_BENCH_TRUST_PICKLES"  # "1": load user files with full unpickling (runs code they hold)


class UnsafeFileError(ValueError):
    """A user's file holds Python objects that only full unpickling (able to run code) can load."""


DATA_CLASS_MODULES = ("dyt_bench.",)  # plain config dataclasses of these packages load from checkpoints' hparams
PLAIN_GLOBALS = ("lightning.fabric.utilities.data.AttributeDict",)  # dict subclasses Lightning pickles


def _data_classes_in(path: str | os.PathLike) -> list[Any]:
    """The classes a checkpoint names that are plain data: this package's config dataclasses (rebuilt field by field,
    no code of theirs runs) and Lightning's AttributeDict. Any other global stays refused."""
    import dataclasses
    import importlib

    import torch

    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - not a zip checkpoint: loading says what is wrong with it
        return []
    out = []
    for name in names:
        module, _, attr = name.rpartition(".")
        if not (name.startswith(DATA_CLASS_MODULES) or name in PLAIN_GLOBALS):
            continue
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
        if name in PLAIN_GLOBALS or (isinstance(obj, type) and dataclasses.is_dataclass(obj)
                                     and "__setstate__" not in vars(obj) and "__reduce__" not in vars(obj)):
            out.append(obj)
    return out


def load_torch_file(path: str | os.PathLike, field_name: str) -> Any:
    """``torch.load`` of a file a user names (a checkpoint, a weights file), with ``weights_only=True``: tensors,
    containers, numbers, strings and NumPy arrays load, anything that would run code on loading is refused with one
    line naming ``field_name``. ``DYT_BENCH_TRUST_PICKLES=1`` is the explicit opt-in to full unpickling."""
    import pickle

    import torch

    if os.environ.get(TRUST_PICKLES_ENV) == "1":
        return torch.load(path, map_location="cpu", weights_only=False)
    allowed: list[Any] = []
    try:  # what Lightning checkpoints hold besides tensors: NumPy RNG states
        import numpy as np

        allowed = [np.ndarray, np.dtype, *{type(np.dtype(t)) for t in np.sctypeDict.values()
                                           if np.dtype(t).kind in "biufc"}]
        allowed.append(np._core.multiarray._reconstruct if hasattr(np, "_core") else np.core.multiarray._reconstruct)
    except (ImportError, TypeError, AttributeError):
        pass
    allowed += _data_classes_in(path)
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln for ln in str(e).splitlines() if "Unsupported global" in ln or "got <class" in ln]
        what = lines[0].strip() if lines else "objects other than tensors"
        raise UnsafeFileError(f"{field_name}: {path} holds Python objects that loading would have to execute "
                              f"({what}); only tensors and plain data are loaded. If you trust the file, set "
                              f"{TRUST_PICKLES_ENV}=1") from None
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise ValueError(f"{field_name}: {path} is not a readable PyTorch file ({first})") from None


def collect_versions() -> dict[str, str]:
    """:func:`dyt_bench.versions.library_versions`: every library of ``VERSIONED``, and ``cuda`` with a CUDA build of
    torch when torch is loaded (never loaded for it: a grid process stays free of torch)."""
    from dyt_bench.versions import library_versions

    return library_versions()


def utc_now() -> str:
    """The current time as an ISO 8601 UTC timestamp to the second (``started_at`` / ``finished_at``)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def config_hash(config: dict[str, Any]) -> str:
    """A short stable hash of what a run computes: the config without ``NON_SEMANTIC_KEYS`` (output paths, loggers)."""
    return hashlib.sha256(json.dumps(without(config, NON_SEMANTIC_KEYS), sort_keys=True).encode()).hexdigest()[:16]


def _json_normalised(value: dict[str, Any] | None) -> dict[str, Any]:
    return json.loads(json.dumps(value or {}, default=str))


def make_result(*, task: str, model: str, dataset: str, norm: dict[str, Any], status: str, config: dict[str, Any],
                started_at: str = "", metric_modes: dict[str, str] | None = None,
                evaluation: dict[str, Any] | None = None, **measured: Any) -> RunResult:
    """The one producer of a RunResult, for a run that recorded itself and for a cell whose run never could.

    ``config`` is the resolved input config (stored JSON-normalised, and hashed without its non-semantic keys);
    versions, ``finished_at`` (now) and ``started_at`` (now when not given) are filled in; ``measured`` holds the
    remaining RunResult fields (seed, metrics, steps, wall time, error, ...).
    """
    config = _json_normalised(config)
    return RunResult(task=task, model=model, dataset=dataset, norm=norm, status=status, config=config,
                     config_hash=config_hash(config), versions=collect_versions(),
                     metric_modes=dict(metric_modes or {}),
                     evaluation=_json_normalised(evaluation), started_at=started_at or utc_now(),
                     finished_at=utc_now(), **measured)
