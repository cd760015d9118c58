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
compiled kernel is therefore cached here under exactly what Triton specialises on and called directly. This is the
one place that relies on Triton internals (``JITFunction.arg_names`` / ``constexprs``, calling a compiled kernel with
a grid and a raw stream): a Triton upgrade that changes them needs only this function changed; the interpreter and
CPU tensors take Triton's ordinary launch.
"""

from __future__ import annotations

import functools

import torch

from dyt_bench.ops.functions import FUNCTIONS
from dyt_bench.ops.triton import kernels
from dyt_bench.ops.triton.blocks import MAX_GRID_DIM, Overrides, cdiv, choose_blocks, finish_blocks
from dyt_bench.ops.triton.interpreter import interpreting

INT32_LIMIT = 2**31 - 1
INTERPRETER_SM_COUNT = 4  # the interpreter: a handful of programs keeps the partial sums exercised


@functools.cache
def _cuda_sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of ``device`` (a small fixed number off CUDA, for the interpreter)."""
    if device.type != "cuda":
        return INTERPRETER_SM_COUNT
    return _cuda_sm_count(device.index if device.index is not None else torch.cuda.current_device())


def matrix_view(x: torch.Tensor, channel_dim: int) -> tuple[torch.Tensor, bool, int, int, int]:
    """(tensor to pass, channels_last, rows, cols, channels) with no copy when the memory allows one of the views."""
    dim = channel_dim % x.dim()
    channels = x.shape[dim]
    if dim == x.dim() - 1:
        xc = x if x.is_contiguous() else x.contiguous()
        return xc, True, x.numel() // max(channels, 1), channels, channels
    moved = x.movedim(dim, -1)
    if moved.is_contiguous():  # channel dim physically last (e.g. torch.channels_last feature maps)
        return x, True, x.numel() // max(channels, 1), channels, channels
    xc = x if x.is_contiguous() else x.contiguous()
    inner = 1
    for n in x.shape[dim + 1:]:
        inner *= n
    return xc, False, x.numel() // max(inner, 1), inner, channels


def same_memory_order(t: torch.Tensor, like: torch.Tensor, dim: int) -> torch.Tensor:
    """``t`` (same shape as ``like``) with the same element order in memory as the dense tensor ``like``."""
    if t.stride() == like.stride():
        return t
    if like.is_contiguous():
        return t.contiguous()
    # ``like`` is dense with its channel dim physically last: copy t into that order
    return t.movedim(dim, -1).contiguous().movedim(-1, dim)


def launch_forward(x: torch.Tensor, alpha: torch.Tensor, weight, bias, shift, fn: str, channel_dim: int,
                   overrides: Overrides | None = None) -> torch.Tensor:
    """y = weight * f(alpha * x + shift) + bias in x's memory order; ``overrides``: sweeps only."""
    xv, channels_last, rows, cols, channels = matrix_view(x, channel_dim)
    y = torch.empty_like(xv)
    if x.numel() == 0:
        return y
    block_r, block_l, warps, maxnreg, _ = choose_blocks(rows, cols, "fwd", channels_last, fn, sm_count(x.device),
                                                        overrides)
    grid = (cdiv(rows, block_r), cdiv(cols, block_l))
    if grid[1] > MAX_GRID_DIM:
        raise ValueError(f"squash_affine (Triton): {cols} elements per row is beyond the grid limit; use impl='eager'")
    launch_kernel(kernels.fwd_kernel, grid, x.device, warps, maxnreg,
                  X=xv, Y=y, A=alpha, S=shift if shift is not None else alpha, W=weight if weight is not None else xv,
                  B=bias if bias is not None else xv, R=rows, L=cols, C=channels,
                  BLOCK_R=block_r, BLOCK_L=block_l, INDEX=0 if channels_last else 1, FN=FUNCTIONS[fn].kernel_code,
                  HAS_W=weight is not None, HAS_B=bias is not None, HAS_S=shift is not None,
                  INT64=x.numel() > INT32_LIMIT, EVEN=(rows % block_r == 0 and cols % block_l == 0))
    return y


def launch_backward(dy, x, alpha, weight, shift, fn, channel_dim, need_dx, need_dw, need_db, need_da, need_ds,
                    overrides: Overrides | None = None):
    """Returns dx (or an empty tensor) and a float32 tensor of 2 · C + 2 values: dγ (C), dβ (C), dα, dshift.
    ``overrides``: sweeps only."""
    xv, channels_last, rows, cols, channels = matrix_view(x, channel_dim)
    dy = same_memory_order(dy, xv, channel_dim % x.dim())
    dx = torch.empty_like(xv) if need_dx else xv.new_empty(0)
    if x.numel() == 0:
        return dx, torch.zeros(2 * channels + 2, device=x.device, dtype=torch.float32)
    block_r, block_l, warps, maxnreg, programs = choose_blocks(rows, cols, "bwd", channels_last, fn,
                                                               sm_count(x.device), overrides)
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
    buffer = torch.empty(programs * 2 * width + 2 * n_scal, device=x.device, dtype=torch.float32)
    part, scal = buffer[:programs * 2 * width], buffer[programs * 2 * width:]
    launch_kernel(kernel, grid, x.device, warps, maxnreg, DY=dy, X=xv, A=alpha, S=shift if shift is not None else alpha,
                  W=weight if weight is not None else xv, DX=dx if need_dx else xv, PART=part, SCAL=scal,
                  R=rows, L=cols, ITERS=cdiv(spread, programs), **dims,
                  BLOCK_R=block_r, BLOCK_L=block_l, FN=FUNCTIONS[fn].kernel_code, HAS_W=weight is not None,
                  HAS_S=shift is not None, NEED_DX=need_dx, NEED_DW=need_dw, NEED_DB=need_db, NEED_DA=need_da,
                  NEED_DS=need_ds, INT64=x.numel() > INT32_LIMIT)
    out = torch.empty(2 * channels + 2, device=x.device, dtype=torch.float32)
    groups = 1 if channels_last else rows // channels
    q = programs * groups
    block_c, block_q, block_s = finish_blocks(channels, q)
    n_blocks = cdiv(channels, block_c)
    launch_kernel(kernels.finish_kernel, (n_blocks + 1, 2), x.device, 4, None, PART=part, SCAL=scal, OUT=out, Q=q,
                  M=width, C=channels, GROUPS=groups, N_BLOCKS=n_blocks, N_SCAL=n_scal,
                  BLOCK_Q=block_q, BLOCK_C=block_c, BLOCK_S=block_s,
                  NEED_DW=need_dw, NEED_DB=need_db, NEED_DA=need_da, NEED_DS=need_ds)
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
                  **args) -> None:
    """Launch ``kernel`` (a ``@triton.jit`` function) on ``grid`` with its arguments by name: compiled by Triton on
    first use of a specialisation, then called directly on the current CUDA stream."""
    values = [args[name] for name in kernel.arg_names]
    if interpreting() or device.type != "cuda":
        kernel[grid](*values, num_warps=num_warps)
        return
    key = _specialisation_key(kernel, device, num_warps, maxnreg, values)
    compiled = _COMPILED.get(key)
    if compiled is None:
        options = {"maxnreg": maxnreg} if maxnreg else {}
        _COMPILED[key] = kernel[grid](*values, num_warps=num_warps, **options)
        return
    compiled[(grid[0], grid[1], 1)](*values, stream=torch._C._cuda_getCurrentRawStream(device.index))
