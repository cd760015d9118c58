"""Datamodules, one per modality; each knows its offline data format."""

from .audio import AudioDataModule
from .dna import GenomeDataModule, GenomicBenchmarksDataModule
from .image import AugmentConfig, ImageDataModule
from .text import TextDataModule

__all__ = ["AudioDataModule", "AugmentConfig", "GenomeDataModule", "GenomicBenchmarksDataModule", "ImageDataModule",
           "TextDataModule"]
