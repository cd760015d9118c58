"""HyenaDNA (Nguyen et al. 2023): character embeddings, Hyena operator blocks (short depthwise conv + implicit long
convolution computed with FFT), pre-norm residuals with the norms placed through the NormFactory; a causal LM head
for pretraining and a pooled classification head for fine-tuning."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dyt_bench.coerce import check_fields
from dyt_bench.norms import NormSpec, build_norm
from dyt_bench.norms.spec import check_choice
from dyt_bench.norms.surgery import NormReplacementReport

# The released HyenaDNA checkpoints, by name: width × depth and the filter length they were trained with
# (``l_max`` = context + 2 special tokens). All use a 4× MLP, order-2 Hyena, 64-wide filter MLP, 5 positional features.
HYENA_SIZES: dict[str, dict[str, int]] = {
    "tiny": {"d_model": 128, "n_layer": 2, "l_max": 1026},            # hyenadna-tiny-1k-seqlen
    "tiny-d256": {"d_model": 256, "n_layer": 2, "l_max": 1026},       # hyenadna-tiny-1k-seqlen-d256
    "tiny-16k": {"d_model": 128, "n_layer": 2, "l_max": 16386},       # hyenadna-tiny-16k-seqlen-d128
    "small": {"d_model": 256, "n_layer": 4, "l_max": 32770},          # hyenadna-small-32k-seqlen
    "medium-160k": {"d_model": 256, "n_layer": 8, "l_max": 160002},   # hyenadna-medium-160k-seqlen
    "medium-450k": {"d_model": 256, "n_layer": 8, "l_max": 450002},   # hyenadna-medium-450k-seqlen
    "large": {"d_model": 256, "n_layer": 8, "l_max": 1000002},        # hyenadna-large-1m-seqlen
}
POOLINGS = ("mean", "last")


@dataclass
class HyenaConfig:
    """Architecture of a HyenaDNA model. Defaults are HyenaDNA's (``tiny``); :meth:`from_size` fills a named size."""

    vocab_size: int = 12
    d_model: int = 128
    n_layer: int = 2
    d_inner: int | None = None            # MLP width; default 4 × d_model
    l_max: int = 1026                     # longest sequence the implicit filters are defined on
    order: int = 2                        # depth of the Hyena recurrence (number of gates)
    filter_order: int = 64                # width of the filter MLP
    emb_dim: int = 5                      # positional features fed to the filter MLP: t, and (emb_dim-1)/2 bands
    short_filter_order: int = 3           # length of the explicit depthwise causal conv
    num_inner_mlps: int = 2
    activation_freq: float = 10.0         # initial frequency of the filter MLP's sine activations
    modulate: bool = True                 # exponential-decay window on the filters
    embed_dropout: float = 0.1
    resid_dropout: float = 0.0
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    pad_vocab_size_multiple: int = 8
    # A learnable scalar multiplying the token embeddings (the paper's LLaMA fix for embeddings that start at std
    # 0.02): off by default, as in HyenaDNA and the paper's HyenaDNA runs; its init defaults to √d_model.
    embedding_scale: bool = False
    embedding_scale_init: float | None = None

    def __post_init__(self) -> None:
        if self.d_inner is None:
            self.d_inner = 4 * self.d_model
        for name in ("vocab_size", "d_model", "n_layer", "d_inner", "l_max", "filter_order", "short_filter_order"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"model.{name} must be a positive integer; got {value!r}")
        if self.order < 2:
            raise ValueError(f"model.order must be >= 2 (Hyena needs at least one gate and one long conv); got "
                             f"{self.order}")
        if self.emb_dim < 3 or self.emb_dim % 2 == 0:
            raise ValueError(f"model.emb_dim must be odd and >= 3 (time plus sine/cosine pairs); got {self.emb_dim}")
        if not isinstance(self.embedding_scale, bool):
            raise ValueError(f"model.embedding_scale must be true or false; got {self.embedding_scale!r}")
        init = self.embedding_scale_init
        if init is not None and (isinstance(init, bool) or not isinstance(init, (int, float)) or init != init):
            raise ValueError(f"model.embedding_scale_init must be a number or null (√d_model); got {init!r}")

    @property
    def resolved_embedding_scale_init(self) -> float:
        """The embedding scale's initial value: ``embedding_scale_init``, else √d_model."""
        if self.embedding_scale_init is not None:
            return float(self.embedding_scale_init)
        return math.sqrt(self.d_model)

    @classmethod
    def from_size(cls, size: str | None, **overrides) -> HyenaConfig:
        """The config of a named HyenaDNA size, with ``overrides`` (None values are ignored) applied on top."""
        base: dict = {}
        if size is not None:
            check_choice("model.size", size, tuple(HYENA_SIZES))
            base = dict(HYENA_SIZES[size])
        check_fields(cls, overrides, "HyenaDNA")
        base.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**base)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_size_multiple
        return self.vocab_size + (-self.vocab_size) % m


