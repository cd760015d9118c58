"""ResultWriter: records every run's outcome (completed, diverged, failed, interrupted) as ``result.json``."""

from __future__ import annotations

import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from dyt_bench.results import RESULT_FILE, config_hash, make_result, utc_now, write_result

from .divergence import DivergenceGuard
from .run_files import run_dir as default_run_dir

__all__ = ["ResultWriter", "config_hash"]  # config_hash lives in dyt_bench.results; importable from here as before


def _scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            out[k] = float(v.detach().cpu().item())
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
    return out


def _chance_levels(pl_module: pl.LightningModule) -> dict[str, float]:
    """The task's chance level per metric (``chance_levels()``, e.g. 1/num_classes for accuracy); {} if it has none."""
    levels = getattr(pl_module, "chance_levels", None)
    return dict(levels()) if callable(levels) else {}


def _batch_size(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, (list, tuple)) and batch:
        return _batch_size(batch[0])
    if isinstance(batch, dict) and batch:
        return _batch_size(next(iter(batch.values())))
    return 0


def _strategy_name(trainer: pl.Trainer) -> str:
    """The strategy's registered name where it has one (``ddp``, ``fsdp``, ``single_device``), else its class."""
    strategy = trainer.strategy
    name = getattr(strategy, "strategy_name", None)
    return str(name) if name else type(strategy).__name__.removesuffix("Strategy").lower()  # DDPStrategy → ddp


