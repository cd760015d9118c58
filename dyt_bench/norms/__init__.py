"""Normalization layers and surgery: NormSpec (what), build_norm (one layer), replace_norms (a whole model)."""

from .factory import build_norm
from .layers import BatchNorm, ChannelsFirstLayerNorm, ChannelsFirstRMSNorm, SquashNorm
from .spec import IMPLS, LAYOUTS, NORM_KINDS, SQUASH_KINDS, STATISTIC_KINDS, NormSpec
from .surgery import NormReplacementReport, UnsupportedNormError, count_norms, describe_norm, replace_norms

__all__ = [
    "IMPLS", "LAYOUTS", "NORM_KINDS", "SQUASH_KINDS", "STATISTIC_KINDS",
    "BatchNorm", "ChannelsFirstLayerNorm", "ChannelsFirstRMSNorm", "NormReplacementReport", "NormSpec",
    "SquashNorm", "UnsupportedNormError", "build_norm", "count_norms", "describe_norm", "replace_norms",
]
