"""The LightningCLI of every task and datamodule (``fit`` / ``validate`` / ``test``), and building a run's task and data
from its config without training (what the probe and other analyses need)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningCLI

import dyt_bench.datamodules  # noqa: F401  (registers the datamodules for short class names)
import dyt_bench.tasks  # noqa: F401  (registers the tasks for short class names)
from dyt_bench.tasks.base import BenchTask

DESCRIPTION = "dyt-bench: swap a model's normalization layer and measure what happens."
# No task has a predict_step, so ``predict`` is not offered.
TRAINER_SUBCOMMANDS = {
    "fit": "Train a task (and validate it) from a config; writes the run's result.json.",
    "validate": "Run one validation pass of a task from a config (and a checkpoint).",
    "test": "Run the test loop of a task from a config (and a checkpoint).",
}


class BenchCLI(LightningCLI):
    """LightningCLI whose model is any ``BenchTask`` and whose data is any LightningDataModule (``class_path`` in YAML)."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {name: subs for name, subs in LightningCLI.subcommands().items() if name in TRAINER_SUBCOMMANDS}

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        config = self.config.get(str(self.subcommand), self.config) if self.subcommand else self.config
        if isinstance(self.model, BenchTask):
            self.model.run_config = config.clone().as_dict()


def run_lightning_cli(args: list[str] | None = None) -> BenchCLI:
    return BenchCLI(
        BenchTask,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        args=args,
        parser_kwargs={"description": DESCRIPTION},
    )


def build_from_config(config_path: str, overrides: list[str] | None = None) -> tuple[BenchTask, pl.LightningDataModule]:
    """Instantiate the task and datamodule of a run config (e.g. a run's saved ``config.yaml``) without training.

    ``overrides`` are command-line style (``--model.norm.kind=dyt``)."""
    import yaml

    with open(config_path, encoding="utf-8") as f:
        config: dict[str, Any] = yaml.safe_load(f) or {}
    if not isinstance(config, dict) or "model" not in config or "data" not in config:
        raise ValueError(f"{config_path} has no 'model' and 'data' sections; give a dyt-bench run config")
    # Keep what builds the model and data; run-only keys (ckpt_path, trainer, …) do not matter here.
    kept = {k: config[k] for k in ("model", "data", "seed_everything") if k in config}
    kept["trainer"] = {"logger": False}
    if overrides:
        # A dict config and command-line overrides: parse the dict as a config "file" given inline.
        args: Any = ["--config", yaml.safe_dump(kept), *overrides]
    else:
        args = kept
    import sys
    from unittest import mock

    # LightningCLI warns when it gets ``args`` while sys.argv holds a command line (the probe's own): here they are
    # meant to be separate, so it sees an empty command line.
    with mock.patch.object(sys, "argv", sys.argv[:1]):
        cli = BenchCLI(
            BenchTask, pl.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False,
            auto_configure_optimizers=False, save_config_callback=None, args=args,
        )
    return cli.model, cli.datamodule


__all__ = ["BenchCLI", "DESCRIPTION", "TRAINER_SUBCOMMANDS", "build_from_config", "run_lightning_cli"]
