"""The LightningCLI of every task and datamodule (``fit`` / ``validate`` / ``test``), and building a run's task and data
from its config without training (what the probe and other analyses need)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningCLI

import dyt_bench.datamodules  # noqa: F401  (registers the datamodules for short class names)
import dyt_bench.tasks  # noqa: F401  (registers the tasks for short class names)
from dyt_bench.callbacks.checkpointing import CheckpointConfig, run_checkpoint_callbacks, settle_fit_run
from dyt_bench.callbacks.run_files import save_run_config_callback
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

    check_devices = True  # refuse a config this machine cannot run (impl: triton without CUDA) before building it

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {name: subs for name, subs in LightningCLI.subcommands().items() if name in TRAINER_SUBCOMMANDS}

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_class_arguments(CheckpointConfig, "checkpoint")  # last.ckpt every N steps, at the end, on SIGTERM

    def before_instantiate_classes(self) -> None:
        config = self.config.get(str(self.subcommand), self.config) if self.subcommand else self.config
        check_config_values(config.clone().as_dict(), devices=self.check_devices)
        if self.subcommand == "fit":
            settle_fit_run(config)

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        config = self.config_init.get(str(self.subcommand), self.config_init) if self.subcommand else self.config_init
        extra = run_checkpoint_callbacks(config.get("checkpoint"), config.get("trainer"))
        if extra:
            kwargs["callbacks"] = [*(_as_list(config.get("trainer", {}).get("callbacks"))), *extra]
        return super().instantiate_trainer(**kwargs)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ConfigError:
            raise
        except Exception as e:  # a class refused its arguments: its own message, not jsonargparse's wrapping of it
            raise ConfigError(one_line_error(e)) from None
        config = self.config.get(str(self.subcommand), self.config) if self.subcommand else self.config
        if isinstance(self.model, BenchTask):
            self.model.run_config = config.clone().as_dict()

    def _run_subcommand(self, subcommand: str) -> None:
        _SIGNALS.started = True  # from here on Lightning handles SIGTERM (it stops the loop and records the result)
        super()._run_subcommand(subcommand)


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one line naming the field, before anything runs
# ---------------------------------------------------------------------------------------------------------------
class ConfigError(ValueError):
    """A run config is wrong; the message is one line naming the field and what is allowed."""


def one_line_error(exc: BaseException) -> str:
    """The first line of the message of the exception that started ``exc``'s chain (a class's own ValueError, not the
    union / namespace wrapping jsonargparse puts around it)."""
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    for e in reversed(chain):
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        if lines:
            return lines[0] if isinstance(e, ValueError) else f"{type(e).__name__}: {lines[0]}"
    return type(chain[0]).__name__


_WRAPPING = ("Does not validate against", "Subtypes:", "Errors:", "- Problem with given class_path",
             "- Expected a <class 'NoneType'>", "Given value", "tip:")


def parse_error_line(message: str) -> str:
    """jsonargparse's nested parse error as one line: the dotted key it names and the innermost reason."""
    import re

    keys: list[str] = []
    for raw in message.splitlines():
        line = raw.strip()
        if not line or line.startswith(_WRAPPING):
            continue
        found = re.fullmatch(r'(?:- )?Parser key "([^"]+)":?\s*(.*)', line)
        if found:
            keys.append(found.group(1))
            if not found.group(2):
                continue
            line = found.group(2)
        line = line.removeprefix("- ")
        choice = re.fullmatch(r"Expected a typing\.Literal\[(.*)\]\. Got value: (.*)", line)
        if choice:
            allowed = ", ".join(v.strip().strip("'\"") for v in choice.group(1).split(","))
            line = f"must be one of {allowed}; got {choice.group(2)!r}"
        return f"{'.'.join(keys)}: {line}" if keys else line
    return ".".join(keys) or message.strip()


