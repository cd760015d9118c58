"""Norm probe: what each normalization layer does to its input (the paper's Figures 1–2), for any model.

Hooks every norm layer, runs one batch, and saves per layer the input and the normalised output before the affine
transform (sub-sampled), a best fit ``s · tanh(a · x)`` of output against input, and scatter plots of the chosen
layers, as CSV and PNG. ``dyt-bench probe --config CONFIG [--ckpt_path CKPT]`` runs it on a trained model.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dyt_bench.norms import SquashNorm, describe_norm
from dyt_bench.ops.reference import _squash

from .saturation import saturated_fraction


def _channels_last(t: torch.Tensor, layout: str) -> torch.Tensor:
    """View a tensor with its channel dim last (a copy for channels-first; only used for analysis)."""
    return t.movedim(1, -1) if layout == "channels_first" and t.dim() > 2 else t


def normalize_without_affine(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The output of norm layer ``module`` on ``x`` before its per-channel affine (γ, β), in float32.

    LayerNorm-type layers: standardised over channels; RMSNorm-type: divided by the RMS over channels; BatchNorm:
    standardised per channel with batch statistics in training mode and running statistics in eval mode; GroupNorm:
    standardised per group; point-wise layers (DyT and friends): ``f(α x)``.
    """
    info = describe_norm(module)
    if info is None:
        raise TypeError(f"{type(module).__name__} is not a normalization layer dyt-bench knows")
    xf = x.float()
    if isinstance(module, SquashNorm):
        z = module.alpha.float().reshape(()) * xf
        return _squash(z + module.shift.float().reshape(()) if module.shift is not None else z, module.fn)
    eps = info.eps if info.eps is not None else 1e-6
    dim = -1 if info.layout == "channels_last" else 1
    if info.family == "batchnorm":
        if module.training or module.running_mean is None:
            dims = [d for d in range(xf.dim()) if d != dim % xf.dim()]
            var, mean = torch.var_mean(xf, dim=dims, keepdim=True, correction=0)
        else:
            shape = [1] * xf.dim()
            shape[dim] = -1
            mean, var = module.running_mean.float().view(shape), module.running_var.float().view(shape)
        return (xf - mean) * torch.rsqrt(var + eps)
    if info.family == "groupnorm":
        return F.group_norm(xf, module.num_groups, None, None, eps)
    if info.family == "layernorm":
        var, mean = torch.var_mean(xf, dim=dim, keepdim=True, correction=0)
        return (xf - mean) * torch.rsqrt(var + eps)
    if info.family == "rmsnorm":
        return xf * torch.rsqrt(xf.pow(2).mean(dim=dim, keepdim=True) + eps)
    raise AssertionError(f"unhandled norm family {info.family!r}")


@dataclass
class TanhFit:
    """Least-squares fit ``y ≈ scale · tanh(a · x)``; ``rmse`` and ``r2`` say how well it fits."""

    a: float
    scale: float
    rmse: float
    r2: float


def fit_tanh(x: torch.Tensor, y: torch.Tensor) -> TanhFit:
    """Fit ``y ≈ s · tanh(a x)``: for each a the best s is closed-form; a is found on a log grid, then refined."""
    x, y = x.double().flatten(), y.double().flatten()
    if x.numel() == 0:
        return TanhFit(float("nan"), float("nan"), float("nan"), float("nan"))

    def loss_at(a: float) -> tuple[float, float]:
        t = torch.tanh(a * x)
        denom = float((t * t).sum())
        s = float((t * y).sum()) / denom if denom > 0 else 0.0
        return float(((y - s * t) ** 2).mean()), s

    grid = torch.logspace(-3, 3, 121, dtype=torch.float64).tolist()
    best = min(grid, key=lambda a: loss_at(a)[0])
    lo, hi = math.log(best) - 0.06, math.log(best) + 0.06  # golden-section search in log a around the grid optimum
    g = (math.sqrt(5) - 1) / 2
    for _ in range(60):
        m1, m2 = hi - g * (hi - lo), lo + g * (hi - lo)
        if loss_at(math.exp(m1))[0] < loss_at(math.exp(m2))[0]:
            hi = m2
        else:
            lo = m1
    a = math.exp((lo + hi) / 2)
    mse, s = loss_at(a)
    var = float(y.var(unbiased=False))
    return TanhFit(a=a, scale=s, rmse=math.sqrt(mse), r2=1 - mse / var if var > 0 else float("nan"))


