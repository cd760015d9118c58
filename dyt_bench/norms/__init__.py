"""Normalization layers and surgery: NormSpec (what), build_norm (one layer), replace_norms (a whole model)."""

from .alpha_init import TABLE7_ALPHA_BY_WIDTH, recommend_alpha_init
from .factory import build_norm
from .layers import BatchNorm, ChannelsFirstLayerNorm, ChannelsFirstRMSNorm, SquashNorm
from .spec import IMPLS, LAYOUTS, NORM_KINDS, SQUASH_KINDS, STATISTIC_KINDS, NormSpec
from .surgery import NormReplacementReport, UnsupportedNormError, count_norms, describe_norm, replace_norms

__all__ = [
    "IMPLS", "LAYOUTS", "NORM_KINDS", "SQUASH_KINDS", "STATISTIC_KINDS",
    "BatchNorm", "ChannelsFirstLayerNorm", "ChannelsFirstRMSNorm", "NormReplacementReport", "NormSpec",
    "SquashNorm", "TABLE7_ALPHA_BY_WIDTH", "UnsupportedNormError", "build_norm", "count_norms", "describe_norm",
    "recommend_alpha_init", "replace_norms",
]
