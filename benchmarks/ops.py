"""Squash-affine op benchmark: the fused Triton kernels against eager PyTorch, torch.compile, Liger-Kernel's DyT and
the statistics norms (LayerNorm, RMSNorm), as times, GB/s and % of the memory floor, all in one run.

    python benchmarks/ops.py                       # the full table set (needs CUDA)
    python benchmarks/ops.py --quick               # fewer repetitions
    python benchmarks/ops.py --sweep               # also sweep the block-shape heuristic (Overrides)
    python benchmarks/ops.py --only none --sweep-fn erf   # one function's own tuning, against tanh
    python benchmarks/ops.py --only none --sweep-fn erf --sweep-stages bwd --sweep-shapes 65536x1536,50432x768
    python benchmarks/ops.py --json out.json       # also write every row
    python benchmarks/ops.py --only none --host    # host time per call: DyT (auto, eager, Liger) against LayerNorm
    python benchmarks/ops.py --only none --sweep-device   # this device's own knobs (DEVICE_TUNING)

Floor: the time to move the bytes the op must move at the device-to-device copy bandwidth measured in this run
(forward: read x, write y; forward + backward: 5 passes — read x, write y, read x and dy, write dx). Times are GPU
times, the median over replays of a CUDA graph holding one call (forward; or forward then ``backward`` with a fixed
upstream gradient, parameter gradients included), so host launch and autograd-engine time are left out, as they are
hidden in a model where other layers keep the GPU busy. The "eager launch" column is the same forward + backward
launched from Python (median of ``triton.testing.do_bench``), host time included.
Every DyT implementation is checked against float64 math on (the leading rows of) the same inputs before it is timed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__file__), ".."))

from dyt_bench.ops import ALL_FUNCTIONS, squash_affine_reference  # noqa: E402
from dyt_bench.ops.triton.blocks import Overrides  # noqa: E402 (pure Python: imports without Triton)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
TOKEN_SHAPES = [((32768, 4096), "bf16"), ((16384, 8192), "bf16"), ((50432, 768), "bf16"), ((50432, 768), "fp32"),
                ((4096, 1024), "bf16")]
FEATURE_MAP_SHAPES = [((128, 256, 56, 56), "bf16"), ((64, 96, 112, 112), "bf16")]


@dataclass
class Row:
    table: str
    shape: str
    dtype: str
    impl: str
    fwd_ms: float | None
    fwd_gbps: float | None
    fwd_floor_pct: float | None
    fwdbwd_ms: float | None
    fwdbwd_floor_pct: float | None
    max_rel_err: float | None
    note: str = ""
    fwdbwd_eager_ms: float | None = None  # launched eagerly with do_bench: includes host and autograd-engine time


def median_ms(fn: Callable[[], object], quick: bool, grad_to_none=None) -> float:
    import triton

    rep = 40 if quick else 200
    return float(triton.testing.do_bench(fn, warmup=25, rep=rep, grad_to_none=grad_to_none, return_mode="median"))


def graph_ms(fn: Callable[[], object], quick: bool, grad_to_none=None) -> float:
    """Median GPU time of one call of ``fn`` replayed from a CUDA graph: the kernels' own time, without the host
    launch and autograd-engine time that dominates small tensors (a whole model hides it behind other layers).
    Inputs under ~50 MB stay in L2 between replays."""
    def reset():
        for t in grad_to_none or ():
            t.grad = None

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            reset()
            fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    reset()
    with torch.cuda.graph(graph):
        fn()
    times = []
    for i in range(60 if quick else 300):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        if i >= 5:
            times.append(start.elapsed_time(end))
    del graph
    reset()
    return sorted(times)[len(times) // 2]


def copy_bandwidth(quick: bool) -> float:
    """Bytes read + written per second by a 1 GiB device-to-device copy (GB/s)."""
    src = torch.randn(2**28, device="cuda")
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), quick)
    return 2 * src.numel() * src.element_size() / ms / 1e6


# ------------------------------------------------------------------------------------------------------------------
# The contenders, each a function (x, alpha, weight, bias) -> y, channel dim last unless the table says otherwise


def naive(x, alpha, weight, bias, channel_dim=-1):
    """The DyT expression as the paper's code writes it (input dtype, three element-wise kernels in eager)."""
    if channel_dim != -1 and channel_dim != x.dim() - 1:
        shape = [1] * x.dim()
        shape[channel_dim] = -1
        weight, bias = weight.view(shape), bias.view(shape)
    return weight * torch.tanh(alpha * x) + bias


def ours(fn="tanh", channel_dim=-1):
    from dyt_bench.ops.triton import squash_affine_triton

    return lambda x, a, w, b: squash_affine_triton(x, a, w, b, fn=fn, channel_dim=channel_dim)


