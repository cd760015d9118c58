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

# the op's environment switches and their values (the first is the default): how it enters a torch.compile graph
# (ops/triton/op.py) and whether its CUDA eager path takes the C++ autograd node (ops/triton/native.py)
ENVIRONMENT = {"DYT_BENCH_COMPILED_FORWARD": ("decomposed", "inductor", "custom_op"),
               "DYT_BENCH_NATIVE_NODE": ("auto", "off")}


def environment_value(name: str) -> str:
    """The value of one of the op's environment switches (``ENVIRONMENT``), its default when unset; a ValueError
    naming the variable and its allowed values otherwise."""
    import os

    allowed = ENVIRONMENT[name]
    value = os.environ.get(name, allowed[0])
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def check_environment() -> None:
    """Every one of the op's environment switches set to an allowed value (run before training starts)."""
    for name in ENVIRONMENT:
        environment_value(name)

__all__ = [
    "ALL_FUNCTIONS", "CHANNEL_DIMS", "ENVIRONMENT", "EXTRA_FUNCTIONS", "FUNCTIONS", "FUSED_DTYPES", "IMPLS",
    "SQUASH_FUNCTIONS", "check_environment", "check_squash_args", "environment_value", "squash_affine",
    "squash_affine_reference", "triton_available",
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


AUTO_EAGER_BELOW = 0  # elements: ``impl="auto"`` takes the eager op under this size (docs/benchmarks.md)

_fused = None  # dyt_bench.ops.triton.op.squash_affine_fused, bound on first use


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

    ``impl``: ``"auto"``, ``"triton"`` (the fused Triton kernels) or ``"eager"`` (the reference). Every ``fn`` of
    ``ALL_FUNCTIONS``, with or without ``shift``, has a fused kernel. The rule of ``"auto"``:

    - a CPU tensor, a dtype other than float32 / bfloat16 / float16, or no Triton: eager;
    - under ``torch.compile``: the fused op as ``compiled_forward()`` says (by default the forward decomposed into
      element-wise ops that inductor fuses with its neighbours, the backward the fused one-pass kernels);
    - a CUDA tensor of fewer than ``AUTO_EAGER_BELOW`` elements: eager (where its launches cost less host time);
    - otherwise the fused kernels through their lean launch.

    x must be float16, bfloat16, float32 or float64 (a TypeError names the dtype otherwise).
    """
    global _fused
    if impl == "auto":
        if x.is_cuda and x.dtype in FUSED_DTYPES and x.numel() >= AUTO_EAGER_BELOW and triton_available():
            if _fused is None:
                from dyt_bench.ops.triton.op import squash_affine_fused

                _fused = squash_affine_fused
            return _fused(x, alpha, weight, bias, fn, channel_dim, shift)
        impl = "eager"
    elif impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "eager":
        return squash_affine_reference(x, alpha, weight, bias, fn=fn, channel_dim=channel_dim, shift=shift)
    if not triton_available():
        raise RuntimeError("impl='triton' was requested but Triton is not installed (pip install triton); "
                           "use impl='auto' or 'eager'")
    from dyt_bench.ops.triton.op import squash_affine_triton

    return squash_affine_triton(x, alpha, weight, bias, fn=fn, channel_dim=channel_dim, shift=shift)
