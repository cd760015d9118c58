"""What each normalization layer does to its input (the paper's Figures 1–2), for any model: its output before the
affine transform, a best fit ``s · tanh(a · x)``, and the probe's CSV files."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dyt_bench.callbacks.norm_hooks import NormInputHooks, all_norms
from dyt_bench.callbacks.saturation import saturated_fraction
from dyt_bench.norms import SquashNorm, describe_norm
from dyt_bench.ops.functions import FUNCTIONS


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
        return FUNCTIONS[module.fn](z + module.shift.float().reshape(()) if module.shift is not None else z)
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


def _probe_layer(name: str, module: nn.Module, x: torch.Tensor, max_points: int, gen: torch.Generator) -> LayerProbe:
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
    return LayerProbe(name, type(module).__name__, info.layout, info.num_features, xs, ys, channel, token,
                      float(x.float().std()), fit_tanh(xs, ys), sat)


def probe_model(model: nn.Module, run_batch, max_points: int = 20000, seed: int = 0) -> list[LayerProbe]:
    """Hook every norm layer of ``model``, call ``run_batch()`` once (no gradients), and return one probe per layer,
    in the order the layers ran."""
    with torch.no_grad():
        with NormInputHooks(model, lambda module, x: x.detach(), layers=all_norms) as hooks:
            run_batch()
        gen = torch.Generator().manual_seed(seed)
        return [_probe_layer(name, hooks.layers[name], x, max_points, gen) for name, x in hooks.results.items()]


__all__ = ["LayerProbe", "TanhFit", "fit_tanh", "normalize_without_affine", "probe_model"]
