"""Launching the squash-affine kernels: a tensor's matrix view, the forward and backward launches, and a direct launch
of compiled kernels that skips Triton's per-call argument binding.

The matrix view needs no copy: channels last (``B, N, C``; also a ``B, C, H, W`` tensor in ``torch.channels_last``
memory format), rows are the tokens / pixels and cols the channels; channels first (``B, C, H, W`` / ``B, C, L``
contiguous), rows are the (sample, channel) pairs and cols the spatial positions. Other inputs are copied once with
``.contiguous()`` (its measured cost: docs/benchmarks.md).

The backward reads x and dy once, writes dx, and accumulates the parameter gradients (dγ, dβ, dα, dshift) in float32
registers per program; each program writes one row of per-channel partials and its own scalar sums, and the second
kernel adds them up in a fixed order, so gradients are bitwise reproducible run to run.

Why the direct launch (:func:`launch_kernel`): Triton's launcher re-derives every argument's specialisation on each
call, which costs more host time than these kernels take on the GPU for activations of a few million elements. The
compiled kernel is therefore cached here under exactly what Triton specialises on and called directly. On top of it,
the op's own calls go through :func:`forward` / :func:`backward`, the lean launch: one plan per call signature that
calls Triton's compiled C launcher itself (below). With ``native.py`` (the kernels' parameter order for the C++
node), this is the one module that relies on Triton internals (``JITFunction.arg_names`` / ``constexprs``; a
``CompiledKernel``'s ``run`` launcher with its ``launch``, ``launch_cooperative_grid``, ``launch_pdl`` and scratch
sizes, its ``function``, ``packed_metadata``, ``metadata`` and ``src.signature``; the C launcher's argument order,
triton 3.6): a Triton upgrade that changes them needs only these two changed, and where an attribute is missing the
ordinary launch is taken; the interpreter and CPU tensors take Triton's ordinary launch.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from dyt_bench.ops.functions import FUNCTIONS
from dyt_bench.ops.triton import kernels
from dyt_bench.ops.triton.blocks import (
    DEFAULT_DEVICE,
    MAX_GRID_DIM,
    Overrides,
    cdiv,
    choose_blocks,
    finish_blocks,
    kind_of_device,
)
from dyt_bench.ops.triton.interpreter import interpreting

INT32_LIMIT = 2**31 - 1
INTERPRETER_SM_COUNT = 4  # the interpreter: a handful of programs keeps the partial sums exercised


@functools.cache
def _cuda_sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


@functools.cache
def _cuda_device_kind(index: int) -> str:
    return kind_of_device(torch.cuda.get_device_name(index))


def device_kind(device: torch.device) -> str:
    """The tuning table of ``device`` (``blocks.DEVICE_TUNING``): by the CUDA device's name, the defaults otherwise."""
    if device.type != "cuda":
        return DEFAULT_DEVICE
    return _cuda_device_kind(device.index if device.index is not None else torch.cuda.current_device())


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of ``device`` (a small fixed number off CUDA, for the interpreter)."""
    if device.type != "cuda":
        return INTERPRETER_SM_COUNT
    return _cuda_sm_count(device.index if device.index is not None else torch.cuda.current_device())


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def matrix_view(x: torch.Tensor, channel_dim: int) -> tuple[torch.Tensor, bool, int, int, int]:
    """(tensor to pass, channels_last, rows, cols, channels) with no copy when the memory allows one of the views:
    the channel dim physically last (channels-last kernels), or any memory order in which the dims after the channel
    dim, and those before it, each keep their logical order (channels-first kernels: a row is one (leading index,
    channel) pair). The latter covers contiguous feature maps and a token stream stored channels-first, such as a
    ViT / DiT stream after ``flatten(2).transpose(1, 2)`` of a patch embedding: (B, N, C) with strides (N·C, 1, N)."""
    dim = channel_dim % x.dim()
    channels = x.shape[dim]
    last = x.dim() - 1
    if x.movedim(dim, -1).is_contiguous():  # channel dim physically last (tokens, torch.channels_last maps)
        return x, True, x.numel() // max(channels, 1), channels, channels
    for pos in [dim, *(p for p in range(last - 1, -1, -1) if p != dim)]:
        moved = x.movedim(dim, pos)
        if moved.is_contiguous():
            inner = _numel(moved.shape[pos + 1:])
            return x, False, x.numel() // max(inner, 1), inner, channels
    xc = x.contiguous()
    if dim == last:
        return xc, True, x.numel() // max(channels, 1), channels, channels
    inner = _numel(x.shape[dim + 1:])
    return xc, False, x.numel() // max(inner, 1), inner, channels


def same_memory_order(t: torch.Tensor, like: torch.Tensor, dim: int) -> torch.Tensor:
    """``t`` (same shape as ``like``) with the same element order in memory as the dense tensor ``like``."""
    if t.stride() == like.stride():
        return t
    if like.is_contiguous():
        return t.contiguous()
    return torch.empty_like(like).copy_(t)  # ``like`` is dense: empty_like keeps its strides


def _forward_call(x: torch.Tensor, alpha: torch.Tensor, weight, bias, shift, fn: str, channel_dim: int,
                  overrides: Overrides | None):
    """(x's matrix view, y, kernel, grid, warps, register cap, arguments by name) of one forward launch."""
    xv, channels_last, rows, cols, channels = matrix_view(x, channel_dim)
    y = torch.empty_like(xv)
    if x.numel() == 0:
        return xv, y, None
    block_r, block_l, warps, maxnreg, _ = choose_blocks(rows, cols, "fwd", channels_last, fn, sm_count(x.device),
                                                        overrides, device_kind(x.device))
    grid = (cdiv(rows, block_r), cdiv(cols, block_l))
    if grid[1] > MAX_GRID_DIM:
        raise ValueError(f"squash_affine (Triton): {cols} elements per row is beyond the grid limit; use impl='eager'")
    args = dict(X=xv, Y=y, A=alpha, S=shift if shift is not None else alpha, W=weight if weight is not None else xv,
                B=bias if bias is not None else xv, R=rows, L=cols, C=channels,
                BLOCK_R=block_r, BLOCK_L=block_l, INDEX=0 if channels_last else 1, FN=FUNCTIONS[fn].kernel_code,
                HAS_W=weight is not None, HAS_B=bias is not None, HAS_S=shift is not None,
                INT64=x.numel() > INT32_LIMIT, EVEN=(rows % block_r == 0 and cols % block_l == 0))
    return xv, y, (kernels.fwd_kernel, grid, warps, maxnreg, args)


def launch_forward(x: torch.Tensor, alpha: torch.Tensor, weight, bias, shift, fn: str, channel_dim: int,
                   overrides: Overrides | None = None) -> torch.Tensor:
    """y = weight * f(alpha * x + shift) + bias in x's memory order; ``overrides``: sweeps only."""
    _, y, call = _forward_call(x, alpha, weight, bias, shift, fn, channel_dim, overrides)
    if call is not None:
        kernel, grid, warps, maxnreg, args = call
        launch_kernel(kernel, grid, x.device, warps, maxnreg, **args)
    return y


def _scal_offset(n: int) -> int:
    return -(-n // 4) * 4  # the per-program scalars start 16-byte aligned in the partials buffer


def _backward_calls(dy, x, alpha, weight, shift, fn, channel_dim, need_dx, need_dw, need_db, need_da, need_ds,
                    overrides: Overrides | None):
    """(dy in x's memory order, dx, out, buffer, the two launches as (kernel, grid, warps, register cap, arguments by
    name), or None for an empty input) of one backward."""
    xv, channels_last, rows, cols, channels = matrix_view(x, channel_dim)
    dy = same_memory_order(dy, xv, channel_dim % x.dim())
    dx = torch.empty_like(xv) if need_dx else xv.new_empty(0)
    if x.numel() == 0:
        return dy, dx, torch.zeros(2 * channels + 2, device=x.device, dtype=torch.float32), None, None
    block_r, block_l, warps, maxnreg, programs = choose_blocks(rows, cols, "bwd", channels_last, fn,
                                                               sm_count(x.device), overrides, device_kind(x.device))
    row_blocks, col_blocks = cdiv(rows, block_r), cdiv(cols, block_l)
    # channels-last: programs over row blocks, one grid column per column block; channels-first: the reverse
    if channels_last:
        kernel, spread, across = kernels.bwd_channels_last_kernel, row_blocks, col_blocks
        grid, dims = (programs, col_blocks), dict(ROW_PROGRAMS=programs)
    else:
        kernel, spread, across = kernels.bwd_channels_first_kernel, col_blocks, row_blocks
        grid, dims = (row_blocks, programs), dict(C=channels, COL_PROGRAMS=programs)
    # one buffer: P × 2 × M partials of dγ, dβ (M = cols for tokens, rows for feature maps), then (dα, dshift) per
    # program of the first stage
    width = cols if channels_last else rows
    n_scal = programs * across
    n_part = _scal_offset(programs * 2 * width)
    buffer = torch.empty(n_part + 2 * n_scal, device=x.device, dtype=torch.float32)
    part, scal = buffer[:n_part], buffer[n_part:]
    first = (kernel, grid, warps, maxnreg,
             dict(DY=dy, X=xv, A=alpha, S=shift if shift is not None else alpha, W=weight if weight is not None else xv,
                  DX=dx if need_dx else xv, PART=part, SCAL=scal, R=rows, L=cols, ITERS=cdiv(spread, programs), **dims,
                  BLOCK_R=block_r, BLOCK_L=block_l, FN=FUNCTIONS[fn].kernel_code, HAS_W=weight is not None,
                  HAS_S=shift is not None, NEED_DX=need_dx, NEED_DW=need_dw, NEED_DB=need_db, NEED_DA=need_da,
                  NEED_DS=need_ds, INT64=x.numel() > INT32_LIMIT))
    out = torch.empty(2 * channels + 2, device=x.device, dtype=torch.float32)
    groups = 1 if channels_last else rows // channels
    q = programs * groups
    block_c, block_q, block_s = finish_blocks(channels, q)
    n_blocks = cdiv(channels, block_c)
    second = (kernels.finish_kernel, (n_blocks + 1, 2), 4, None,
              dict(PART=part, SCAL=scal, OUT=out, Q=q, M=width, C=channels, GROUPS=groups, N_BLOCKS=n_blocks,
                   N_SCAL=n_scal, BLOCK_Q=block_q, BLOCK_C=block_c, BLOCK_S=block_s,
                   NEED_DW=need_dw, NEED_DB=need_db, NEED_DA=need_da, NEED_DS=need_ds))
    return dy, dx, out, buffer, (first, second, n_part)


def launch_backward(dy, x, alpha, weight, shift, fn, channel_dim, need_dx, need_dw, need_db, need_da, need_ds,
                    overrides: Overrides | None = None):
    """Returns dx (or an empty tensor) and a float32 tensor of 2 · C + 2 values: dγ (C), dβ (C), dα, dshift.
    ``overrides``: sweeps only."""
    _, dx, out, _, calls = _backward_calls(dy, x, alpha, weight, shift, fn, channel_dim, need_dx, need_dw, need_db,
                                           need_da, need_ds, overrides)
    if calls is not None:
        for kernel, grid, warps, maxnreg, args in calls[:2]:
            launch_kernel(kernel, grid, x.device, warps, maxnreg, **args)
    return dx, out


# ----------------------------------------------------------------------------------------------------------------
# The direct launch (see the module docstring for why)

_COMPILED: dict[tuple, object] = {}


def _specialisation_key(kernel, device: torch.device, num_warps: int, maxnreg: int | None, values: list) -> tuple:
    # what Triton specialises a compiled kernel on: dtypes and 16-byte alignment of pointers, integers' divisibility
    # by 16 / equality to 1 / int64 range, and the constexpr values
    constexprs = set(kernel.constexprs)
    key = [id(kernel), num_warps, maxnreg, device.index]
    for i, v in enumerate(values):
        if isinstance(v, torch.Tensor):
            key.append((v.dtype, v.data_ptr() % 16 == 0))
        elif i in constexprs or isinstance(v, bool):
            key.append(v)
        else:
            key.append((v % 16 == 0, v == 1, v >= 2**31))
    return tuple(key)


def launch_kernel(kernel, grid: tuple[int, int], device: torch.device, num_warps: int, maxnreg: int | None = None,
                  **args):
    """Launch ``kernel`` (a ``@triton.jit`` function) on ``grid`` with its arguments by name: compiled by Triton on
    first use of a specialisation, then called directly on the current CUDA stream. Returns the compiled kernel
    (None under the interpreter)."""
    values = [args[name] for name in kernel.arg_names]
    if interpreting() or device.type != "cuda":
        kernel[grid](*values, num_warps=num_warps)
        return None
    key = _specialisation_key(kernel, device, num_warps, maxnreg, values)
    compiled = _COMPILED.get(key)
    if compiled is None:
        options = {"maxnreg": maxnreg} if maxnreg else {}
        compiled = _COMPILED[key] = kernel[grid](*values, num_warps=num_warps, **options)
        return compiled
    compiled[(grid[0], grid[1], 1)](*values, stream=torch._C._cuda_getCurrentRawStream(device.index))
    return compiled


# ----------------------------------------------------------------------------------------------------------------
# The lean launch: one plan per call signature, so a call after the first costs a dictionary look-up, the output
# allocations and one call of Triton's C launcher per kernel.
#
# A plan is made on the first call of a signature (the shapes, strides, dtypes, function and flags), which goes the
# ordinary way above and compiles; it keeps each kernel's launcher handle (``_Handle``), grid and the arguments that
# do not change between calls (sizes, constexprs). Later calls pass pointers as integers (no per-pointer driver
# query) and skip Triton's Python runner, its launch-metadata dictionary and the enter / exit hooks (a profiler that
# installs hooks after a plan was made does not see these launches). A call whose pointers are not all 16-byte aligned
# (the compiled kernels assume it), kernels that need scratch memory, and the interpreter take the ordinary path.
# The op (op.py) keeps the forward plan of a call with its autograd node, and the backward plans made under it, so its
# backward looks up nothing but the plan for its incoming gradient's layout.


class _Handle(NamedTuple):
    launch: object  # Triton's compiled C launcher of the kernel
    function: int
    metadata: tuple
    cooperative: bool
    pdl: bool
    # for the C++ node (native.py): the kernel's parameters by name and Triton type ("*bf16", "i32", "constexpr",
    # ...; None where the compiled kernel does not say), warps, shared memory bytes and CTAs per program
    names: tuple | None = None
    params: tuple | None = None
    warps: int = 0
    shared: int = 0
    ctas: int = 1


def _handle(compiled) -> _Handle | None:
    """The launcher handle of a compiled kernel, or None where the lean launch cannot take it."""
    try:
        from triton import knobs

        runner = compiled.run
        hooks = (knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook)
        if any(getattr(h, "calls", h) for h in hooks):
            return None
        if runner.global_scratch_size or runner.profile_scratch_size:
            return None
        meta = compiled.metadata
        signature = getattr(getattr(compiled, "src", None), "signature", None)
        names = params = None
        if isinstance(signature, dict) and all(isinstance(v, str) for v in signature.values()):
            names, params = tuple(signature), tuple(signature.values())
        return _Handle(runner.launch, compiled.function, compiled.packed_metadata, runner.launch_cooperative_grid,
                       runner.launch_pdl, names, params, meta.num_warps, meta.shared, getattr(meta, "num_ctas", 1))
    except AttributeError:  # another Triton version: the ordinary launch
        return None


class _ForwardPlan(NamedTuple):
    copy: bool  # x is copied to a contiguous tensor first
    handle: _Handle
    grid: tuple[int, int]
    tail: tuple  # the arguments after the six pointers
    has_w: bool
    has_b: bool
    has_s: bool


class _BackwardPlan(NamedTuple):
    copy: bool
    dy_copy: bool  # dy is copied into x's memory order first
    first: _Handle
    first_grid: tuple[int, int]
    first_tail: tuple  # after the eight pointers
    second: _Handle
    second_grid: tuple[int, int]
    second_tail: tuple  # after the three pointers
    n_part: int  # float32 partials before the scalars in the buffer
    n_buffer: int
    channels: int
    need_dx: bool
    has_w: bool
    has_s: bool
    channel_dim: int


_FWD_PLANS: dict[tuple, _ForwardPlan | None] = {}
_BWD_PLANS: dict[tuple, _BackwardPlan | None] = {}
MAX_PLANS = 4096  # a bound on the plan tables (dynamic shapes): past it, new signatures take the ordinary path

_stream = torch._C._cuda_getCurrentRawStream if torch.cuda.is_available() else None


def _aligned(*tensors) -> bool:
    bits = 0
    for t in tensors:
        if t is not None:
            bits |= t.data_ptr()
    return bits & 15 == 0


def _forward_key(x, alpha, weight, bias, shift, fn: str, channel_dim: int, index: int) -> tuple:
    return (x.shape, x.stride(), x.dtype, index, alpha.dtype, None if weight is None else weight.dtype,
            None if bias is None else bias.dtype, None if shift is None else shift.dtype, fn, channel_dim)


def run_forward(plan: _ForwardPlan, x: torch.Tensor, alpha: torch.Tensor, weight, bias, shift, index: int):
    """One forward through ``plan`` (made for this call signature); None when a pointer is not 16-byte aligned (the
    compiled kernel assumes it), and the caller takes the ordinary launch."""
    xv = x.contiguous() if plan.copy else x
    xp = xv.data_ptr()
    ap = alpha.data_ptr()
    sp = shift.data_ptr() if plan.has_s else ap
    wp = weight.data_ptr() if plan.has_w else xp
    bp = bias.data_ptr() if plan.has_b else xp
    if (xp | ap | sp | wp | bp) & 15:
        return None
    y = torch.empty_like(xv)
    h = plan.handle
    h.launch(plan.grid[0], plan.grid[1], 1, _stream(index), h.function, h.cooperative, h.pdl, None, None,
             h.metadata, None, None, None, xp, y.data_ptr(), ap, sp, wp, bp, *plan.tail)
    return y


def forward(x: torch.Tensor, alpha: torch.Tensor, weight, bias, shift, fn: str, channel_dim: int) -> torch.Tensor:
    """:func:`launch_forward` through a plan (``channel_dim`` non-negative; the arguments already checked)."""
    index = x.get_device()
    key = _forward_key(x, alpha, weight, bias, shift, fn, channel_dim, index)
    plan = _FWD_PLANS.get(key, False)
    if plan:
        y = run_forward(plan, x, alpha, weight, bias, shift, index)
        if y is not None:
            return y
    if plan is not False or not x.is_cuda or interpreting() or not _aligned(x, alpha, weight, bias, shift):
        return launch_forward(x, alpha, weight, bias, shift, fn, channel_dim)
    xv, y, call = _forward_call(x, alpha, weight, bias, shift, fn, channel_dim, None)
    if call is None:
        return y
    kernel, grid, warps, maxnreg, args = call
    compiled = launch_kernel(kernel, grid, x.device, warps, maxnreg, **args)
    handle = _handle(compiled)
    if len(_FWD_PLANS) < MAX_PLANS:
        values = [args[name] for name in kernel.arg_names]
        _FWD_PLANS[key] = None if handle is None else _ForwardPlan(
            xv is not x, handle, grid, tuple(values[6:]), weight is not None, bias is not None, shift is not None)
    return y


def forward_plan(x: torch.Tensor, alpha: torch.Tensor, weight, bias, shift, fn: str, channel_dim: int):
    """The plan :func:`forward` made for this call signature, or None (none yet, or none possible)."""
    return _FWD_PLANS.get(_forward_key(x, alpha, weight, bias, shift, fn, channel_dim, x.get_device()))


def run_backward(plan: _BackwardPlan, dy, x, alpha, weight, shift, index: int):
    """One backward through ``plan``: (dx or None, the float32 sums), or None when a pointer is not 16-byte aligned
    (the caller takes the ordinary launch)."""
    xv = x.contiguous() if plan.copy else x
    if plan.dy_copy:
        dy = same_memory_order(dy, xv, plan.channel_dim)
    xp = xv.data_ptr()
    ap = alpha.data_ptr()
    dyp = dy.data_ptr()
    sp = shift.data_ptr() if plan.has_s else ap
    wp = weight.data_ptr() if plan.has_w else xp
    if (xp | ap | dyp | sp | wp) & 15:
        return None
    dx = torch.empty_like(xv) if plan.need_dx else None
    buffer = xv.new_empty(plan.n_buffer, dtype=torch.float32)
    out = xv.new_empty(2 * plan.channels + 2, dtype=torch.float32)
    part = buffer.data_ptr()
    scal = part + 4 * plan.n_part
    stream = _stream(index)
    h = plan.first
    h.launch(plan.first_grid[0], plan.first_grid[1], 1, stream, h.function, h.cooperative, h.pdl, None, None,
             h.metadata, None, None, None, dyp, xp, ap, sp, wp, dx.data_ptr() if plan.need_dx else xp, part, scal,
             *plan.first_tail)
    h = plan.second
    h.launch(plan.second_grid[0], plan.second_grid[1], 1, stream, h.function, h.cooperative, h.pdl, None, None,
             h.metadata, None, None, None, part, scal, out.data_ptr(), *plan.second_tail)
    return dx, out


def backward(dy, x, alpha, weight, shift, fn, channel_dim, need_dx, need_dw, need_db, need_da, need_ds):
    """:func:`launch_backward` through a plan (``channel_dim`` non-negative); dx may be None when not needed."""
    dx, out, _ = backward_with_plan(dy, x, alpha, weight, shift, fn, channel_dim, need_dx, need_dw, need_db, need_da,
                                    need_ds)
    return dx, out


def backward_with_plan(dy, x, alpha, weight, shift, fn, channel_dim, need_dx, need_dw, need_db, need_da, need_ds):
    """:func:`backward`, also returning the plan of this call signature (None where none is possible)."""
    index = x.get_device()
    key = (x.shape, x.stride(), dy.stride(), x.dtype, dy.dtype, index, alpha.dtype,
           None if weight is None else weight.dtype, None if shift is None else shift.dtype, fn, channel_dim, need_dx,
           need_dw, need_db, need_da, need_ds)
    plan = _BWD_PLANS.get(key, False)
    if plan:
        result = run_backward(plan, dy, x, alpha, weight, shift, index)
        if result is not None:
            return result[0], result[1], plan
    if plan is not False or not x.is_cuda or interpreting() or not _aligned(dy, x, alpha, weight, shift):
        dx, out = launch_backward(dy, x, alpha, weight, shift, fn, channel_dim, need_dx, need_dw, need_db, need_da,
                                  need_ds)
        return dx, out, None
    dyv, dx, out, buffer, calls = _backward_calls(dy, x, alpha, weight, shift, fn, channel_dim, need_dx, need_dw,
                                                  need_db, need_da, need_ds, None)
    if calls is None:
        return dx, out, None
    compiled = [launch_kernel(kernel, grid, x.device, warps, maxnreg, **args)
                for kernel, grid, warps, maxnreg, args in calls[:2]]
    handles = [_handle(c) for c in compiled]
    made = None
    if len(_BWD_PLANS) < MAX_PLANS:
        if None not in handles:
            (k1, g1, _, _, a1), (k2, g2, _, _, a2), n_part = calls
            v1 = [a1[name] for name in k1.arg_names]
            v2 = [a2[name] for name in k2.arg_names]
            made = _BackwardPlan(
                a1["X"] is not x, dyv is not dy, handles[0], g1, tuple(v1[8:]), handles[1], g2, tuple(v2[3:]),
                n_part, buffer.numel(), out.numel() // 2 - 1, need_dx, weight is not None, shift is not None,
                channel_dim)
        _BWD_PLANS[key] = made
    return dx, out, made
