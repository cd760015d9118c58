"""``alpha_init: calibrate``: set each point-wise norm's α0 from one forward pass, α0 = k / std(the layer's input).

The paper (Figures 3–4) finds that a trained DyT's α tracks 1/std of its input; calibration starts every layer
there instead of at one value for all. Written here because no library does it: forward hooks record, in float64,
the standard deviation of every ``SquashNorm``'s input over all its elements, then α is overwritten in place.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .layers import SquashNorm


def squash_layers(model: nn.Module) -> dict[str, SquashNorm]:
    """The point-wise norm layers of ``model`` by module path."""
    return {name: m for name, m in model.named_modules() if isinstance(m, SquashNorm)}


@torch.no_grad()
def input_stds(model: nn.Module, run_forward: Callable[[], object]) -> dict[str, float]:
    """The std (population, float64, over every element) of each ``SquashNorm``'s input during ``run_forward()``.

    A layer called several times in the pass (shared weights) gets the std of all its inputs together. The model
    runs in eval mode (no dropout) and is put back in the mode it had.
    """
    layers = squash_layers(model)
    sums: dict[str, list[float]] = {name: [0.0, 0.0, 0.0] for name in layers}  # count, Σx, Σx²

    def hook(name):
        def record(module, args):
            x = args[0].detach().to(torch.float64)
            acc = sums[name]
            acc[0] += x.numel()
            acc[1] += float(x.sum())
            acc[2] += float((x * x).sum())
        return record

    handles = [layer.register_forward_pre_hook(hook(name)) for name, layer in layers.items()]
    was_training = model.training
    model.eval()
    try:
        run_forward()
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    stds = {}
    for name, (n, s1, s2) in sums.items():
        if n == 0:
            continue  # not reached by this forward pass: keeps its α0
        mean = s1 / n
        stds[name] = math.sqrt(max(s2 / n - mean * mean, 0.0))
    return stds


def calibrate_alpha(model: nn.Module, run_forward: Callable[[], object], k: float = 1.0,
                    min_std: float = 1e-12) -> dict:
    """Set α = ``k`` / std(input) of every ``SquashNorm`` that ``run_forward()`` reaches; return what was set.

    The returned record (``result.json``'s ``evaluation.alpha_calibration``) holds ``k``, and per layer path the
    measured input std and the α it got. A layer whose input has (near) zero std keeps its α0 and is listed under
    ``skipped``, as is any layer the pass does not reach.
    """
    if not (isinstance(k, (int, float)) and 0 < k < float("inf")):
        raise ValueError(f"norm.calibrate_k must be a positive finite number; got {k!r}")
    layers = squash_layers(model)
    stds = input_stds(model, run_forward)
    record: dict = {"k": float(k), "layers": {}, "skipped": []}
    with torch.no_grad():
        for name, layer in layers.items():
            std = stds.get(name)
            if std is None or not math.isfinite(std) or std < min_std:
                record["skipped"].append(name)
                continue
            alpha = k / std
            layer.alpha.fill_(alpha)
            record["layers"][name] = {"input_std": std, "alpha": float(layer.alpha.item())}
    return record


__all__ = ["calibrate_alpha", "input_stds", "squash_layers"]
