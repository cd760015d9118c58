"""wav2vec 2.0 for self-supervised pretraining (transformers ``Wav2Vec2ForPreTraining``, random init from a config,
no download), in the sizes of the wav2vec 2.0 paper, with pre-norm or post-norm Transformer blocks."""

from __future__ import annotations

from typing import Any

from torch import nn

from dyt_bench.coerce import check_names

# Architecture of each named size. Base and Large follow fairseq's ``wav2vec2_base_librispeech`` and the
# ``wav2vec2_large_librispeech`` recipe of the DyT authors (final_dim 256 / 768, dropouts, LayerDrop 0.05 / 0.2);
# ``tiny`` is a CPU-sized model whose four-layer feature encoder keeps Base's frame rate (stride 320 = 20 ms at
# 16 kHz) and about its receptive field (345 samples; Base: 400).
_CONV_BASE = dict(conv_dim=(512,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2))
WAV2VEC2_SIZES: dict[str, dict[str, Any]] = {
    "base": dict(
        **_CONV_BASE, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
        codevector_dim=256, proj_codevector_dim=256, num_codevector_groups=2, num_codevectors_per_group=320,
        hidden_dropout=0.1, attention_dropout=0.1, activation_dropout=0.0, feat_proj_dropout=0.1,
        feat_quantizer_dropout=0.1, layerdrop=0.05,
    ),
    "large": dict(
        **_CONV_BASE, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
        codevector_dim=768, proj_codevector_dim=768, num_codevector_groups=2, num_codevectors_per_group=320,
        hidden_dropout=0.1, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.1,
        feat_quantizer_dropout=0.1, layerdrop=0.2,
    ),
    "tiny": dict(
        conv_dim=(32, 32, 32, 32), conv_kernel=(10, 8, 4, 4), conv_stride=(5, 4, 4, 4), hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        codevector_dim=16, proj_codevector_dim=16, num_codevector_groups=2, num_codevectors_per_group=16,
        hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
        feat_quantizer_dropout=0.0, layerdrop=0.0,
    ),
}
FEATURE_EXTRACTOR_NORMS = ("group", "layer")
FEATURE_EXTRACTOR_PATH = "wav2vec2.feature_extractor"
# The positional convolution carries torch's weight-norm parametrization: a reparametrised kernel, not a
# normalization of activations, so surgery leaves it alone.
NOT_ACTIVATION_NORMS = ("_WeightNorm",)


def wav2vec2_config(
    size: str = "base",
    pre_norm: bool = False,
    feature_extractor_norm: str = "group",
    num_negatives: int = 100,
    contrastive_temperature: float = 0.1,
    diversity_loss_weight: float = 0.1,
    mask_time_prob: float = 0.65,
    mask_time_length: int = 10,
    overrides: dict[str, Any] | None = None,
):
    """A ``Wav2Vec2Config`` of a named size (``base``, ``large``, ``tiny``).

    ``pre_norm``: norm at the start of each Transformer block (``do_stable_layer_norm``; the encoder's own norm then
    closes the stack) or at the end (post-norm; the encoder's norm then follows the positional convolution).
    ``feature_extractor_norm``: ``group`` (a per-channel GroupNorm after the first convolution, wav2vec 2.0 Base) or
    ``layer`` (a LayerNorm over channels after every convolution). ``mask_time_prob`` is transformers' convention:
    the expected masked fraction before overlaps, i.e. a span start probability of ``mask_time_prob / mask_time_length``
    per frame (0.65 / 10 = the paper's 0.065). ``overrides``: any other ``Wav2Vec2Config`` field.
    """
    from transformers import Wav2Vec2Config

    if size not in WAV2VEC2_SIZES:
        raise ValueError(f"model.size must be one of {', '.join(WAV2VEC2_SIZES)}; got {size!r}")
    if feature_extractor_norm not in FEATURE_EXTRACTOR_NORMS:
        raise ValueError(f"model.feature_extractor_norm must be one of {', '.join(FEATURE_EXTRACTOR_NORMS)}; "
                         f"got {feature_extractor_norm!r}")
    if num_negatives < 1:
        raise ValueError(f"model.num_negatives must be >= 1; got {num_negatives}")
    if contrastive_temperature <= 0:
        raise ValueError(f"model.contrastive_temperature must be > 0; got {contrastive_temperature}")
    if not 0 < mask_time_prob <= 1:
        raise ValueError(f"model.mask_time_prob must be in (0, 1]; got {mask_time_prob}")
    if mask_time_length < 2:
        # negatives are drawn among the other masked frames of an utterance: one frame leaves none to draw
        raise ValueError(f"model.mask_time_length must be >= 2; got {mask_time_length}")
    fields = dict(WAV2VEC2_SIZES[size])
    fields.update(
        do_stable_layer_norm=pre_norm, feat_extract_norm=feature_extractor_norm, conv_bias=False,
        num_negatives=num_negatives, contrastive_logits_temperature=contrastive_temperature,
        diversity_loss_weight=diversity_loss_weight, mask_time_prob=mask_time_prob, mask_time_length=mask_time_length,
        mask_time_min_masks=2, mask_feature_prob=0.0, apply_spec_augment=True, attn_implementation="sdpa",
    )
    if overrides:
        check_names(Wav2Vec2Config().to_dict(), overrides, "model.config_overrides (Wav2Vec2Config)")
        fields.update(overrides)
    return Wav2Vec2Config(**fields)