def ours_derf():
    """Derf: erf(αx + s) with a learnable scalar shift s (at 0, so the float64 check of erf(αx) applies), all five
    gradients computed."""
    from dyt_bench.ops.triton import squash_affine_triton

    shift = torch.zeros((), device="cuda", requires_grad=True)
    return lambda x, a, w, b: squash_affine_triton(x, a, w, b, fn="erf", shift=shift)


def liger():
    try:
        from liger_kernel.ops.dyt import LigerDyTFunction
    except ImportError:
        return None
    return lambda x, a, w, b: LigerDyTFunction.apply(x, a.reshape(1), w, b)


def layer_norm(x, a, w, b):
    return F.layer_norm(x, (x.shape[-1],), w, b)


def rms_norm(x, a, w, b):
    return F.rms_norm(x, (x.shape[-1],), w)


STATS_NORMS = {"layernorm", "rmsnorm"}  # given parameters in the input dtype: their fused kernels need it


def contenders_tokens() -> dict[str, Callable | None]:
    return {
        "dyt ours (triton)": ours(),
        "dyt eager": naive,
        "dyt torch.compile": torch.compile(naive),
        "dyt liger": liger(),
        "layernorm eager": layer_norm,
        "rmsnorm eager": rms_norm,
        "rmsnorm torch.compile": torch.compile(rms_norm),
    }


