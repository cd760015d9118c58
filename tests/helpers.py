"""Small builders shared by the task and CLI tests."""

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import CSVLogger

from dyt_bench.datamodules import ImageDataModule
from dyt_bench.tasks import ImageClassification, OptimConfig

TINY_VIT = {"patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2, "global_pool": "avg", "class_token": False}


def tiny_task(kind: str = "dyt", **kwargs) -> ImageClassification:
    defaults = dict(model="vit_tiny_patch16_224", num_classes=10, img_size=8, in_chans=1, model_kwargs=TINY_VIT,
                    norm={"kind": kind}, optim=OptimConfig(lr=1e-3, warmup_steps=0))
    defaults.update(kwargs)
    return ImageClassification(**defaults)


def tiny_data(source: str = "synthetic", **kwargs) -> ImageDataModule:
    defaults = dict(source=source, img_size=8, in_chans=1, num_classes=10, batch_size=16, synthetic_samples=64)
    defaults.update(kwargs)
    return ImageDataModule(**defaults)


def tiny_trainer(tmp_path, callbacks=(), **kwargs) -> pl.Trainer:
    defaults = dict(max_steps=6, accelerator="cpu", devices=1, logger=CSVLogger(str(tmp_path), name="", version=""),
                    enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                    num_sanity_val_steps=0, log_every_n_steps=1, default_root_dir=str(tmp_path))
    defaults.update(kwargs)
    return pl.Trainer(callbacks=list(callbacks), **defaults)


class PoisonAtStep(pl.Callback):
    """Fills every parameter with NaN (or raises) once training reaches ``step``: a forced failure for tests."""

    def __init__(self, step: int, exception: BaseException | None = None) -> None:
        self.step, self.exception = step, exception

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            if self.exception is not None:
                raise self.exception
            with torch.no_grad():
                for p in pl_module.parameters():
                    p.fill_(float("nan"))
