"""The kernels' block-shape heuristic: a pure function of the matrix shape, stage, layout, function, SM count and
device kind.

No autotuning, so a small tensor pays nothing per call and the backward's partial buffers stay a few programs per SM.
The rules and constants come from the sweeps of ``benchmarks/ops.py`` on an H100 (docs/benchmarks.md), with a table
of per-device changes (:data:`DEVICE_TUNING`); the sweeps pass :class:`Overrides` instead of editing them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

# Forward. Token rows up to FWD_WHOLE_ROW_COLS columns are covered by one column block (masked up to the next power of
# two); wider rows take FWD_MAX_COLS_BLOCK-column blocks, feature maps at most FWD_MAP_MAX_COLS_BLOCK (the wide tiles
# were slower there). A token column block of FWD_WIDE_COLS columns or more (rows of 1025+ channels) is "wide": tiles
# of max(FWD_WIDE_TILE elements, two rows) on FWD_WIDE_WARPS warps (FWD_WIDEST_WARPS from FWD_WIDEST_COLS columns);
# every other tile holds FWD_TILE elements (``fwd_narrow_tile``) on FWD_WARPS warps.
FWD_TILE = 2048
FWD_WARPS = 4
FWD_MAX_COLS_BLOCK = 4096
FWD_WHOLE_ROW_COLS = 8192
FWD_MAP_MAX_COLS_BLOCK = 2048
FWD_WIDE_COLS = 2048
FWD_WIDE_TILE = 8192
FWD_WIDE_WARPS = 8
FWD_WIDEST_COLS = 4096
FWD_WIDEST_WARPS = 16

# Backward: tiles of BWD_TILE elements; tokens with a column block dividing C (at most 1024 columns, masked cover
# when no power of two ≥ DIVISOR_MIN_COLS divides C) on 4 warps, feature maps with 256-column blocks on 8 warps
# (``bwd_long_map_max_cols_block`` for maps of BWD_LONG_MAP_COLS positions or more, where a device's tuning sets it).
BWD_TILE = 2048
BWD_TOKEN_MAX_COLS_BLOCK = 1024
BWD_TOKEN_WARPS = 4
BWD_MAP_MAX_COLS_BLOCK = 256
BWD_LONG_MAP_COLS = 8192
BWD_MAP_WARPS = 8
DIVISOR_MIN_COLS = 64

# Backward programs: PROGRAMS_PER_SM per SM in all, each looping over at least MIN_ITERS_PER_PROGRAM tiles when the
# matrix is long enough; MAX_GRID_DIM is CUDA's limit on a grid's second dimension (and the cap used for the first).
PROGRAMS_PER_SM = 4
MIN_ITERS_PER_PROGRAM = 4
MAX_GRID_DIM = 65535

# The backward's second stage: FINISH_BLOCK_C channels per program, FINISH_TILE partials loaded at once.
FINISH_BLOCK_C = 32
FINISH_TILE = 8192


@dataclass(frozen=True)
class Overrides:
    """Values that replace the heuristic's, for sweeps; ``None`` keeps the heuristic's choice.

    ``*_tile``: elements per tile; ``*_max_cols_block``: the cap on a column block; ``*_cols_mode``: ``"cover"`` (the
    power of two ≥ cols, capped) or ``"divisor"`` (the largest power of two ≤ the cap dividing cols);
    ``*_block_r`` / ``*_block_l``: the tile's rows / columns outright; ``*_maxnreg``: registers per thread (ptxas);
    ``fwd_wide_maxnreg``: the same for the forward's wide token tiles only (wins over ``fwd_maxnreg`` there);
    ``fwd_narrow_tile``: elements per forward tile where the tile is not a wide token tile (``fwd_tile`` sets both);
    ``bwd_long_map_max_cols_block``: the backward's column-block cap on feature maps of ``BWD_LONG_MAP_COLS``
    positions or more (``bwd_max_cols_block`` sets every cap).
    """

    fwd_tile: int | None = None
    fwd_warps: int | None = None
    fwd_max_cols_block: int | None = None
    fwd_whole_row_cols: int | None = None
    fwd_cols_mode: str | None = None
    fwd_block_r: int | None = None
    fwd_block_l: int | None = None
    fwd_maxnreg: int | None = None
    fwd_wide_maxnreg: int | None = None
    fwd_narrow_tile: int | None = None
    bwd_tile: int | None = None
    bwd_warps: int | None = None
    bwd_max_cols_block: int | None = None
    bwd_cols_mode: str | None = None
    bwd_block_r: int | None = None
    bwd_block_l: int | None = None
    bwd_maxnreg: int | None = None
    programs_per_sm: int | None = None
    min_iters_per_program: int | None = None
    bwd_long_map_max_cols_block: int | None = None


NO_OVERRIDES = Overrides()

# A function's own tuning, by (function, channels last), applied when no Overrides are given. erf's longer arithmetic
# needs more registers, which cost occupancy: token rows' wide forward tiles capped at 40 registers and kept at most
# 4096 columns wide, the token backward capped at 128 (benchmarks/ops.py --sweep-fn erf, docs/benchmarks.md).
FUNCTION_TUNING: MappingProxyType[tuple[str, bool], Overrides] = MappingProxyType({
    ("erf", True): Overrides(fwd_wide_maxnreg=40, fwd_whole_row_cols=4096, bwd_maxnreg=128),
})


# A device's own tuning, by device kind (``launch.device_kind``: a marker in the CUDA device's name), under every
# function's own tuning; a device of no listed kind takes the constants above (swept on an H100). The H200 entry comes
# from ``benchmarks/ops.py --only none --sweep-device`` on an H200 (docs/benchmarks.md, "Per-device tuning"): forward
# tiles of 4096 elements where they are not wide token tiles (50432×768 bf16: 79.9 → 82.9 % of the floor), and 512-
# column backward blocks on long feature maps (64×96×112×112 bf16: 77.7 → 86.2 %; at 56×56 the 256 blocks stay).
DEFAULT_DEVICE = "default"
DEVICE_NAMES: MappingProxyType[str, str] = MappingProxyType({"h200": "H200", "h100": "H100"})
DEVICE_TUNING: MappingProxyType[str, Overrides] = MappingProxyType({
    "h100": NO_OVERRIDES,
    "h200": Overrides(fwd_narrow_tile=4096, bwd_long_map_max_cols_block=512),
})


def kind_of_device(name: str) -> str:
    """The :data:`DEVICE_TUNING` kind of a CUDA device by its name (``torch.cuda.get_device_name``)."""
    return next((kind for kind, marker in DEVICE_NAMES.items() if marker in name), DEFAULT_DEVICE)


def merge(base: Overrides, top: Overrides) -> Overrides:
    """``top``'s values where it sets them, ``base``'s elsewhere."""
    return Overrides(**{name: _given(getattr(top, name), getattr(base, name)) for name in Overrides.__dataclass_fields__})


def tuning(fn: str, channels_last: bool, device_kind: str = DEFAULT_DEVICE) -> Overrides:
    """The knobs that apply without overrides: ``device_kind``'s tuning under ``fn``'s own (which wins)."""
    own = FUNCTION_TUNING.get((fn, channels_last), NO_OVERRIDES)
    device = DEVICE_TUNING.get(device_kind, NO_OVERRIDES)
    return own if device is NO_OVERRIDES else merge(device, own)


class Blocks(NamedTuple):
    """One launch's shape: the tile (``block_r`` × ``block_l``), its warps, the register cap (None: the compiler's
    choice) and, for the backward, the programs along the dimension each program loops over (None for the forward)."""

    block_r: int
    block_l: int
    num_warps: int
    maxnreg: int | None
    programs: int | None = None


def cdiv(a: int, b: int) -> int:
    # not triton.cdiv: a constexpr function there, several µs of host time a call
    return -(-a // b)


def next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def cols_block(cols: int, cap: int, mode: str) -> int:
    """Columns per tile. ``divisor``: the largest power of two ≤ cap dividing ``cols`` when that is at least
    DIVISOR_MIN_COLS (no masked lanes), else ``cover``: the power of two ≥ cols, capped (whole rows per tile, some lanes
    masked)."""
    if mode == "divisor":
        block = 1
        while block < cap and cols % (block * 2) == 0:
            block *= 2
        if block >= DIVISOR_MIN_COLS:
            return block
    return min(cap, next_pow2(cols))


def _given(value, default):
    return default if value is None else value


@functools.lru_cache(maxsize=4096)
def choose_blocks(rows: int, cols: int, stage: str, channels_last: bool, fn: str, sm_count: int,
                  overrides: Overrides | None = None, device_kind: str = DEFAULT_DEVICE) -> Blocks:
    """The :class:`Blocks` of the ``stage`` (``"fwd"`` or ``"bwd"``) kernel of ``fn`` for a rows × cols matrix
    (``channels_last``: parameters indexed by column, else by row) on a device of ``sm_count`` SMs.

    ``overrides`` replace the heuristic's values they set and leave ``fn``'s own tuning out (a sweep sees exactly
    what it sets); without them, ``fn``'s entry of :data:`FUNCTION_TUNING` applies over ``device_kind``'s entry of
    :data:`DEVICE_TUNING`. Memoised: host time per call.
    """
    knobs = overrides if overrides is not None else tuning(fn, channels_last, device_kind)
    if stage == "fwd":
        return _forward_blocks(rows, cols, channels_last, knobs)
    if stage == "bwd":
        return _backward_blocks(rows, cols, channels_last, sm_count, knobs)
    raise ValueError(f"stage must be 'fwd' or 'bwd'; got {stage!r}")


def _forward_blocks(rows: int, cols: int, channels_last: bool, knobs: Overrides) -> Blocks:
    cap = _given(knobs.fwd_max_cols_block, FWD_MAX_COLS_BLOCK)
    if not channels_last:
        cap = min(cap, FWD_MAP_MAX_COLS_BLOCK)
    elif cols <= _given(knobs.fwd_whole_row_cols, FWD_WHOLE_ROW_COLS):
        cap = max(cap, next_pow2(cols))
    block_l = knobs.fwd_block_l or cols_block(cols, cap, _given(knobs.fwd_cols_mode, "cover"))
    wide = channels_last and block_l >= FWD_WIDE_COLS
    tile = knobs.fwd_tile or (max(FWD_WIDE_TILE, 2 * block_l) if wide else _given(knobs.fwd_narrow_tile, FWD_TILE))
    block_r = knobs.fwd_block_r or max(1, min(tile // block_l, next_pow2(rows)))
    warps = knobs.fwd_warps
    if warps is None:
        widest = channels_last and block_l >= FWD_WIDEST_COLS
        warps = FWD_WIDEST_WARPS if widest else FWD_WIDE_WARPS if wide else FWD_WARPS
    maxnreg = knobs.fwd_wide_maxnreg if wide and knobs.fwd_wide_maxnreg is not None else knobs.fwd_maxnreg
    return Blocks(block_r, block_l, warps, maxnreg)


def _backward_blocks(rows: int, cols: int, channels_last: bool, sm_count: int, knobs: Overrides) -> Blocks:
    if channels_last:
        cap, mode, warps = BWD_TOKEN_MAX_COLS_BLOCK, "divisor", BWD_TOKEN_WARPS
    else:
        cap, mode, warps = BWD_MAP_MAX_COLS_BLOCK, "cover", BWD_MAP_WARPS
        if cols >= BWD_LONG_MAP_COLS:
            cap = _given(knobs.bwd_long_map_max_cols_block, cap)
    cap, mode, warps = (_given(knobs.bwd_max_cols_block, cap), _given(knobs.bwd_cols_mode, mode),
                        _given(knobs.bwd_warps, warps))
    block_l = knobs.bwd_block_l or cols_block(cols, cap, mode)
    tile = knobs.bwd_tile or BWD_TILE
    block_r = knobs.bwd_block_r or max(1, min(tile // block_l, next_pow2(rows)))
    # tokens: programs over row blocks, one grid column per column block; feature maps: the reverse
    row_blocks, col_blocks = cdiv(rows, block_r), cdiv(cols, block_l)
    spread, across = (row_blocks, col_blocks) if channels_last else (col_blocks, row_blocks)
    target = sm_count * _given(knobs.programs_per_sm, PROGRAMS_PER_SM)
    min_iters = _given(knobs.min_iters_per_program, MIN_ITERS_PER_PROGRAM)
    programs = max(1, min(spread, cdiv(target, across), cdiv(spread, min_iters), MAX_GRID_DIM))
    return Blocks(block_r, block_l, warps, knobs.bwd_maxnreg, programs)


def finish_blocks(channels: int, partial_rows: int) -> tuple[int, int, int]:
    """(BLOCK_C, BLOCK_Q, BLOCK_S) of the second stage: channels per program, partial rows per load, scalar partials
    per load, for ``partial_rows`` rows of per-channel partials."""
    block_c = min(FINISH_BLOCK_C, next_pow2(channels))
    return block_c, min(next_pow2(partial_rows), FINISH_TILE // block_c), FINISH_TILE
