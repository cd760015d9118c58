"""Checkpoints that make long runs survive: ``<run_dir>/checkpoints/last.ckpt`` every N optimizer steps, at the end
of training and when the run is stopped by an exception or SIGTERM (pre-emption, a time limit), with the random
number generators' states, so that ``--ckpt_path last`` continues where the run stopped.

Lightning's ``ModelCheckpoint`` does the saving (its ``last.ckpt`` is what ``ckpt_path="last"`` finds); this subclass
only fixes where (the run directory of ``run_files.run_dir``, whatever the logger), keeps no top-k files, and carries
the RNG states, which Lightning does not checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from .run_files import run_dir

CHECKPOINTS_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
RNG_KEY = "dyt_bench_rng"
KEPT_METRICS = ".metrics.before_resume.csv"  # metrics.csv moved aside while a resumed run starts


@dataclass
class CheckpointConfig:
    """The ``checkpoint:`` section of a run config.

    ``every_n_train_steps``: save ``last.ckpt`` every this many optimizer steps (null: only at the end and on
    interruption). ``resume``: a run whose directory is fixed (its logger's ``version`` given, as grid cells do)
    continues from the ``last.ckpt`` it finds there when ``ckpt_path`` is not given. ``enabled: false`` saves nothing.
    """

    enabled: bool = True
    every_n_train_steps: int | None = 500
    resume: bool = True

    def __post_init__(self) -> None:
        if self.every_n_train_steps is not None and self.every_n_train_steps < 1:
            raise ValueError(f"checkpoint.every_n_train_steps must be >= 1 or null; got {self.every_n_train_steps}")


def last_checkpoint(directory: str | Path) -> Path | None:
    """``<directory>/checkpoints/last.ckpt`` when it exists."""
    path = Path(directory) / CHECKPOINTS_DIR / LAST_CHECKPOINT
    return path if path.exists() else None  # a file, or a directory (FSDP sharded checkpoints)


def rng_states() -> dict[str, Any]:
    """The states of every random number generator a run draws from (Python, NumPy, torch CPU and CUDA)."""
    import numpy as np

    name, keys, pos, has_gauss, cached = np.random.get_state()
    # plain lists and numbers only: checkpoints load with torch.load(weights_only=True)
    states: dict[str, Any] = {"python": random.getstate(), "numpy": [name, keys.tolist(), pos, has_gauss, cached],
                              "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    import numpy as np

    if "python" in states:
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in states:
        name, keys, pos, has_gauss, cached = states["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "torch" in states:
        torch.set_rng_state(states["torch"].cpu())
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


class RunCheckpoint(ModelCheckpoint):
    """``last.ckpt`` only (no top-k files), in ``<run_dir>/checkpoints``, every ``every_n_train_steps`` steps, at the
    end of training and on any exception (SIGTERM included); restores the RNG states on resume."""

    def __init__(self, every_n_train_steps: int | None = 500, dirpath: str | None = None) -> None:
        super().__init__(dirpath=dirpath, save_last=True, save_top_k=0, every_n_train_steps=every_n_train_steps or 0,
                         save_on_exception=True, enable_version_counter=False)
        self._fixed_dirpath = dirpath is not None

    def _resolve_dir(self, trainer: pl.Trainer) -> None:
        if not self._fixed_dirpath:
            self.dirpath = str(run_dir(trainer) / CHECKPOINTS_DIR)

    def _find_last_checkpoints(self, trainer: pl.Trainer) -> set[str]:
        self._resolve_dir(trainer)  # called by ckpt_path="last" before setup
        return super()._find_last_checkpoints(trainer)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._resolve_dir(trainer)
        self.dirpath = trainer.strategy.broadcast(self.dirpath)
        super().setup(trainer, pl_module, stage)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """Save ``last.ckpt`` (only it) unless this step's state is already saved."""
        if not self._should_save_on_exception(trainer) or trainer.global_step == 0:
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._last_global_step_saved != trainer.global_step and not trainer.sanity_checking:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        self._last_global_step_saved = trainer.global_step

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint[RNG_KEY] = rng_states()

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        # Restored before the first training iterator is made, so the sampler's order and every later random draw
        # follow the interrupted run's (exactly when it stopped at an epoch boundary; mid-epoch, the epoch's
        # remaining batches come from a fresh iterator, which Lightning warns about).
        states = checkpoint.get(RNG_KEY)
        if states:
            set_rng_states(states)
        self._keep_metrics_rows(trainer, int(checkpoint.get("global_step", 0)))

    def _keep_metrics_rows(self, trainer: pl.Trainer, step: int) -> None:
        """Lightning's CSV logger empties ``metrics.csv`` when it starts in a used directory: keep the rows of the
        steps before the checkpoint, to be logged again first, so the file still holds the whole run."""
        import csv

        from lightning.pytorch.loggers import CSVLogger

        self._earlier_rows = []
        for logger in trainer.loggers:
            path = Path(logger.log_dir) / KEPT_METRICS if isinstance(logger, CSVLogger) else None
            if path is None or not path.is_file():
                continue
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) < step]
            self._earlier_rows.append((logger, rows, path))

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for logger, rows, path in getattr(self, "_earlier_rows", []):
            for row in rows:
                values = {k: float(v) for k, v in row.items() if k != "step" and v not in ("", None)}
                logger.experiment.log_metrics(values, step=int(row["step"]))
            logger.save()
            path.unlink(missing_ok=True)
        self._earlier_rows = []


