"""wav2vec 2.0 self-supervised pretraining (the paper's Table 5): a transformers ``Wav2Vec2ForPreTraining`` whose
LayerNorms are replaced, trained with the wav2vec 2.0 objective — masked spans, a contrastive loss against 100
distractors from the same utterance, the codebook diversity loss and the feature penalty; metric ``val/loss``."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics import MeanMetric

from dyt_bench.models.wav2vec2 import (
    build_wav2vec2,
    expected_norm_counts,
    norm_skip_list,
    output_frames,
    receptive_field,
    wav2vec2_config,
)
from dyt_bench.norms import NormSpec

from .base import BenchTask, DivergenceConfig
from .optim import OptimConfig

LN2 = math.log(2.0)


def gumbel_temperature(step: int, start: float, end: float, decay: float) -> float:
    """The quantizer's Gumbel-softmax temperature after ``step`` updates: ``max(start · decay^step, end)``."""
    return max(start * decay**step, end)


def perplexity(probs: torch.Tensor) -> torch.Tensor:
    """Sum over codebook groups of exp(entropy) of the mean distribution; ``probs`` is (N, groups, entries)."""
    mean = probs.mean(dim=0)
    return torch.exp(-torch.xlogy(mean, mean).sum(dim=-1)).sum()


class SpeechPretraining(BenchTask):
    """wav2vec 2.0 pretraining on raw audio.

    Args:
        size: ``base``, ``large`` or ``tiny`` (see ``dyt_bench.models.wav2vec2.WAV2VEC2_SIZES``).
        pre_norm: norm at the start of each Transformer block (true) or at its end (false: wav2vec 2.0 Base).
        feature_extractor_norm: ``group`` (GroupNorm after the first convolution) or ``layer`` (LayerNorm after each).
        swap_feature_extractor_norm: replace the feature encoder's norms too. Default false, as the DyT authors did
            (their patch replaces the encoder's LayerNorms and the feature LayerNorm, not the convolutions' norms).
        num_negatives: distractors per masked frame, drawn from the masked frames of the same utterance.
        contrastive_temperature: κ of the cosine-similarity logits.
        diversity_weight: weight of the codebook diversity loss (G·V − perplexity) / (G·V).
        feature_penalty_weight: weight of the L2 penalty on the feature encoder's output (fairseq's loss_weights[1]).
        feature_grad_scale: gradient into the feature encoder is multiplied by this (0.1: scaled down 10×).
        gumbel_temperature: (start, end, decay per update) of the quantizer's Gumbel softmax.
        mask_time_prob, mask_time_length: span masking in transformers' convention (0.65, 10 = the paper's p = 0.065
            start probability per frame, spans of M = 10 frames).
        config_overrides: other ``Wav2Vec2Config`` fields (e.g. dropouts, ``layerdrop``).
        linear_decay: the same as ``optim.schedule: linear`` (which the configs use): after the warmup, decay the
            learning rate linearly to ``optim.min_lr_ratio`` × lr at the last step (fairseq's ``polynomial_decay`` of
            the wav2vec 2.0 recipe).
        pretrained: a local transformers model folder (``save_pretrained`` / a downloaded wav2vec 2.0 model) whose
            weights start the network before its norms are replaced; ``size`` and the other fields still build the
            config, which must match the folder's architecture. Default: randomly initialised.
        norm, optim, divergence, track_alpha, track_saturation: see ``BenchTask``.

    Logged losses are in bits per masked frame (fairseq's reporting, which the paper's Table 5 uses): ``loss`` =
    contrastive + diversity_weight · diversity + feature_penalty_weight · penalty, divided by ln 2; the optimiser
    minimises the same sum in nats.
    """

    task_name = "speech_pretraining"
    metric_modes = {"val/loss": "min", "val/contrastive": "min"}

    def __init__(
        self,
        size: str = "base",
        pre_norm: bool = False,
        feature_extractor_norm: str = "group",
        swap_feature_extractor_norm: bool = False,
        num_negatives: int = 100,
        contrastive_temperature: float = 0.1,
        diversity_weight: float = 0.1,
        feature_penalty_weight: float = 10.0,
        feature_grad_scale: float = 0.1,
        gumbel_temperature: Sequence[float] = (2.0, 0.5, 0.999995),
        mask_time_prob: float = 0.65,
        mask_time_length: int = 10,
        config_overrides: dict[str, Any] | None = None,
        linear_decay: bool = False,
        pretrained: str | None = None,
        norm: NormSpec | None = None,
        optim: OptimConfig | None = None,
        divergence: DivergenceConfig | None = None,
        track_alpha: bool = False,
        track_saturation: bool = False,
    ) -> None:
        super().__init__(norm=norm or NormSpec("layernorm"), optim=optim, divergence=divergence,
                         track_alpha=track_alpha, track_saturation=track_saturation)
        self.save_hyperparameters()
        if len(gumbel_temperature) != 3:
            raise ValueError(f"model.gumbel_temperature must be [start, end, decay]; got {list(gumbel_temperature)}")
        start, end, decay = (float(v) for v in gumbel_temperature)
        if not (start >= end > 0 and 0 < decay <= 1):
            raise ValueError(f"model.gumbel_temperature needs start >= end > 0 and 0 < decay <= 1; got "
                             f"{list(gumbel_temperature)}")
        if diversity_weight < 0 or feature_penalty_weight < 0:
            raise ValueError("model.diversity_weight and model.feature_penalty_weight must be >= 0")
        if feature_grad_scale < 0:
            raise ValueError(f"model.feature_grad_scale must be >= 0; got {feature_grad_scale}")
        self.gumbel = (start, end, decay)
        self.linear_decay = linear_decay
        if linear_decay:  # an alias of optim.schedule: linear, which BenchTask's scheduler implements
            self.optim_config = dataclasses.replace(self.optim_config, schedule="linear")
        self.diversity_weight = diversity_weight
        self.feature_penalty_weight = feature_penalty_weight
        self.feature_grad_scale = feature_grad_scale
        self.config = wav2vec2_config(size, pre_norm, feature_extractor_norm, num_negatives, contrastive_temperature,
                                      diversity_weight, mask_time_prob, mask_time_length, config_overrides)
        self.model_name = f"wav2vec2-{size}-{'prenorm' if pre_norm else 'postnorm'}-fe{feature_extractor_norm}"
        net = build_wav2vec2(self.config, pretrained)
        self.swap_feature_extractor_norm = swap_feature_extractor_norm
        self.net = self.place_norms(net, skip=norm_skip_list(swap_feature_extractor_norm))
        expected = expected_norm_counts(self.config, swap_feature_extractor_norm)
        if self.norm_report.counts != expected:  # a transformers change that moved a norm would show up here
            raise RuntimeError(f"norm surgery replaced {self.norm_report.counts}, expected {expected}")
        # what the objective needs from inside the model: the feature encoder's output (penalty, gradient scale)
        # and the quantizer's logits (perplexities)
        self._captured: dict[str, torch.Tensor] = {}
        self.sample_rate = 16000  # the datamodule's, once attached (wav2vec 2.0 is built for 16 kHz audio)
        self.net.wav2vec2.feature_extractor.register_forward_hook(self._feature_hook)
        self.net.quantizer.weight_proj.register_forward_hook(self._quantizer_hook)
        self.val_metrics = torch.nn.ModuleDict({k: MeanMetric() for k in
                                                ("loss", "contrastive", "diversity", "feature_penalty")})

    # --- hooks ----------------------------------------------------------------------------------------------------
    def _feature_hook(self, module, inputs, output: torch.Tensor) -> None:
        if output.requires_grad and self.feature_grad_scale != 1.0:
            scale = self.feature_grad_scale
            output.register_hook(lambda grad: grad * scale)
        self._captured["features"] = output

    def _quantizer_hook(self, module, inputs, output: torch.Tensor) -> None:
        self._captured["code_logits"] = output

    # --- data checks ----------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule if self._trainer is not None else None
        if dm is None:
            return
        self.sample_rate = int(getattr(dm, "sample_rate", self.sample_rate))
        min_samples = max(int(getattr(dm.hparams, "min_sample_size", 0)), 1)
        need = self.min_samples_for_masking()
        if output_frames(self.config, min_samples) < self.config.mask_time_length:
            raise ValueError(f"data.min_sample_size={min_samples} gives fewer frames than model.mask_time_length="
                             f"{self.config.mask_time_length}; set data.min_sample_size >= {need}")

    def min_samples_for_masking(self) -> int:
        """Shortest utterance (samples) whose frames can hold one masked span."""
        stride = math.prod(self.config.conv_stride)
        return receptive_field(self.config) + (self.config.mask_time_length - 1) * stride

    # --- objective ------------------------------------------------------------------------------------------------
    def frame_mask(self, batch: dict[str, torch.Tensor], num_frames: int) -> torch.Tensor | None:
        """(B, T) bool: frames computed from audio rather than padding, or None for an unpadded batch."""
        if "attention_mask" not in batch:
            return None
        return self.net._get_feature_vector_attention_mask(num_frames, batch["attention_mask"])

    def sample_masks(self, batch_size: int, num_frames: int, frame_mask: torch.Tensor | None,
                     seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked spans (B, T) and distractor indices (B, T, K) from transformers' own helpers; with ``seed``, the
        draw is reproducible and leaves numpy's global generator as it was."""
        from dyt_bench.versions import require

        helpers = require("transformers.models.wav2vec2.modeling_wav2vec2", "speech", "wav2vec 2.0 masking")
        _compute_mask_indices, _sample_negative_indices = helpers._compute_mask_indices, helpers._sample_negative_indices

        cfg = self.config
        state = None
        if seed is not None:
            state = np.random.get_state()
            np.random.seed(seed)
        try:
            cpu_mask = frame_mask.cpu() if frame_mask is not None else None
            mask = _compute_mask_indices((batch_size, num_frames), cfg.mask_time_prob, cfg.mask_time_length,
                                         attention_mask=cpu_mask, min_masks=cfg.mask_time_min_masks)
            if cpu_mask is not None:
                mask &= cpu_mask.numpy().astype(bool)  # the helper may park a dummy span on padding
            too_few = mask.sum(-1) < 2
            if too_few.any():
                raise ValueError(f"utterance(s) {np.flatnonzero(too_few).tolist()} of the batch have fewer than 2 "
                                 f"masked frames: too short for model.mask_time_length={cfg.mask_time_length}; set "
                                 f"data.min_sample_size >= {self.min_samples_for_masking()}")
            negatives = _sample_negative_indices((batch_size, num_frames), cfg.num_negatives, mask)
        finally:
            if state is not None:
                np.random.set_state(state)
        device = self.device
        return torch.from_numpy(mask).to(device), torch.from_numpy(negatives.astype(np.int64)).to(device)

    def compute_losses(self, batch: dict[str, torch.Tensor], seed: int | None = None) -> dict[str, torch.Tensor]:
        """Run the model on a batch with fresh masks and distractors; return the loss (nats) and its parts."""
        x = batch["input_values"]
        num_frames = int(output_frames(self.config, x.shape[1]))
        frame_mask = self.frame_mask(batch, num_frames)
        mask, negatives = self.sample_masks(x.shape[0], num_frames, frame_mask, seed)
        out = self.net(x, attention_mask=batch.get("attention_mask"), mask_time_indices=mask,
                       sampled_negative_indices=negatives)
        n_masked = mask.sum()
        contrastive = out.contrastive_loss / n_masked
        # perplexities over the masked frames, as fairseq quantizes them: soft (the diversity loss) and hard codes
        groups, entries = self.config.num_codevector_groups, self.config.num_codevectors_per_group
        logits = self._captured.pop("code_logits")[mask].float().view(-1, groups, entries)
        prob_ppl = perplexity(torch.softmax(logits, dim=-1))
        code_ppl = perplexity(torch.nn.functional.one_hot(logits.argmax(-1), entries).float())
        diversity = (groups * entries - prob_ppl) / (groups * entries)
        features = self._captured.pop("features").float()  # (B, C, T) before the feature LayerNorm
        if frame_mask is not None:
            valid = frame_mask[:, None, :].expand_as(features)
            penalty = features.pow(2)[valid].mean()
        else:
            penalty = features.pow(2).mean()
        loss = contrastive + self.diversity_weight * diversity + self.feature_penalty_weight * penalty
        return {"loss": loss, "contrastive": contrastive, "diversity": diversity, "feature_penalty": penalty,
                "prob_perplexity": prob_ppl, "code_perplexity": code_ppl, "n_masked": n_masked,
                "masked_fraction": n_masked / (frame_mask.sum() if frame_mask is not None else mask.numel()),
                "mask": mask, "negatives": negatives, "output": out}

    # --- loops ----------------------------------------------------------------------------------------------------
    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None):
        return self.net.wav2vec2(input_values, attention_mask=attention_mask).last_hidden_state

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        self.net.set_gumbel_temperature(gumbel_temperature(self.global_step, *self.gumbel))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        parts = self.compute_losses(batch)
        bs = batch["input_values"].shape[0]
        self.log("train/loss", parts["loss"].detach() / LN2, prog_bar=True, batch_size=bs)
        self.log("train/contrastive", parts["contrastive"].detach() / LN2, batch_size=bs)
        for key in ("diversity", "feature_penalty", "prob_perplexity", "code_perplexity", "masked_fraction"):
            self.log(f"train/{key}", parts[key].detach(), batch_size=bs)
        self.log("train/gumbel_temperature", float(self.net.quantizer.temperature), batch_size=bs)
        self.log("train/batch_seconds", self.throughput_units(batch)["audio_seconds"], batch_size=bs, reduce_fx="sum")
        return parts["loss"]

    def throughput_units(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Seconds of audio in a training batch (padding excluded): result.json reports train_audio_seconds_per_s."""
        return {"audio_seconds": float(batch["lengths"].sum()) / self.sample_rate}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # fixed masks and distractors per batch: the validation loss of two runs is computed on the same task
        parts = self.compute_losses(batch, seed=1_000 + batch_idx)
        weight = parts["n_masked"].float()
        bits = {"loss": parts["loss"] / LN2, "contrastive": parts["contrastive"] / LN2,
                "diversity": parts["diversity"], "feature_penalty": parts["feature_penalty"]}
        for key, value in bits.items():
            self.val_metrics[key].update(value.detach(), weight=weight)
        bs = batch["input_values"].shape[0]
        self.log("val/code_perplexity", parts["code_perplexity"], batch_size=bs)
        self.log("val/prob_perplexity", parts["prob_perplexity"], batch_size=bs)

    def on_validation_epoch_end(self) -> None:
        for key, metric in self.val_metrics.items():
            self.log(f"val/{key}", metric.compute(), prog_bar=key == "loss")
            metric.reset()

    def probe_forward(self, batch):
        return self(batch["input_values"].to(self.device), batch.get("attention_mask"))
