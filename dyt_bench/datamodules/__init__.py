"""Datamodules, one per modality; each knows its offline data format."""

from .image import ImageDataModule

__all__ = ["ImageDataModule"]
