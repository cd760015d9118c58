"""Callbacks: divergence guard, result writer, α tracker; and the norm input/output probe."""

from .alpha_tracker import AlphaTracker
from .divergence import DivergenceGuard
from .result_writer import ResultWriter, config_hash

__all__ = ["AlphaTracker", "DivergenceGuard", "ResultWriter", "config_hash"]
