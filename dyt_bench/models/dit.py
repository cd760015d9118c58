"""DiT (Peebles & Xie, 2023): a class-conditional diffusion transformer with adaLN-Zero blocks, sizes S/B/L/XL × patch
2/4/8 by name (``DiT-B/4``); its norms are ``nn.LayerNorm`` without affine parameters, for the NormFactory to replace."""

from __future__ import annotations

import math
import re

import torch
from timm.layers import Attention, Mlp, PatchEmbed
from torch import nn

# name → (depth, hidden size, heads), Table 1 of the DiT paper
DIT_SIZES: dict[str, tuple[int, int, int]] = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}
DIT_PATCHES = (2, 4, 8)
DIT_NAMES = tuple(f"DiT-{s}/{p}" for s in DIT_SIZES for p in DIT_PATCHES)
NORM_EPS = 1e-6  # DiT's LayerNorm epsilon


def parse_dit_name(name: str) -> tuple[int, int, int, int]:
    """``"DiT-B/4"`` → (depth, hidden_size, num_heads, patch_size)."""
    match = re.fullmatch(r"DiT-(S|B|L|XL)/(\d+)", name.strip())
    if match is None or int(match.group(2)) not in DIT_PATCHES:
        raise ValueError(f"model.model must be one of {', '.join(DIT_NAMES)}; got {name!r}")
    depth, hidden, heads = DIT_SIZES[match.group(1)]
    return depth, hidden, heads, int(match.group(2))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation of tokens (B, N, C) by per-sample shift and scale (B, C): ``x · (1 + scale) + shift``."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Sine-cosine embedding (len(positions), dim) of 1-D positions, in float64."""
    if dim % 2:
        raise ValueError(f"sine-cosine embedding needs an even dimension; got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    angles = positions.reshape(-1, 1).to(torch.float64) * omega.reshape(1, -1)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def sincos_2d(dim: int, grid_size: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding (grid_size², dim), tokens in row-major order: the first half of the
    channels encodes the column, the second half the row (the MAE / DiT construction)."""
    if dim % 4:
        raise ValueError(f"2-D sine-cosine embedding needs a hidden size divisible by 4; got {dim}")
    rows, cols = torch.meshgrid(torch.arange(grid_size), torch.arange(grid_size), indexing="ij")
    return torch.cat([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], dim=1)


class TimestepEmbedder(nn.Module):
    """Diffusion timestep → vector: sinusoidal frequencies followed by a two-layer SiLU MLP."""

    def __init__(self, hidden_size: int, frequency_size: int = 256) -> None:
        super().__init__()
        self.frequency_size = frequency_size
        self.mlp = nn.Sequential(nn.Linear(frequency_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    @staticmethod
    def sinusoidal(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
        """(B,) timesteps (possibly fractional) → (B, dim): cosines then sines of geometric frequencies."""
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t.float().unsqueeze(1) * freqs.unsqueeze(0)
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        freq = self.sinusoidal(t, self.frequency_size)
        return self.mlp(freq.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class label → vector. With ``dropout_prob > 0`` the table has one extra row, the "no class" label
    (index ``num_classes``), used when training drops labels and by classifier-free guidance at sampling."""

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), hidden_size)

    @property
    def has_null_class(self) -> bool:
        return self.dropout_prob > 0

    def forward(self, labels: torch.Tensor, drop: bool) -> torch.Tensor:
        if drop and self.dropout_prob > 0:
            dropped = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
            labels = torch.where(dropped, torch.full_like(labels, self.num_classes), labels)
        return self.embedding_table(labels)


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero: the conditioning vector regresses shift, scale and a residual gate for
    the attention and the MLP branch; the norms themselves carry no affine parameters (unless ``norm_affine``)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0, norm_affine: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=norm_affine, eps=NORM_EPS)
        self.attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=norm_affine, eps=NORM_EPS)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), act_layer=lambda: nn.GELU(approximate="tanh"))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    """adaLN-modulated norm, then a linear map of each token to a patch of output channels."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int, norm_affine: bool = False) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=norm_affine, eps=NORM_EPS)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(nn.Module):
    """Diffusion transformer over (B, C, H, W) inputs (VAE latents or pixels), conditioned on timestep and class.

    Output: (B, 2C, H, W) with ``learn_sigma`` (ε, then the variance interpolation values), else (B, C, H, W).

    ``zero_init``: adaLN-Zero initialisation — every block's modulation regressor and the final layer start at zero,
    so each block is the identity and the output is 0 at initialisation. ``norm_affine``: give the norms their own
    per-channel γ/β (DiT has none: the modulation plays that role).

    ``contiguous_tokens``: store the token stream token-major (each token's channels adjacent). The patch embedding
    (a strided convolution, then flatten and transpose) leaves it channel-major, and every residual add keeps the
    layout of its first operand, so without this one copy the whole stream stays channel-major: each LayerNorm then
    copies its input, and each norm that keeps its input's layout (DyT) hands the attention and MLP projections an
    input they must copy. The values computed are the same either way; ``False`` keeps the reference code's layout.
    """

    def __init__(
        self,
        input_size: int = 32,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        num_classes: int = 1000,
        learn_sigma: bool = True,
        zero_init: bool = True,
        norm_affine: bool = False,
        contiguous_tokens: bool = True,
    ) -> None:
        super().__init__()
        if input_size % patch_size:
            raise ValueError(f"input size {input_size} is not divisible by the patch size {patch_size}")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
        self.input_size, self.patch_size, self.in_channels = input_size, patch_size, in_channels
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        self.learn_sigma = learn_sigma
        self.num_classes = num_classes
        self.contiguous_tokens = contiguous_tokens
        self.x_embedder = PatchEmbed(input_size, patch_size, in_channels, hidden_size, bias=True)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        grid = input_size // patch_size
        # fixed (not learned) position embedding, as in DiT
        self.register_buffer("pos_embed", sincos_2d(hidden_size, grid).float().unsqueeze(0), persistent=False)
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio, norm_affine) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels, norm_affine)
        self.initialize_weights(zero_init)

    @property
    def null_class(self) -> int | None:
        """The label index that means "no class" (classifier-free guidance), or None when the model has none."""
        return self.num_classes if self.y_embedder.has_null_class else None

    def initialize_weights(self, zero_init: bool = True) -> None:
        """DiT's initialisation: Xavier-uniform linear layers with zero bias, the patch projection initialised like a
        linear layer, N(0, 0.02) label and timestep embeddings; with ``zero_init`` the adaLN-Zero zeros."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        proj = self.x_embedder.proj
        nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
        nn.init.zeros_(proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        if zero_init:
            for block in self.blocks:
                nn.init.zeros_(block.adaLN_modulation[-1].weight)
                nn.init.zeros_(block.adaLN_modulation[-1].bias)
            nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
            nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
            nn.init.zeros_(self.final_layer.linear.weight)
            nn.init.zeros_(self.final_layer.linear.bias)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, p²·C) tokens → (B, C, H, W) image."""
        c, p = self.out_channels, self.patch_size
        h = w = int(round(x.shape[1] ** 0.5))
        x = x.reshape(x.shape[0], h, w, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], c, h * p, w * p)

    def condition(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The conditioning vector: timestep embedding + class embedding (labels dropped at random while training)."""
        return self.t_embedder(t) + self.y_embedder(y, drop=self.training)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        tokens = self.x_embedder(x) + self.pos_embed.to(x.dtype)
        if self.contiguous_tokens:
            tokens = tokens.contiguous()
        c = self.condition(t, y)
        for block in self.blocks:
            tokens = block(tokens, c)
        return self.unpatchify(self.final_layer(tokens, c))


def build_dit(
    name: str = "DiT-S/2",
    input_size: int = 32,
    in_channels: int = 4,
    num_classes: int = 1000,
    class_dropout_prob: float = 0.1,
    learn_sigma: bool = True,
    zero_init: bool = True,
    norm_affine: bool = False,
    contiguous_tokens: bool = True,
    depth: int | None = None,
    hidden_size: int | None = None,
    num_heads: int | None = None,
) -> DiT:
    """A DiT by name (``DiT-S/2`` … ``DiT-XL/8``); ``depth``/``hidden_size``/``num_heads`` override the named size
    (e.g. a two-block model for tests)."""
    d, h, heads, patch = parse_dit_name(name)
    return DiT(input_size=input_size, patch_size=patch, in_channels=in_channels, hidden_size=hidden_size or h,
               depth=depth or d, num_heads=num_heads or heads, class_dropout_prob=class_dropout_prob,
               num_classes=num_classes, learn_sigma=learn_sigma, zero_init=zero_init, norm_affine=norm_affine,
               contiguous_tokens=contiguous_tokens)


__all__ = ["DIT_NAMES", "DIT_SIZES", "DiT", "DiTBlock", "FinalLayer", "LabelEmbedder", "TimestepEmbedder", "build_dit",
           "modulate", "parse_dit_name", "sincos_2d"]
