"""One LightningModule per paper task, all on the BenchTask base."""

from .base import BenchTask, DivergenceConfig
from .classification import EmaConfig, ImageClassification, MixupConfig
from .diffusion import DiffusionTask
from .dna import DNAClassification, DNAPretraining
from .language import LanguageModeling
from .optim import OptimConfig
from .speech import SpeechPretraining

__all__ = ["BenchTask", "DiffusionTask", "DNAClassification", "DNAPretraining", "DivergenceConfig", "EmaConfig",
           "ImageClassification", "LanguageModeling", "MixupConfig", "OptimConfig", "SpeechPretraining"]
