"""Fused Triton kernels for ``y = weight * f(alpha * x + shift) + bias`` (forward and backward), both layouts.

The tensor is seen as a row-major matrix (rows × cols) without any copy:

* channels last (``B, N, C``; also a ``B, C, H, W`` tensor in ``torch.channels_last`` memory format): rows are the
  tokens / pixels, cols are the channels, so a parameter is indexed by the column;
* channels first (``B, C, H, W`` / ``B, C, L`` contiguous): rows are the (sample, channel) pairs, cols the spatial
  positions, so a parameter is indexed by ``row % C``.

Forward reads x and writes y. Backward reads x and dy once and writes dx, and accumulates the parameter gradients
(dγ, dβ, dα and the shift's) in float32 registers per program; each program writes one row of per-channel partials
of dγ and dβ and its own sums of dα and dshift, and a second small kernel adds those up. Both stages have a fixed
order, so gradients are bitwise reproducible run to run. Block shapes come from a heuristic of the shape (no
autotuning, so small tensors pay nothing per call and the partial buffers stay at most a few programs per SM).

The op is registered as the ``torch.library`` custom ops ``dyt_bench::squash_affine`` (with autograd) and
``dyt_bench::squash_affine_backward``, each with a fake implementation, so ``torch.compile`` traces through it
without a graph break; eager calls take a plain ``autograd.Function`` around the same launchers, which skips the
custom-op dispatch (it costs more host time per call than the kernels take on small tensors). Under
``torch.autocast`` it takes the input dtype as it comes (parameters may stay float32) and returns the input dtype.
With ``TRITON_INTERPRET=1`` the same kernels run on CPU tensors (used by the tests).

Inputs that are neither contiguous in either layout nor channels-last-dense are copied once with ``.contiguous()``
(documented in docs/benchmarks.md with its measured cost).
"""

from __future__ import annotations

import copy
import os

import torch
import triton
import triton.language as tl

from dyt_bench.ops.reference import ALL_FUNCTIONS, check_squash_args

FUSED_FUNCTIONS = ALL_FUNCTIONS  # tanh, hardtanh, sigmoid, identity, erf
_FN_CODE = {name: i for i, name in enumerate(FUSED_FUNCTIONS)}

# Block-shape heuristic, from the sweeps in benchmarks/ops.py on an H100 (docs/benchmarks.md): forward tiles covering
# whole token rows up to 8192 columns (wider rows: 4096-column blocks; feature maps: 2048), of 8192 elements or two
# rows, whichever is more (8 warps, 16 from 4096 columns), for token rows of more than 1024 channels, else 2048
# elements (4 warps); backward tiles of 2048 elements, channels-last with a column block dividing C (≤ 1024),
# channels-first with 256-column blocks; 4 programs per SM in the backward.
# Any knob set to a value here overrides the heuristic (None: per-layout default), for sweeps.
TUNING = {
    "fwd_tile": None,  # token rows of more than 1024 channels: max(8192, two rows) elements, else 2048
    "fwd_warps": None,  # 16 when a tile spans 4096 columns or more, 8 for the other wide tiles, else 4
    "fwd_max_cols_block": 4096,  # channels-first: 2048
    "fwd_whole_row_cols": 8192,  # token rows up to this many columns: one column block, whatever fwd_max_cols_block
    "fwd_cols_mode": "cover",
    "fwd_block_r": None,
    "fwd_block_l": None,
    "bwd_tile": 2048,
    "bwd_warps": None,  # channels-last 4, channels-first 8
    "bwd_max_cols_block": None,  # channels-last 1024, channels-first 256
    "bwd_cols_mode": None,  # channels-last divisor, channels-first cover
    "bwd_block_r": None,
    "bwd_block_l": None,
    "fwd_split_rows": False,  # tokens with C = k · 2^n (k > 1, e.g. 768): forward over a (rows · k, C / k) view
    # (contiguous tiles, parameters gathered per element): 85% of copy bandwidth at C = 768 against 88-91% for
    # whole-row tiles with masked lanes on an H100, so off by default
    "programs_per_sm": 4,
    # backward: when the compiled kernel keeps fewer than programs_per_sm programs resident per SM (registers, warps,
    # shared memory), launch that many per SM instead, so that they all run in one wave (no partial second wave)
    "bwd_fit_wave": False,
    "min_iters_per_program": 4,
    "fwd_maxnreg": None,  # registers per thread cap (ptxas), None: the compiler's choice
    "fwd_wide_maxnreg": None,  # the same for the wide tiles of token rows of 1025+ channels (wins over fwd_maxnreg)
    "bwd_maxnreg": None,
    # knobs that differ for one function, keyed by name or by (name, channels_last); they win over the ones above.
    # erf's longer arithmetic needs more registers, which cost occupancy: capped at 40 for wide forward tiles, which
    # stay at most 4096 columns wide, and at 128 for the token backward (benchmarks/ops.py --sweep-fn erf,
    # docs/benchmarks.md)
    "per_function": {
        "erf": {"fwd_wide_maxnreg": 40, "fwd_whole_row_cols": 4096, ("bwd_maxnreg", True): 128},
    },
}
_LAYOUT_DEFAULTS = {
    ("bwd_max_cols_block", True): 1024, ("bwd_max_cols_block", False): 256,
    ("bwd_cols_mode", True): "divisor", ("bwd_cols_mode", False): "cover",
    ("bwd_warps", True): 4, ("bwd_warps", False): 8,
}


