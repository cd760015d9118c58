"""RunResult: the one record every run leaves behind (``<run_dir>/result.json``), written atomically, read by grid and leaderboard."""

from __future__ import annotations

import hashlib
import json
import os
import platform
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
    wall_time_s: float = 0.0
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
        return RunResult.from_dict(json.load(f))


def collect_versions() -> dict[str, str]:
    """Versions of the libraries a result depends on."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("dyt-bench", "torch", "lightning", "timm", "torchvision", "torchmetrics", "triton", "transformers"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    try:
        import torch

        if torch.version.cuda:
            out["cuda"] = torch.version.cuda
    except ImportError:
        pass
    return out


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
