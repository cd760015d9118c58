"""Where a callback writes its files (the run directory) and the one CSV writer they share."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import lightning.pytorch as pl


def run_dir(trainer: pl.Trainer) -> Path:
    """The run directory: a CSV / TensorBoard logger's versioned folder, else the trainer's ``default_root_dir``.

    Any other logger (W&B, MLflow, ...) keeps its own files where it likes; the run's artifacts (result.json,
    checkpoints, CSVs, figures) still go to ``default_root_dir``, never to the working directory. Computed on this
    process alone (``trainer.log_dir`` is a collective that broadcasts rank 0's answer): callers that need every
    rank to agree call it on every rank and broadcast, as ``ResultWriter.setup`` does.
    """
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    loggers = trainer.loggers
    if loggers and isinstance(loggers[0], (CSVLogger, TensorBoardLogger)):
        return Path(loggers[0].log_dir)
    return Path(trainer.default_root_dir)


def write_csv(path: str | os.PathLike, rows: Iterable[Mapping], fieldnames: Sequence[str]) -> Path:
    """Write ``rows`` (one dict per row) under a header of ``fieldnames``, replacing the file; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fieldnames))
        writer.writeheader()
        writer.writerows(rows)
    return path


__all__ = ["run_dir", "write_csv"]


# ---------------------------------------------------------------------------------------------------------------
# One stable run directory per run (settled from the config, before the trainer exists)
# ---------------------------------------------------------------------------------------------------------------
_VERSIONED_LOGGERS = ("lightning.pytorch.loggers.CSVLogger", "lightning.pytorch.loggers.csv_logs.CSVLogger",
                      "lightning.pytorch.loggers.TensorBoardLogger",
                      "lightning.pytorch.loggers.tensorboard.TensorBoardLogger")
RUN_VERSION_ENV = "DYT_BENCH_RUN_VERSION"  # rank 0's choice, inherited by the ranks Lightning starts


def _field(obj, key: str, default=None):
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _versions(root: Path) -> dict[int, Path]:
    out = {}
    if root.is_dir():
        for d in root.iterdir():
            if d.is_dir() and d.name.startswith("version_") and d.name[8:].isdigit():
                out[int(d.name[8:])] = d
    return out


def _global_rank() -> int:
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def settle_run_dir(logger, default_root_dir: str | None, resume_last: bool) -> tuple[Path | None, bool]:
    """Fix a CSV / TensorBoard logger's ``version`` so that every rank, and a resumed run, write to one directory.

    ``logger`` is the config's logger (``class_path`` + ``init_args``; its ``version`` is set in place). With
    ``version`` given the directory is already fixed (``pinned``); otherwise ``resume_last`` (``ckpt_path: last``)
    picks the newest ``version_N`` that holds a ``last.ckpt``, and a fresh run the next free ``version_N``.
    Returns (the run directory or None for other loggers, whether it was pinned by the config)."""
    if isinstance(logger, (list, tuple)):
        logger = logger[0] if logger else None
    if _field(logger, "class_path") not in _VERSIONED_LOGGERS:
        return None, False
    init = _field(logger, "init_args")
    save_dir = _field(init, "save_dir") or default_root_dir or os.getcwd()
    name = _field(init, "name", "lightning_logs")
    root = Path(save_dir) / (name or "")
    version = _field(init, "version")
    if version is not None:
        return root / (version if isinstance(version, str) else f"version_{version}"), True
    inherited = os.environ.get(RUN_VERSION_ENV) if _global_rank() > 0 else None
    if inherited:
        chosen = inherited
    else:
        versions = _versions(root)
        resumable = [n for n, d in versions.items() if (d / "checkpoints" / "last.ckpt").is_file()]
        n = max(resumable) if resume_last and resumable else max(versions, default=-1) + 1
        chosen = f"version_{n}"
        os.environ[RUN_VERSION_ENV] = chosen
    if isinstance(init, Mapping):
        init["version"] = chosen
    else:
        init.version = chosen
    return root / chosen, False


def save_run_config_callback():
    """LightningCLI's ``SaveConfigCallback`` writing ``config.yaml`` into :func:`run_dir` (Lightning's own writes it
    to ``trainer.log_dir``: the working directory for a logger such as W&B)."""
    from lightning.pytorch.cli import SaveConfigCallback

    class SaveRunConfig(SaveConfigCallback):
        def setup(self, trainer, pl_module, stage: str) -> None:
            if self.already_saved:
                return
            directory = trainer.strategy.broadcast(str(run_dir(trainer)))
            if trainer.is_global_zero:
                os.makedirs(directory, exist_ok=True)
                self.parser.save(self.config, os.path.join(directory, self.config_filename), skip_none=False,
                                 overwrite=self.overwrite, multifile=self.multifile)
            self.already_saved = True

    return SaveRunConfig


__all__ += ["RUN_VERSION_ENV", "save_run_config_callback", "settle_run_dir"]
