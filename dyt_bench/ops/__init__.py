"""The squash-affine op ``weight * f(alpha * x) + bias`` and its implementation dispatch (Triton on CUDA, eager elsewhere)."""

from __future__ import annotations

import torch

from dyt_bench.ops.reference import ALL_FUNCTIONS, CHANNEL_DIMS, SQUASH_FUNCTIONS, squash_affine_reference

IMPLS = ("auto", "triton", "eager")

__all__ = ["ALL_FUNCTIONS", "CHANNEL_DIMS", "IMPLS", "SQUASH_FUNCTIONS", "squash_affine", "squash_affine_reference", "triton_available"]


def triton_available() -> bool:
    """True when the fused Triton implementation can be imported."""
    try:
        from dyt_bench.ops import triton_squash  # noqa: F401
    except ImportError:
        return False
    return True


def squash_affine(
    x: torch.Tensor,
    alpha: torch.Tensor | float,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    fn: str = "tanh",
    channel_dim: int = -1,
    impl: str = "auto",
    shift: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """``weight * f(alpha * x + shift) + bias`` with the channel dimension last (-1) or second (1).

    ``impl``: ``"auto"`` (Triton on CUDA tensors when available, eager otherwise), ``"triton"`` or ``"eager"``.
    ``fn="erf"`` with a ``shift`` (Derf) runs eagerly: the fused kernels cover tanh, hardtanh, sigmoid, identity.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    fused_ok = fn in SQUASH_FUNCTIONS and shift is None
    if impl == "auto":
        impl = "triton" if x.is_cuda and fused_ok and triton_available() else "eager"
    if impl == "triton" and not fused_ok:
        raise ValueError(f"impl='triton' supports fn in {SQUASH_FUNCTIONS} without shift; use impl='auto' or 'eager'")
    if impl == "eager":
        return squash_affine_reference(x, alpha, weight, bias, fn=fn, channel_dim=channel_dim, shift=shift)
    if not triton_available():
        raise RuntimeError("impl='triton' was requested but the Triton squash-affine kernels are not available")
    from dyt_bench.ops.triton_squash import squash_affine_triton

    return squash_affine_triton(x, alpha, weight, bias, fn=fn, channel_dim=channel_dim)
