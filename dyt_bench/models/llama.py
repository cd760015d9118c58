"""LLaMA language models from a config (transformers, random init, no download) and the learnable embedding scale."""

from __future__ import annotations

import math

import torch
from torch import nn


class EmbeddingScale(nn.Module):
    """A token embedding followed by a learnable scalar (initialised to √d): without it, a DyT LLaMA whose
    embeddings start near zero trains slowly or stalls (the paper's LLaMA recipe)."""

    def __init__(self, embedding: nn.Embedding, init: float | None = None) -> None:
        super().__init__()
        self.embedding = embedding
        value = math.sqrt(embedding.embedding_dim) if init is None else float(init)
        self.scale = nn.Parameter(torch.tensor(value, dtype=embedding.weight.dtype, device=embedding.weight.device))

    @property
    def weight(self) -> torch.Tensor:  # transformers reads the embedding matrix through .weight
        return self.embedding.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(input_ids) * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale.item():.4g} (learnable)"


def build_llama(
    vocab_size: int,
    hidden_size: int = 512,
    num_layers: int = 8,
    num_heads: int = 8,
    num_kv_heads: int | None = None,
    intermediate_size: int | None = None,
    head_dim: int | None = None,
    max_seq_len: int = 2048,
    rope_theta: float = 10000.0,
    tie_embeddings: bool = False,
):
    """A randomly initialised ``LlamaForCausalLM`` of the given size (``intermediate_size`` defaults to LLaMA's
    ≈ 8/3 · hidden rounded up to a multiple of 64)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if hidden_size % num_heads and head_dim is None:
        raise ValueError(f"model.hidden_size ({hidden_size}) must be divisible by model.num_heads ({num_heads})")
    if intermediate_size is None:
        intermediate_size = 64 * math.ceil(8 * hidden_size / 3 / 64)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads or num_heads,
        head_dim=head_dim or hidden_size // num_heads, max_position_embeddings=max_seq_len, rope_theta=rope_theta,
        tie_word_embeddings=tie_embeddings, attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config)


def add_embedding_scale(model, init: float | None = None) -> EmbeddingScale:
    """Wrap ``model.model.embed_tokens`` of a transformers LLaMA in an :class:`EmbeddingScale`; return the wrapper."""
    inner = model.model
    if isinstance(inner.embed_tokens, EmbeddingScale):
        return inner.embed_tokens
    inner.embed_tokens = EmbeddingScale(inner.embed_tokens, init)
    return inner.embed_tokens
