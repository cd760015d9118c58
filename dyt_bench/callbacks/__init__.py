"""Callbacks: divergence guard, result writer, run checkpoints, α tracker, saturation monitor, sample-and-score, and
the norm-input hooks they share."""

from .alpha_tracker import AlphaTracker
from .checkpointing import CheckpointConfig, RunCheckpoint
from .divergence import DivergenceGuard
from .norm_hooks import NormInputHooks
from .result_writer import ResultWriter, config_hash
from .sampling import SampleAndScore
from .saturation import SaturationMonitor

__all__ = ["AlphaTracker", "CheckpointConfig", "DivergenceGuard", "NormInputHooks", "ResultWriter", "RunCheckpoint",
           "SampleAndScore", "SaturationMonitor", "config_hash"]
