"""Callbacks every task gets: the divergence guard and the result writer."""

from .divergence import DivergenceGuard
from .result_writer import ResultWriter, config_hash

__all__ = ["DivergenceGuard", "ResultWriter", "config_hash"]
