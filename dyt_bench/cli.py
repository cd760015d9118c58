"""The ``dyt-bench`` command: LightningCLI (fit / validate / test) for every task and datamodule."""

from __future__ import annotations

import sys

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningCLI

import dyt_bench.datamodules  # noqa: F401  (registers the datamodules for short class names)
import dyt_bench.tasks  # noqa: F401  (registers the tasks for short class names)
from dyt_bench.tasks.base import BenchTask

EXTRA_COMMANDS: dict[str, str] = {
    "probe": "dyt_bench.callbacks.probe",
    "alpha-init": "dyt_bench.norms.alpha_init",
    "grid": "dyt_bench.grid",
    "leaderboard": "dyt_bench.leaderboard",
}


class BenchCLI(LightningCLI):
    """LightningCLI whose model is any ``BenchTask`` and whose data is any LightningDataModule (``class_path`` in YAML)."""

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
        parser_kwargs={"description": "dyt-bench: swap a model's normalization layer and measure what happens."},
    )


def build_from_config(config_path: str, overrides: list[str] | None = None) -> tuple[BenchTask, pl.LightningDataModule]:
    """Instantiate the task and datamodule of a run config (e.g. a run's saved ``config.yaml``) without training."""
    import tempfile

    import yaml

    with open(config_path, encoding="utf-8") as f:
        config = yaml.safe_load(f) or {}
    if "model" not in config or "data" not in config:
        raise ValueError(f"{config_path} has no 'model' and 'data' sections; give a dyt-bench run config")
    # Keep what builds the model and data; run-only keys (ckpt_path, trainer, …) do not matter here.
    kept = {k: config[k] for k in ("model", "data", "seed_everything") if k in config}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as tmp:
        yaml.safe_dump(kept, tmp)
    try:
        cli = BenchCLI(
            BenchTask, pl.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False,
            auto_configure_optimizers=False, save_config_callback=None,
            args=["--config", tmp.name, "--trainer.logger", "false", *(overrides or [])],
        )
    finally:
        import os

        os.unlink(tmp.name)
    return cli.model, cli.datamodule


def main(argv: list[str] | None = None) -> int | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in EXTRA_COMMANDS:
        module_name = EXTRA_COMMANDS[argv[0]]
        import importlib

        return importlib.import_module(module_name).main(argv[1:])
    run_lightning_cli(argv if argv != sys.argv[1:] else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
