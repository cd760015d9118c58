"""The fused Triton implementation of the squash-affine op: kernels, block heuristic, launches, custom op.

``squash_affine_triton`` is loaded on first use, so the pure-Python ``blocks`` module imports without Triton.
"""

from __future__ import annotations

__all__ = ["FUSED_FUNCTIONS", "squash_affine_triton"]


def __getattr__(name: str):
    if name in __all__:
        from dyt_bench.ops.triton import op

        return getattr(op, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