def _walk(value: Any, prefix: str = ""):
    """(dotted key, value) of every leaf of a config (``init_args`` levels kept in the key, as the CLI spells it)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _walk(v, f"{prefix}[{i}]")
    else:
        yield prefix, value


def check_config_values(config: dict[str, Any], devices: bool = True) -> None:
    """Checks that need the whole parsed config: every number finite, ``impl: triton`` only where CUDA is
    (``devices``: this machine is the one that runs it), and the op's environment switches (``DYT_BENCH_*``)."""
    import math

    from dyt_bench.ops import check_environment

    try:
        check_environment()
    except ValueError as err:
        raise ConfigError(f"environment: {err}") from None

    for key, value in _walk(config):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number; got {value}")
        if devices and key.rsplit(".", 1)[-1] == "impl" and value == "triton":
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(f"{key}: 'triton' needs a CUDA device and none is available; use auto or eager")


def check_config_files(args: list[str]) -> None:
    """``--config FILE`` arguments that cannot be a run config (missing, empty, not a mapping), named up front."""
    import yaml

    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            path = args[i + 1]
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
        else:
            continue
        if path.lstrip().startswith("{") or "\n" in path:  # an inline config string
            continue
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except FileNotFoundError:
            raise ConfigError(f"--config: no such file {path!r}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"--config {path}: not valid YAML ({one_line_error(e)})") from None
        except OSError as e:
            raise ConfigError(f"--config {path}: cannot be read ({e.strerror})") from None
        if data is None:
            raise ConfigError(f"--config {path}: the file is empty; give a run config with model, data and trainer "
                              "sections (e.g. configs/quickstart.yaml)")
        if not isinstance(data, dict):
            raise ConfigError(f"--config {path}: must be a YAML mapping of model, data, trainer, ...; got a "
                              f"{type(data).__name__}")


# ---------------------------------------------------------------------------------------------------------------
# Exit codes a scheduler can trust: 143 after SIGTERM, 130 after SIGINT (the result says interrupted)
# ---------------------------------------------------------------------------------------------------------------
EXIT_BAD_CONFIG = 2
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class _SignalState:
    received: int | None = None  # the signal that stopped the run
    started: bool = False  # the trainer runs (Lightning's own SIGTERM handling is in place)


_SIGNALS = _SignalState()


class StartupInterrupt(KeyboardInterrupt):
    """A SIGTERM that came before the trainer started: stop at once."""


def _on_signal(signum, frame):  # noqa: ARG001
    import signal

    _SIGNALS.received = signum
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    if not _SIGNALS.started:
        raise StartupInterrupt


def _exit_code(default: int) -> int:
    import signal

    if _SIGNALS.received == signal.SIGTERM:
        return EXIT_SIGTERM
    if _SIGNALS.received == signal.SIGINT:
        return EXIT_SIGINT
    return default


def main(argv: list[str] | None = None) -> int:
    """``dyt-bench fit|validate|test``: 0 when the run ended, 2 for a bad config (one line on stderr, nothing run),
    143 after SIGTERM, 130 after SIGINT."""
    import signal
    import sys
    from argparse import ArgumentError
    from unittest import mock

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    args = list(sys.argv[1:] if argv is None else argv)
    prog = f"dyt-bench {args[0]}" if args and args[0] in TRAINER_SUBCOMMANDS else "dyt-bench"
    _SIGNALS.received, _SIGNALS.started = None, False
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        check_config_files(args)
        # the command line is ``args``, given explicitly; when it is this process's own, sys.argv stays: Lightning's
        # DDP launcher starts the other ranks with it
        with mock.patch.object(sys, "argv", sys.argv if sys.argv[1:] == args else sys.argv[:1]):
            run_lightning_cli(args)
    except ArgumentError as e:  # a key or value the parser refuses: its innermost reason, on one line
        print(f"{prog}: error: {parse_error_line(str(e))} ({prog} --help lists the options)", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except ConfigError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except SIGTERMException:
        return EXIT_SIGTERM
    except KeyboardInterrupt:
        if not _SIGNALS.started:
            from dyt_bench.results import write_startup_result

            write_startup_result(args, {2: "SIGINT", 15: "SIGTERM"}.get(_SIGNALS.received or 0, "a signal"))
        print(f"{prog}: interrupted", file=sys.stderr)
        return _exit_code(EXIT_SIGINT)
    except (FileNotFoundError, ValueError) as e:
        if not _SIGNALS.started:
            raise
        # the data or the model refused what it met while running (a missing folder, an unreadable image): the
        # reason on one line; the run's result.json says failed and holds the traceback
        print(f"{prog}: error: {one_line_error(e)} (the run's result.json holds the traceback)", file=sys.stderr)
        return 1
    except SystemExit as e:  # argparse errors (2), Lightning's exit after Ctrl-C (1)
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        return _exit_code(code) if code else (_exit_code(0))
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return _exit_code(0)


def _as_list(value: Any) -> list:
    """A trainer's ``callbacks`` value (None, one callback or a list) as a list."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def run_lightning_cli(args: list[str] | None = None) -> BenchCLI:
    return BenchCLI(
        BenchTask,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        save_config_callback=save_run_config_callback(),  # config.yaml in the run directory, whatever the logger
        save_config_kwargs={"overwrite": True},
        args=args,
        parser_kwargs={"description": DESCRIPTION, "exit_on_error": False},
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
    return ensure_built(cli.model), cli.datamodule


def ensure_built(task: BenchTask) -> BenchTask:
    """Build a task's network now when it defers the build to Lightning's ``configure_model`` hook
    (``defer_build: true``, for FSDP): outside a trainer nothing else calls the hook. Returns the task."""
    hparams = getattr(task, "hparams", None) or {}
    if hparams.get("defer_build") and getattr(task, "net", None) is None:
        task.configure_model()
    return task


class _CheckCLI(BenchCLI):
    """Parses a run's command line and builds its task and datamodule (on the meta device: no memory, no weights)
    but no trainer: what the grid checks before it starts a cell (which may run on another machine)."""

    check_devices = False

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        return None


def check_run(args: list[str], use_meta: bool = True) -> str | None:
    """None when the ``dyt-bench fit`` arguments ``args`` parse and build; else the one-line reason."""
    import contextlib
    import io
    import sys
    from argparse import ArgumentError
    from unittest import mock

    import torch

    rest = args[1:] if args and args[0] in TRAINER_SUBCOMMANDS else args
    stderr = io.StringIO()
    try:
        check_config_files(rest)
        device = torch.device("meta") if use_meta else contextlib.nullcontext()
        with mock.patch.object(sys, "argv", sys.argv[:1]), device, contextlib.redirect_stderr(stderr):
            _CheckCLI(BenchTask, pl.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False,
                      auto_configure_optimizers=False, save_config_callback=None, args=rest,
                      parser_kwargs={"exit_on_error": False})
    except ConfigError as e:
        if use_meta and "meta" in str(e).lower():  # a builder that needs real tensors: check it on the CPU
            return check_run(args, use_meta=False)
        return str(e)
    except ArgumentError as e:  # jsonargparse's parse error (an unknown key, a wrong type)
        return parse_error_line(str(e))
    except SystemExit as e:
        return f"the command line does not parse (exit {e.code}): {stderr.getvalue().strip()[-300:]}"
    return None


def check_main(argv: list[str] | None = None) -> int:
    """``python -m dyt_bench.lightning_cli FILE``: FILE is JSON ``[{"id": ..., "args": [...]}, ...]``; prints one
    JSON line ``{"id": ..., "error": null | "..."}`` per run. Exit 0 when all build, 1 otherwise."""
    import json
    import logging
    import sys

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    (path,) = list(sys.argv[1:] if argv is None else argv)
    with open(path, encoding="utf-8") as f:
        runs = json.load(f)
    failed = 0
    for run in runs:
        error = check_run(list(run["args"]))
        failed += error is not None
        print(json.dumps({"id": run["id"], "error": error}), flush=True)
    return 1 if failed else 0


__all__ = ["BenchCLI", "ConfigError", "DESCRIPTION", "EXIT_SIGINT", "EXIT_SIGTERM", "TRAINER_SUBCOMMANDS",
           "build_from_config", "check_run", "main", "run_lightning_cli"]

if __name__ == "__main__":
    import sys

    sys.exit(check_main())
