"""Metrics no library provides as the benchmark needs them: FID feature extractors, their record, the FID factory."""

from .fid import (
    FidConfig,
    RandomConvFeatures,
    build_fid_metric,
    load_extractor_attribute,
    load_extractor_file,
    three_channels,
    weights_hash,
)

__all__ = ["FidConfig", "RandomConvFeatures", "build_fid_metric", "load_extractor_attribute", "load_extractor_file",
    "three_channels", "weights_hash"]
