"""LLaMA language models from a config (transformers, random init, no download) and the learnable embedding scale."""

from __future__ import annotations

import math

import torch
from torch import nn

from dyt_bench.norms import SquashNorm, recommend_alpha_init


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
    from dyt_bench.versions import require

    transformers = require("transformers", "language", "the LLaMA model")
    LlamaConfig, LlamaForCausalLM = transformers.LlamaConfig, transformers.LlamaForCausalLM

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


# The norms of a transformers LLaMA by role, as the DyT authors' LLaMA code groups their initial α: the norm in front
# of attention, the one in front of the MLP, and the final norm before the LM head.
ALPHA_GROUPS = {"attention": "input_layernorm", "mlp": "post_attention_layernorm", "final": "norm"}


def llama_norm_group(path: str) -> str | None:
    """``attention``, ``mlp`` or ``final`` for the path of a LLaMA norm (``model.layers.3.input_layernorm``, …)."""
    if path.endswith(".input_layernorm"):
        return "attention"
    if path.endswith(".post_attention_layernorm"):
        return "mlp"
    if path == "model.norm":
        return "final"
    return None


def set_alpha_groups(model, width: int, **groups) -> dict[str, float]:
    """Overwrite the initial α of the point-wise norms of one or more roles (``attention=``, ``mlp=``, ``final=``;
    a number, ``"auto"`` for the width rule at ``width``, or None to leave that role alone). Returns role → α set."""
    unknown = sorted(set(groups) - set(ALPHA_GROUPS))
    if unknown:
        raise ValueError(f"unknown LLaMA norm group(s) {unknown}; allowed: {', '.join(ALPHA_GROUPS)}")
    values = {role: recommend_alpha_init(width) if v == "auto" else float(v) for role, v in groups.items()
              if v is not None}
    with torch.no_grad():
        for name, module in model.named_modules():
            role = llama_norm_group(name)
            if role in values and isinstance(module, SquashNorm):
                module.alpha.fill_(values[role])
    return values


def set_squash_bias(model, bias: bool) -> int:
    """Give every point-wise norm with γ a per-channel β (``bias=True``: a zero-initialised one where it has none)
    or none (``False``: γ · f(αx) only, RMSNorm's affine); return how many layers changed."""
    count = 0
    for module in model.modules():
        if not isinstance(module, SquashNorm) or module.weight is None or (module.bias is not None) == bias:
            continue
        module.bias = nn.Parameter(torch.zeros_like(module.weight)) if bias else None
        count += 1
    return count


def add_embedding_scale(model, init: float | None = None) -> EmbeddingScale:
    """Wrap ``model.model.embed_tokens`` of a transformers LLaMA in an :class:`EmbeddingScale`; return the wrapper."""
    inner = model.model
    if isinstance(inner.embed_tokens, EmbeddingScale):
        return inner.embed_tokens
    inner.embed_tokens = EmbeddingScale(inner.embed_tokens, init)
    return inner.embed_tokens
