"""Normalization layers and surgery: NormSpec (what), NormFactory / build_norm (one layer), replace_norms (a model).

Names are loaded on first use (PEP 562), so ``dyt_bench.norms.alpha_init`` (the ``alpha-init`` command) imports
without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "alpha_init": ("TABLE7_ALPHA_BY_WIDTH", "recommend_alpha_init"),
    "factory": ("NormFactory", "build_norm"),
    "layers": ("BatchNorm", "ChannelsFirstLayerNorm", "ChannelsFirstRMSNorm", "NormAct", "SquashNorm"),
    "spec": ("IMPLS", "LAYOUTS", "NORM_KINDS", "SQUASH_KINDS", "STATISTIC_KINDS", "NormSpec"),
    "surgery": ("NormReplacementReport", "UnsupportedNormError", "count_norms", "describe_norm", "replace_norms"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "IMPLS", "LAYOUTS", "NORM_KINDS", "SQUASH_KINDS", "STATISTIC_KINDS", "TABLE7_ALPHA_BY_WIDTH",
    "BatchNorm", "ChannelsFirstLayerNorm", "ChannelsFirstRMSNorm", "NormAct", "NormFactory", "NormReplacementReport",
    "NormSpec",
    "SquashNorm", "UnsupportedNormError", "build_norm", "count_norms", "describe_norm", "recommend_alpha_init",
    "replace_norms",
]

if TYPE_CHECKING:
    from .alpha_init import TABLE7_ALPHA_BY_WIDTH, recommend_alpha_init
    from .factory import NormFactory, build_norm
    from .layers import BatchNorm, ChannelsFirstLayerNorm, ChannelsFirstRMSNorm, NormAct, SquashNorm
    from .spec import IMPLS, LAYOUTS, NORM_KINDS, SQUASH_KINDS, STATISTIC_KINDS, NormSpec
    from .surgery import NormReplacementReport, UnsupportedNormError, count_norms, describe_norm, replace_norms


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