@dataclass
class LayerProbe:
    """What one norm layer did to one batch (sub-sampled points) and its tanh fit."""

    name: str
    cls: str
    layout: str
    num_features: int
    x: torch.Tensor  # sub-sampled inputs
    y: torch.Tensor  # sub-sampled pre-affine outputs
    channel: torch.Tensor  # channel index of each point
    token: torch.Tensor  # position index (token or spatial location) of each point
    input_std: float
    fit: TanhFit
    saturation: float | None = None  # point-wise layers: fraction of inputs on the flat part (SaturationMonitor's rule)


def probe_model(model: nn.Module, run_batch, max_points: int = 20000, seed: int = 0) -> list[LayerProbe]:
    """Hook every norm layer of ``model``, call ``run_batch()`` once (no gradients), and return one probe per layer."""
    captured: dict[str, tuple[nn.Module, torch.Tensor]] = {}
    handles = []

    def capture(name: str):
        def hook(module: nn.Module, inputs, output) -> None:  # returns None: the layer's output is left as is
            captured.setdefault(name, (module, inputs[0].detach()))

        return hook

    for name, module in model.named_modules():
        if describe_norm(module) is not None:
            handles.append(module.register_forward_hook(capture(name)))
    try:
        with torch.no_grad():
            run_batch()
            gen = torch.Generator().manual_seed(seed)
            probes = []
            for name, (module, x) in captured.items():
                info = describe_norm(module)
                y = normalize_without_affine(module, x)
                xl, yl = _channels_last(x.float(), info.layout), _channels_last(y, info.layout)
                c = xl.shape[-1]
                xl, yl = xl.reshape(-1, c).cpu(), yl.reshape(-1, c).cpu()
                n_rows = xl.shape[0]
                channel = torch.arange(c).expand(n_rows, c).reshape(-1)
                per_sample = n_rows // max(1, x.shape[0])
                token = (torch.arange(n_rows) % max(1, per_sample)).repeat_interleave(c)
                xs, ys = xl.reshape(-1), yl.reshape(-1)
                if xs.numel() > max_points:
                    idx = torch.randperm(xs.numel(), generator=gen)[:max_points]
                    xs, ys, channel, token = xs[idx], ys[idx], channel[idx], token[idx]
                sat = saturated_fraction(module, x) if isinstance(module, SquashNorm) else None
                probes.append(LayerProbe(name, type(module).__name__, info.layout, info.num_features, xs, ys, channel,
                                         token, float(x.float().std()), fit_tanh(xs, ys), sat))
    finally:
        for h in handles:
            h.remove()
    return probes


def choose_layers(probes: list[LayerProbe], layers: list[str] | None, count: int = 4) -> list[LayerProbe]:
    """Probes named in ``layers`` (exact names or substrings), or ``count`` evenly spaced ones."""
    if layers:
        chosen = [p for p in probes if any(sel == p.name or sel in p.name for sel in layers)]
        if not chosen:
            raise ValueError(f"--layers {layers} matches no norm layer; layers: {', '.join(p.name for p in probes)}")
        return chosen
    if len(probes) <= count:
        return probes
    step = (len(probes) - 1) / (count - 1)
    return [probes[round(i * step)] for i in range(count)]


