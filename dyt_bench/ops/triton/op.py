"""The fused squash-affine op: ``squash_affine_triton`` and its ``torch.library`` registration with autograd.

The op is registered as the custom ops ``dyt_bench::squash_affine`` (with autograd) and
``dyt_bench::squash_affine_backward``, each with a fake implementation, so ``torch.compile`` traces through it
without a graph break; eager calls take a plain ``autograd.Function`` around the same launches, which skips the
custom-op dispatch (it costs more host time per call than the kernels take on small tensors). Under
``torch.autocast`` it takes the input dtype as it comes (parameters may stay float32) and returns the input dtype.
With ``TRITON_INTERPRET=1`` the same kernels run on CPU tensors (used by the tests).
"""

from __future__ import annotations

import torch

from dyt_bench.ops import FUSED_DTYPES
from dyt_bench.ops.functions import ALL_FUNCTIONS
from dyt_bench.ops.reference import check_squash_args
from dyt_bench.ops.triton.interpreter import interpreting
from dyt_bench.ops.triton.launch import launch_backward, launch_forward

FUSED_FUNCTIONS = ALL_FUNCTIONS  # every function of the registry has its kernel branch


def _as_scalar_tensor(v, device) -> torch.Tensor:
    if isinstance(v, torch.Tensor):  # any one-element shape: the kernels read its first element, the gradient is
        return v  # reshaped to it (no view here: one autograd node less per call)
    return torch.full((), float(v), device=device, dtype=torch.float32)


def _matrix_view_meta(x: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """The tensor whose layout the output takes, as :func:`launch.matrix_view` chooses it, without reading data."""
    dim = channel_dim % x.dim()
    if dim == x.dim() - 1 or x.movedim(dim, -1).is_contiguous() or x.is_contiguous():
        return x
    return x.contiguous()


@torch.library.custom_op("dyt_bench::squash_affine", mutates_args=())
def _squash_affine_op(x: torch.Tensor, alpha: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                      shift: torch.Tensor | None, fn: str, channel_dim: int) -> torch.Tensor:
    return launch_forward(x, alpha, weight, bias, shift, fn, channel_dim)


@_squash_affine_op.register_fake
def _(x, alpha, weight, bias, shift, fn, channel_dim):
    return torch.empty_like(_matrix_view_meta(x, channel_dim))


@torch.library.custom_op("dyt_bench::squash_affine_backward", mutates_args=())
def _squash_affine_backward_op(dy: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, weight: torch.Tensor | None,
                               shift: torch.Tensor | None, fn: str, channel_dim: int, need_dx: bool, need_dw: bool,
                               need_db: bool, need_da: bool, need_ds: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return launch_backward(dy, x, alpha, weight, shift, fn, channel_dim, need_dx, need_dw, need_db, need_da, need_ds)


@_squash_affine_backward_op.register_fake
def _(dy, x, alpha, weight, shift, fn, channel_dim, need_dx, need_dw, need_db, need_da, need_ds):
    xv = _matrix_view_meta(x, channel_dim)
    dx = torch.empty_like(xv) if need_dx else x.new_empty(0)
    return dx, x.new_empty(2 * x.shape[channel_dim] + 2, dtype=torch.float32)


def _setup_context(ctx, inputs, output):
    x, alpha, weight, bias, shift, fn, channel_dim = inputs
    ctx.save_for_backward(x, alpha, weight, shift)
    ctx.fn, ctx.channel_dim = fn, channel_dim
    ctx.has_bias = bias is not None
    ctx.bias_dtype = bias.dtype if bias is not None else None


def _backward(ctx, dy, launch=None):
    x, alpha, weight, shift = ctx.saved_tensors
    need = ctx.needs_input_grad  # x, alpha, weight, bias, shift, fn, channel_dim
    dx, sums = (launch or _squash_affine_backward_op)(
        dy, x, alpha, weight, shift, ctx.fn, ctx.channel_dim,
        bool(need[0]), bool(need[2]), bool(need[3] and ctx.has_bias), bool(need[1]), bool(need[4]))
    channels = (sums.shape[0] - 2) // 2  # sums: dγ (C), dβ (C), dα, dshift
    g_x = dx if need[0] else None
    g_alpha = sums[2 * channels].reshape(alpha.shape).to(alpha.dtype) if need[1] else None
    g_w = sums[:channels].to(weight.dtype) if need[2] and weight is not None else None
    g_b = sums[channels:2 * channels].to(ctx.bias_dtype) if need[3] and ctx.has_bias else None
    g_s = sums[2 * channels + 1].reshape(shift.shape).to(shift.dtype) if need[4] and shift is not None else None
    return g_x, g_alpha, g_w, g_b, g_s, None, None


_squash_affine_op.register_autograd(_backward, setup_context=_setup_context)


class _SquashAffineFunction(torch.autograd.Function):
    """The same forward / backward for eager mode, without the custom-op dispatch (tens of µs less per call)."""

    @staticmethod
    def forward(ctx, x, alpha, weight, bias, shift, fn, channel_dim):
        _setup_context(ctx, (x, alpha, weight, bias, shift, fn, channel_dim), None)
        return launch_forward(x, alpha, weight, bias, shift, fn, channel_dim)

    @staticmethod
    def backward(ctx, dy):
        return _backward(ctx, dy, launch=launch_backward)


def squash_affine_triton(
    x: torch.Tensor,
    alpha: torch.Tensor | float,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    fn: str = "tanh",
    channel_dim: int = -1,
    shift: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """The fused op: same contract as :func:`dyt_bench.ops.squash_affine_reference` (output in x's dtype).

    Needs CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``.
    """
    check_squash_args(x, alpha, weight, bias, fn, channel_dim, shift)
    if not x.is_cuda and not interpreting():
        raise RuntimeError("the Triton squash-affine kernels need CUDA tensors (or TRITON_INTERPRET=1 on CPU); "
                           "use impl='eager' or impl='auto'")
    if x.dtype not in FUSED_DTYPES:
        raise TypeError(f"the Triton squash-affine kernels take float32, bfloat16 or float16 input, got {x.dtype}")
    alpha_t = _as_scalar_tensor(alpha, x.device)
    shift_t = _as_scalar_tensor(shift, x.device) if shift is not None else None
    channel_dim = channel_dim % x.dim()
    if torch.compiler.is_compiling():
        return _squash_affine_op(x, alpha_t, weight, bias, shift_t, fn, channel_dim)
    return _SquashAffineFunction.apply(x, alpha_t, weight, bias, shift_t, fn, channel_dim)
