"""The fused Triton op under its former module name (``from dyt_bench.ops.triton_squash import squash_affine_triton``);
the code lives in ``dyt_bench.ops.triton``."""

from dyt_bench.ops.triton.op import FUSED_FUNCTIONS, squash_affine_triton

__all__ = ["FUSED_FUNCTIONS", "squash_affine_triton"]
