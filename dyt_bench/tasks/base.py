"""BenchTask: what every task shares — the norm spec, the optimizer and schedule (from ``optim.py``), the divergence
guard, result recording."""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from dyt_bench.callbacks import AlphaTracker, DivergenceGuard, ResultWriter, SaturationMonitor
from dyt_bench.coerce import coerce_dataclass
from dyt_bench.norms import NormSpec, replace_norms
from dyt_bench.norms.surgery import NormReplacementReport

from .optim import OptimConfig, fused_adamw_fits, lr_lambda, parameter_groups, scaled_lr, warmup_length


@dataclass
class DivergenceConfig:
    """When a run counts as diverged: NaN/inf loss, or a loss moving average above ``max_loss_ratio`` × its best."""

    enabled: bool = True
    max_loss_ratio: float | None = 10.0
    min_steps: int = 20
    check_every_n_steps: int = 10  # the loss is read on the host (and agreed across ranks) only this often


class BenchTask(pl.LightningModule):
    """Base of every task. A task builds its network, passes it through :meth:`place_norms`, and adds loss and metrics.

    ``track_alpha: true`` adds the :class:`~dyt_bench.callbacks.AlphaTracker` (α vs 1/std of each DyT layer's input);
    ``track_saturation: true`` the :class:`~dyt_bench.callbacks.SaturationMonitor` (fraction of saturated inputs).
    Subclasses set ``task_name``, ``model_name`` and ``metric_modes`` (logged metric → "max" | "min"; the
    result writer tracks the best value of each), and override :meth:`chance_levels` where a metric has a known value
    for a model that learned nothing (the leaderboard counts a run that ends there as stalled).
    """

    task_name = "task"
    metric_modes: dict[str, str] = {}

    def __init__(
        self,
        norm: NormSpec | None = None,
        optim: OptimConfig | None = None,
        divergence: DivergenceConfig | None = None,
        track_alpha: bool = False,
        track_saturation: bool = False,
    ) -> None:
        super().__init__()
        self.track_alpha = track_alpha
        self.track_saturation = track_saturation
        self.norm_spec = NormSpec.coerce(norm) if norm is not None else NormSpec()
        self.optim_config = coerce_dataclass(OptimConfig, optim, "model.optim")
        cfg = self.optim_config
        if not cfg.eps > 0:
            raise ValueError(f"model.optim.eps must be > 0; got {cfg.eps}")
        if len(cfg.betas) != 2 or not all(0 <= b < 1 for b in cfg.betas):
            raise ValueError(f"model.optim.betas must be two numbers in [0, 1); got {list(cfg.betas)}")
        self.divergence_config = coerce_dataclass(DivergenceConfig, divergence, "model.divergence")
        self.norm_report: NormReplacementReport | None = None
        self.model_name = ""
        self.run_config: dict | None = None  # set by the CLI: the resolved config, recorded in result.json
        # Facts about how this run measures its metrics (e.g. the FID extractor), recorded as result.json "evaluation"
        self.evaluation: dict = {}

    # --- alpha_init: calibrate -------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        if self.norm_spec.calibrates:
            self.calibrate_alpha()

    def calibration_batch(self):
        """The batch ``alpha_init: calibrate`` measures on: the first of a fresh training loader."""
        dm = self.trainer.datamodule
        loader = dm.train_dataloader() if dm is not None else self.trainer.train_dataloader
        return next(iter(loader))

    def calibrate_alpha(self) -> dict:
        """α0 = k / std(input) for every point-wise norm of ``self.net``, from one forward pass (:meth:`probe_forward`)
        on :meth:`calibration_batch`; rank 0's values go to every rank; an EMA copy (``self.ema.module``) gets them
        too. Recorded as ``evaluation["alpha_calibration"]``. A resumed run keeps the α of its checkpoint."""
        from dyt_bench.norms.calibrate import calibrate_alpha, squash_layers

        if self._trainer is not None and self.trainer.ckpt_path:  # the record came back with the checkpoint
            return self.evaluation.setdefault("alpha_calibration", {"k": self.norm_spec.calibrate_k, "resumed": True})
        net = getattr(self, "net", self)
        batch = self.transfer_batch_to_device(self.calibration_batch(), self.device, 0)
        context = self.trainer.precision_plugin.forward_context() if self._trainer is not None else nullcontext()
        with context:
            record = calibrate_alpha(net, lambda: self.probe_forward(batch), self.norm_spec.calibrate_k)
        if self._trainer is not None and self.trainer.world_size > 1:
            record = self.trainer.strategy.broadcast(record, src=0)
        layers = {**squash_layers(net)}
        ema = getattr(getattr(self, "ema", None), "module", None)
        ema_layers = squash_layers(ema) if isinstance(ema, nn.Module) else {}
        with torch.no_grad():
            for name, entry in record["layers"].items():
                for table in (layers, ema_layers):
                    if name in table:
                        table[name].alpha.fill_(entry["alpha"])
        record["batch_size"] = _batch_size(batch)
        self.evaluation["alpha_calibration"] = record
        rank_zero_info(f"alpha_init calibrate (k={record['k']:g}): set {len(record['layers'])} layers"
                       + (f", skipped {len(record['skipped'])}" if record["skipped"] else ""))
        return record

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if "alpha_calibration" in self.evaluation:
            checkpoint["alpha_calibration"] = self.evaluation["alpha_calibration"]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "alpha_calibration" in checkpoint:
            self.evaluation["alpha_calibration"] = checkpoint["alpha_calibration"]

    def chance_levels(self) -> dict[str, float]:
        """Logged metric → its value at chance (recorded in result.json as ``chance``); none by default."""
        return {}

    def place_norms(self, model: nn.Module, **kwargs) -> nn.Module:
        """Replace every norm of ``model`` by the configured kind, log what was replaced, return the model.

        ``inherit_affine`` defaults to the spec's (``norm.inherit_affine``); a caller's keyword wins."""
        kwargs.setdefault("inherit_affine", self.norm_spec.inherit_affine)
        self.norm_report = replace_norms(model, self.norm_spec, **kwargs)
        rank_zero_info(str(self.norm_report))
        return model

    # --- optimisation -------------------------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict]:
        """Two AdamW groups: with weight decay (matrices, kernels) and without (norm / DyT parameters, biases)."""
        return parameter_groups(self, self.optim_config)

    def global_batch_size(self) -> int | None:
        """Samples per optimizer step: datamodule batch size × gradient accumulation × devices (None if unknown)."""
        if self._trainer is None or self.trainer.datamodule is None:
            return None
        batch = getattr(self.trainer.datamodule, "batch_size", None)
        if batch is None:
            return None
        return int(batch) * int(self.trainer.accumulate_grad_batches) * int(self.trainer.world_size)

    def fused_optimizer_fits(self, groups: list[dict]) -> bool:
        """``optim.fused: null``'s choice for this task's parameters and strategy (:func:`fused_adamw_fits`)."""
        strategy = type(self.trainer.strategy).__name__ if self._trainer is not None else ""
        return fused_adamw_fits([p for g in groups for p in g["params"]], strategy)

    def configure_optimizers(self):
        cfg = self.optim_config
        global_batch = self.global_batch_size() if cfg.lr_base_batch is not None else None
        lr = scaled_lr(cfg, global_batch)
        if cfg.lr_base_batch is not None:
            rank_zero_info(f"learning rate {cfg.lr:g} at batch {cfg.lr_base_batch} → {lr:.4g} at global batch "
                           f"{global_batch}")
        groups = self.parameter_groups()
        fused = cfg.fused if cfg.fused is not None else self.fused_optimizer_fits(groups)
        optimizer = torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=fused or None)
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        if not math.isfinite(total) or total <= 0:
            total = 1
        warmup = warmup_length(cfg, total, self.trainer.max_epochs if self._trainer is not None else None)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_lambda(step, total, warmup, cfg.schedule, cfg.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_callbacks(self):
        callbacks: list[pl.Callback] = [ResultWriter()]
        div = self.divergence_config
        if div.enabled:
            callbacks.insert(0, DivergenceGuard(max_loss_ratio=div.max_loss_ratio, min_steps=div.min_steps,
                                                check_every_n_steps=div.check_every_n_steps))
        if self.track_alpha:
            callbacks.append(AlphaTracker())
        if self.track_saturation:
            callbacks.append(SaturationMonitor())
        return callbacks

    def probe_forward(self, batch):
        """Run the network on a batch as in validation (used by the norm probe); tasks with other batches override
        it."""
        inputs = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(inputs.to(self.device))

    def check_datamodule(self, **expected) -> None:
        """Fail before training when the datamodule disagrees with the model (e.g. num_classes, img_size)."""
        dm = self.trainer.datamodule if self._trainer is not None else None
        if dm is None:
            return
        for name, value in expected.items():
            have = getattr(dm, name, None)
            if have is not None and have != value:
                raise ValueError(f"model.{name}={value} but data.{name}={have}; set both to the same value")


def _batch_size(batch) -> int | None:
    """The leading dimension of the first tensor in a batch (tensor, sequence or mapping)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else None
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for item in items:
        size = _batch_size(item)
        if size is not None:
            return size
    return None


__all__ = ["BenchTask", "DivergenceConfig", "OptimConfig", "lr_lambda"]