def build_wav2vec2(config, pretrained: str | None = None) -> nn.Module:
    """A ``Wav2Vec2ForPreTraining`` from a ``Wav2Vec2Config``: randomly initialised, or with the weights of the local
    directory ``pretrained`` (``save_pretrained`` / a downloaded model: ``from_pretrained`` with ``local_files_only``;
    ``config`` still sets the masking and loss fields, and must match the directory's architecture)."""
    import os

    from dyt_bench.versions import require

    transformers = require("transformers", "speech", "the wav2vec 2.0 model")
    if pretrained is None:
        return transformers.Wav2Vec2ForPreTraining(config)
    path = os.path.expanduser(pretrained)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"model.pretrained: {path} is not a directory (give a local transformers model folder "
                                "with config.json and its weights)")
    return transformers.Wav2Vec2ForPreTraining.from_pretrained(path, config=config, local_files_only=True)


def norm_skip_list(swap_feature_extractor_norm: bool) -> list[str]:
    """What :func:`~dyt_bench.norms.replace_norms` should leave in place in a wav2vec 2.0 model.

    The weight-norm parametrization of the positional convolution always; the feature encoder's norms unless
    ``swap_feature_extractor_norm`` (the DyT authors kept them: on raw audio they act as input normalization).
    """
    skip = list(NOT_ACTIVATION_NORMS)
    if not swap_feature_extractor_norm:
        skip.append(FEATURE_EXTRACTOR_PATH)
    return skip


def expected_norm_counts(config, swap_feature_extractor_norm: bool) -> dict[str, int]:
    """How many norms of each class surgery replaces in a model of ``config``: two per Transformer block, the
    encoder's own, the feature projection's, and (when swapped) the feature encoder's."""
    counts = {"LayerNorm": 2 * config.num_hidden_layers + 2}
    if swap_feature_extractor_norm:
        if config.feat_extract_norm == "group":
            counts["GroupNorm"] = 1
        else:
            counts["LayerNorm"] += config.num_feat_extract_layers
    return counts


def output_frames(config, num_samples):
    """Frames the feature encoder makes of ``num_samples`` audio samples (int or tensor)."""
    for kernel, stride in zip(config.conv_kernel, config.conv_stride, strict=True):
        num_samples = (num_samples - kernel) // stride + 1
    return num_samples


def receptive_field(config) -> int:
    """Samples one output frame of the feature encoder sees (the shortest input that gives one frame)."""
    field = 1
    for kernel, stride in reversed(list(zip(config.conv_kernel, config.conv_stride, strict=True))):
        field = (field - 1) * stride + kernel
    return field
