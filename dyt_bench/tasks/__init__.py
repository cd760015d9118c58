"""One LightningModule per paper task, all on the BenchTask base."""

from .base import BenchTask, DivergenceConfig, OptimConfig
from .classification import ImageClassification

__all__ = ["BenchTask", "DivergenceConfig", "ImageClassification", "OptimConfig"]
