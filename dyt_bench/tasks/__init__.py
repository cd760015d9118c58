"""One LightningModule per paper task, all on the BenchTask base."""

from .base import BenchTask, DivergenceConfig, OptimConfig
from .classification import EmaConfig, ImageClassification, MixupConfig
from .diffusion import DiffusionTask
from .language import LanguageModeling

__all__ = ["BenchTask", "DiffusionTask", "DivergenceConfig", "EmaConfig", "ImageClassification", "LanguageModeling", "MixupConfig", "OptimConfig"]
