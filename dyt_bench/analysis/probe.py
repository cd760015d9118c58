"""Hook every norm layer of a run on one batch: input/output scatter plots and tanh fits.

``dyt-bench probe --config CONFIG [--ckpt_path CKPT]`` builds the model of a run config (from a checkpoint when one
is given, else freshly initialised), runs one batch, and writes per layer the input and the output before the affine
transform (sub-sampled), a best fit ``s · tanh(a · x)``, and scatter plots of the chosen layers, as CSV and PNG (the
paper's Figures 1–2). Options the probe does not know (``--model.norm.kind dyt``) override the run config.
"""

from __future__ import annotations

import os
from pathlib import Path

from jsonargparse import ActionConfigFile, ArgumentParser

PROG = "dyt-bench probe"


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                            epilog="Any other option (e.g. --model.norm.kind dyt) overrides the run config.")
    parser.add_argument("--probe_config", action=ActionConfigFile, help="a YAML file with any of these options")
    parser.add_argument("--config", required=True, help="the run's config (e.g. <run dir>/config.yaml)")
    parser.add_argument("--ckpt_path", help="a Lightning checkpoint of that run; without it the model is freshly built")
    parser.add_argument("--output", help="output folder (default: <checkpoint's run dir>/probe, or runs/probe)")
    parser.add_argument("--layers", nargs="*", help="layer names (or substrings) to plot; default: 4 evenly spaced")
    parser.add_argument("--color-by", choices=("channel", "token"), default="channel")
    parser.add_argument("--max-points", type=int, default=20000, help="points kept per layer (sub-sampled)")
    parser.add_argument("--split", choices=("train", "val"), default="val", help="where the batch comes from")
    parser.add_argument("--mode", choices=("eval", "train"), default="eval",
                        help="model mode for the batch (BatchNorm uses batch statistics in train mode)")
    return parser


def split_overrides(parser: ArgumentParser, argv: list[str]) -> tuple[list[str], list[str]]:
    """Split ``argv`` into the probe's own options and run-config overrides: an option the parser does not define
    starts an override, and the values after it belong to it."""
    own_options = {opt for action in parser._actions for opt in action.option_strings}  # argparse keeps no public list
    own: list[str] = []
    overrides: list[str] = []
    target = own
    for arg in argv:
        if arg.startswith("-") and not _is_number(arg):
            target = own if arg.split("=", 1)[0] in own_options else overrides
        target.append(arg)
    return own, overrides


def _is_number(arg: str) -> bool:
    try:
        float(arg)
    except ValueError:
        return False
    return True


def _print_table(probes) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"norm layers: output before affine vs input, fit s·tanh(a·x) ({len(probes)} layers)")
    for col in ("layer", "class", "input std", "a", "s", "RMSE", "R²"):
        table.add_column(col, justify="left" if col in ("layer", "class") else "right")
    for p in probes:
        table.add_row(p.name, p.cls, f"{p.input_std:.3g}", f"{p.fit.a:.3g}", f"{p.fit.scale:.3g}", f"{p.fit.rmse:.3f}",
                      f"{p.fit.r2:.3f}")
    Console().print(table)


def load_checkpoint_into(model, path: str) -> None:
    """Load a Lightning checkpoint's weights into ``model`` (tensors only: ``weights_only``); a checkpoint that is not
    one, or one of another model or norm kind, is one error naming what differs."""
    from dyt_bench.lightning_cli import ensure_built
    from dyt_bench.results import load_torch_file

    ensure_built(model)  # a deferred network (defer_build: true) has no tensors to load into before it is built
    ckpt = load_torch_file(path, "--ckpt_path")
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"--ckpt_path: {path} is not a Lightning checkpoint (it has no state_dict)")
    hp = ckpt.get("hyper_parameters") or {}
    saved = (hp.get("norm") or {}).get("kind") if isinstance(hp.get("norm"), dict) else None
    spec = getattr(model, "norm_spec", None)
    if saved and spec is not None and saved != spec.kind:
        raise ValueError(f"--ckpt_path: {path} was trained with model.norm.kind={saved!r} but the config builds "
                         f"{spec.kind!r}; give the run's own config.yaml or --model.norm.kind={saved}")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or extra or shapes:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                 f"{len(extra)} unexpected (e.g. {extra[0]})" if extra else "",
                 f"{len(shapes)} of another shape (e.g. {shapes[0]})" if shapes else ""]
        raise ValueError(f"--ckpt_path: {path} does not fit the config's model: "
                         + ", ".join(p for p in parts if p) + " tensors; give the run's own config.yaml")
    model.load_state_dict(state)


def main(argv: list[str] | None = None) -> int:
    """``dyt-bench probe``: build the model of a run config (optionally from a checkpoint) and probe its norms."""
    import sys

    parser = build_parser()
    own, overrides = split_overrides(parser, list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(own)
    if args.max_points < 1:
        parser.error("--max-points must be >= 1")
    if args.ckpt_path and not os.path.isfile(args.ckpt_path):
        parser.error(f"--ckpt_path {args.ckpt_path} does not exist")
    from dyt_bench.lightning_cli import build_from_config

    from .layer_probe import probe_model
    from .report import write_probe

    try:
        model, datamodule = build_from_config(args.config, overrides)
        if args.ckpt_path:
            load_checkpoint_into(model, args.ckpt_path)
    except ValueError as e:
        print(f"dyt-bench probe: error: {e}", file=sys.stderr)
        return 2
    model.train(args.mode == "train")
    datamodule.setup("fit")
    loader = datamodule.train_dataloader() if args.split == "train" else datamodule.val_dataloader()
    batch = next(iter(loader))
    probes = probe_model(model, lambda: model.probe_forward(batch), max_points=args.max_points)
    out = args.output or (str(Path(args.ckpt_path).resolve().parent.parent / "probe") if args.ckpt_path
                          else os.path.join("runs", "probe"))
    written = write_probe(probes, out, layers=args.layers, color_by=args.color_by)
    _print_table(probes)
    print(f"[dyt-bench] probe written to {out} ({len(written)} files)")
    return 0


__all__ = ["build_parser", "main", "split_overrides"]