def _knob(name: str, channels_last: bool, fn: str | None = None):
    own = TUNING["per_function"].get(fn, {})
    for key in ((name, channels_last), name):
        if key in own:
            return own[key]
    value = TUNING[name]
    return _LAYOUT_DEFAULTS.get((name, channels_last)) if value is None else value


_INT32_LIMIT = 2**31 - 1


def interpreting() -> bool:
    """True when Triton runs its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _patch_interpreter_scalar_index() -> None:
    """Let Triton's CPU interpreter take run-time loop bounds with NumPy >= 2.4.

    The interpreter holds scalars as one-element arrays and converts them with ``int(array)``, which NumPy 2.4
    turned into an error for arrays that are not 0-d; this re-defines only that conversion, only in the interpreter.
    """
    from triton.runtime import interpreter

    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "_dyt_bench_patched", False):
        return  # another Triton version: nothing to patch (or already patched)

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched._dyt_bench_patched = True
    interpreter._patch_lang_tensor = patched


if interpreting():
    _patch_interpreter_scalar_index()


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
    if FN == 0:
        # tanh(z) = 1 - 2 / (e^{2z} + 1): overflow-safe (e → inf gives 1, e → 0 gives -1), ~1e-7 absolute
        s = 1.0 - 2.0 * _rcp(_exp2(z * (2.0 * _LOG2E)) + 1.0)
    elif FN == 1:
        s = tl.minimum(tl.maximum(z, -1.0), 1.0)
    elif FN == 2:
        s = _rcp(1.0 + _exp2(z * -_LOG2E))
    elif FN == 3:
        s = z
    else:
        s = _erf(z)
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
    if FN == 0:
        d = 1.0 - s * s
    elif FN == 1:
        d = tl.where((z > -1.0) & (z < 1.0), 1.0, 0.0)
    elif FN == 2:
        d = s * (1.0 - s)
    elif FN == 3:
        d = tl.full(z.shape, 1.0, tl.float32)
    else:
        d = 1.1283791670955126 * _gauss(z)  # 2 / sqrt(pi)
    return d


@triton.jit
def _param_tile(P, rows, cols, rmask, cmask, L, C, INDEX: tl.constexpr, SPLIT: tl.constexpr):
    # a per-channel parameter laid over a (rows, cols) tile: INDEX 0 → channel = col (tokens), 1 → channel = row % C
    # (feature maps), 2 → channel = (row % SPLIT) · L + col (tokens whose SPLIT · L channels are split over SPLIT
    # rows): SPLIT contiguous slices of the parameter, selected per row, so no per-element gather
    if INDEX == 0:
        p = tl.load(P + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    elif INDEX == 1:
        p = tl.load(P + rows % C, mask=rmask, other=0.0).to(tl.float32)[:, None]
    else:
        part = (rows % SPLIT)[:, None]
        p = tl.zeros((rows.shape[0], cols.shape[0]), tl.float32)
        for j in tl.static_range(SPLIT):
            slice_j = tl.load(P + j * L + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
            p = tl.where(part == j, slice_j, p)
    return p


@triton.jit
def _fwd_kernel(X, Y, A, S, W, B, R, L, C,
                BLOCK_R: tl.constexpr, BLOCK_L: tl.constexpr, INDEX: tl.constexpr, FN: tl.constexpr,
                HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_S: tl.constexpr, INT64: tl.constexpr,
                EVEN: tl.constexpr, SPLIT: tl.constexpr):
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
        y = y * _param_tile(W, rows, cols, rmask, cmask, L, C, INDEX, SPLIT)
    if HAS_B:
        y = y + _param_tile(B, rows, cols, rmask, cmask, L, C, INDEX, SPLIT)
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
def _bwd_channels_last_kernel(DY, X, A, S, W, DX, PART, SCAL, R, L, ROW_PROGRAMS, ITERS,
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
def _bwd_channels_first_kernel(DY, X, A, S, W, DX, PART, SCAL, R, L, C, COL_PROGRAMS, ITERS,
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
def _finish_kernel(PART, SCAL, OUT, Q, M, C, GROUPS, N_BLOCKS, N_SCAL,
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


# ----------------------------------------------------------------------------------------------------------------
# Launching without re-binding: Triton's launcher re-derives the specialisation of every argument on each call,
# which costs more host time than these kernels take on the GPU for activations of a few million elements. The
# compiled kernel is cached here under exactly what Triton specialises on (constexpr values, tensor dtypes and 16-byte
# alignment, integers' divisibility by 16, equality to 1 and 64-bit range) and launched directly.

_COMPILED: dict[tuple, object] = {}


def _cache_key(kernel, device: torch.device, num_warps: int, maxnreg: int | None, values: list) -> tuple:
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


def _launch(kernel, grid: tuple[int, int], device: torch.device, num_warps: int, maxnreg: int | None = None,
            **args) -> None:
    values = [args[name] for name in kernel.arg_names]
    if interpreting() or device.type != "cuda":
        kernel[grid](*values, num_warps=num_warps)
        return
    key = _cache_key(kernel, device, num_warps, maxnreg, values)
    compiled = _COMPILED.get(key)
    if compiled is None:
        options = {"maxnreg": maxnreg} if maxnreg else {}
        _COMPILED[key] = kernel[grid](*values, num_warps=num_warps, **options)
        return
    compiled[(grid[0], grid[1], 1)](*values, stream=torch._C._cuda_getCurrentRawStream(device.index))


def programs_that_fit(regs_per_thread: int, num_warps: int, shared_bytes: int, regs_per_sm: int = 65536,
                      threads_per_sm: int = 2048, shared_per_sm: int = 233472, max_blocks_per_sm: int = 32) -> int:
    """Programs (thread blocks) of a kernel that one SM keeps resident at once: CUDA's occupancy arithmetic, with
    registers allocated per warp in units of 256 (8 per thread), 1 KiB of shared memory reserved per block, and the
    warp, block and shared-memory limits (defaults: an sm_90 SM)."""
    regs_per_warp = -(-max(regs_per_thread, 1) // 8) * 8 * 32
    by_regs = (regs_per_sm // regs_per_warp) // num_warps
    by_threads = threads_per_sm // (32 * num_warps)
    by_shared = shared_per_sm // (shared_bytes + 1024) if shared_bytes else max_blocks_per_sm
    return max(1, min(by_regs, by_threads, by_shared, max_blocks_per_sm))


_RESIDENT: dict[tuple, int] = {}


def _resident_programs(kernel, device: torch.device, num_warps: int, maxnreg: int | None, **args) -> int:
    """:func:`programs_that_fit` for the compiled ``kernel`` with these arguments on ``device`` (compiled, without a
    launch, when it is not yet)."""
    values = [args[name] for name in kernel.arg_names]
    key = _cache_key(kernel, device, num_warps, maxnreg, values)
    if key not in _RESIDENT:
        compiled = _COMPILED.get(key)
        if compiled is None:
            options = {"maxnreg": maxnreg} if maxnreg else {}
            compiled = _COMPILED[key] = kernel.warmup(*values, grid=(1, 1, 1), num_warps=num_warps, **options)
        compiled._init_handles()
        props = torch.cuda.get_device_properties(device)
        _RESIDENT[key] = programs_that_fit(
            compiled.n_regs, num_warps, compiled.metadata.shared,
            regs_per_sm=getattr(props, "regs_per_multiprocessor", 65536),
            threads_per_sm=props.max_threads_per_multi_processor,
            shared_per_sm=props.shared_memory_per_multiprocessor)
    return _RESIDENT[key]


# ----------------------------------------------------------------------------------------------------------------
# Shapes and launch configuration


def _cdiv(a: int, b: int) -> int:
    # not triton.cdiv: a constexpr function there, several µs of host time a call
    return -(-a // b)


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _cols_block(cols: int, cap: int, mode: str) -> int:
    """Columns per tile. ``divisor``: the largest power of two ≤ cap dividing ``cols`` when that is at least 64 (no
    masked lanes), else ``cover``: the power of two ≥ cols, capped (whole rows per tile, some lanes masked)."""
    if mode == "divisor":
        block = 1
        while block < cap and cols % (block * 2) == 0:
            block *= 2
        if block >= 64:
            return block
    return min(cap, _next_pow2(cols))


def _split_factor(channels: int) -> int:
    """k > 1 when a token's C channels can be seen as k ≤ 8 rows of C / k (C / k the largest power of two ≥ 64 and
    ≤ 1024 dividing C, C not itself a power of two, e.g. 768 = 3 × 256): whole-row tiles are then contiguous and
    unmasked; 1 otherwise."""
    if channels & (channels - 1) == 0:
        return 1
    block = 1
    while block < 1024 and channels % (block * 2) == 0:
        block *= 2
    return channels // block if block >= 64 and channels // block <= 8 else 1


_BLOCKS_CACHE: dict[tuple, tuple[int, int, int, int | None]] = {}
_BLOCKS_TUNING: dict = {}  # the TUNING the cache was filled under


def _blocks(rows: int, cols: int, stage: str, channels_last: bool, fn: str) -> tuple[int, int, int, int | None]:
    """(BLOCK_R, BLOCK_L, num_warps, maxnreg) of the ``stage`` ("fwd" or "bwd") kernel of ``fn`` for a rows × cols
    matrix; memoised (host time per call) until a knob of ``TUNING`` changes."""
    global _BLOCKS_TUNING
    if TUNING != _BLOCKS_TUNING or len(_BLOCKS_CACHE) > 4096:
        _BLOCKS_CACHE.clear()
        _BLOCKS_TUNING = copy.deepcopy(TUNING)
    key = (rows, cols, stage, channels_last, fn)
    found = _BLOCKS_CACHE.get(key)
    if found is None:
        found = _BLOCKS_CACHE[key] = _choose_blocks(rows, cols, stage, channels_last, fn)
    return found


def _choose_blocks(rows: int, cols: int, stage: str, channels_last: bool, fn: str) -> tuple[int, int, int, int | None]:
    def plain(name):
        return _knob(f"{stage}_{name}", channels_last, fn)

    cap = plain("max_cols_block")
    if stage == "fwd" and not channels_last:
        cap = min(cap, 2048)  # feature maps: 2048-column tiles, 4 warps (the wide tiles were slower there)
    if stage == "fwd" and channels_last and cols <= plain("whole_row_cols"):
        cap = max(cap, _next_pow2(cols))
    block_l = plain("block_l") or _cols_block(cols, cap, plain("cols_mode"))
    # the forward's wide column blocks of token rows (2048+: rows of 1025+ channels) take wide tiles, with their own
    # register cap where set
    wide = stage == "fwd" and channels_last and block_l >= 2048
    tile = plain("tile") or (max(8192, 2 * block_l) if wide else 2048)
    block_r = plain("block_r") or max(1, min(tile // block_l, _next_pow2(rows)))
    warps = plain("warps")
    if warps is None:  # forward default
        warps = 16 if channels_last and block_l >= 4096 else 8 if wide else 4
    maxnreg = _knob("fwd_wide_maxnreg", channels_last, fn) if wide else None
    return block_r, block_l, warps, maxnreg if maxnreg is not None else plain("maxnreg")


_SM_COUNT: dict[int, int] = {}


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 4  # the interpreter: a handful of programs keeps the partial sums exercised
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _SM_COUNT:
        _SM_COUNT[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _SM_COUNT[index]


def _matrix_view(x: torch.Tensor, channel_dim: int) -> tuple[torch.Tensor, bool, int, int, int]:
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


def _same_memory_order(t: torch.Tensor, like: torch.Tensor, dim: int) -> torch.Tensor:
    """``t`` (same shape as ``like``) with the same element order in memory as the dense tensor ``like``."""
    if t.stride() == like.stride():
        return t
    if like.is_contiguous():
        return t.contiguous()
    # ``like`` is dense with its channel dim physically last: copy t into that order
    return t.movedim(dim, -1).contiguous().movedim(-1, dim)


def _as_scalar_tensor(v, device) -> torch.Tensor:
    if isinstance(v, torch.Tensor):  # any one-element shape: the kernels read its first element, the gradient is
        return v  # reshaped to it (no view here: one autograd node less per call)
    return torch.full((), float(v), device=device, dtype=torch.float32)


def _launch_forward(x: torch.Tensor, alpha: torch.Tensor, weight, bias, shift, fn: str, channel_dim: int) -> torch.Tensor:
    xv, channels_last, rows, cols, channels = _matrix_view(x, channel_dim)
    y = torch.empty_like(xv)
    if x.numel() == 0:
        return y
    index, groups = (0 if channels_last else 1), channels
    split = _split_factor(cols) if channels_last and TUNING["fwd_split_rows"] else 1
    if split > 1:  # C = split · B channels per token: a (rows · split, B) matrix, so every tile is contiguous
        index, groups, rows, cols = 2, split, rows * split, cols // split
    block_r, block_l, warps, maxnreg = _blocks(rows, cols, "fwd", channels_last, fn)
    grid = (_cdiv(rows, block_r), _cdiv(cols, block_l))
    if grid[1] > 65535:
        raise ValueError(f"squash_affine (Triton): {cols} elements per row is beyond the grid limit; use impl='eager'")
    _launch(_fwd_kernel, grid, x.device, warps, maxnreg,
            X=xv, Y=y, A=alpha, S=shift if shift is not None else alpha, W=weight if weight is not None else xv,
            B=bias if bias is not None else xv, R=rows, L=cols, C=groups,
            BLOCK_R=block_r, BLOCK_L=block_l, INDEX=index, FN=_FN_CODE[fn],
            HAS_W=weight is not None, HAS_B=bias is not None, HAS_S=shift is not None,
            INT64=x.numel() > _INT32_LIMIT, EVEN=(rows % block_r == 0 and cols % block_l == 0), SPLIT=split)
    return y


def _launch_backward(dy, x, alpha, weight, shift, fn, channel_dim, need_dx, need_dw, need_db, need_da, need_ds):
    """Returns dx (or an empty tensor) and a float32 tensor of 2 · C + 2 values: dγ (C), dβ (C), dα, dshift."""
    xv, channels_last, rows, cols, channels = _matrix_view(x, channel_dim)
    dy = _same_memory_order(dy, xv, channel_dim % x.dim())
    dx = torch.empty_like(xv) if need_dx else xv.new_empty(0)
    if x.numel() == 0:
        return dx, torch.zeros(2 * channels + 2, device=x.device, dtype=torch.float32)
    block_r, block_l, warps, maxnreg = _blocks(rows, cols, "bwd", channels_last, fn)
    per_sm = _knob("programs_per_sm", channels_last, fn)
    min_iters = TUNING["min_iters_per_program"]
    flags = dict(BLOCK_R=block_r, BLOCK_L=block_l, FN=_FN_CODE[fn], HAS_W=weight is not None, HAS_S=shift is not None,
                 NEED_DX=need_dx, NEED_DW=need_dw, NEED_DB=need_db, NEED_DA=need_da, NEED_DS=need_ds,
                 INT64=x.numel() > _INT32_LIMIT)
    tensors = dict(DY=dy, X=xv, A=alpha, S=shift if shift is not None else alpha,
                   W=weight if weight is not None else xv, DX=dx if need_dx else xv)
    row_blocks, col_blocks = _cdiv(rows, block_r), _cdiv(cols, block_l)
    # channels-last: programs over row blocks, one grid column per column block; channels-first: the reverse
    kernel, spread, across = ((_bwd_channels_last_kernel, row_blocks, col_blocks) if channels_last else
                              (_bwd_channels_first_kernel, col_blocks, row_blocks))

    def plan(target: int, fit: bool) -> tuple[int, dict]:
        # ``fit``: no more programs than ``target`` in all (one wave); else at least ``target``
        per_line = target // across if fit else _cdiv(target, across)
        programs = max(1, min(spread, per_line, _cdiv(spread, min_iters), 65535))
        dims = dict(R=rows, L=cols, ITERS=_cdiv(spread, programs))
        if channels_last:
            dims["ROW_PROGRAMS"] = programs
        else:
            dims.update(C=channels, COL_PROGRAMS=programs)
        return programs, dims

    programs, dims = plan(_sm_count(x.device) * per_sm, False)
    if _knob("bwd_fit_wave", channels_last, fn) and x.is_cuda and not interpreting():
        probe = dict(tensors, PART=xv.new_empty(1, dtype=torch.float32), SCAL=xv.new_empty(1, dtype=torch.float32),
                     **dims, **flags)
        resident = _resident_programs(kernel, x.device, warps, maxnreg, **probe)
        if resident < per_sm:  # the programs would not all be resident: one full wave instead
            programs, dims = plan(_sm_count(x.device) * resident, True)
    # one buffer: P × 2 × M partials of dγ, dβ (M = cols for tokens, rows for feature maps), then (dα, dshift) per
    # program of the first stage
    width = cols if channels_last else rows
    n_scal = programs * across
    buffer = torch.empty(programs * 2 * width + 2 * n_scal, device=x.device, dtype=torch.float32)
    part, scal = buffer[:programs * 2 * width], buffer[programs * 2 * width:]
    grid = (programs, col_blocks) if channels_last else (row_blocks, programs)
    _launch(kernel, grid, x.device, warps, maxnreg, PART=part, SCAL=scal, **tensors, **dims, **flags)
    out = torch.empty(2 * channels + 2, device=x.device, dtype=torch.float32)
    groups = 1 if channels_last else rows // channels
    q = programs * groups
    block_c = min(_FINISH_BLOCK_C, _next_pow2(channels))
    n_blocks = _cdiv(channels, block_c)
    _launch(_finish_kernel, (n_blocks + 1, 2), x.device, 4, None, PART=part, SCAL=scal, OUT=out, Q=q, M=width,
            C=channels, GROUPS=groups, N_BLOCKS=n_blocks, N_SCAL=n_scal,
            BLOCK_Q=min(_next_pow2(q), _FINISH_TILE // block_c), BLOCK_C=block_c, BLOCK_S=_FINISH_TILE,
            NEED_DW=need_dw, NEED_DB=need_db, NEED_DA=need_da, NEED_DS=need_ds)
    return dx, out


_FINISH_BLOCK_C = 32  # channels per program of the second stage
_FINISH_TILE = 8192  # partials a program of the second stage loads at once


# ----------------------------------------------------------------------------------------------------------------
# torch.library registration


@torch.library.custom_op("dyt_bench::squash_affine", mutates_args=())
def _squash_affine_op(x: torch.Tensor, alpha: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                      shift: torch.Tensor | None, fn: str, channel_dim: int) -> torch.Tensor:
    return _launch_forward(x, alpha, weight, bias, shift, fn, channel_dim)


@_squash_affine_op.register_fake
def _(x, alpha, weight, bias, shift, fn, channel_dim):
    xv, *_ = _matrix_view_meta(x, channel_dim)
    return torch.empty_like(xv)


def _matrix_view_meta(x: torch.Tensor, channel_dim: int):
    dim = channel_dim % x.dim()
    if dim == x.dim() - 1 or x.movedim(dim, -1).is_contiguous() or x.is_contiguous():
        return (x,)
    return (x.contiguous(),)


@torch.library.custom_op("dyt_bench::squash_affine_backward", mutates_args=())
def _squash_affine_backward_op(dy: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, weight: torch.Tensor | None,
                               shift: torch.Tensor | None, fn: str, channel_dim: int, need_dx: bool, need_dw: bool,
                               need_db: bool, need_da: bool, need_ds: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return _launch_backward(dy, x, alpha, weight, shift, fn, channel_dim, need_dx, need_dw, need_db, need_da, need_ds)


@_squash_affine_backward_op.register_fake
def _(dy, x, alpha, weight, shift, fn, channel_dim, need_dx, need_dw, need_db, need_da, need_ds):
    (xv,) = _matrix_view_meta(x, channel_dim)
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
        return _launch_forward(x, alpha, weight, bias, shift, fn, channel_dim)

    @staticmethod
    def backward(ctx, dy):
        return _backward(ctx, dy, launch=_launch_backward)


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
    if fn not in _FN_CODE:
        raise ValueError(f"fn must be one of {FUSED_FUNCTIONS}, got {fn!r}")
    if not x.is_cuda and not interpreting():
        raise RuntimeError("the Triton squash-affine kernels need CUDA tensors (or TRITON_INTERPRET=1 on CPU); "
                           "use impl='eager' or impl='auto'")
    if x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"the Triton squash-affine kernels take float32, bfloat16 or float16 input, got {x.dtype}")
    alpha_t = _as_scalar_tensor(alpha, x.device)
    shift_t = _as_scalar_tensor(shift, x.device) if shift is not None else None
    channel_dim = channel_dim % x.dim()
    if torch.compiler.is_compiling():
        return _squash_affine_op(x, alpha_t, weight, bias, shift_t, fn, channel_dim)
    return _SquashAffineFunction.apply(x, alpha_t, weight, bias, shift_t, fn, channel_dim)