def make_inputs(shape, dtype, channel_dim, param_dtype=torch.float32, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(shape, device="cuda", generator=gen, dtype=torch.float32).to(dtype)
    c = shape[channel_dim]
    w = (1 + 0.1 * torch.randn(c, device="cuda", generator=gen)).to(param_dtype)
    b = (0.1 * torch.randn(c, device="cuda", generator=gen)).to(param_dtype)
    a = torch.tensor(0.5, device="cuda", dtype=param_dtype)
    dy = torch.randn(shape, device="cuda", generator=gen, dtype=torch.float32).to(dtype)
    return x, a, w, b, dy


def dyt_error(fn_impl, x, a, w, b, dy, channel_dim, fn="tanh") -> float:
    """Largest relative error (norm-wise) of y and the four gradients against float64 math on the CPU, on the
    leading samples / rows of the inputs (about 4M elements), so the check stays quick at every size."""
    per_sample = x[0].numel()
    keep = max(1, min(x.shape[0], 2**22 // max(per_sample, 1)))
    x, dy = x[:keep], dy[:keep]
    leaves = [t.detach().clone().requires_grad_() for t in (x, a, w, b)]
    y = fn_impl(*leaves)
    grads = torch.autograd.grad(y, leaves, dy)
    ref_leaves = [t.detach().cpu().double().requires_grad_() for t in (x, a, w, b)]
    y_ref = squash_affine_reference(*ref_leaves, fn=fn, channel_dim=channel_dim)
    ref_grads = torch.autograd.grad(y_ref, ref_leaves, dy.cpu().double())
    errs = []
    for got, ref in zip([y, *grads], [y_ref, *ref_grads], strict=True):
        got = got.detach().cpu().double().reshape(ref.shape)
        if not torch.isfinite(got).all():
            return float("inf")
        errs.append(((got - ref).norm() / ref.norm().clamp_min(1e-30)).item())
    return max(errs)


def time_impl(impl, x, a, w, b, dy, quick) -> tuple[float, float, float]:
    """(forward, forward + backward) GPU times from CUDA-graph replays, and forward + backward launched eagerly
    (host time included) — all in ms."""
    def fwd():
        with torch.no_grad():
            impl(x, a, w, b)

    leaves = [t.detach().clone().requires_grad_() for t in (x, a, w, b)]

    def step():
        impl(*leaves).backward(dy)

    return graph_ms(fwd, quick), graph_ms(step, quick, leaves), median_ms(step, quick, grad_to_none=leaves)


def bench_rows(table, shape, dtype_name, impls, channel_dim, bw, quick, check_fn="tanh", param_dtype=torch.float32):
    dtype = DTYPES[dtype_name]
    x, a, w, b, dy = make_inputs(shape, dtype, channel_dim, param_dtype)
    n_bytes = x.numel() * x.element_size()
    floor_fwd = 2 * n_bytes / bw / 1e6
    floor_fb = 5 * n_bytes / bw / 1e6
    # the reachable forward at this size: a copy of this very tensor (same bytes, same replay), against the 1 GiB copy
    # that sets the floor; small tensors pay launch ramp-up and tail a larger share of their time
    copy_dst = torch.empty_like(x)
    copy_ms = graph_ms(lambda: copy_dst.copy_(x), quick)
    rows = [Row(table, "x".join(map(str, shape)), dtype_name, "copy of this tensor (reference)", copy_ms,
                2 * n_bytes / copy_ms / 1e6, 100 * floor_fwd / copy_ms, None, None, None,
                "the forward's reachable time at this size")]
    for name, impl in impls.items():
        if impl is None:
            rows.append(Row(table, "x".join(map(str, shape)), dtype_name, name, None, None, None, None, None, None,
                            "not installed"))
            continue
        if name.split()[0] in STATS_NORMS:
            args = (x, a, w.to(dtype), b.to(dtype))
        else:
            args = (x, a, w, b)
        is_dyt = name.startswith("dyt") or name.split()[0] in ALL_FUNCTIONS
        err = None
        if is_dyt:
            fn = name.split()[0] if name.split()[0] in ALL_FUNCTIONS else check_fn
            err = dyt_error(impl, x, a, w, b, dy, channel_dim, fn=fn)
        try:
            fwd, fb, fb_eager = time_impl(impl, *args, dy, quick)
        except Exception as exc:  # a contender that fails at this shape is reported, not fatal
            rows.append(Row(table, "x".join(map(str, shape)), dtype_name, name, None, None, None, None, None, err,
                            f"failed: {type(exc).__name__}: {str(exc)[:80]}"))
            continue
        rows.append(Row(table, "x".join(map(str, shape)), dtype_name, name, fwd, 2 * n_bytes / fwd / 1e6,
                        100 * floor_fwd / fwd, fb, 100 * floor_fb / fb, err, fwdbwd_eager_ms=fb_eager))
    header = (f"{table}  {'x'.join(map(str, shape))} {dtype_name}  floor fwd {floor_fwd:.4f} ms  "
              f"fwd+bwd {floor_fb:.4f} ms")
    print(header, flush=True)
    for r in rows:
        print(format_row(r), flush=True)
    return rows


def _fmt(value, spec: str, missing: str = "—") -> str:
    return format(value, spec) if value is not None else missing


def format_row(r: Row) -> str:
    if r.fwd_ms is None and r.fwdbwd_ms is None:
        return f"  {r.impl:<28} {r.note}"
    return (f"  {r.impl:<28} fwd {_fmt(r.fwd_ms, '8.4f')} ms {_fmt(r.fwd_gbps, '7.0f')} GB/s "
            f"{_fmt(r.fwd_floor_pct, '5.1f')}%   fwd+bwd {_fmt(r.fwdbwd_ms, '8.4f')} ms "
            f"{_fmt(r.fwdbwd_floor_pct, '5.1f')}%   eager launch {_fmt(r.fwdbwd_eager_ms, '8.4f')} ms   "
            f"err {_fmt(r.max_rel_err, '.1e')} {r.note}")


def markdown(rows: list[Row]) -> str:
    lines = ["| table | shape | dtype | impl | fwd ms | fwd GB/s | fwd % floor | fwd+bwd ms | fwd+bwd % floor "
             "| fwd+bwd eager launch ms | max rel err | note |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.table} | {r.shape} | {r.dtype} | {r.impl} | {_fmt(r.fwd_ms, '.4f')} | "
                     f"{_fmt(r.fwd_gbps, '.0f')} | {_fmt(r.fwd_floor_pct, '.1f')} | {_fmt(r.fwdbwd_ms, '.4f')} | "
                     f"{_fmt(r.fwdbwd_floor_pct, '.1f')} | {_fmt(r.fwdbwd_eager_ms, '.4f')} | "
                     f"{_fmt(r.max_rel_err, '.1e')} | {r.note} |")
    return "\n".join(lines)


def sweep_grid(stage: str, wide: bool = False) -> list[tuple[str, Overrides]]:
    """``--sweep``'s configurations of one stage (``--sweep-wide``: forward column blocks up to whole rows of the
    widest shapes): (label, the heuristic overrides it times)."""
    cols_options = ([(2048, "cover"), (4096, "cover"), (8192, "cover")] if wide else
                    [(512, "divisor"), (1024, "divisor"), (2048, "divisor"), (256, "cover"), (1024, "cover"),
                     (2048, "cover")])
    grid = itertools.product([2048, 4096, 8192], cols_options, [4, 8, 16], [4] if stage == "fwd" else [4, 8])
    out = []
    for tile, (cols_cap, mode), warps, pps in grid:
        knobs = Overrides(**{f"{stage}_tile": tile, f"{stage}_max_cols_block": cols_cap, f"{stage}_cols_mode": mode,
                             f"{stage}_warps": warps}, programs_per_sm=pps)
        label = f"tile={tile} cols<={cols_cap} {mode} warps={warps}" + (f" pps={pps}" if stage == "bwd" else "")
        out.append((label, knobs))
    return out


def sweep(bw, quick, wide: bool = False) -> list[Row]:
    """Grid over the block-shape heuristic (:func:`sweep_grid`): forward (tile, column block, warps) and backward
    (the same, and programs per SM), on a large and a ViT-sized token matrix and a feature map; prints each stage's
    configurations by time. The backward is timed as its launch alone (kernel and partial sums, against a 3-pass
    floor)."""
    from dyt_bench.ops.triton.launch import launch_backward, launch_forward

    shapes = [((32768, 4096), -1), ((50432, 768), -1), ((128, 256, 56, 56), 1)]
    if wide:  # forward only, column blocks up to whole rows of the widest shapes
        shapes = [((16384, 8192), -1), ((32768, 4096), -1)]
    rows = []
    for shape, channel_dim in shapes:
        x, a, w, b, dy = make_inputs(shape, torch.bfloat16, channel_dim)
        n_bytes = x.numel() * 2
        dim = channel_dim % x.dim()
        results = {"fwd": [], "bwd": []}
        for stage in ("fwd",) if wide else ("fwd", "bwd"):
            for label, knobs in sweep_grid(stage, wide):
                try:
                    if stage == "fwd":
                        fwd_args = (x, a, w, b, None, "tanh", dim, knobs)
                        with torch.no_grad():
                            ms = graph_ms(lambda: launch_forward(*fwd_args), quick)  # noqa: B023 (called at once)
                        floor = 2 * n_bytes / bw / 1e6
                    else:  # the backward launch alone (kernel + partial sums): 3 passes, no autograd engine
                        bwd_args = (dy, x, a, w, None, "tanh", dim, True, True, True, True, False, knobs)
                        ms = graph_ms(lambda: launch_backward(*bwd_args), quick)  # noqa: B023
                        floor = 3 * n_bytes / bw / 1e6
                except Exception as exc:  # e.g. out of shared memory / registers at one configuration
                    print(f"  {stage} {label}: failed ({type(exc).__name__})")
                    continue
                results[stage].append((ms, label, 100 * floor / ms))
        for stage, res in results.items():
            res.sort()
            print(f"sweep {stage} {'x'.join(map(str, shape))} bf16: best {len(res)} configurations first")
            for ms, label, pct in res[:8]:
                print(f"  {ms:8.4f} ms {pct:5.1f}%  {label}")
            for ms, label, pct in res[:8]:
                rows.append(Row(f"sweep {stage}", "x".join(map(str, shape)), "bf16", label,
                                ms if stage == "fwd" else None, None, pct if stage == "fwd" else None,
                                ms if stage == "bwd" else None, pct if stage == "bwd" else None, None))
    return rows


DEVICE_SWEEP_SHAPES = "50432x768,128x256x56x56,64x96x112x112"


def device_sweep_grid(stage: str, channels_last: bool) -> list[tuple[str, Overrides]]:
    """``--sweep-device``'s configurations: the knobs that set a device's own tuning (``DEVICE_TUNING`` in
    dyt_bench/ops/triton/blocks.py), on the shapes where another device's defaults fall short."""
    out = []
    if stage == "fwd":
        caps = [2048, 4096] if not channels_last else [None]
        for tile, warps, cap in itertools.product([2048, 4096, 8192], [4, 8], caps):
            knobs = Overrides(fwd_tile=tile, fwd_warps=warps, fwd_max_cols_block=cap)
            out.append((f"tile={tile} warps={warps}" + (f" cols<={cap}" if cap else ""), knobs))
    else:
        caps = [256, 512] if not channels_last else [None]
        pps_options = [2, 4] if not channels_last else [2, 4, 8]
        for tile, warps, pps, cap in itertools.product([2048, 4096, 8192], [4, 8], pps_options, caps):
            knobs = Overrides(bwd_tile=tile, bwd_warps=warps, programs_per_sm=pps, bwd_max_cols_block=cap)
            out.append((f"tile={tile} warps={warps} pps={pps}" + (f" cols<={cap}" if cap else ""), knobs))
    return out


def sweep_device(bw, quick, shapes: str = DEVICE_SWEEP_SHAPES) -> list[Row]:
    """Times :func:`device_sweep_grid` (tanh, bf16) on ``shapes``: the forward against a 2-pass floor, the backward
    launch alone (kernel and partial sums) against a 3-pass floor, each stage's current choice on this device first."""
    from dyt_bench.ops.triton.launch import launch_backward, launch_forward

    rows = []
    for shape, channel_dim in parse_shapes(shapes):
        x, a, w, b, dy = make_inputs(shape, torch.bfloat16, channel_dim)
        n_bytes = x.numel() * 2
        dim = channel_dim % x.dim()
        label_shape = "x".join(map(str, shape))
        for stage in ("fwd", "bwd"):
            floor = (2 if stage == "fwd" else 3) * n_bytes / bw / 1e6
            results = []
            for label, knobs in [("current", None)] + device_sweep_grid(stage, channel_dim == -1):
                try:
                    if stage == "fwd":
                        fwd_args = (x, a, w, b, None, "tanh", dim, knobs)
                        with torch.no_grad():
                            ms = graph_ms(lambda: launch_forward(*fwd_args), quick)  # noqa: B023 (called at once)
                    else:
                        bwd_args = (dy, x, a, w, None, "tanh", dim, True, True, True, True, False, knobs)
                        ms = graph_ms(lambda: launch_backward(*bwd_args), quick)  # noqa: B023
                except Exception as exc:  # e.g. out of registers at one configuration
                    print(f"  {stage} {label}: failed ({type(exc).__name__})")
                    continue
                results.append((ms, label))
            current = next(ms for ms, label in results if label == "current")
            results.sort()
            print(f"sweep-device {stage} {label_shape} bf16: current {current:.4f} ms "
                  f"({100 * floor / current:.1f}%), best first", flush=True)
            for ms, label in results[:6]:
                print(f"  {ms:8.4f} ms {100 * floor / ms:5.1f}%  {label}")
            for ms, label in [(current, "current")] + [r for r in results[:6] if r[1] != "current"]:
                rows.append(Row(f"sweep-device {stage}", label_shape, "bf16", label,
                                ms if stage == "fwd" else None, None, 100 * floor / ms if stage == "fwd" else None,
                                ms if stage == "bwd" else None, 100 * floor / ms if stage == "bwd" else None, None))
    return rows


SWEEP_FN_SHAPES = "32768x4096,50432x768,128x256x56x56"


def parse_shapes(text: str) -> list[tuple[tuple[int, ...], int]]:
    """``"32768x4096,128x256x56x56"`` → [(shape, channel dim)]: 2-D shapes are tokens (channels last), 3-D and 4-D
    ones feature maps (channels second)."""
    out = []
    for item in text.split(","):
        try:
            shape = tuple(int(v) for v in item.strip().split("x"))
        except ValueError:
            raise SystemExit(f"--sweep-shapes: {item!r} is not a shape like 32768x4096 or 128x256x56x56") from None
        if len(shape) not in (2, 3, 4) or min(shape) < 1:
            raise SystemExit(f"--sweep-shapes: {item!r} must have 2 (tokens), 3 or 4 (feature maps) positive sizes")
        out.append((shape, -1 if len(shape) == 2 else 1))
    return out


def sweep_fn_grid(stage: str, quick: bool) -> list[tuple[str, Overrides]]:
    """``--sweep-fn``'s configurations of one stage: forward (tile, warps, register cap), backward (tile, warps,
    register cap, programs per SM); (label, the overrides it times, in place of the function's own tuning)."""
    if stage == "fwd":
        grid = itertools.product([4096, 8192], [8, 16, 32], [None, 32, 40], [None])
    else:
        grid = itertools.product([1024, 2048], [4, 8], [None, 128], [2, 3, 4] if not quick else [4])
    out = []
    for tile, warps, maxnreg, pps in grid:
        knobs = Overrides(**{f"{stage}_tile": tile, f"{stage}_warps": warps, f"{stage}_maxnreg": maxnreg},
                          programs_per_sm=pps)
        out.append((f"tile={tile} warps={warps} maxnreg={maxnreg}" + (f" pps={pps}" if pps else ""), knobs))
    return out


def sweep_fn(bw, quick, fn: str = "erf", shapes: str = SWEEP_FN_SHAPES, stages=("fwd", "bwd"),
             current_only: bool = False) -> list[Row]:
    """One function's own tuning (``FUNCTION_TUNING`` in dyt_bench/ops/triton/blocks.py) swept: the configurations
    of :func:`sweep_fn_grid` for ``fn``, with a learnable shift when it is erf, against tanh at the default heuristic
    in the same run, on the given token matrices and feature maps. Each stage's table starts with ``fn`` at its
    current tuning, so a change of defaults can be checked against the sweep's best in the same run;
    ``current_only`` times just that, against tanh."""
    from dyt_bench.ops.triton.blocks import NO_OVERRIDES
    from dyt_bench.ops.triton.launch import launch_backward, launch_forward

    rows = []
    for shape, channel_dim in parse_shapes(shapes):
        x, a, w, b, dy = make_inputs(shape, torch.bfloat16, channel_dim)
        n_bytes = x.numel() * 2
        dim = channel_dim % x.dim()
        shift = torch.zeros((), device="cuda") if fn == "erf" else None

        def fwd_ms(name, knobs=None, shift=shift, inputs=(x, a, w, b), dim=dim):
            with torch.no_grad():
                return graph_ms(lambda: launch_forward(*inputs, shift, name, dim, knobs), quick)

        def bwd_ms(name, knobs=None, shift=shift, inputs=(dy, x, a, w), dim=dim):
            args = (*inputs, shift, name, dim, True, True, True, True, shift is not None, knobs)
            return graph_ms(lambda: launch_backward(*args), quick)

        current = {"fwd": fwd_ms(fn), "bwd": bwd_ms(fn)}  # fn's own tuning
        ref = {"fwd": fwd_ms("tanh", shift=None), "bwd": bwd_ms("tanh", shift=None)}
        base = {"fwd": fwd_ms(fn, NO_OVERRIDES), "bwd": bwd_ms(fn, NO_OVERRIDES)}  # the shared heuristic alone
        label_shape = "x".join(map(str, shape))
        for stage, measure in (("fwd", fwd_ms), ("bwd", bwd_ms)):
            if stage not in stages:
                continue
            floor = (2 if stage == "fwd" else 3) * n_bytes / bw / 1e6
            grid = [] if current_only else sweep_fn_grid(stage, quick)
            print(f"sweep {fn} {stage} {label_shape} bf16: {fn} at its current tuning {current[stage]:.4f} ms "
                  f"({100 * (current[stage] / ref[stage] - 1):+.1f}% vs tanh {ref[stage]:.4f} ms)", flush=True)
            rows.append(Row(f"sweep {fn} {stage}", label_shape, "bf16", f"{fn} current tuning",
                            current[stage] if stage == "fwd" else None, None,
                            100 * floor / current[stage] if stage == "fwd" else None,
                            current[stage] if stage == "bwd" else None,
                            100 * floor / current[stage] if stage == "bwd" else None, None,
                            note=f"tanh default {ref[stage]:.4f} ms, {100 * (current[stage] / ref[stage] - 1):+.1f}%"))
            results = []
            for label, knobs in grid:
                try:
                    ms = measure(fn, knobs)
                except Exception as exc:  # e.g. too many registers for the block at one configuration
                    print(f"  {stage} {label}: failed ({type(exc).__name__})")
                    continue
                results.append((ms, label, 100 * floor / ms))
            results.sort()
            print(f"sweep {fn} {stage} {label_shape} bf16 (tanh default {ref[stage]:.4f} ms, {fn} on the shared "
                  f"heuristic {base[stage]:.4f} ms): best first")
            for ms, label, pct in results[:8]:
                print(f"  {ms:8.4f} ms {pct:5.1f}%  {100 * (ms / ref[stage] - 1):+5.1f}% vs tanh  {label}")
                rows.append(Row(f"sweep {fn} {stage}", label_shape, "bf16", label,
                                ms if stage == "fwd" else None, None, pct if stage == "fwd" else None,
                                ms if stage == "bwd" else None, pct if stage == "bwd" else None, None,
                                note=f"tanh default {ref[stage]:.4f} ms"))
    return rows


HOST_SCAN = [((8, 1024), True), ((512, 1024), True), ((4096, 1024), True), ((4096, 1024), False),
             ((32768, 384), False), ((16384, 768), True), ((65536, 768), True)]


def _per_call_us(fn, calls: int) -> float:
    import time

    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return 1e6 * (time.perf_counter() - start) / calls


def host_overhead(quick: bool, shape=(4096, 1024)) -> list[Row]:
    """Wall time per call (µs: CPU clock over a loop of calls, the GPU synchronised once at the end, so a call whose
    host side is slower than its kernels is timed by its host side) of forward and forward + backward, as modules
    (``nn.LayerNorm``, DyT with ``impl="auto"``, DyT eager, Liger's DyT) and as functions; then the same for DyT auto
    and eager over :data:`HOST_SCAN` (with and without γ/β: DiT's norms have none), which sets ``impl="auto"``'s
    rule; then a cProfile of the DyT module's forward + backward."""
    import cProfile
    import pstats

    from torch import nn

    from dyt_bench.norms import NormSpec, build_norm

    calls = 200 if quick else 1000
    rows = []

    def modules(c, affine=True):
        # LayerNorm's fused kernel wants its parameters in the input dtype; DyT's stay float32 (as under autocast)
        out = {"layernorm module (nn.LayerNorm)": nn.LayerNorm(c, elementwise_affine=affine, dtype=torch.bfloat16),
               "dyt module impl=auto": build_norm(NormSpec("dyt", impl="auto", affine=affine), c),
               "dyt module impl=eager": build_norm(NormSpec("dyt", impl="eager", affine=affine), c)}
        if affine:
            try:
                from liger_kernel.transformers.dyt import LigerDyT

                out["dyt liger module"] = LigerDyT(c, beta=True, init_alpha=0.5)
            except ImportError:
                pass
        return out

    def measure(label_shape, name, module, x, dy, affine):
        module = module.cuda()
        xg = x.clone().requires_grad_()
        params = list(module.parameters())

        def fwd():
            with torch.no_grad():
                module(x)

        def fwd_bwd():
            module(xg).backward(dy)
            xg.grad = None
            for p in params:
                p.grad = None

        f_us, fb_us = _per_call_us(fwd, calls), _per_call_us(fwd_bwd, calls)
        row = Row("host time per call (µs)", label_shape, "bf16", name + ("" if affine else ", no γ/β"),
                  f_us / 1e3, None, None, fb_us / 1e3, None, None, "wall per call in a loop (CPU clock)")
        print(f"  {label_shape:<12} {row.impl:<40} fwd {f_us:8.1f} µs   fwd+bwd {fb_us:8.1f} µs", flush=True)
        return row

    print(f"host time per call, {'x'.join(map(str, shape))} bf16 (µs, wall per call in a loop of {calls}):")
    x, a, w, b, dy = make_inputs(shape, torch.bfloat16, -1)
    for name, module in modules(shape[-1]).items():
        rows.append(measure("x".join(map(str, shape)), name, module, x, dy, True))
    # the bare functions, parameters as the modules hold them (float32; F.layer_norm: the input dtype)
    leaves = [x.clone().requires_grad_(), a.reshape(1).clone().requires_grad_(), w.clone().requires_grad_(),
              b.clone().requires_grad_()]
    wb = [w.to(x.dtype).requires_grad_(), b.to(x.dtype).requires_grad_()]
    from dyt_bench.ops import squash_affine

    for name, f, args in (("F.layer_norm", lambda t, w_, b_: F.layer_norm(t, (shape[-1],), w_, b_), [leaves[0]] + wb),
                          ("squash_affine impl=auto", lambda t, a_, w_, b_: squash_affine(t, a_, w_, b_), leaves)):
        def fwd(f=f, args=args):
            with torch.no_grad():
                f(*args)

        def fwd_bwd(f=f, args=args):
            f(*args).backward(dy)
            for t in args:
                t.grad = None

        f_us, fb_us = _per_call_us(fwd, calls), _per_call_us(fwd_bwd, calls)
        rows.append(Row("host time per call (µs)", "x".join(map(str, shape)), "bf16", name, f_us / 1e3, None, None,
                        fb_us / 1e3, None, None, "wall per call in a loop (CPU clock)"))
        print(f"  {'x'.join(map(str, shape)):<12} {name:<40} fwd {f_us:8.1f} µs   fwd+bwd {fb_us:8.1f} µs")
    print("impl='auto' against eager and LayerNorm over sizes (the auto rule):")
    for scan_shape, affine in HOST_SCAN:
        xs, _, _, _, dys = make_inputs(scan_shape, torch.bfloat16, -1)
        for name, module in modules(scan_shape[-1], affine).items():
            if "liger" in name:
                continue
            rows.append(measure("x".join(map(str, scan_shape)), name, module, xs, dys, affine))
    module = build_norm(NormSpec("dyt", impl="auto"), shape[-1]).cuda()
    xg = x.clone().requires_grad_()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(200):
        module(xg).backward(dy)
    prof.disable()
    torch.cuda.synchronize()
    pstats.Stats(prof).sort_stats("tottime").print_stats(12)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions per measurement")
    parser.add_argument("--sweep", action="store_true", help="also sweep the block-shape heuristic")
    parser.add_argument("--sweep-wide", action="store_true", help="sweep forward column blocks up to 8192 (wide C)")
    parser.add_argument("--sweep-fn", metavar="FN", help="sweep one function's own tuning (e.g. erf) against tanh")
    parser.add_argument("--sweep-shapes", default=SWEEP_FN_SHAPES,
                        help="--sweep-fn's shapes, comma-separated (2-D: tokens; 3-/4-D: feature maps)")
    parser.add_argument("--sweep-stages", nargs="+", choices=("fwd", "bwd"), default=["fwd", "bwd"],
                        help="--sweep-fn's stages")
    parser.add_argument("--sweep-current-only", action="store_true",
                        help="--sweep-fn times only the function's current tuning against tanh (no grid)")
    parser.add_argument("--sweep-device", action="store_true",
                        help="sweep the knobs of this device's own tuning (DEVICE_TUNING) on --sweep-device-shapes")
    parser.add_argument("--sweep-device-shapes", default=DEVICE_SWEEP_SHAPES, help="--sweep-device's shapes")
    parser.add_argument("--no-compile-peers", action="store_true",
                        help="leave the torch.compile contenders out of the tables (they compile per shape)")
    parser.add_argument("--json", help="write every row here")
    parser.add_argument("--host", action="store_true", help="also measure host (CPU) time per call, and profile ours")
    parser.add_argument("--markdown", help="write the markdown table here")
    parser.add_argument("--only", choices=["tokens", "feature_maps", "functions", "misc", "none"], nargs="*",
                        help="run only these tables (none: only --sweep)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks/ops.py needs a CUDA device", file=sys.stderr)
        return 2
    import triton

    try:
        from importlib.metadata import version

        import liger_kernel  # noqa: F401

        liger_version = version("liger-kernel")
    except Exception:
        liger_version = "not installed"
    props = torch.cuda.get_device_properties(0)
    bw = copy_bandwidth(args.quick)
    print(f"device: {props.name} ({props.multi_processor_count} SMs), torch {torch.__version__}, triton "
          f"{triton.__version__}, liger-kernel {liger_version}, python {platform.python_version()}")
    print(f"device-to-device copy bandwidth (read + write): {bw:.0f} GB/s")
    only = set(args.only or ["tokens", "feature_maps", "functions", "misc"])
    rows: list[Row] = []
    if "tokens" in only:
        impls = contenders_tokens()
        if args.no_compile_peers:
            impls = {name: impl for name, impl in impls.items() if "torch.compile" not in name}
        for shape, dt in TOKEN_SHAPES:
            rows += bench_rows("tokens (B·N, C)", shape, dt, impls, -1, bw, args.quick)
    if "feature_maps" in only:
        def naive_cf(x, a, w, b):
            return naive(x, a, w, b, channel_dim=1)

        compiled_cf = torch.compile(naive_cf)
        for shape, dt in FEATURE_MAP_SHAPES:
            impls = {"dyt ours (triton)": ours(channel_dim=1), "dyt eager": naive_cf, "dyt torch.compile": compiled_cf}
            if args.no_compile_peers:
                del impls["dyt torch.compile"]
            rows += bench_rows("feature maps (B, C, H, W)", shape, dt, impls, 1, bw, args.quick)
            # the same tensor in torch.channels_last memory format: the kernels take it as tokens, no copy
            x, a, w, b, dy = make_inputs(shape, DTYPES[dt], 1)
            x = x.contiguous(memory_format=torch.channels_last)
            dy = dy.contiguous(memory_format=torch.channels_last)
            n_bytes = x.numel() * x.element_size()
            err = dyt_error(ours(channel_dim=1), x, a, w, b, dy, 1)
            fwd, fb, fb_eager = time_impl(ours(channel_dim=1), x, a, w, b, dy, args.quick)
            r = Row("feature maps (B, C, H, W)", "x".join(map(str, shape)), dt, "dyt ours, channels_last memory", fwd,
                    2 * n_bytes / fwd / 1e6, 100 * 2 * n_bytes / bw / 1e6 / fwd, fb, 100 * 5 * n_bytes / bw / 1e6 / fb,
                    err, fwdbwd_eager_ms=fb_eager)
            print(format_row(r), flush=True)
            rows.append(r)
    if "functions" in only:
        impls = {f"{fn} ours (triton)": ours(fn=fn) for fn in ALL_FUNCTIONS if fn != "erf"}  # erf: as Derf
        impls["erf ours (triton), Derf with learnable shift"] = ours_derf()
        rows += bench_rows("functions", (32768, 4096), "bf16", impls, -1, bw, args.quick)
        rows += bench_rows("functions", (50432, 768), "bf16", impls, -1, bw, args.quick)
    if "misc" in only:
        # parameters in the input dtype (no autocast) and a fixed α (no α reduction)
        rows += bench_rows("params in bf16", (50432, 768), "bf16", {"dyt ours (triton)": ours()}, -1, bw, args.quick,
                           param_dtype=torch.bfloat16)
        x, a, w, b, dy = make_inputs((50432, 768), torch.bfloat16, -1)
        f = ours()
        leaves = [x.clone().requires_grad_(), a, w.clone().requires_grad_(), b.clone().requires_grad_()]
        fb = graph_ms(lambda: f(*leaves).backward(dy), args.quick, grad_to_none=[leaves[0], leaves[2], leaves[3]])
        n_bytes = x.numel() * 2
        r = Row("fixed alpha", "50432x768", "bf16", "dyt ours (triton), α fixed", None, None, None, fb,
                100 * 5 * n_bytes / bw / 1e6 / fb, None)
        print(f"  fixed α: fwd+bwd {fb:.4f} ms {r.fwdbwd_floor_pct:.1f}% of floor")
        rows.append(r)
        # a strided (non-contiguous) input: the documented copy, measured
        xs = torch.randn(50432, 1536, device="cuda", dtype=torch.bfloat16)[:, :768]
        with torch.no_grad():
            t_strided = graph_ms(lambda: f(xs, a, w, b), args.quick)
            t_contig = graph_ms(lambda: f(x, a, w, b), args.quick)
        print(f"  non-contiguous input (a column slice) forward {t_strided:.4f} ms vs contiguous {t_contig:.4f} ms")
        rows.append(Row("non-contiguous", "50432x768 (slice of 50432x1536)", "bf16", "dyt ours (triton)", t_strided,
                        None, 100 * 2 * n_bytes / bw / 1e6 / t_strided, None, None, None,
                        f"contiguous: {t_contig:.4f} ms"))
    if args.host:
        rows += host_overhead(args.quick)
    if args.sweep:
        rows += sweep(bw, args.quick)
    if args.sweep_wide:
        rows += sweep(bw, args.quick, wide=True)
    if args.sweep_device:
        rows += sweep_device(bw, args.quick, args.sweep_device_shapes)
    if args.sweep_fn:
        rows += sweep_fn(bw, args.quick, args.sweep_fn, args.sweep_shapes, args.sweep_stages,
                         args.sweep_current_only)
    table = markdown(rows)
    print("\n" + table)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(table + "\n")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": props.name, "copy_gbps": bw, "torch": torch.__version__, "triton": triton.__version__,
                       "liger_kernel": liger_version, "rows": [asdict(r) for r in rows]}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
