"""The squash-affine op ``weight * f(alpha * x) + bias`` and its implementation dispatch (Triton on CUDA, else eager).

The functions ``f`` are those of the registry ``dyt_bench.ops.functions``.
"""

from __future__ import annotations

import torch

from dyt_bench.ops.functions import FUNCTIONS
from dyt_bench.ops.reference import (
    ALL_FUNCTIONS,
    CHANNEL_DIMS,
    EXTRA_FUNCTIONS,
    SQUASH_FUNCTIONS,
    check_squash_args,
    squash_affine_reference,
)

IMPLS = ("auto", "triton", "eager")
FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

__all__ = [
    "ALL_FUNCTIONS", "CHANNEL_DIMS", "EXTRA_FUNCTIONS", "FUNCTIONS", "FUSED_DTYPES", "IMPLS", "SQUASH_FUNCTIONS",
    "check_squash_args", "squash_affine", "squash_affine_reference", "triton_available",
]


_TRITON_AVAILABLE: bool | None = None


def triton_available() -> bool:
    """True when the fused Triton implementation can be imported (checked once)."""
    global _TRITON_AVAILABLE
    if _TRITON_AVAILABLE is None:
        try:
            import dyt_bench.ops.triton.op  # noqa: F401
        except ImportError:
            _TRITON_AVAILABLE = False
        else:
            _TRITON_AVAILABLE = True
    return _TRITON_AVAILABLE


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

    ``impl``: ``"auto"`` (the fused Triton kernels on CUDA tensors of float32 / bfloat16 / float16 when Triton is
    installed, the eager reference otherwise), ``"triton"`` or ``"eager"``. Every ``fn`` of ``ALL_FUNCTIONS``, with or
    without ``shift``, has a fused kernel.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        fused_ok = x.is_cuda and x.dtype in FUSED_DTYPES and fn in ALL_FUNCTIONS
        impl = "triton" if fused_ok and triton_available() else "eager"
    if impl == "eager":
        return squash_affine_reference(x, alpha, weight, bias, fn=fn, channel_dim=channel_dim, shift=shift)
    if not triton_available():
        raise RuntimeError("impl='triton' was requested but Triton is not installed (pip install triton); "
                           "use impl='auto' or 'eager'")
    from dyt_bench.ops.triton.op import squash_affine_triton

    return squash_affine_triton(x, alpha, weight, bias, fn=fn, channel_dim=channel_dim, shift=shift)