__all__ = ["CHECKPOINTS_DIR", "LAST_CHECKPOINT", "CheckpointConfig", "RunCheckpoint", "last_checkpoint",
           "rng_states", "set_rng_states"]


# ---------------------------------------------------------------------------------------------------------------
# What the command line does with the ``checkpoint:`` section (BenchCLI calls these)
# ---------------------------------------------------------------------------------------------------------------
def _get(obj: Any, key: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if hasattr(obj, "get"):
        return obj.get(key, default)
    return getattr(obj, key, default)


def _checkpoint_config(value: Any) -> CheckpointConfig:
    if isinstance(value, CheckpointConfig):
        return value
    if value is None:
        return CheckpointConfig()
    return CheckpointConfig(**{k: _get(value, k) for k in ("enabled", "every_n_train_steps", "resume")
                               if _get(value, k, ...) is not ...})


def settle_fit_run(config: Any) -> Path | None:
    """Before ``fit`` builds anything: fix the run directory (see ``run_files.settle_run_dir``) and, for a directory the
    config pins (grid cells), resume from its ``last.ckpt`` when ``ckpt_path`` is not given and ``checkpoint.resume``.
    ``config`` is the parsed fit config (changed in place); returns the run directory when it is known."""
    from .run_files import _global_rank, settle_run_dir

    trainer = _get(config, "trainer")
    ckpt_path = _get(config, "ckpt_path")
    directory, pinned = settle_run_dir(_get(trainer, "logger"), _get(trainer, "default_root_dir"),
                                       resume_last=ckpt_path == "last")
    if directory is None:
        root = _get(trainer, "default_root_dir")
        directory = Path(root) if root else None
    cfg = _checkpoint_config(_get(config, "checkpoint"))
    if ckpt_path is None and pinned and cfg.enabled and cfg.resume and directory is not None:
        found = last_checkpoint(directory)
        if found is not None:
            config["ckpt_path"] = ckpt_path = str(found)
            print(f"[dyt-bench] resuming from {found}", flush=True)
    resuming = ckpt_path is not None and (ckpt_path != "last" or (directory and last_checkpoint(directory)))
    if resuming and directory is not None and (directory / "metrics.csv").is_file() and _global_rank() == 0:
        # Lightning's CSV logger empties metrics.csv when it starts; RunCheckpoint logs these rows again
        with contextlib.suppress(OSError):
            os.replace(directory / "metrics.csv", directory / KEPT_METRICS)
    return directory


def run_checkpoint_callbacks(checkpoint: Any, trainer: Any) -> list[RunCheckpoint]:
    """The checkpoint callback a run gets: none when disabled, when ``trainer.enable_checkpointing`` is false, or when
    the config already lists its own ``ModelCheckpoint``."""
    cfg = _checkpoint_config(checkpoint)
    if not cfg.enabled or _get(trainer, "enable_checkpointing") is False:
        return []
    callbacks = _get(trainer, "callbacks") or []
    if isinstance(callbacks, ModelCheckpoint) or any(isinstance(c, ModelCheckpoint) for c in
                                                     (callbacks if isinstance(callbacks, list) else [])):
        return []
    return [RunCheckpoint(every_n_train_steps=cfg.every_n_train_steps)]


__all__ += ["run_checkpoint_callbacks", "settle_fit_run"]
