"""Causal language modelling with a LLaMA whose RMSNorms are replaced, the learnable embedding scale, and α init by
the paper's width rule; metrics ``val/loss`` and ``val/ppl``."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from dyt_bench.models.llama import add_embedding_scale, build_llama, set_alpha_groups, set_squash_bias
from dyt_bench.norms import NormSpec

from .base import BenchTask, DivergenceConfig
from .optim import OptimConfig


class LanguageModeling(BenchTask):
    """A LLaMA language model trained from scratch.

    Args:
        vocab_size: must match the datamodule's tokenizer (257 for the byte tokenizer).
        hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size, head_dim, max_seq_len: model size.
        embedding_scale: multiply token embeddings by a learnable scalar. Default (null): on for the point-wise
            kinds (DyT …), off for RMSNorm / LayerNorm, as in the paper.
        embedding_scale_init: its initial value (default √hidden_size).
        attn_alpha_init: a separate initial α for the norms in front of attention (``input_layernorm``); a number,
            ``auto`` (the width rule), or null to use ``norm.alpha_init`` for every norm. The supplied text sets one
            α for all DyT layers (null); the DyT authors' LLaMA code has three: attention, the rest of each block
            (``post_attention_layernorm``) and the final norm (e.g. 0.8 / 0.2 / 0.2 at 7B).
        final_alpha_init: the same for the final norm (``model.norm``); null: ``norm.alpha_init``.
        squash_bias: give the point-wise norms that replace RMSNorm a per-channel β (init 0). Default (null): on,
            as the paper defines DyT (Eq. 1: γ · tanh(αx) + β, for every replaced norm); false: γ · tanh(αx), the
            γ-only affine of the RMSNorm it replaces. Ignored when ``norm.affine`` is set.
        norm, optim, divergence, track_alpha, track_saturation: see ``BenchTask``.
        defer_build: build the network in ``configure_model`` (for FSDP) rather than here.
        activation_checkpointing: recompute each decoder layer's activations in the backward pass (less memory,
            about a third more compute); independent of the strategy, so it works with DDP and FSDP alike.
    """

    task_name = "language_modeling"
    metric_modes = {"val/loss": "min", "val/ppl": "min"}

    def __init__(
        self,
        vocab_size: int = 257,
        hidden_size: int = 256,
        num_layers: int = 4,
        num_heads: int = 4,
        num_kv_heads: int | None = None,
        intermediate_size: int | None = None,
        head_dim: int | None = None,
        max_seq_len: int = 2048,
        embedding_scale: bool | None = None,
        embedding_scale_init: float | None = None,
        attn_alpha_init: float | Literal["auto"] | None = None,
        final_alpha_init: float | Literal["auto"] | None = None,
        squash_bias: bool | None = None,
        norm: NormSpec | None = None,
        optim: OptimConfig | None = None,
        divergence: DivergenceConfig | None = None,
        track_alpha: bool = False,
        track_saturation: bool = False,
        defer_build: bool = False,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__(norm=norm or NormSpec("rmsnorm"), optim=optim, divergence=divergence, track_alpha=track_alpha,
                         track_saturation=track_saturation)
        self.save_hyperparameters()
        self.vocab_size = vocab_size
        self.model_name = f"llama-d{hidden_size}-l{num_layers}-h{num_heads}"
        self.net = None
        self.embedding_scale = None
        self.alpha_groups: dict[str, float] = {}
        if not defer_build:
            self.configure_model()
        self.val_loss = MeanMetric()

    def configure_model(self) -> None:
        """Build the network (once). With ``defer_build: true`` this happens here, when Lightning calls the hook:
        under FSDP inside the strategy's init context, so each rank shards the model as it is made instead of first
        holding all of it; otherwise already in ``__init__``."""
        if self.net is not None:
            return
        hp = self.hparams
        net = build_llama(hp.vocab_size, hp.hidden_size, hp.num_layers, hp.num_heads, hp.num_kv_heads,
                          hp.intermediate_size, hp.head_dim, hp.max_seq_len)
        self.net = self.place_norms(net)
        self.alpha_groups = set_alpha_groups(self.net, hp.hidden_size, attention=hp.attn_alpha_init,
                                             final=hp.final_alpha_init)
        if self.norm_spec.is_squash and self.norm_spec.affine is None:
            set_squash_bias(self.net, hp.squash_bias is not False)
        use_scale = self.norm_spec.is_squash if hp.embedding_scale is None else hp.embedding_scale
        self.embedding_scale = add_embedding_scale(self.net, hp.embedding_scale_init) if use_scale else None
        if hp.activation_checkpointing:  # recompute each decoder layer's activations in backward (transformers' own)
            self.net.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def setup(self, stage: str) -> None:
        self.check_datamodule(vocab_size=self.vocab_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.net(input_ids=input_ids).logits

    def _loss(self, batch: torch.Tensor) -> torch.Tensor:
        inputs, targets = batch[:, :-1], batch[:, 1:]
        logits = self(inputs)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))

    def throughput_units(self, batch: torch.Tensor) -> dict[str, float]:
        """Predicted tokens in a training batch: result.json reports train_tokens_per_s."""
        return {"tokens": batch.shape[0] * (batch.shape[1] - 1)}

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True)
        if self.embedding_scale is not None:
            self.log("train/embedding_scale", self.embedding_scale.scale.detach())
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        loss = self._loss(batch)
        self.val_loss.update(loss, weight=batch.shape[0])
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)  # the mean over every rank's batches

    def on_validation_epoch_end(self) -> None:
        mean = self.val_loss.compute()
        self.log("val/ppl", torch.exp(mean) if math.isfinite(float(mean)) else mean)
        self.val_loss.reset()

    def probe_forward(self, batch):
        return self(batch[:, :-1].to(self.device))
