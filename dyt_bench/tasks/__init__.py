"""One LightningModule per paper task, all on the BenchTask base."""

from .base import BenchTask, DivergenceConfig
from .classification import EmaConfig, ImageClassification, MixupConfig
from .diffusion import DiffusionTask
from .dino import DINOPretraining
from .dna import DNAClassification, DNAPretraining
from .language import LanguageModeling
from .mae import MAEPretraining
from .optim import OptimConfig
from .speech import SpeechPretraining
from .ssl_eval import PretrainedViTEvaluation

__all__ = ["BenchTask", "DiffusionTask", "DNAClassification", "DNAPretraining", "DivergenceConfig", "EmaConfig",
           "ImageClassification", "LanguageModeling", "MixupConfig", "OptimConfig", "SpeechPretraining"]
__all__ += ["DINOPretraining", "MAEPretraining", "PretrainedViTEvaluation"]
