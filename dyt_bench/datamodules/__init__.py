"""Datamodules, one per modality; each knows its offline data format."""

from .image import AugmentConfig, ImageDataModule

__all__ = ["AugmentConfig", "ImageDataModule"]
