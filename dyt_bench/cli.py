"""The ``dyt-bench`` command tree: the LightningCLI subcommands (fit / validate / test) and grid, leaderboard, probe,
alpha-init.

Every subcommand is parsed by jsonargparse (so its options can also come from a YAML file through ``--config``) and is
imported only when it runs: ``dyt-bench --help`` and ``dyt-bench leaderboard --help`` load neither torch nor Lightning.
"""

from __future__ import annotations

import importlib
import signal
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """A subcommand: the module whose ``main(argv)`` runs it, and its one-line description."""

    module: str
    description: str
    trainer: bool = False  # a LightningCLI subcommand (fit, validate, test)


# Adding a subcommand is one entry: a module with ``build_parser()`` and ``main(argv) -> int``.
COMMANDS: dict[str, Command] = {
    "fit": Command("dyt_bench.lightning_cli", "Train a task from a config (validating as it goes); writes result.json.",
                   trainer=True),
    "validate": Command("dyt_bench.lightning_cli", "One validation pass of a task from a config (and a checkpoint).",
                        trainer=True),
    "test": Command("dyt_bench.lightning_cli", "The test loop of a task from a config (and a checkpoint).", trainer=True),
    "grid": Command("dyt_bench.grid.cli", "Run every cell of an ablation grid (locally, or as a SLURM job array)."),
    "leaderboard": Command("dyt_bench.leaderboard.cli",
                           "Tables from result.json files: mean ± std, Diverge / Stalled, Δ with a 95% CI and Holm p."),
    "probe": Command("dyt_bench.analysis.probe",
                     "Hook every norm layer of a run on one batch: input/output scatter plots and tanh fits."),
    "alpha-init": Command("dyt_bench.norms.alpha_init", "The α₀ the paper's LLM width rule recommends for a width."),
}

PROG = "dyt-bench"
SUMMARY = "dyt-bench: swap a model's normalization layer and measure what happens."


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} <command> [options]   ({PROG} <command> --help for a command's options)", "", SUMMARY,
             "", "commands:"]
    lines += [f"  {name:<{width}}  {cmd.description}" for name, cmd in COMMANDS.items()]
    lines += ["", "options:", f"  {'-h, --help':<{width}}  show this message and exit",
              f"  {'--version':<{width}}  print the version and exit"]
    return "\n".join(lines)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("dyt-bench")
    except metadata.PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    if args[0] == "--version":
        print(f"{PROG} {_version()}")
        return 0
    name, rest = args[0], args[1:]
    command = COMMANDS.get(name)
    if command is None:
        print(f"{PROG}: unknown command {name!r}; allowed: {', '.join(COMMANDS)}\n\n{usage()}", file=sys.stderr)
        return 2
    if command.trainer:  # the subcommand is part of LightningCLI's own command line
        return _run_trainer_command(command, [name, *rest])
    module = importlib.import_module(command.module)
    return int(module.main(rest) or 0)


EXIT_BY_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}


def _startup_signal(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _run_trainer_command(command: Command, args: list[str]) -> int:
    """fit / validate / test: a SIGTERM or SIGINT while torch and Lightning load still ends the run as interrupted
    (exit 143 / 130, and a result.json where the run directory is known); the module handles signals after that."""
    previous = {s: signal.signal(s, _startup_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        module = importlib.import_module(command.module)
    except KeyboardInterrupt as e:
        name = str(e) if str(e) in EXIT_BY_SIGNAL else "SIGINT"
        from dyt_bench.results import write_startup_result

        write_startup_result(args, name)
        print(f"{PROG} {args[0]}: interrupted by {name} while starting", file=sys.stderr)
        return EXIT_BY_SIGNAL[name]
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return int(module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