def write_probe(probes: list[LayerProbe], out_dir: str | os.PathLike, layers: list[str] | None = None,
                color_by: str = "channel", max_colored_channels: int = 8) -> dict[str, Path]:
    """Write ``probe_summary.csv`` (every layer), ``probe_points_<layer>.csv`` and ``probe_<layer>.png`` (chosen ones)."""
    if color_by not in ("channel", "token"):
        raise ValueError(f"color_by must be one of channel, token; got {color_by!r}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    summary = out / "probe_summary.csv"
    with open(summary, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["layer", "class", "layout", "num_features", "input_std", "fit_a", "fit_scale", "fit_rmse", "fit_r2",
                    "saturated_fraction"])
        for p in probes:
            w.writerow([p.name, p.cls, p.layout, p.num_features, f"{p.input_std:.6g}", f"{p.fit.a:.6g}",
                        f"{p.fit.scale:.6g}", f"{p.fit.rmse:.6g}", f"{p.fit.r2:.6g}",
                        "" if p.saturation is None else f"{p.saturation:.6g}"])
    written["summary"] = summary
    for p in choose_layers(probes, layers):
        safe = p.name.replace(".", "_")
        points = out / f"probe_points_{safe}.csv"
        with open(points, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["input", "output_before_affine", "channel", "token"])
            for row in zip(p.x.tolist(), p.y.tolist(), p.channel.tolist(), p.token.tolist(), strict=True):
                w.writerow([f"{row[0]:.6g}", f"{row[1]:.6g}", row[2], row[3]])
        fig, ax = plt.subplots(figsize=(4.5, 4))
        if color_by == "channel":  # as in the paper's Figure 2: a few channels in colour, the rest grey
            extreme = torch.argsort(torch.stack([p.x[p.channel == c].abs().max() if (p.channel == c).any() else
                                                 torch.tensor(0.0) for c in range(p.num_features)]), descending=True)
            picked = extreme[:max_colored_channels].tolist()
            rest = ~torch.isin(p.channel, torch.tensor(picked))
            ax.scatter(p.x[rest], p.y[rest], s=1, c="0.75", rasterized=True)
            for c in picked:
                m = p.channel == c
                ax.scatter(p.x[m], p.y[m], s=2, label=f"ch {c}", rasterized=True)
            ax.legend(fontsize=6, markerscale=4, loc="lower right")
        else:
            sc = ax.scatter(p.x, p.y, s=1, c=p.token, cmap="viridis", rasterized=True)
            fig.colorbar(sc, ax=ax, label="token / position")
        grid = torch.linspace(float(p.x.min()), float(p.x.max()), 200)
        ax.plot(grid, p.fit.scale * torch.tanh(p.fit.a * grid), "k--", lw=1,
                label=f"{p.fit.scale:.2f}·tanh({p.fit.a:.2f}x)")
        ax.set_title(f"{p.name} ({p.cls})\nfit {p.fit.scale:.2f}·tanh({p.fit.a:.2f}x): RMSE {p.fit.rmse:.3f}, "
                     f"R² {p.fit.r2:.3f}", fontsize=8)
        ax.set_xlabel("input")
        ax.set_ylabel("output before affine")
        fig.tight_layout()
        png = out / f"probe_{safe}.png"
        fig.savefig(png, dpi=130)
        plt.close(fig)
        written[f"points:{p.name}"] = points
        written[f"png:{p.name}"] = png
    return written


def main(argv: list[str] | None = None) -> int:
    """``dyt-bench probe``: build the model of a run config (optionally from a checkpoint) and probe its norms."""
    parser = argparse.ArgumentParser(prog="dyt-bench probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the run's config (e.g. <run dir>/config.yaml)")
    parser.add_argument("--ckpt_path", help="a Lightning checkpoint of that run; without it the model is freshly built")
    parser.add_argument("--output", help="output folder (default: <checkpoint's run dir>/probe, or runs/probe)")
    parser.add_argument("--layers", nargs="*", help="layer names (or substrings) to plot; default: 4 evenly spaced")
    parser.add_argument("--color-by", choices=("channel", "token"), default="channel")
    parser.add_argument("--max-points", type=int, default=20000, help="points kept per layer (sub-sampled)")
    parser.add_argument("--split", choices=("train", "val"), default="val", help="where the batch comes from")
    parser.add_argument("--mode", choices=("eval", "train"), default="eval",
                        help="model mode for the batch (BatchNorm uses batch statistics in train mode)")
    args, overrides = parser.parse_known_args(argv)
    if args.max_points < 1:
        parser.error("--max-points must be >= 1")
    if args.ckpt_path and not os.path.isfile(args.ckpt_path):
        parser.error(f"--ckpt_path {args.ckpt_path} does not exist")
    from dyt_bench.cli import build_from_config

    model, datamodule = build_from_config(args.config, overrides)
    if args.ckpt_path:
        state = torch.load(args.ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["state_dict"])
    model.train(args.mode == "train")
    datamodule.setup("fit")
    loader = datamodule.train_dataloader() if args.split == "train" else datamodule.val_dataloader()
    batch = next(iter(loader))
    probes = probe_model(model, lambda: model.probe_forward(batch), max_points=args.max_points)
    out = args.output or (str(Path(args.ckpt_path).resolve().parent.parent / "probe") if args.ckpt_path
                          else os.path.join("runs", "probe"))
    written = write_probe(probes, out, layers=args.layers, color_by=args.color_by)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"norm layers: output before affine vs input, fit s·tanh(a·x) ({len(probes)} layers)")
    for col in ("layer", "class", "input std", "a", "s", "RMSE", "R²"):
        table.add_column(col, justify="left" if col in ("layer", "class") else "right")
    for p in probes:
        table.add_row(p.name, p.cls, f"{p.input_std:.3g}", f"{p.fit.a:.3g}", f"{p.fit.scale:.3g}", f"{p.fit.rmse:.3f}",
                      f"{p.fit.r2:.3f}")
    Console().print(table)
    print(f"[dyt-bench] probe written to {out} ({len(written)} files)")
    return 0


__all__ = ["LayerProbe", "TanhFit", "choose_layers", "fit_tanh", "main", "normalize_without_affine",
           "probe_model", "write_probe"]
