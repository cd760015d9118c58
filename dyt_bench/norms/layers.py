"""The normalization layers the factory builds, for channels-last (B, ..., C) and channels-first (B, C, ...) tensors."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from dyt_bench.ops import squash_affine
from dyt_bench.ops.functions import DEFAULT_ALPHA_INIT_LEARNABLE

from .spec import LAYOUTS, check_choice


def _channel_dim(layout: str) -> int:
    check_choice("layout", layout, LAYOUTS)
    return -1 if layout == "channels_last" else 1


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """Statistics in float32 at least (half-precision inputs), in float64 for float64 inputs."""
    return torch.promote_types(x.dtype, torch.float32)


def _reset_affine(layer: nn.Module) -> None:
    with torch.no_grad():
        if layer.weight is not None:
            layer.weight.fill_(1.0)
        if getattr(layer, "bias", None) is not None:
            layer.bias.zero_()


class SquashNorm(nn.Module):
    """Point-wise norm replacement ``weight * f(alpha * x [+ shift]) + bias`` (DyT when f = tanh and alpha is
    learnable; Derf when f = erf with a shift).

    ``alpha`` (and ``shift``, when ``shift_init`` is given) is one scalar per layer, a parameter when learnable and a
    buffer otherwise; ``weight`` (init 1) and ``bias`` (init 0) are per channel. The layer never permutes memory: the
    op takes the channel dimension as given.
    """

    def __init__(
        self,
        num_features: int,
        fn: str = "tanh",
        alpha_init: float = DEFAULT_ALPHA_INIT_LEARNABLE,
        learnable_alpha: bool = True,
        layout: str = "channels_last",
        affine: bool = True,
        bias: bool = True,
        impl: str = "auto",
        shift_init: float | None = None,
        learnable_shift: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        self.num_features = num_features
        self.fn = fn
        self.layout = layout
        self.channel_dim = _channel_dim(layout)
        self.impl = impl
        self.learnable_alpha = learnable_alpha
        self.alpha_init = float(alpha_init)
        self.shift_init = None if shift_init is None else float(shift_init)
        factory = {"device": device, "dtype": dtype}
        alpha = torch.full((1,), float(alpha_init), **factory)
        if learnable_alpha:
            self.alpha = nn.Parameter(alpha)
        else:
            self.register_buffer("alpha", alpha)
        if shift_init is None:
            self.shift = None
        elif learnable_shift:
            self.shift = nn.Parameter(torch.full((1,), float(shift_init), **factory))
        else:
            self.register_buffer("shift", torch.full((1,), float(shift_init), **factory))
        self.weight = nn.Parameter(torch.ones(num_features, **factory)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features, **factory)) if affine and bias else None

    def reset_parameters(self) -> None:
        """α = α0 (and the shift its initial value), γ = 1, β = 0: also after ``model.to_empty(device=...)``."""
        with torch.no_grad():
            self.alpha.fill_(self.alpha_init)
            if self.shift is not None:
                self.shift.fill_(self.shift_init)
        _reset_affine(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shift is None:
            return squash_affine(x, self.alpha, self.weight, self.bias, fn=self.fn, channel_dim=self.channel_dim,
                                 impl=self.impl)
        return squash_affine(x, self.alpha, self.weight, self.bias, fn=self.fn, channel_dim=self.channel_dim,
                             impl=self.impl, shift=self.shift)

    def extra_repr(self) -> str:
        kind = "fixed" if not self.learnable_alpha else "learnable"
        shift = f", shift={self.shift.item():g}" if self.shift is not None else ""
        return (
            f"{self.num_features}, fn={self.fn}, alpha={self.alpha.item():g} ({kind}){shift}, layout={self.layout}, "
            f"affine={self.weight is not None}, impl={self.impl}"
        )


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over dim 1 of a (B, C, ...) tensor, computed in place without permuting to channels-last."""

    def __init__(self, num_features: int, eps: float = 1e-6, affine: bool = True, bias: bool = True, device=None,
                 dtype=None):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.ones(num_features, **factory)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features, **factory)) if affine and bias else None

    def reset_parameters(self) -> None:
        """γ = 1, β = 0 (also after ``model.to_empty(device=...)``)."""
        _reset_affine(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        xf = x.to(_compute_dtype(x))
        var, mean = torch.var_mean(xf, dim=1, keepdim=True, correction=0)
        y = (xf - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            y = y * self.weight.to(xf.dtype).view(shape)
        if self.bias is not None:
            y = y + self.bias.to(xf.dtype).view(shape)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.weight is not None}, layout=channels_first"


class ChannelsFirstRMSNorm(nn.Module):
    """RMSNorm over dim 1 of a (B, C, ...) tensor, without permuting to channels-last."""

    def __init__(self, num_features: int, eps: float = 1e-6, affine: bool = True, device=None, dtype=None):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features, device=device, dtype=dtype)) if affine else None

    def reset_parameters(self) -> None:
        """γ = 1 (also after ``model.to_empty(device=...)``)."""
        _reset_affine(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.to(_compute_dtype(x))
        y = xf * torch.rsqrt(xf.pow(2).mean(dim=1, keepdim=True) + self.eps)
        if self.weight is not None:
            y = y * self.weight.to(xf.dtype).view((1, -1) + (1,) * (x.dim() - 2))
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.weight is not None}, layout=channels_first"


class NormAct(nn.Module):
    """What replaces a fused norm + activation layer (timm's ``BatchNormAct2d`` and kin): the new norm, then the
    original layer's own ``drop`` and ``act`` modules, unchanged: surgery swaps normalization, never activations."""

    def __init__(self, norm: nn.Module, drop: nn.Module | None = None, act: nn.Module | None = None,
                 source: str = "") -> None:
        super().__init__()
        self.norm = norm
        self.drop = drop if drop is not None else nn.Identity()
        self.act = act if act is not None else nn.Identity()
        self.source = source  # class name of the fused layer this one replaced

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(self.norm(x)))

    def extra_repr(self) -> str:
        return f"replaces={self.source}" if self.source else ""


class BatchNorm(_BatchNorm):
    """BatchNorm for either layout: per channel, statistics over every other dimension (batch, tokens, space).

    Channels-first input (B, C, ...) is what torch's BatchNorm1d/2d/3d take. Channels-last token input (B, N, C)
    is viewed as (B*N, C) (a free reshape of a contiguous tensor, no permute), so tokens count as batch samples.
    The state dict matches torch's BatchNorm layers.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, layout: str = "channels_first", device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self.layout = layout
        self.channel_dim = _channel_dim(layout)

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"BatchNorm expects at least 2-D input, got {input.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "channels_last" and x.dim() > 2:
            return super().forward(x.reshape(-1, x.shape[-1])).view(x.shape)
        return super().forward(x)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", layout={self.layout}"
