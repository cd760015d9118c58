"""The fused squash-affine op: ``squash_affine_triton``, the hot path of ``impl="auto"`` (``squash_affine_fused``),
and the ``torch.library`` registration with autograd.

Eager calls take a plain ``autograd.Function`` (its C ``apply``, without the Python wrapper) around the lean launches
of ``launch.py``; under ``no_grad`` the forward is launched with no autograd node. Through ``impl="auto"``
(:func:`squash_affine_fused`) the first call of a signature checks the arguments and makes the launch plans; later
calls find them with one look-up and carry them on their autograd node (``_PlannedFunction``), so the backward looks
up only the plan for the gradients it needs and its upstream gradient's layout. Under ``torch.compile`` the op
enters the graph as :func:`compiled_forward` says: by default its forward as the element-wise expression (inductor
fuses it with the residual add or cast around it) with the backward as the custom op
``dyt_bench::squash_affine_backward`` (the one-pass fused reduction, left opaque); or, with
``DYT_BENCH_COMPILED_FORWARD=custom_op``, forward and backward as the custom ops ``dyt_bench::squash_affine`` (with
autograd) and ``dyt_bench::squash_affine_backward``. Each custom op has a fake implementation, so both trace with
``fullgraph=True``. Under ``torch.autocast`` it takes the input dtype as it comes (parameters may stay float32) and
returns the input dtype. With ``TRITON_INTERPRET=1`` the same kernels run on CPU tensors (used by the tests).
"""
from __future__ import annotations

import torch

from dyt_bench.ops import ENVIRONMENT, FUSED_DTYPES, environment_value
from dyt_bench.ops.functions import ALL_FUNCTIONS
from dyt_bench.ops.reference import check_squash_args, squash_expression
from dyt_bench.ops.triton import native
from dyt_bench.ops.triton.interpreter import interpreting
from dyt_bench.ops.triton.launch import (
    MAX_PLANS,
    backward,
    backward_with_plan,
    forward,
    forward_plan,
    matrix_view,
    run_backward,
    run_forward,
)

FUSED_FUNCTIONS = ALL_FUNCTIONS  # every function of the registry has its kernel branch


def _as_scalar_tensor(v, device) -> torch.Tensor:
    if isinstance(v, torch.Tensor):  # any one-element shape: the kernels read its first element, the gradient is
        return v  # reshaped to it (no view here: one autograd node less per call)
    return torch.full((), float(v), device=device, dtype=torch.float32)


