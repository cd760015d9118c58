"""Forward hooks on a model's norm layers that collect what a function computes on each layer's input.

The α tracker, the saturation monitor and the norm probe all measure norm inputs this way; the layers' outputs are
never changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from dyt_bench.norms import SquashNorm, describe_norm


def pointwise_norms(model: nn.Module) -> dict[str, SquashNorm]:
    """The point-wise norm layers (DyT, the Table 8 squashes, Derf) of ``model`` by name, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, SquashNorm)}


def all_norms(model: nn.Module) -> dict[str, nn.Module]:
    """Every normalization layer of ``model`` that dyt-bench recognises (point-wise ones included), by name."""
    return {name: m for name, m in model.named_modules() if describe_norm(m) is not None}


class NormInputHooks:
    """Hooks ``layers`` (by default every point-wise norm of ``model``) and applies ``compute(module, x)`` to the input
    ``x`` of each call.

    ``results[name]`` is what ``compute`` returned: on a layer's first call only when ``first_only`` (later calls
    compute nothing), else a list with one value per call; names appear in the order the layers were first called.
    Use as a context manager around a forward pass, or ``attach()`` and ``remove()`` from two callback hooks.
    """

    def __init__(self, model: nn.Module, compute: Callable[[nn.Module, torch.Tensor], Any],
                 layers: Callable[[nn.Module], dict[str, nn.Module]] = pointwise_norms, first_only: bool = True) -> None:
        self.layers = layers(model)
        self.compute = compute
        self.first_only = first_only
        self.results: dict[str, Any] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs, output) -> None:  # returns None: the layer's output is left as is
            if not self.first_only:
                self.results.setdefault(name, []).append(self.compute(module, inputs[0]))
            elif name not in self.results:
                self.results[name] = self.compute(module, inputs[0])

        return hook

    def attach(self) -> NormInputHooks:
        self.remove()
        self.results = {}
        self._handles = [module.register_forward_hook(self._hook(name)) for name, module in self.layers.items()]
        return self

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> NormInputHooks:
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.remove()


__all__ = ["NormInputHooks", "all_norms", "pointwise_norms"]
