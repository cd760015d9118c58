"""The fused squash-affine kernels (``@triton.jit`` functions only): forward, the two backward layouts, and the second
stage that adds up the backward's per-program partial sums. Launch and block shapes: ``launch.py``, ``blocks.py``.

A tensor is seen as a row-major matrix (rows × cols) without any copy: channels last, a parameter is indexed by the
column (``INDEX`` 0); channels first (``B, C, H, W`` / ``B, C, L`` contiguous), by ``row % C`` (``INDEX`` 1).
``FN`` selects the squash function: its value is the function's ``kernel_code`` in ``ops/functions.py``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from dyt_bench.ops.functions import FUNCTIONS
from dyt_bench.ops.triton.interpreter import interpreting

# The value of FN for each function's branch in `_squash` / `_squash_grad`.
_TANH = tl.constexpr(FUNCTIONS["tanh"].kernel_code)
_HARDTANH = tl.constexpr(FUNCTIONS["hardtanh"].kernel_code)
_SIGMOID = tl.constexpr(FUNCTIONS["sigmoid"].kernel_code)
_IDENTITY = tl.constexpr(FUNCTIONS["identity"].kernel_code)
_ERF = tl.constexpr(FUNCTIONS["erf"].kernel_code)
_SOFTSIGN = tl.constexpr(FUNCTIONS["softsign"].kernel_code)

# The transcendental pieces, as single special-function-unit instructions with denormals flushed to zero. Triton's
# `1.0 / x` and `tl.exp` add range checks and predicated rescaling around each one (three to four extra instructions
# an element), which left erf and the backward's recomputation issue-bound at bf16 on an H100 (docs/benchmarks.md).
# Flushing is harmless here: every reciprocal is of a value ≥ 1 (or inf, giving 0) and an exponential that underflows
# only ever multiplies a quantity that is then subtracted from 1. The interpreter (and ROCm) use the plain forms.
_PTX = not interpreting() and getattr(torch.version, "hip", None) is None

if _PTX:
    @triton.jit
    def _rcp(x):
        return tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True,
                                         pack=1)

    @triton.jit
    def _exp2(x):
        return tl.inline_asm_elementwise("ex2.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True,
                                         pack=1)
else:
    @triton.jit
    def _rcp(x):
        return 1.0 / x

    @triton.jit
    def _exp2(x):
        return tl.exp2(x)


_LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def _squash(z, FN: tl.constexpr):
    if FN == _TANH:
        # tanh(z) = 1 - 2 / (e^{2z} + 1): overflow-safe (e → inf gives 1, e → 0 gives -1), ~1e-7 absolute
        s = 1.0 - 2.0 * _rcp(_exp2(z * (2.0 * _LOG2E)) + 1.0)
    elif FN == _HARDTANH:
        s = tl.minimum(tl.maximum(z, -1.0), 1.0)
    elif FN == _SIGMOID:
        s = _rcp(1.0 + _exp2(z * -_LOG2E))
    elif FN == _IDENTITY:
        s = z
    elif FN == _ERF:
        s = _erf(z)
    elif FN == _SOFTSIGN:
        s = z * _rcp(1.0 + tl.abs(z))
    else:
        tl.static_assert(False, "no kernel branch for this FN (ops/functions.py kernel_code)")
    return s


@triton.jit
def _gauss(z):
    # exp(-z²), shared by erf and its derivative (the same pure expression, so computed once after inlining)
    return _exp2(z * z * -_LOG2E)


@triton.jit
def _erf(z):
    # Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5e-7): one reciprocal and one exponential, against libdevice's
    # longer erff, which made Derf compute-bound
    a = tl.abs(z)
    t = _rcp(1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    r = 1.0 - poly * _gauss(z)
    return tl.where(z < 0, -r, r)


@triton.jit
def _squash_grad(z, s, FN: tl.constexpr):
    # d f / d z from z and s = f(z); hardtanh's slope is 0 at the kinks, as torch's hardtanh_backward
    if FN == _TANH:
        d = 1.0 - s * s
    elif FN == _HARDTANH:
        d = tl.where((z > -1.0) & (z < 1.0), 1.0, 0.0)
    elif FN == _SIGMOID:
        d = s * (1.0 - s)
    elif FN == _IDENTITY:
        d = tl.full(z.shape, 1.0, tl.float32)
    elif FN == _ERF:
        d = 1.1283791670955126 * _gauss(z)  # 2 / sqrt(pi)
    elif FN == _SOFTSIGN:
        r = _rcp(1.0 + tl.abs(z))  # the forward's reciprocal: the same pure expression, shared after inlining
        d = r * r
    else:
        tl.static_assert(False, "no kernel branch for this FN (ops/functions.py kernel_code)")
    return d


@triton.jit
def _param_tile(P, rows, cols, rmask, cmask, C, INDEX: tl.constexpr):
    # a per-channel parameter laid over a (rows, cols) tile: INDEX 0 → channel = col (tokens), 1 → channel = row % C
    # (feature maps)
    if INDEX == 0:
        p = tl.load(P + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    else:
        p = tl.load(P + rows % C, mask=rmask, other=0.0).to(tl.float32)[:, None]
    return p


@triton.jit
def fwd_kernel(X, Y, A, S, W, B, R, L, C,
               BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr, INDEX: tl.constexpr, FN: tl.constexpr,
               HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_S: tl.constexpr, INT64: tl.constexpr,
               EVEN: tl.constexpr):
    pid_r = tl.program_id(0)
    pid_l = tl.program_id(1)
    if INT64:
        pid_r = pid_r.to(tl.int64)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    offs = rows[:, None] * L + cols[None, :]
    rmask = rows < R
    cmask = cols < L
    mask = rmask[:, None] & cmask[None, :]
    if EVEN:
        x = tl.load(X + offs).to(tl.float32)
    else:
        x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    z = tl.load(A).to(tl.float32) * x
    if HAS_S:
        z += tl.load(S).to(tl.float32)
    y = _squash(z, FN)
    if HAS_W:
        y = y * _param_tile(W, rows, cols, rmask, cmask, C, INDEX)
    if HAS_B:
        y = y + _param_tile(B, rows, cols, rmask, cmask, C, INDEX)
    if EVEN:
        tl.store(Y + offs, y.to(Y.dtype.element_ty))
    else:
        tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_tile(DY, X, DX, offs, mask, a, shift, w, FN: tl.constexpr, HAS_S: tl.constexpr, NEED_DX: tl.constexpr):
    # one tile of the backward pass: stores dx and returns (dy * f(z), dy, dL/dz * x, dL/dz) for the parameter
    # accumulators; masked-out elements load dy = 0, so they add nothing
    x = tl.load(X + offs, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
    z = a * x
    if HAS_S:
        z += shift
    s = _squash(z, FN)
    dz = dy * w * _squash_grad(z, s, FN)
    if NEED_DX:
        tl.store(DX + offs, (dz * a).to(DX.dtype.element_ty), mask=mask)
    return dy * s, dy, dz * x, dz


@triton.jit
def bwd_channels_last_kernel(DY, X, A, S, W, DX, PART, SCAL, R, L, ROW_PROGRAMS, ITERS,
                             BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr, FN: tl.constexpr, HAS_W: tl.constexpr,
                             HAS_S: tl.constexpr, NEED_DX: tl.constexpr, NEED_DW: tl.constexpr,
                             NEED_DB: tl.constexpr, NEED_DA: tl.constexpr, NEED_DS: tl.constexpr,
                             INT64: tl.constexpr):
    # program (p, j): columns block j, rows blocks p, p + ROW_PROGRAMS, ... (ITERS of them, the last ones may lie past
    # the end and are masked out); partials PART[p, k, col] for k = dγ, dβ, and the program's sums of dα and dshift
    # in SCAL
    pid_r = tl.program_id(0)
    pid_l = tl.program_id(1)
    cols = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    cmask = cols < L
    a = tl.load(A).to(tl.float32)
    shift = 0.0
    if HAS_S:
        shift = tl.load(S).to(tl.float32)
    if HAS_W:
        w = tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    else:
        w = tl.full((1, BLOCK_L), 1.0, tl.float32)
    acc_dw = tl.zeros((BLOCK_R, BLOCK_L), tl.float32)
    acc_db = tl.zeros((BLOCK_R, BLOCK_L), tl.float32)
    acc_da = tl.zeros((BLOCK_R, BLOCK_L), tl.float32)
    acc_ds = tl.zeros((BLOCK_R, BLOCK_L), tl.float32)
    for it in range(0, ITERS):
        block = pid_r + it * ROW_PROGRAMS
        if INT64:
            block = block.to(tl.int64)
        rows = block * BLOCK_R + tl.arange(0, BLOCK_R)
        offs = rows[:, None] * L + cols[None, :]
        mask = (rows < R)[:, None] & cmask[None, :]
        gw, gb, ga, gs = _bwd_tile(DY, X, DX, offs, mask, a, shift, w, FN, HAS_S, NEED_DX)
        if NEED_DW:
            acc_dw += gw
        if NEED_DB:
            acc_db += gb
        if NEED_DA:
            acc_da += ga
        if NEED_DS:
            acc_ds += gs
    base = PART + pid_r.to(tl.int64) * 2 * L + cols
    if NEED_DW:
        tl.store(base, tl.sum(acc_dw, axis=0), mask=cmask)
    if NEED_DB:
        tl.store(base + L, tl.sum(acc_db, axis=0), mask=cmask)
    program = pid_r.to(tl.int64) * tl.cdiv(L, BLOCK_L) + pid_l
    if NEED_DA:
        tl.store(SCAL + 2 * program, tl.sum(tl.sum(acc_da, axis=1), axis=0))
    if NEED_DS:
        tl.store(SCAL + 2 * program + 1, tl.sum(tl.sum(acc_ds, axis=1), axis=0))


@triton.jit
def bwd_channels_first_kernel(DY, X, A, S, W, DX, PART, SCAL, R, L, C, COL_PROGRAMS, ITERS,
                              BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr, FN: tl.constexpr, HAS_W: tl.constexpr,
                              HAS_S: tl.constexpr, NEED_DX: tl.constexpr, NEED_DW: tl.constexpr,
                              NEED_DB: tl.constexpr, NEED_DA: tl.constexpr, NEED_DS: tl.constexpr,
                              INT64: tl.constexpr):
    # program (i, g): rows block i, column blocks g, g + COL_PROGRAMS, ... (ITERS of them); partials PART[g, k, row]
    # with k = dγ, dβ, and the program's sums of dα and dshift in SCAL
    pid_r = tl.program_id(0)
    pid_g = tl.program_id(1)
    if INT64:
        pid_r = pid_r.to(tl.int64)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rows < R
    a = tl.load(A).to(tl.float32)
    shift = 0.0
    if HAS_S:
        shift = tl.load(S).to(tl.float32)
    if HAS_W:
        w = tl.load(W + rows % C, mask=rmask, other=0.0).to(tl.float32)[:, None]
    else:
        w = tl.full((BLOCK_R, 1), 1.0, tl.float32)
    acc_dw = tl.zeros((BLOCK_R, BLOCK_L), tl.float32)
    acc_db = tl.zeros((BLOCK_R, BLOCK_L), tl.float32)
    acc_da = tl.zeros((BLOCK_R, BLOCK_L), tl.float32)
    acc_ds = tl.zeros((BLOCK_R, BLOCK_L), tl.float32)
    for it in range(0, ITERS):
        cols = (pid_g + it * COL_PROGRAMS) * BLOCK_L + tl.arange(0, BLOCK_L)
        offs = rows[:, None] * L + cols[None, :]
        mask = rmask[:, None] & (cols < L)[None, :]
        gw, gb, ga, gs = _bwd_tile(DY, X, DX, offs, mask, a, shift, w, FN, HAS_S, NEED_DX)
        if NEED_DW:
            acc_dw += gw
        if NEED_DB:
            acc_db += gb
        if NEED_DA:
            acc_da += ga
        if NEED_DS:
            acc_ds += gs
    base = PART + pid_g.to(tl.int64) * 2 * R + rows
    if NEED_DW:
        tl.store(base, tl.sum(acc_dw, axis=1), mask=rmask)
    if NEED_DB:
        tl.store(base + R, tl.sum(acc_db, axis=1), mask=rmask)
    program = pid_r * COL_PROGRAMS + pid_g
    if NEED_DA:
        tl.store(SCAL + 2 * program, tl.sum(tl.sum(acc_da, axis=1), axis=0))
    if NEED_DS:
        tl.store(SCAL + 2 * program + 1, tl.sum(tl.sum(acc_ds, axis=1), axis=0))


@triton.jit
def _finish_channels(PART, OUT, k, pid_c, Q, M, C, GROUPS, BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr):
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    acc = tl.zeros((BLOCK_Q, BLOCK_C), tl.float32)
    for q0 in range(0, Q, BLOCK_Q):
        q = q0 + tl.arange(0, BLOCK_Q)
        p = q // GROUPS
        g = q - p * GROUPS
        offs = (p.to(tl.int64) * 2 + k) * M + g * C
        acc += tl.load(PART + offs[:, None] + cols[None, :], mask=(q < Q)[:, None] & cmask[None, :], other=0.0)
    tl.store(OUT + k * C + cols, tl.sum(acc, axis=0), mask=cmask)


@triton.jit
def _finish_scalars(SCAL, OUT, k, C, N_SCAL, BLOCK_S: tl.constexpr):
    acc = tl.zeros((BLOCK_S,), tl.float32)
    for i0 in range(0, N_SCAL, BLOCK_S):
        i = i0 + tl.arange(0, BLOCK_S)
        acc += tl.load(SCAL + 2 * i.to(tl.int64) + k, mask=i < N_SCAL, other=0.0)
    tl.store(OUT + 2 * C + k, tl.sum(acc, axis=0))


@triton.jit
def finish_kernel(PART, SCAL, OUT, Q, M, C, GROUPS, N_BLOCKS, N_SCAL,
                  BLOCK_Q: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
                  NEED_DW: tl.constexpr, NEED_DB: tl.constexpr, NEED_DA: tl.constexpr, NEED_DS: tl.constexpr):
    # the second stage of the parameter gradients, in a fixed order. PART holds P × 2 × M partials of dγ (k = 0) and
    # dβ (k = 1), the channel of column m being m % C (M = GROUPS · C; Q = P · GROUPS); SCAL holds N_SCAL pairs
    # (dα, dshift), one per program of the first stage. Program (j < N_BLOCKS, k): OUT[k · C + c] for channels block j;
    # program (N_BLOCKS, k): OUT[2 · C + k], the sum of the k-th scalars
    pid_c = tl.program_id(0)
    k = tl.program_id(1)
    if pid_c < N_BLOCKS:
        if k == 0:
            if NEED_DW:
                _finish_channels(PART, OUT, k, pid_c, Q, M, C, GROUPS, BLOCK_Q, BLOCK_C)
        else:
            if NEED_DB:
                _finish_channels(PART, OUT, k, pid_c, Q, M, C, GROUPS, BLOCK_Q, BLOCK_C)
    else:
        if k == 0:
            if NEED_DA:
                _finish_scalars(SCAL, OUT, k, C, N_SCAL, BLOCK_S)
        else:
            if NEED_DS:
                _finish_scalars(SCAL, OUT, k, C, N_SCAL, BLOCK_S)
