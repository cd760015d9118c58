"""Callbacks: divergence guard, result writer, α tracker, saturation monitor; and the norm input/output probe."""

from .alpha_tracker import AlphaTracker
from .divergence import DivergenceGuard
from .result_writer import ResultWriter, config_hash
from .saturation import SaturationMonitor

__all__ = ["AlphaTracker", "DivergenceGuard", "ResultWriter", "SaturationMonitor", "config_hash"]