def fft_causal_conv(u: torch.Tensor, k: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
    """Causal convolution ``y[..., c, t] = Σ_{s<=t} k[c, s] u[..., c, t-s]`` (+ ``skip[c] · u``) in O(L log L).

    ``u``: (..., C, L); ``k``: (C, L_k) with L_k <= L is zero-padded. Zero-padding both to 2L makes the circular FFT
    product a linear convolution, so no output position sees a later input. Computed in float32 (or float64 if
    given), whatever the autocast dtype: half-precision FFTs are limited to powers of two and lose accuracy.
    """
    seq_len = u.shape[-1]
    dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    n = 2 * seq_len
    k_f = torch.fft.rfft(k.to(dtype), n=n)
    u_f = torch.fft.rfft(u.to(dtype), n=n)
    y = torch.fft.irfft(u_f * k_f, n=n)[..., :seq_len]
    if skip is not None:
        y = y + u.to(dtype) * skip.to(dtype).unsqueeze(-1)
    return y.to(u.dtype)


class Sine(nn.Module):
    """``sin(freq · x)`` with a learnable frequency per feature: the filter MLP's activation (SIREN-style)."""

    def __init__(self, dim: int, freq: float) -> None:
        super().__init__()
        self.freq = nn.Parameter(torch.full((1, dim), float(freq)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.freq * x)


class PositionalFeatures(nn.Module):
    """Inputs of the filter MLP at each position: normalised time t ∈ [0, 1] and (emb_dim-1)/2 complex exponentials.

    Buffers are not saved in checkpoints: they are a function of ``l_max`` and ``emb_dim`` alone.
    """

    def __init__(self, emb_dim: int, l_max: int) -> None:
        super().__init__()
        bands = (emb_dim - 1) // 2
        t = torch.linspace(0, 1, l_max)[None, :, None]
        angle = 2 * math.pi * torch.arange(l_max, dtype=torch.float32)[None, :, None] / l_max
        freqs = torch.linspace(1e-4, bands - 1, bands)[None, None]
        # real and imaginary parts of e^{-i f w}
        features = torch.cat([t, torch.cos(freqs * angle), -torch.sin(freqs * angle)], dim=-1)
        self.register_buffer("features", features, persistent=False)
        self.register_buffer("t", t, persistent=False)

    def forward(self, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features[:, :seq_len], self.t[:, :seq_len]


class ExponentialDecay(nn.Module):
    """Multiplies channel c of a filter by exp(-|δ_c| t): decay rates spread from slow to fast across channels, so
    that some channels see far and others only near (HyenaDNA's fast 0.3 / slow 1.5 / target 1e-2 setting)."""

    def __init__(self, channels: int, fast_decay_pct: float = 0.3, slow_decay_pct: float = 1.5,
                 target: float = 1e-2) -> None:
        super().__init__()
        max_decay = math.log(target) / fast_decay_pct
        min_decay = math.log(target) / slow_decay_pct
        self.register_buffer("deltas", torch.linspace(min_decay, max_decay, channels)[None, None], persistent=False)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return h * torch.exp(-t * self.deltas.abs())


class ImplicitFilter(nn.Module):
    """A long convolution filter of length up to ``l_max`` per channel, produced by an MLP over positional features
    and windowed by an exponential decay, plus a per-channel skip term (``bias``)."""

    def __init__(self, channels: int, cfg: HyenaConfig) -> None:
        super().__init__()
        self.channels = channels
        self.modulate = cfg.modulate
        self.positions = PositionalFeatures(cfg.emb_dim, cfg.l_max)
        # one activation (one set of frequencies) shared by all layers
        act = Sine(cfg.filter_order, cfg.activation_freq)
        layers: list[nn.Module] = [nn.Linear(cfg.emb_dim, cfg.filter_order), act]
        for _ in range(cfg.num_inner_mlps):
            layers += [nn.Linear(cfg.filter_order, cfg.filter_order), act]
        layers.append(nn.Linear(cfg.filter_order, channels, bias=False))
        self.mlp = nn.Sequential(*layers)
        self.decay = ExponentialDecay(channels)
        self.bias = nn.Parameter(torch.randn(channels))

    def kernel(self, seq_len: int) -> torch.Tensor:
        """The filters, (channels, seq_len)."""
        z, t = self.positions(seq_len)
        h = self.mlp(z)
        if self.modulate:
            h = self.decay(t, h)
        return h[0].transpose(0, 1)


class HyenaOperator(nn.Module):
    """Order-N Hyena: project to N+1 streams, mix each locally with a short causal depthwise conv, then alternate
    gating (element-wise products) and long causal convolutions with implicit filters; project back."""

    def __init__(self, cfg: HyenaConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.d_model, self.order, self.l_max = d, cfg.order, cfg.l_max
        width = d * (cfg.order + 1)
        self.in_proj = nn.Linear(d, width)
        self.short_filter = nn.Conv1d(width, width, kernel_size=cfg.short_filter_order, groups=width,
                                      padding=cfg.short_filter_order - 1)
        self.filter = ImplicitFilter(d * (cfg.order - 1), cfg)
        self.out_proj = nn.Linear(d, d)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        seq_len = u.shape[1]
        if seq_len > self.l_max:
            raise ValueError(f"sequence length {seq_len} exceeds the model's l_max={self.l_max}; raise model.l_max")
        z = self.in_proj(u).transpose(1, 2)                        # (B, (N+1)·D, L)
        z = self.short_filter(z)[..., :seq_len]                    # left padding only: causal
        *gates, v = z.split(self.d_model, dim=1)
        k = self.filter.kernel(seq_len).view(self.order - 1, self.d_model, seq_len)
        skip = self.filter.bias.view(self.order - 1, self.d_model)
        for i, gate in enumerate(reversed(gates[1:])):
            v = fft_causal_conv(v * gate, k[i], skip[i])
        y = v * gates[0]
        return self.out_proj(y.transpose(1, 2))


class HyenaMLP(nn.Module):
    def __init__(self, d_model: int, d_inner: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_model, d_inner)
        self.fc2 = nn.Linear(d_inner, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class HyenaBlock(nn.Module):
    """Pre-norm residual block, as in HyenaDNA: x + mixer(norm1(x)), then + mlp(norm2(·))."""

    def __init__(self, cfg: HyenaConfig, norm: NormSpec) -> None:
        super().__init__()
        self.norm1 = build_norm(norm, cfg.d_model, "channels_last", eps=cfg.layer_norm_eps)
        self.mixer = HyenaOperator(cfg)
        self.norm2 = build_norm(norm, cfg.d_model, "channels_last", eps=cfg.layer_norm_eps)
        self.mlp = HyenaMLP(cfg.d_model, cfg.d_inner)
        self.drop = nn.Dropout(cfg.resid_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.mixer(self.norm1(x)))
        return x + self.drop(self.mlp(self.norm2(x)))


class HyenaBackbone(nn.Module):
    """Token embedding → blocks → final norm; returns hidden states (B, L, d_model)."""

    def __init__(self, cfg: HyenaConfig, norm: NormSpec | dict | str = "layernorm") -> None:
        super().__init__()
        self.cfg = cfg
        self.norm_spec = NormSpec.coerce(norm)
        self.embedding = nn.Embedding(cfg.padded_vocab_size, cfg.d_model)
        self.embed_scale = (nn.Parameter(torch.tensor(cfg.resolved_embedding_scale_init))
                            if cfg.embedding_scale else None)
        self.drop = nn.Dropout(cfg.embed_dropout)
        self.layers = nn.ModuleList(HyenaBlock(cfg, self.norm_spec) for _ in range(cfg.n_layer))
        self.norm_f = build_norm(self.norm_spec, cfg.d_model, "channels_last", eps=cfg.layer_norm_eps)
        init_hyena_weights(self, cfg)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embedding(input_ids)
        if self.embed_scale is not None:
            x = x * self.embed_scale
        x = self.drop(x)
        for layer in self.layers:
            x = layer(x)
        return self.norm_f(x)

    def no_weight_decay(self) -> list[str]:
        """HyenaDNA trains the implicit filters (MLP, sine frequencies, skip) without weight decay."""
        return [name for name, _ in self.named_parameters() if ".filter." in name]

    def norm_paths(self) -> list[str]:
        return [f"layers.{i}.{n}" for i in range(self.cfg.n_layer) for n in ("norm1", "norm2")] + ["norm_f"]


def init_hyena_weights(backbone: HyenaBackbone, cfg: HyenaConfig) -> None:
    """GPT-2 style init as in HyenaDNA: N(0, 0.02) for linear and embedding weights, zero biases, and the residual
    output projections (mixer.out_proj, mlp.fc2) scaled down by √(2·n_layer)."""
    std = cfg.initializer_range
    for module in backbone.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
    for layer in backbone.layers:
        for proj in (layer.mixer.out_proj, layer.mlp.fc2):
            nn.init.normal_(proj.weight, std=std / math.sqrt(2 * cfg.n_layer))


class HyenaLM(nn.Module):
    """HyenaDNA with a next-token head: logits (B, L, vocab_size)."""

    def __init__(self, cfg: HyenaConfig, norm: NormSpec | dict | str = "layernorm") -> None:
        super().__init__()
        self.backbone = HyenaBackbone(cfg, norm)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        nn.init.normal_(self.lm_head.weight, std=cfg.initializer_range)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.backbone(input_ids))


class HyenaClassifier(nn.Module):
    """HyenaDNA with a sequence-classification head over pooled hidden states.

    ``pooling``: ``mean`` over the non-padding positions (``attention_mask``), or ``last`` (the hidden state of the
    last real token; with left padding, the last position — for a causal model it has seen the whole sequence).
    """

    def __init__(self, cfg: HyenaConfig, num_classes: int, norm: NormSpec | dict | str = "layernorm",
                 pooling: str = "mean") -> None:
        super().__init__()
        check_choice("model.pooling", pooling, POOLINGS)
        if num_classes < 2:
            raise ValueError(f"model.num_classes must be >= 2; got {num_classes}")
        self.pooling = pooling
        self.backbone = HyenaBackbone(cfg, norm)
        self.head = nn.Linear(cfg.d_model, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.backbone(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones(input_ids.shape, dtype=torch.bool, device=input_ids.device)
        mask = attention_mask.to(h.dtype).unsqueeze(-1)
        if self.pooling == "mean":
            pooled = (h * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        else:
            positions = torch.arange(h.shape[1], device=h.device).expand_as(attention_mask)
            last = torch.where(attention_mask.bool(), positions, -1).amax(dim=1).clamp_min(0)
            pooled = h[torch.arange(h.shape[0], device=h.device), last]
        return self.head(pooled)


def placement_report(backbone: HyenaBackbone) -> NormReplacementReport:
    """Where the norms went, in the same shape as ``replace_norms``'s report (HyenaDNA's LayerNorm positions)."""
    paths = backbone.norm_paths()
    return NormReplacementReport(target=backbone.norm_spec.label(), counts={"LayerNorm": len(paths)},
                                 layouts={"channels_last": len(paths)}, paths=[f"backbone.{p}" for p in paths])


__all__ = ["HYENA_SIZES", "HyenaBackbone", "HyenaClassifier", "HyenaConfig", "HyenaLM", "HyenaOperator",
           "ImplicitFilter", "fft_causal_conv", "placement_report"]
