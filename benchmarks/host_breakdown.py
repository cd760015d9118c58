"""Where the host time of one squash-affine call goes: each piece of the eager path timed on its own, beside
``nn.LayerNorm`` and ``F.layer_norm`` doing the same work, at one shape small enough that the host is the limit.

    python benchmarks/host_breakdown.py                    # 4096x1024 bf16, 2000 calls per row
    python benchmarks/host_breakdown.py --shape 8x1024 --calls 5000 --profile

Each row is the wall time per call of a loop of calls (CPU clock; the GPU synchronised once at the end), so a call
whose host side is slower than its kernels is timed by its host side. Rows:

- the pieces: an output allocation, one bare launch of the compiled forward kernel through its plan, the lean
  forward (``launch.forward``), the lean backward (``launch.backward``, both stages), the op's forward with and
  without an autograd node;
- the autograd engine alone: ``backward()`` through a C++ node (``x * 1``) and through a Python ``autograd.Function``
  whose backward returns its input, so the engine's own cost is not charged to the op;
- whole calls: module forward (no grad), module forward + backward, for LayerNorm and DyT (``impl="auto"``), DyT
  with its C++ autograd node (``dyt_bench/ops/triton/native.py``) and with its Python one.

``--profile`` adds a cProfile of the DyT module's forward + backward (the Python frames only).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import torch
from torch import nn

sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__file__), ".."))

from dyt_bench.norms import NormSpec, build_norm  # noqa: E402


def per_call_us(fn, calls: int) -> float:
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(3):  # best of three loops: a loop disturbed by another process does not count
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        best = min(best, 1e6 * (time.perf_counter() - start) / calls)
    return best


class _PyIdentity(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, dy):
        return dy


class _PyLeaves(torch.autograd.Function):
    """y = x (a view) with any number of extra leaves whose gradients are views of one fresh buffer: the engine's
    and the gradient accumulation's cost per leaf, with no work in the node."""

    @staticmethod
    def forward(ctx, x, *leaves):
        ctx.sizes = tuple(t.numel() for t in leaves)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, dy):
        return (dy, *dy.new_empty(sum(ctx.sizes), dtype=torch.float32).split_with_sizes(ctx.sizes))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="4096x1024", help="tokens x channels (bf16)")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("host_breakdown.py needs CUDA", file=sys.stderr)
        return 2
    import triton

    from dyt_bench.ops import squash_affine
    from dyt_bench.ops.triton import launch
    from dyt_bench.ops.triton.op import _apply_fused

    rows_, cols = (int(v) for v in args.shape.split("x"))
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(rows_, cols, device="cuda", generator=gen).to(torch.bfloat16)
    dy = torch.randn(rows_, cols, device="cuda", generator=gen).to(torch.bfloat16)
    dyt = build_norm(NormSpec("dyt", impl="auto"), cols).cuda()
    ln = nn.LayerNorm(cols, dtype=torch.bfloat16).cuda()
    a, w, b = dyt.alpha, dyt.weight, dyt.bias
    xg = x.clone().requires_grad_()
    calls = args.calls
    out: list[tuple[str, float]] = []

    def row(name, fn):
        us = per_call_us(fn, calls)
        out.append((name, us))
        print(f"  {name:<58} {us:8.2f} µs", flush=True)

    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}, triton {triton.__version__}, "
          f"python {platform.python_version()}; {args.shape} bf16, parameters float32; best of 3 loops of {calls}")
    print("pieces:")
    row("torch.empty_like(x)", lambda: torch.empty_like(x))
    launch.forward(x, a, w, b, None, "tanh", 1)  # makes the plan
    key = next(k for k in launch._FWD_PLANS if k[0] == x.shape)
    plan = launch._FWD_PLANS[key]
    y = torch.empty_like(x)
    if plan:
        h = plan.handle
        stream = torch.cuda.current_stream().cuda_stream
        ptrs = (x.data_ptr(), y.data_ptr(), a.data_ptr(), a.data_ptr(), w.data_ptr(), b.data_ptr())

        def bare():
            h.launch(plan.grid[0], plan.grid[1], 1, stream, h.function, h.cooperative, h.pdl, None, None,
                     h.metadata, None, None, None, *ptrs, *plan.tail)

        row("forward kernel, bare C launch (pointers precomputed)", bare)
    row("launch.forward (lean: plan lookup, allocation, launch)", lambda: launch.forward(x, a, w, b, None, "tanh", 1))
    with torch.no_grad():
        row("squash_affine(impl=auto), no grad", lambda: squash_affine(x, a, w, b))
        row("F.layer_norm, no grad", lambda: torch.nn.functional.layer_norm(x, (cols,), ln.weight, ln.bias))
    launch.backward(dy, x, a, w, None, "tanh", 1, True, True, True, True, False)
    row("launch.backward (lean: both stages, 3 allocations)",
        lambda: launch.backward(dy, x, a, w, None, "tanh", 1, True, True, True, True, False))
    row("squash_affine(impl=auto) with grad, forward only (its node)", lambda: squash_affine(xg, a, w, b))
    row("the first-call path's node, forward only (no plan kept)", lambda: _apply_fused(xg, a, w, b, None, "tanh", 1))
    row("F.layer_norm forward with grad (no backward)",
        lambda: torch.nn.functional.layer_norm(xg, (cols,), ln.weight, ln.bias))
    print("the autograd engine alone:")

    def engine_cpp():
        (xg * 1).backward(dy)
        xg.grad = None

    def engine_py():
        _PyIdentity.apply(xg).backward(dy)
        xg.grad = None

    row("backward() through a C++ node (x * 1)", engine_cpp)
    row("backward() through a Python Function returning dy", engine_py)
    for n_leaves, leaves in ((2, (w, b)), (3, (a, w, b))):
        def engine_leaves(leaves=leaves):
            _PyLeaves.apply(xg, *leaves).backward(dy)
            xg.grad = None
            for t in leaves:
                t.grad = None

        row(f"the same with {n_leaves} more leaves ({'γ, β' if n_leaves == 2 else 'α, γ, β'})", engine_leaves)
    print("whole calls (modules):")
    from dyt_bench.ops.triton import native

    for _ in range(3):  # the C++ node's variant is made by the second call's backward (and built here if need be)
        dyt(xg).backward(dy)
    print(f"  (the C++ node: {'built' if native.module() is not None else native.unavailable_reason()})")
    for name, m, node in (("nn.LayerNorm", ln, None), ("DyT impl=auto, C++ node", dyt, True),
                          ("DyT impl=auto, Python node", dyt, False)):
        params = list(m.parameters())
        if node is not None:
            native.set_enabled(node)

        def fwd(m=m):
            with torch.no_grad():
                m(x)

        def fwd_bwd(m=m, params=params):
            m(xg).backward(dy)
            xg.grad = None
            for p in params:
                p.grad = None

        row(f"{name}: forward, no grad", fwd)
        row(f"{name}: forward + backward", fwd_bwd)
    # the same leaves on both sides: α fixed (DyT's one extra parameter tensor is the extra leaf LayerNorm lacks)
    a.requires_grad_(False)
    for node in (True, False):
        native.set_enabled(node)
        row(f"DyT impl=auto, {'C++' if node else 'Python'} node, α fixed (x, γ, β need grads, as LayerNorm): fwd + bwd",
            lambda: fwd_bwd(dyt, [w, b]))
    a.requires_grad_(True)
    native.set_enabled(True)
    times = dict(out)
    ln_fb = times["nn.LayerNorm: forward + backward"]
    print("ratios to nn.LayerNorm's forward + backward: " + ", ".join(
        f"{node} node {times[f'DyT impl=auto, {node} node: forward + backward'] / ln_fb:.3f}×"
        for node in ("C++", "Python")))
    # DiT's norms: no γ / β, so eager DyT is two C++ nodes (mul, tanh) against the op's one node
    print("no γ / β (DiT's norms), whole calls:")
    bare = build_norm(NormSpec("dyt", impl="auto", affine=False), cols).cuda()
    bare_eager = build_norm(NormSpec("dyt", impl="eager", affine=False), cols).cuda()
    ln_bare = nn.LayerNorm(cols, elementwise_affine=False, dtype=torch.bfloat16).cuda()
    for _ in range(3):
        bare(xg).backward(dy)
    for name, m, node in (("nn.LayerNorm, no affine", ln_bare, None), ("DyT impl=auto, C++ node", bare, True),
                          ("DyT impl=auto, Python node", bare, False), ("DyT impl=eager", bare_eager, None)):
        native.set_enabled(node is not False)
        row(f"{name}: forward + backward", lambda m=m: fwd_bwd(m, list(m.parameters())))
    native.set_enabled(True)
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        for _ in range(500):
            dyt(xg).backward(dy)
            xg.grad = None
        prof.disable()
        torch.cuda.synchronize()
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