class ResultWriter(pl.Callback):
    """Writes ``<run_dir>/result.json`` when fit ends, diverges, fails or is interrupted (rank 0 only).

    ``run_dir`` defaults to the run directory (``run_files.run_dir``), settled on every rank in ``setup`` so that
    the failure path needs no collective. Best metrics follow the task's ``metric_modes`` (name → "max" | "min"),
    updated at the end of each validation (after the task's epoch-end hook, so what it logs there counts).
    A result that cannot be written (a full disk) is one line on stderr naming the file and the error; the run is
    not recorded a second time by the failure path.

    A resumed run continues the record: its checkpoint carries this callback's state (best metrics, wall and training
    time, samples), so ``result.json`` describes the whole run, with ``restarts`` counting the resumptions.

    Throughput: samples and optimizer steps per second of training time (each batch from the previous one's end, so
    data loading counts; at each break, a validation or an epoch's end, the GPU work still queued is waited for and
    counted; validations and epoch boundaries are left out), and any unit of the task's own: a task
    method ``throughput_units(batch)`` returning ``{unit: amount in this batch}`` (tokens for the sequence tasks,
    ``{"audio_seconds": 12.5}`` for speech) is summed over training batches and reported as ``train_<unit>_per_s``.
    The same rates without the first ``warmup_batches`` batches of each attempt (kernel compilation, autotuning,
    the allocator's first requests) are ``steady_samples_per_s``, ``steady_steps_per_s`` and
    ``steady_<unit>_per_s``, present once more batches than that have run: the figure to compare with a benchmark
    that times steps after a warm-up.

    Device and peak memory are those of the device the model trained on (read when fit starts: by the time fit ends,
    Lightning has moved the model back to the CPU).
    """

    warmup_batches = 10

    def __init__(self, run_dir: str | None = None, config: dict[str, Any] | None = None) -> None:
        self.run_dir = run_dir
        self.config = config
        self.best: dict[str, float] = {}
        self.path: Path | None = None
        self._t0 = 0.0
        self._started_at = ""
        self._train_time = 0.0
        self._train_samples = 0
        self._train_units: dict[str, float] = {}
        self._batch_t0: float | None = None
        self._steady = {"time": 0.0, "samples": 0, "steps": 0}
        self._steady_units: dict[str, float] = {}
        self._attempt_batches = 0
        self._step_before = 0
        self._last_end: float | None = None
        self._device: torch.device | None = None
        self._written = False
        self._resolved_dir: Path | None = None
        self._wall_before = 0.0  # wall time of the earlier attempts (from the checkpoint)
        self._started_first = ""
        self.restarts = 0

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # every rank reaches setup: the one place where agreeing on the directory (a broadcast) is safe
        path = str(self.run_dir) if self.run_dir else str(default_run_dir(trainer))
        self._resolved_dir = Path(trainer.strategy.broadcast(path))

    # --- the record across restarts (this callback's state in the checkpoint) ------------------------------------
    def _wall_time(self) -> float:
        return self._wall_before + (time.perf_counter() - self._t0 if self._t0 else 0.0)

    def state_dict(self) -> dict[str, Any]:
        return {"best": dict(self.best), "wall_time_s": self._wall_time(), "train_time_s": self._train_time,
                "train_samples": self._train_samples, "train_units": dict(self._train_units),
                "steady": dict(self._steady), "steady_units": dict(self._steady_units),
                "restarts": self.restarts, "started_at": self._started_first or self._started_at}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = dict(state_dict.get("best", {}))
        self._wall_before = float(state_dict.get("wall_time_s", 0.0))
        self._train_time = float(state_dict.get("train_time_s", 0.0))
        self._train_samples = int(state_dict.get("train_samples", 0))
        self._train_units = dict(state_dict.get("train_units", {}))
        self._steady = {"time": 0.0, "samples": 0, "steps": 0, **state_dict.get("steady", {})}
        self._steady_units = dict(state_dict.get("steady_units", {}))
        self.restarts = int(state_dict.get("restarts", 0)) + 1
        self._started_first = str(state_dict.get("started_at", ""))

    # --- timing -------------------------------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()
        self._started_at = utc_now()
        self._written = False
        self._attempt_batches = 0
        self._last_end = None
        self._device = pl_module.device
        if self._resolved_dir is None:
            self.setup(trainer, pl_module, "fit")
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        # a batch's time runs from the previous batch's end (its data loading and every hook count) while batches
        # follow each other; after a break (fit or epoch start, a validation) from its own start
        self._batch_t0 = self._last_end if self._last_end is not None else time.perf_counter()
        self._step_before = trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self._batch_t0 is None:
            return
        now = time.perf_counter()
        elapsed = now - self._batch_t0
        self._last_end = now
        samples = _batch_size(batch)
        units = getattr(pl_module, "throughput_units", None)
        amounts = {name: float(a) for name, a in units(batch).items()} if callable(units) else {}
        self._train_time += elapsed
        self._train_samples += samples
        for name, amount in amounts.items():
            self._train_units[name] = self._train_units.get(name, 0.0) + amount
        self._attempt_batches += 1
        if self._attempt_batches > self.warmup_batches:
            self._steady["time"] += elapsed
            self._steady["samples"] += samples
            self._steady["steps"] += trainer.global_step - self._step_before
            for name, amount in amounts.items():
                self._steady_units[name] = self._steady_units.get(name, 0.0) + amount

    def _close_window(self, pl_module: pl.LightningModule) -> None:
        """End a run of training batches: the GPU work they queued (kernels run after the host has moved on) is
        waited for and counted as training time, so that throughput is what the device delivered."""
        if self._last_end is None:
            return
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        tail = time.perf_counter() - self._last_end
        self._train_time += tail
        if self._attempt_batches > self.warmup_batches:
            self._steady["time"] += tail
        self._last_end = None

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close_window(pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close_window(pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close_window(pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after the task's own on_validation_epoch_end (which runs after every callback's): what it logs there
        # (the DNA task's val/acc, a FID) counts in the validation that computed it, not one validation late
        if trainer.sanity_checking:
            return
        modes = getattr(pl_module, "metric_modes", {})
        for name, value in _scalar_metrics(trainer.callback_metrics).items():
            mode = modes.get(name)
            if mode is None or value != value:  # untracked metric or NaN
                continue
            old = self.best.get(name)
            if old is None or (value > old if mode == "max" else value < old):
                self.best[name] = value

    # --- outcomes -----------------------------------------------------------------------------------------------
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        guard = next((cb for cb in trainer.callbacks if isinstance(cb, DivergenceGuard)), None)
        if guard is not None and guard.diverged:
            self._write(trainer, pl_module, "diverged", divergence=guard.reason)
        else:
            self._write(trainer, pl_module, "completed")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self._write(trainer, pl_module, "interrupted", error="KeyboardInterrupt")
        elif isinstance(exception, SIGTERMException):  # a kill (SLURM pre-emption or time limit, `timeout`)
            self._write(trainer, pl_module, "interrupted", error="SIGTERM")
        else:
            tb = "".join(traceback.format_exception(type(exception), exception, exception.__traceback__))
            self._write(trainer, pl_module, "failed", error=f"{type(exception).__name__}: {exception}\n{tb[-4000:]}")

    @rank_zero_only
    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, status: str, **extra: Any) -> None:
        if self._written:
            return
        run_dir = self._resolved_dir or Path(self.run_dir or default_run_dir(trainer))
        config = self.config if self.config is not None else getattr(pl_module, "run_config", None)
        if config is None:
            config = {"model": dict(pl_module.hparams)}
            if trainer.datamodule is not None:
                config["data"] = dict(getattr(trainer.datamodule, "hparams", {}))
        seed = os.environ.get("PL_GLOBAL_SEED")
        device = self._device or pl_module.device
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device) / 2**20
            device_name = torch.cuda.get_device_name(device)
        else:
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak = rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux
            device_name = f"cpu ({os.cpu_count()} cores)"
        throughput = {}
        if self._train_time > 0:
            throughput = {"train_samples_per_s": self._train_samples / self._train_time,
                          "train_steps_per_s": trainer.global_step / self._train_time}
            for name, amount in self._train_units.items():
                throughput[f"train_{name}_per_s"] = amount / self._train_time
        if self._steady["time"] > 0:
            steady_time = self._steady["time"]
            throughput.update(steady_samples_per_s=self._steady["samples"] / steady_time,
                              steady_steps_per_s=self._steady["steps"] / steady_time,
                              warmup_batches=self.warmup_batches)
            for name, amount in self._steady_units.items():
                throughput[f"steady_{name}_per_s"] = amount / steady_time
        norm = getattr(pl_module, "norm_spec", None)
        report = getattr(pl_module, "norm_report", None)
        result = make_result(
            task=getattr(pl_module, "task_name", type(pl_module).__name__),
            model=getattr(pl_module, "model_name", ""),
            dataset=getattr(trainer.datamodule, "dataset_name", "") if trainer.datamodule is not None else "",
            norm=norm.to_dict() if norm is not None else {},
            status=status,
            seed=int(seed) if seed is not None else None,
            metrics_final=_scalar_metrics(trainer.callback_metrics),
            metrics_best=dict(self.best),
            steps=int(trainer.global_step),
            epochs=int(trainer.current_epoch),
            wall_time_s=self._wall_time(),
            restarts=self.restarts,
            world_size=int(trainer.world_size),
            strategy=_strategy_name(trainer),
            throughput=throughput,
            peak_memory_mb=peak,
            device=device_name,
            config=config,
            norm_replacement=report.to_dict() if report else {},
            metric_modes=getattr(pl_module, "metric_modes", {}),
            chance=_chance_levels(pl_module),
            evaluation=getattr(pl_module, "evaluation", {}),
            started_at=self._started_first or self._started_at,
            **extra,
        )
        self._written = True  # written or not, once: a failed write must not be retried by on_exception
        try:
            self.path = write_result(run_dir, result)
        except OSError as e:  # ENOSPC, a read-only or vanished directory
            self.path = None
            print(f"[dyt-bench] error: could not write {Path(run_dir) / RESULT_FILE} (run {status}): "
                  f"{e.strerror or e}", file=sys.stderr, flush=True)
            return
        summary = ", ".join(f"{k}={v:.4g}" for k, v in sorted(result.metrics_best.items()))
        print(f"\n[dyt-bench] run {status}" + (f" ({extra['divergence']})" if extra.get("divergence") else "")
              + (f"; best {summary}" if summary else ""), flush=True)
        print(f"[dyt-bench] result: {self.path}\n[dyt-bench] logs:   {run_dir}", flush=True)