def _matrix_view_meta(x: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """The tensor whose layout the output takes, as :func:`launch.matrix_view` chooses it (it reads no data)."""
    return matrix_view(x, channel_dim)[0]


@torch.library.custom_op("dyt_bench::squash_affine", mutates_args=())
def _squash_affine_op(x: torch.Tensor, alpha: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                      shift: torch.Tensor | None, fn: str, channel_dim: int) -> torch.Tensor:
    return forward(x, alpha, weight, bias, shift, fn, channel_dim)


@_squash_affine_op.register_fake
def _(x, alpha, weight, bias, shift, fn, channel_dim):
    return torch.empty_like(_matrix_view_meta(x, channel_dim))


@torch.library.custom_op("dyt_bench::squash_affine_backward", mutates_args=())
def _squash_affine_backward_op(dy: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, weight: torch.Tensor | None,
                               shift: torch.Tensor | None, fn: str, channel_dim: int, need_dx: bool, need_dw: bool,
                               need_db: bool, need_da: bool, need_ds: bool) -> tuple[torch.Tensor, torch.Tensor]:
    dx, sums = backward(dy, x, alpha, weight, shift, fn, channel_dim, need_dx, need_dw, need_db, need_da, need_ds)
    return (dx if dx is not None else x.new_empty(0)), sums


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


def _gradients(dx, sums, alpha, weight, shift, bias_dtype, need):
    """The op's input gradients from the backward launch: dx and the sums dγ (C), dβ (C), dα, dshift, as views of
    one tensor, converted to the parameters' dtypes where those are not float32 (``bias_dtype`` None: no bias)."""
    channels = (sums.shape[0] - 2) // 2
    g_w, g_b, g_alpha, g_s = sums.split_with_sizes((channels, channels, 1, 1))
    g_x = dx if need[0] else None
    if need[1]:
        g_alpha = g_alpha if alpha.dim() == 1 else g_alpha.view(alpha.shape)
        g_alpha = g_alpha if g_alpha.dtype == alpha.dtype else g_alpha.to(alpha.dtype)
    else:
        g_alpha = None
    if need[2] and weight is not None:
        g_w = g_w if weight.dtype == torch.float32 else g_w.to(weight.dtype)
    else:
        g_w = None
    if need[3] and bias_dtype is not None:
        g_b = g_b if bias_dtype == torch.float32 else g_b.to(bias_dtype)
    else:
        g_b = None
    if need[4] and shift is not None:
        g_s = g_s if shift.dim() == 1 else g_s.view(shift.shape)
        g_s = g_s if g_s.dtype == shift.dtype else g_s.to(shift.dtype)
    else:
        g_s = None
    return g_x, g_alpha, g_w, g_b, g_s, None, None


def _backward(ctx, dy):
    x, alpha, weight, shift = ctx.saved_tensors
    need = ctx.needs_input_grad  # x, alpha, weight, bias, shift, fn, channel_dim
    dx, sums = _squash_affine_backward_op(
        dy, x, alpha, weight, shift, ctx.fn, ctx.channel_dim,
        bool(need[0]), bool(need[2]), bool(need[3] and ctx.has_bias), bool(need[1]), bool(need[4]))
    return _gradients(dx, sums, alpha, weight, shift, ctx.bias_dtype, need)


_squash_affine_op.register_autograd(_backward, setup_context=_setup_context)


class _SquashAffineFunction(torch.autograd.Function):
    """The same forward / backward for eager mode, without the custom-op dispatch and through the lean launches
    (``launch.forward`` / ``launch.backward``). x is saved with its version check; α, γ and the shift are held as
    they are (parameters, which nothing changes in place between a forward and its backward)."""

    @staticmethod
    def forward(ctx, x, alpha, weight, bias, shift, fn, channel_dim):
        ctx.save_for_backward(x)
        ctx.args = (alpha, weight, shift, fn, channel_dim, None if bias is None else bias.dtype)
        return forward(x, alpha, weight, bias, shift, fn, channel_dim)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        alpha, weight, shift, fn, channel_dim, bias_dtype = ctx.args
        need = ctx.needs_input_grad
        dx, sums = backward(dy, x, alpha, weight, shift, fn, channel_dim, need[0], need[2],
                            need[3] and bias_dtype is not None, need[1], need[4])
        return _gradients(dx, sums, alpha, weight, shift, bias_dtype, need)


# ``Function.apply`` less its Python wrapper (functorch checks, argument binding): the C implementation, bound once.
# Under functorch transforms (vmap, grad) the ordinary ``apply`` is taken.
_apply_fused = super(torch.autograd.Function, _SquashAffineFunction).apply


def _expression(x, alpha, weight, bias, shift, fn, channel_dim):
    """The forward as element-wise ops in float32 (the reference's expression, as the kernels compute it)."""
    return squash_expression(x, alpha, weight, bias, shift, fn, channel_dim % x.dim(), torch.float32)


class _DecomposedForward(torch.autograd.Function):
    """For ``torch.compile``: the forward as the element-wise expression, which inductor fuses with its neighbours
    (a residual add before, a cast or scale after), and the backward as the fused one-pass kernels (the custom op
    ``dyt_bench::squash_affine_backward``, which inductor leaves as it is)."""

    @staticmethod
    def forward(ctx, x, alpha, weight, bias, shift, fn, channel_dim):
        ctx.save_for_backward(x, alpha, weight, shift)
        ctx.fn, ctx.channel_dim = fn, channel_dim
        ctx.has_bias = bias is not None
        ctx.bias_dtype = bias.dtype if bias is not None else None
        return _expression(x, alpha, weight, bias, shift, fn, channel_dim)

    @staticmethod
    def backward(ctx, dy):
        return _backward(ctx, dy)


COMPILED_FORWARD_ENV = "DYT_BENCH_COMPILED_FORWARD"
COMPILED_FORWARDS = ENVIRONMENT[COMPILED_FORWARD_ENV]


def compiled_forward() -> str:
    """How the op enters a ``torch.compile`` graph: ``decomposed`` (the default: the forward as element-wise ops that
    inductor fuses, the backward the fused one-pass kernels), ``inductor`` (forward and backward both inductor's, from
    the element-wise expression) or ``custom_op`` (forward and backward as opaque custom ops); set by the environment
    variable ``DYT_BENCH_COMPILED_FORWARD``, read when a graph is traced (benchmarks compare them)."""
    return environment_value(COMPILED_FORWARD_ENV)


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

    Needs CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``. Under ``torch.compile`` it enters the graph as
    :func:`compiled_forward` says.
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
        mode = compiled_forward()
        if mode == "decomposed":
            return _DecomposedForward.apply(x, alpha_t, weight, bias, shift_t, fn, channel_dim)
        if mode == "inductor":
            return _expression(x, alpha_t, weight, bias, shift_t, fn, channel_dim)
        return _squash_affine_op(x, alpha_t, weight, bias, shift_t, fn, channel_dim)
    if torch._C._are_functorch_transforms_active():
        return _SquashAffineFunction.apply(x, alpha_t, weight, bias, shift_t, fn, channel_dim)
    return _apply_fused(x, alpha_t, weight, bias, shift_t, fn, channel_dim)


class _OpPlan:
    """What one checked call signature of the op needs on later calls: the forward plan (``launch.forward_plan``),
    the backward plans made under it (by the backward's own key: which inputs need gradients, and the incoming
    gradient's strides and dtype), the arguments the backward's ordinary path takes, and the C++ node's variants
    (``native``: which of x, α, γ, β, shift need gradients → the variant's handle, or None where the C++ node cannot
    take it; native.py)."""

    __slots__ = ("fwd", "bwd", "fn", "channel_dim", "bias_dtype", "native", "native_apply")

    def __init__(self, fwd, fn: str, channel_dim: int, bias_dtype):
        self.fwd, self.bwd, self.fn, self.channel_dim, self.bias_dtype = fwd, {}, fn, channel_dim, bias_dtype
        self.native, self.native_apply = {}, None

    def add_native(self, need, bwd, x, dy, index: int) -> None:
        """Make the C++ node's variant for this gradient need from the forward plan and a backward plan, once per
        need (not from a backward whose incoming gradient had another dtype than x: a later backward tries again).
        The C++ node copies an incoming gradient of another memory order than x's itself, as the plans do."""
        mask = tuple(bool(n) for n in need[:5])
        if not x.is_cuda or mask in self.native or dy.dtype != x.dtype or not native.enabled():
            return
        handle = native.make_variant(self.fwd, bwd, index)
        self.native[mask] = handle
        if handle is not None:
            self.native_apply = native.module().apply


MAX_BACKWARD_PLANS = 64  # per forward plan: the layouts and gradient needs one signature meets


class _PlannedFunction(torch.autograd.Function):
    """:class:`_SquashAffineFunction` for a signature with an :class:`_OpPlan`: the forward launches through the plan
    and the node keeps it, so the backward builds no signature of its own."""

    @staticmethod
    def forward(ctx, x, alpha, weight, bias, shift, plan, index):
        ctx.save_for_backward(x)
        ctx.state = (alpha, weight, shift, plan, index)
        y = run_forward(plan.fwd, x, alpha, weight, bias, shift, index)
        return y if y is not None else forward(x, alpha, weight, bias, shift, plan.fn, plan.channel_dim)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        alpha, weight, shift, plan, index = ctx.state
        need = ctx.needs_input_grad  # x, alpha, weight, bias, shift, plan, index
        key = (need, dy.stride(), dy.dtype)
        bwd = plan.bwd.get(key)
        result = None if bwd is None else run_backward(bwd, dy, x, alpha, weight, shift, index)
        if result is None:
            dx, sums, bwd = backward_with_plan(dy, x, alpha, weight, shift, plan.fn, plan.channel_dim, need[0],
                                               need[2], need[3], need[1], need[4])
            if bwd is not None and len(plan.bwd) < MAX_BACKWARD_PLANS:
                plan.bwd[key] = bwd
        else:
            dx, sums = result
        if bwd is not None:
            plan.add_native(need, bwd, x, dy, index)
        return _gradients(dx, sums, alpha, weight, shift, plan.bias_dtype, need)


_apply_planned = super(torch.autograd.Function, _PlannedFunction).apply

_OP_PLANS: dict[tuple, _OpPlan] = {}  # checked call signatures (shapes, strides, dtypes, device, fn) → plan


def squash_affine_fused(x: torch.Tensor, alpha: torch.Tensor, weight: torch.Tensor | None,
                        bias: torch.Tensor | None, fn: str, channel_dim: int, shift: torch.Tensor | None):
    """The hot path of ``impl="auto"`` on a CUDA tensor of a fused dtype with tensor α (and shift): the first call of
    a signature checks the arguments and makes the launch plans; later calls of it go straight to the launches."""
    if torch.compiler.is_compiling() or not isinstance(alpha, torch.Tensor) or (
            shift is not None and not isinstance(shift, torch.Tensor)):
        return squash_affine_triton(x, alpha, weight, bias, fn=fn, channel_dim=channel_dim, shift=shift)
    index = x.get_device()
    key = (x.shape, x.stride(), x.dtype, index, alpha.shape, alpha.dtype,
           None if weight is None else (weight.shape, weight.dtype), None if bias is None else (bias.shape, bias.dtype),
           None if shift is None else (shift.shape, shift.dtype), fn, channel_dim)
    plan = _OP_PLANS.get(key)
    functorch = torch._C._are_functorch_transforms_active()
    if plan is not None and not functorch:
        if torch.is_grad_enabled():
            if plan.native_apply is not None and native._enabled:  # the C++ node (native.py)
                handle = plan.native.get((x.requires_grad, alpha.requires_grad,
                                          weight is not None and weight.requires_grad,
                                          bias is not None and bias.requires_grad,
                                          shift is not None and shift.requires_grad))
                if handle is not None:
                    y = plan.native_apply(handle, x, alpha, weight, bias, shift)
                    if y is not None:
                        return y
            return _apply_planned(x, alpha, weight, bias, shift, plan, index)
        y = run_forward(plan.fwd, x, alpha, weight, bias, shift, index)
        if y is not None:
            return y
    check_squash_args(x, alpha, weight, bias, fn, channel_dim, shift)
    dim = channel_dim + x.dim() if channel_dim < 0 else channel_dim
    if functorch:
        return _SquashAffineFunction.apply(x, alpha, weight, bias, shift, fn, dim)
    if not torch.is_grad_enabled():  # inference: no autograd node at all
        y = forward(x, alpha, weight, bias, shift, fn, dim)
    else:
        y = _apply_fused(x, alpha, weight, bias, shift, fn, dim)
    if plan is None and len(_OP_PLANS) < MAX_PLANS:
        fwd = forward_plan(x, alpha, weight, bias, shift, fn, dim)
        if fwd is not None:
            _OP_PLANS[key] = _OpPlan(fwd, fn, dim, None if bias is None else bias.dtype)
    return y
