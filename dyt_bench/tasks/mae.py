"""MAE pretraining task: a timm ViT encoder sees a random subset of patches, a narrower ViT decoder predicts the
normalized pixels of the hidden ones. Every LayerNorm of encoder and decoder gets the configured norm."""

from __future__ import annotations

from typing import Any

import torch

from dyt_bench.coerce import coerce_dataclass
from dyt_bench.models.mae import MAEDecoderConfig, MaskedAutoencoderViT, build_vit_encoder
from dyt_bench.norms import NormSpec

from .base import BenchTask, DivergenceConfig
from .optim import OptimConfig
from .ssl_eval import CHECKPOINT_KEY, KnnMonitor


class MAEPretraining(KnnMonitor, BenchTask):
    """Masked-autoencoder pretraining (He et al., 2022).

    Args:
        model: the timm ViT of the encoder (``vit_base_patch16_224``: ViT-B/16); ``model_kwargs`` override its
            fields (``embed_dim``, ``depth``, ``patch_size``, ``class_token``, ``global_pool`` …).
        img_size, in_chans: the data's shape (checked against the datamodule).
        decoder: the decoder's width, depth and heads (MAE: 512 wide, 8 blocks, 16 heads).
        mask_ratio: fraction of patches hidden from the encoder (MAE: 0.75).
        norm_pix_loss: standardise each target patch by its own mean and variance (MAE's default).
        knn_k, knn_temperature: the k-NN monitor (``val/knn_acc``, with a ``MultiCropDataModule``).
        norm, optim, divergence, track_alpha, track_saturation: see ``BenchTask``.
    """

    task_name = "mae_pretraining"
    metric_modes = {"val/loss": "min", "val/knn_acc": "max"}

    def __init__(
        self,
        model: str = "vit_base_patch16_224",
        img_size: int = 224,
        in_chans: int = 3,
        model_kwargs: dict[str, Any] | None = None,
        decoder: MAEDecoderConfig | None = None,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = True,
        knn_k: int = 20,
        knn_temperature: float = 0.07,
        norm: NormSpec | None = None,
        optim: OptimConfig | None = None,
        divergence: DivergenceConfig | None = None,
        track_alpha: bool = False,
        track_saturation: bool = False,
    ) -> None:
        super().__init__(norm=norm, optim=optim, divergence=divergence, track_alpha=track_alpha,
                         track_saturation=track_saturation)
        if not 0 <= mask_ratio < 1:
            raise ValueError(f"model.mask_ratio must be in [0, 1); got {mask_ratio}")
        self.save_hyperparameters()
        self.img_size, self.in_chans = img_size, in_chans
        self.mask_ratio, self.norm_pix_loss = mask_ratio, norm_pix_loss
        self.knn_k, self.knn_temperature = knn_k, knn_temperature
        decoder = coerce_dataclass(MAEDecoderConfig, decoder, "model.decoder")
        encoder = build_vit_encoder(model, img_size, in_chans, model_kwargs, num_classes=0)
        self.net = self.place_norms(MaskedAutoencoderViT(encoder, decoder, in_chans))
        self.arch = {"model": model, "img_size": img_size, "in_chans": in_chans,
                     "model_kwargs": dict(model_kwargs or {})}
        self.model_name = f"mae-{model}"
        self.evaluation = {"mask_ratio": mask_ratio, "norm_pix_loss": norm_pix_loss,
                           "decoder": {"embed_dim": decoder.embed_dim, "depth": decoder.depth}}

    def setup(self, stage: str) -> None:
        self.check_datamodule(img_size=self.img_size, in_chans=self.in_chans)

    @staticmethod
    def _images(batch) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        return x[0] if isinstance(x, (list, tuple)) else x  # a multi-crop batch: its first (global) crop

    def forward(self, x: torch.Tensor, generator=None):
        return self.net(x, self.mask_ratio, self.norm_pix_loss, generator)

    def encoder_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features of the whole image (no masking), as the encoder's timm forward computes them."""
        return self.net.encoder(x)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss, _, _ = self(self._images(batch))
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        multi = isinstance(self.trainer.num_val_batches, list) and len(self.trainer.num_val_batches) > 1
        if multi:
            self.knn_step(batch, batch_idx, dataloader_idx)
        if not multi or dataloader_idx == 1:
            x = self._images(batch)
            gen = torch.Generator(device=x.device).manual_seed(batch_idx)  # the same masks at every validation
            loss, _, _ = self(x, gen)
            self.log("val/loss", loss, prog_bar=True, add_dataloader_idx=False)

    def test_step(self, batch, batch_idx: int) -> None:
        x = self._images(batch)
        loss, _, _ = self(x, torch.Generator(device=x.device).manual_seed(batch_idx))
        self.log("test/loss", loss)

    def probe_forward(self, batch):
        return self.net.encoder(self._images(batch).to(self.device))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = {"prefix": "net.encoder.", "arch": self.arch, "norm": self.norm_spec.to_dict(),
                                      "task": self.task_name}


__all__ = ["MAEPretraining"]
