"""Datamodules, one per modality; each knows its offline data format."""

from .image import AugmentConfig, ImageDataModule
from .text import TextDataModule

__all__ = ["AugmentConfig", "ImageDataModule", "TextDataModule"]
