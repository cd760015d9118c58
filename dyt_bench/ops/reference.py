"""Eager PyTorch implementation of the squash-affine op: the specification every other implementation is tested against.

``y = weight * f(alpha * x + shift) + bias`` with ``alpha`` and the optional ``shift`` scalars and ``weight``/``bias``
per channel, the channel dimension being the last one (tokens) or the second one (feature maps). ``f = erf`` with a
shift is Derf (Chen et al., "Stronger Normalization-Free Transformers").
"""

from __future__ import annotations

import torch

from dyt_bench.ops.functions import ALL_FUNCTIONS, EXTRA_FUNCTIONS, SQUASH_FUNCTIONS, get_function

CHANNEL_DIMS = (-1, 1)
INPUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # what the error message names

__all__ = ["ALL_FUNCTIONS", "CHANNEL_DIMS", "EXTRA_FUNCTIONS", "SQUASH_FUNCTIONS", "check_squash_args",
           "squash_affine_reference", "squash_expression"]


def _squash(z: torch.Tensor, fn: str) -> torch.Tensor:
    """``f(z)`` by the registry's formula (ops/functions.py)."""
    return get_function(fn).formula(z)


def check_squash_args(x: torch.Tensor, alpha, weight, bias, fn: str, channel_dim: int, shift=None) -> int:
    """Validate arguments shared by every implementation; return the channel dimension as a non-negative index."""
    if fn not in ALL_FUNCTIONS:
        raise ValueError(f"fn must be one of {ALL_FUNCTIONS}, got {fn!r}")
    if x.dtype not in INPUT_DTYPES:
        raise TypeError(f"squash_affine: x must be a floating-point tensor ({', '.join(map(str, INPUT_DTYPES))}), "
                        f"got {x.dtype}")
    if isinstance(shift, torch.Tensor) and shift.numel() != 1:
        raise ValueError(f"shift must be a scalar (one element), got shape {tuple(shift.shape)}")
    if channel_dim not in CHANNEL_DIMS and channel_dim != x.dim() - 1:
        raise ValueError(f"channel_dim must be one of {CHANNEL_DIMS} (last or second), got {channel_dim}")
    if x.dim() < 2 and channel_dim == 1:
        raise ValueError(f"channel_dim=1 needs an input of at least 2 dims, got shape {tuple(x.shape)}")
    if x.dim() < 1:
        raise ValueError("squash_affine needs an input with a channel dimension, got a 0-dim tensor")
    dim = channel_dim % x.dim()
    channels = x.shape[dim]
    if isinstance(alpha, torch.Tensor) and alpha.numel() != 1:
        raise ValueError(f"alpha must be a scalar (one element), got shape {tuple(alpha.shape)}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and (p.dim() != 1 or p.shape[0] != channels):
            raise ValueError(f"{name} must have shape ({channels},) for channel_dim={channel_dim}, "
                             f"got {tuple(p.shape)}")
    return dim


def _per_channel(p: torch.Tensor, x: torch.Tensor, dim: int) -> torch.Tensor:
    """View a (C,) parameter so that it broadcasts along ``dim`` of ``x`` (no copy)."""
    shape = [1] * x.dim()
    shape[dim] = p.shape[0]
    return p.view(shape)


def squash_affine_reference(
    x: torch.Tensor,
    alpha: torch.Tensor | float,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    fn: str = "tanh",
    channel_dim: int = -1,
    shift: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """``weight * f(alpha * x + shift) + bias`` computed in float32 (or float64 for float64 inputs), returned in
    x's dtype.

    ``weight``/``bias``/``shift`` may be ``None``. Differentiable in every tensor argument via autograd.
    """
    dim = check_squash_args(x, alpha, weight, bias, fn, channel_dim, shift)
    return squash_expression(x, alpha, weight, bias, shift, fn, dim,
                             torch.float64 if x.dtype == torch.float64 else torch.float32)


def squash_expression(x, alpha, weight, bias, shift, fn: str, dim: int, compute_dtype: torch.dtype) -> torch.Tensor:
    """``weight * f(alpha * x + shift) + bias`` as element-wise ops in ``compute_dtype``, returned in x's dtype, with
    no argument checks (callers check). The final cast is made only where the dtype changes: a no-op ``.to`` as the
    output of an ``autograd.Function`` traced by dynamo left its backward with zero upstream gradients (torch 2.11),
    and the fused op's compiled forward is this expression."""
    xc = x.to(compute_dtype)
    a = alpha.to(compute_dtype).reshape(()) if isinstance(alpha, torch.Tensor) else alpha
    z = a * xc
    if shift is not None:
        z = z + (shift.to(compute_dtype).reshape(()) if isinstance(shift, torch.Tensor) else shift)
    y = _squash(z, fn)
    if weight is not None:
        y = y * _per_channel(weight.to(compute_dtype), xc, dim)
    if bias is not None:
        y = y + _per_channel(bias.to(compute_dtype), xc, dim)
    return y if y.dtype == x.dtype else y.to(x.dtype)
