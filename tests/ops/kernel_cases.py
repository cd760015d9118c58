"""The fused Triton squash-affine kernels against float64 math and the eager reference, for every function of the
registry (ops/functions.py).

Runs on CUDA tensors when a GPU is present, otherwise on CPU tensors through Triton's interpreter; in the default
suite ``test_ops_triton.py`` runs this file in a subprocess with ``TRITON_INTERPRET=1`` (the variable must be set
before Triton compiles anything). Run it directly: ``python tests/ops/kernel_cases.py`` on a GPU,
``TRITON_INTERPRET=1 python tests/ops/kernel_cases.py`` on CPU (pytest options may follow, e.g. ``-k erf``).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import zlib
from pathlib import Path

import pytest

if __name__ == "__main__":  # python tests/ops/kernel_cases.py [pytest options]: this file's tests, from a checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider", *sys.argv[1:]]))

import torch  # noqa: E402

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
if not INTERPRET and not torch.cuda.is_available():
    pytest.skip("needs CUDA or TRITON_INTERPRET=1", allow_module_level=True)

from dyt_bench.norms import NormSpec, build_norm  # noqa: E402
from dyt_bench.ops import squash_affine, squash_affine_reference  # noqa: E402
from dyt_bench.ops.functions import ALL_FUNCTIONS, FUNCTIONS, POINTWISE_KINDS  # noqa: E402
from dyt_bench.ops.triton import blocks, launch, squash_affine_triton  # noqa: E402

DEVICE = "cpu" if INTERPRET else "cuda"
TOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}


def has_shift(fn: str) -> bool:
    """Whether a norm kind applies ``fn`` with a shift (Derf's erf): those functions are tested with one."""
    return any(kind.shift for kind in FUNCTIONS[fn].kinds)


def rel_err(value: torch.Tensor, ref: torch.Tensor) -> float:
    value, ref = value.double().cpu(), ref.double().cpu()
    assert torch.isfinite(value).all(), "non-finite values"
    return ((value - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def make_inputs(shape, channel_dim, seed, shift=False, alpha=0.8):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64) * 1.5
    c = shape[channel_dim]
    w = torch.randn(c, generator=gen, dtype=torch.float64)
    b = torch.randn(c, generator=gen, dtype=torch.float64)
    a = torch.tensor(alpha, dtype=torch.float64)
    s = torch.tensor(0.3, dtype=torch.float64) if shift else None
    dy = torch.randn(*shape, generator=gen, dtype=torch.float64)
    return x, a, w, b, s, dy


def float64_grads(x, a, w, b, s, dy, fn, channel_dim, grads_of):
    """y and the gradients of (x, α, γ, β, shift) from the eager reference in float64 (autograd)."""
    leaves = {"x": x, "alpha": a, "weight": w, "bias": b, "shift": s}
    leaves = {k: (v.clone().requires_grad_(k in grads_of) if v is not None else None) for k, v in leaves.items()}
    y = squash_affine_reference(leaves["x"], leaves["alpha"], leaves["weight"], leaves["bias"], fn=fn,
                                channel_dim=channel_dim, shift=leaves["shift"])
    wanted = [leaves[k] for k in grads_of]
    return y.detach(), dict(zip(grads_of, torch.autograd.grad(y, wanted, dy), strict=True))


def run_kernel(x, a, w, b, s, dy, fn, channel_dim, grads_of, dtype, param_dtype, memory_format=None, transform=None):
    xt = x.to(dtype)
    if memory_format is not None:
        xt = xt.contiguous(memory_format=memory_format)
    xt = xt.to(DEVICE)
    if transform is not None:
        xt = transform(xt)
    leaves = {"x": xt, "alpha": a.to(param_dtype), "weight": w.to(param_dtype) if w is not None else None,
              "bias": b.to(param_dtype) if b is not None else None, "shift": s.float() if s is not None else None}
    leaves = {k: (v.to(DEVICE).detach().requires_grad_(k in grads_of) if v is not None else None)
              for k, v in leaves.items()}
    y = squash_affine_triton(leaves["x"], leaves["alpha"], leaves["weight"], leaves["bias"], fn=fn,
                             channel_dim=channel_dim, shift=leaves["shift"])
    assert y.dtype == dtype and y.shape == xt.shape
    grads = torch.autograd.grad(y, [leaves[k] for k in grads_of], dy.to(dtype).to(DEVICE))
    for k, g in zip(grads_of, grads, strict=True):
        assert g.dtype == leaves[k].dtype and g.shape == leaves[k].shape, k
    return y, dict(zip(grads_of, grads, strict=True))


SHAPES = [  # (shape, channel_dim): tokens with C a power of two and not, feature maps with odd spatial sizes
    ((3, 7, 96), -1),
    ((37, 100), -1),
    ((5, 3, 192), -1),  # C = 3 × 64: whole-row forward tiles with masked lanes
    ((6, 1280), -1),  # a wide token row: 2048-column masked tiles, several rows per tile
    ((3, 2, 1024), -1),  # C a multiple of 1024: the backward's 1024-column blocks
    ((3, 5120), -1),  # rows of 4097-8192 channels: one 8192-column masked forward tile of two rows (erf: 4096)
    ((2, 12, 5, 7), 1),
    ((3, 8, 40), 1),
]


@pytest.mark.parametrize("fn", ALL_FUNCTIONS)
@pytest.mark.parametrize("shape, channel_dim", SHAPES)
def test_float32_matches_float64(fn, shape, channel_dim):
    assert_float32_matches_float64(fn, shape, channel_dim, seed=zlib.crc32(f"{fn}{shape}".encode()))


def assert_float32_matches_float64(fn, shape, channel_dim, seed):
    """y and every gradient of the float32 kernels within 1e-5 of float64 math (dα, dshift: see below)."""
    x, a, w, b, s, dy = make_inputs(shape, channel_dim, seed=seed, shift=has_shift(fn))
    grads_of = ["x", "alpha", "weight", "bias"] + (["shift"] if s is not None else [])
    y64, g64 = float64_grads(x, a, w, b, s, dy, fn, channel_dim, grads_of)
    y, g = run_kernel(x, a, w, b, s, dy, fn, channel_dim, grads_of, torch.float32, torch.float32)
    assert rel_err(y, y64) <= 1e-5
    for k in grads_of:
        if k in ("alpha", "shift"):
            assert_scalar_reduction_close(g[k], g64[k], x, a, w, s, dy, fn, channel_dim, k)
        else:
            assert rel_err(g[k], g64[k]) <= 1e-5, k


def assert_scalar_reduction_close(got, ref, x, a, w, s, dy, fn, channel_dim, name):
    """dα and dshift are sums over every element of terms of both signs, so their value can be far smaller than the
    terms (cancellation). They must be within 1e-5 relative, or within 1e-6 of the sum of |terms| (float32 summation
    of n terms is exact to about log2(n) · 6e-8 of that sum)."""
    err = abs(got.double().cpu().item() - ref.item())
    if err <= 1e-5 * abs(ref.item()):
        return
    z = (a * x + (s if s is not None else 0)).requires_grad_()
    from dyt_bench.ops.reference import _squash

    (slope,) = torch.autograd.grad(_squash(z, fn).sum(), [z])
    shape = [1] * x.dim()
    shape[channel_dim] = -1
    terms = dy * w.view(shape) * slope * (x if name == "alpha" else 1)
    assert err <= 1e-6 * terms.abs().sum().item(), (name, err, ref.item(), terms.abs().sum().item())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("params_in_input_dtype", [False, True])
@pytest.mark.parametrize("shape, channel_dim", [((4, 6, 64), -1), ((2, 16, 6, 6), 1)])
def test_half_precision(dtype, params_in_input_dtype, shape, channel_dim):
    x, a, w, b, s, dy = make_inputs(shape, channel_dim, seed=7)
    # the reference sees the same rounded inputs, so the comparison measures the kernel's arithmetic
    x, dy = x.to(dtype).double(), dy.to(dtype).double()
    param_dtype = dtype if params_in_input_dtype else torch.float32
    a, w, b = (t.to(param_dtype).double() for t in (a, w, b))
    grads_of = ["x", "alpha", "weight", "bias"]
    y64, g64 = float64_grads(x, a, w, b, s, dy, "tanh", channel_dim, grads_of)
    y, g = run_kernel(x, a, w, b, s, dy, "tanh", channel_dim, grads_of, dtype, param_dtype)
    assert rel_err(y, y64) <= TOL[dtype]
    for k in grads_of:
        assert rel_err(g[k], g64[k]) <= TOL[dtype], k


@pytest.mark.parametrize("fn", ["tanh", "sigmoid"])
def test_fixed_alpha_no_weight_no_bias_and_partial_grads(fn):
    x, a, w, b, s, dy = make_inputs((5, 9, 48), -1, seed=3)
    for weight, bias, grads_of in [(w, None, ["x", "weight"]), (None, b, ["x", "bias"]), (None, None, ["x"]),
                                   (w, b, ["weight"]), (w, b, ["alpha"])]:
        y64, g64 = float64_grads(x, a, weight, bias, s, dy, fn, -1, grads_of)
        y, g = run_kernel(x, a, weight, bias, s, dy, fn, -1, grads_of, torch.float32, torch.float32)
        assert rel_err(y, y64) <= 1e-5
        for k in grads_of:
            assert rel_err(g[k], g64[k]) <= 1e-5, (k, grads_of)


def test_channels_last_memory_format_and_non_contiguous_inputs():
    x, a, w, b, s, dy = make_inputs((2, 16, 5, 6), 1, seed=11)
    grads_of = ["x", "alpha", "weight", "bias"]
    y64, g64 = float64_grads(x, a, w, b, s, dy, "tanh", 1, grads_of)
    y, g = run_kernel(x, a, w, b, s, dy, "tanh", 1, grads_of, torch.float32, torch.float32,
                      memory_format=torch.channels_last)
    assert y.is_contiguous(memory_format=torch.channels_last)  # no layout change through the op
    assert rel_err(y, y64) <= 1e-5 and all(rel_err(g[k], g64[k]) <= 1e-5 for k in grads_of)
    # a strided slice (every other position) is neither layout: it is copied once and still exact
    xs, a, w, b, s, dys = make_inputs((3, 10, 64), -1, seed=12)
    sliced = xs[:, ::2]
    y64, g64 = float64_grads(sliced, a, w, b, s, dys[:, ::2], "tanh", -1, grads_of)
    y, g = run_kernel(xs, a, w, b, s, dys[:, ::2], "tanh", -1, grads_of, torch.float32, torch.float32,
                      transform=lambda t: t[:, ::2])
    assert rel_err(y, y64) <= 1e-5 and all(rel_err(g[k], g64[k]) <= 1e-5 for k in grads_of)


@pytest.mark.parametrize("shape,channel_dim", [((300, 40, 1, 3), 1), ((2, 37, 96), -1)])
def test_second_stage_in_many_small_blocks(monkeypatch, shape, channel_dim):
    """The kernel that adds up the per-program partials, with tiles so small that every one of its loops runs
    several times: (sample, program) pairs for dγ/dβ over many blocks, and the per-program dα/dshift sums too."""
    monkeypatch.setattr(blocks, "FINISH_TILE", 16)
    monkeypatch.setattr(blocks, "FINISH_BLOCK_C", 8)
    x, a, w, b, s, dy = make_inputs(shape, channel_dim, seed=21, shift=True)
    grads_of = ["x", "alpha", "weight", "bias", "shift"]
    y64, g64 = float64_grads(x, a, w, b, s, dy, "erf", channel_dim, grads_of)
    y, g = run_kernel(x, a, w, b, s, dy, "erf", channel_dim, grads_of, torch.float32, torch.float32)
    assert rel_err(y, y64) <= 1e-5
    for k in ("x", "weight", "bias"):
        assert rel_err(g[k], g64[k]) <= 1e-5, k
    for k in ("alpha", "shift"):
        assert_scalar_reduction_close(g[k], g64[k], x, a, w, s, dy, "erf", channel_dim, k)


def test_empty_input():
    x = torch.empty(0, 8, device=DEVICE, requires_grad=True)
    a = torch.tensor(0.5, device=DEVICE, requires_grad=True)
    w = torch.ones(8, device=DEVICE, requires_grad=True)
    b = torch.zeros(8, device=DEVICE, requires_grad=True)
    y = squash_affine_triton(x, a, w, b)
    assert y.shape == (0, 8)
    y.sum().backward()
    assert x.grad.shape == (0, 8) and a.grad.item() == 0 and w.grad.abs().sum() == 0 and b.grad.abs().sum() == 0


def test_gradients_are_bitwise_reproducible():
    x, a, w, b, s, dy = make_inputs((64, 96), -1, seed=5)
    grads_of = ["x", "alpha", "weight", "bias"]
    _, g1 = run_kernel(x, a, w, b, s, dy, "tanh", -1, grads_of, torch.float32, torch.float32)
    _, g2 = run_kernel(x, a, w, b, s, dy, "tanh", -1, grads_of, torch.float32, torch.float32)
    for k in grads_of:
        assert torch.equal(g1[k], g2[k]), k


def test_custom_op_registration_fake_and_autograd():
    """torch.library's own checker: schema, fake (meta) implementation, autograd registration, AOT dispatch."""
    op = torch.ops.dyt_bench.squash_affine.default
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 32, generator=gen).to(DEVICE).requires_grad_()
    a = torch.tensor(0.5, device=DEVICE, requires_grad=True)
    w = torch.randn(32, generator=gen).to(DEVICE).requires_grad_()
    b = torch.randn(32, generator=gen).to(DEVICE).requires_grad_()
    torch.library.opcheck(op, (x, a, w, b, None, "tanh", 2))
    xf = torch.randn(2, 8, 3, 3, generator=gen).to(DEVICE).requires_grad_()
    torch.library.opcheck(op, (xf, a, torch.ones(8, device=DEVICE), None, None, "sigmoid", 1))


@pytest.mark.parametrize("mode", ["decomposed", "inductor", "custom_op"])
@pytest.mark.parametrize("impl", ["triton", "auto"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiles_without_graph_break_and_matches_float64(monkeypatch, mode, impl, dtype):
    """Every way into a compiled graph (the forward decomposed or a custom op, with the fused backward; or inductor's
    own forward and backward of the element-wise expression), with a residual add before and an activation after,
    fullgraph: the loss and every gradient against float64 math."""
    monkeypatch.setenv("DYT_BENCH_COMPILED_FORWARD", mode)
    torch._dynamo.reset()
    if impl == "auto" and DEVICE != "cuda":
        pytest.skip("impl='auto' takes the eager op off CUDA")
    gen = torch.Generator().manual_seed(zlib.crc32(f"{mode}{impl}{dtype}".encode()))
    layer = build_norm(NormSpec("dyt", impl=impl, alpha_init=0.7), 48).to(DEVICE)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(48, generator=gen) + 0.5)
        layer.bias.copy_(torch.rand(48, generator=gen) - 0.5)

    def step(x, r):
        return torch.nn.functional.gelu(layer(x + r).float()).sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager" if INTERPRET else "inductor")
    x64 = torch.randn(4, 10, 48, generator=gen, dtype=torch.float64)
    r64 = torch.randn(4, 10, 48, generator=gen, dtype=torch.float64)
    x = x64.to(dtype).to(DEVICE).requires_grad_()
    r = r64.to(dtype).to(DEVICE)
    params = [layer.alpha, layer.weight, layer.bias]
    loss = compiled(x, r)
    grads = torch.autograd.grad(loss, [x, *params])
    leaves = [x.detach().double().cpu().requires_grad_()] + [p.detach().double().cpu().requires_grad_()
                                                             for p in params]
    y64 = squash_affine_reference(leaves[0] + r.double().cpu(), *leaves[1:])
    loss64 = torch.nn.functional.gelu(y64).sum()
    grads64 = torch.autograd.grad(loss64, leaves)
    tol = TOL[dtype]
    assert abs(loss.item() - loss64.item()) <= tol * loss64.abs().item() + 1e-4
    for name, g, g64 in zip(["x", "alpha", "weight", "bias"], grads, grads64, strict=True):
        assert g.shape == g64.shape, name
        assert rel_err(g, g64) <= tol, name


def test_lean_launch_plans_on_repeated_calls_with_fresh_inputs():
    """The second and later calls of one argument signature take the lean launch (a plan, on CUDA): each call on
    fresh random inputs against float64 math, for tokens, feature maps, channels-last memory, a transposed upstream
    gradient, partial gradients, and misaligned views of a signature whose first call was aligned (they have its
    plan's signature and must take the ordinary path: the compiled kernels assume 16-byte alignment)."""
    cases = [((6, 40, 96), -1, None, ["x", "alpha", "weight", "bias"]),
             ((3, 16, 5, 7), 1, None, ["x", "alpha", "weight", "bias"]),
             ((3, 16, 5, 7), 1, torch.channels_last, ["x", "weight"]),
             ((5, 33, 64), -1, "transposed dy", ["x", "alpha", "bias"]),
             ((2, 31, 64), -1, "misaligned", ["x", "alpha", "weight", "bias"]),
             ((4, 8, 48), -1, None, ["alpha"]),
             ((4, 24, 40), -1, "stored channels-first", ["x", "alpha", "weight", "bias"])]
    for shape, channel_dim, variant, grads_of in cases:
        for call in range(3):
            x, a, w, b, s, dy = make_inputs(shape, channel_dim, seed=1000 * call + len(shape) + shape[1])
            misaligned = variant == "misaligned" and call > 0  # call 0 aligned: it makes the signature's plan
            if misaligned:  # a view one element into its storage: pointers not 16-byte aligned
                flat = torch.randn(x.numel() + 1, dtype=torch.float64, generator=torch.Generator().manual_seed(call))
                x = flat[1:].view(shape)
            y64, g64 = float64_grads(x, a, w, b, s, dy, "tanh", channel_dim, grads_of)
            if variant == "transposed dy":
                dy_in = dy.transpose(0, 1).contiguous().transpose(0, 1)  # same values, other strides
            else:
                dy_in = dy
            memory_format = variant if isinstance(variant, torch.memory_format) else None
            transform = (lambda t: torch.cat([t.new_zeros(1), t.flatten()])[1:].view(t.shape)) \
                if misaligned else None
            xt = x.float()
            if memory_format is not None:
                xt = xt.contiguous(memory_format=memory_format)
            xt = xt.to(DEVICE)
            if transform is not None:
                xt = transform(xt)
            if variant == "stored channels-first":  # (B, N, C) with strides (N·C, 1, N): a patch embedding's stream
                xt = xt.transpose(1, 2).contiguous().transpose(1, 2)
                assert launch.matrix_view(xt, channel_dim)[0] is xt, "the channels-first kernels take it uncopied"
            leaves = {"x": xt, "alpha": a.float().to(DEVICE), "weight": w.float().to(DEVICE),
                      "bias": b.float().to(DEVICE)}
            leaves = {k: v.detach().requires_grad_(k in grads_of) for k, v in leaves.items()}
            y = squash_affine_triton(leaves["x"], leaves["alpha"], leaves["weight"], leaves["bias"],
                                     channel_dim=channel_dim)
            assert rel_err(y, y64) <= 1e-5, (shape, variant, call)
            if variant == "stored channels-first":
                assert y.stride() == xt.stride(), "the output keeps the input's memory order"
            grads = torch.autograd.grad(y, [leaves[k] for k in grads_of], dy_in.float().to(DEVICE))
            for k, g in zip(grads_of, grads, strict=True):
                assert g.shape == leaves[k].shape and g.dtype == leaves[k].dtype, k
                assert rel_err(g, g64[k]) <= 1e-5, (shape, variant, call, k)
            with torch.no_grad():  # inference: the forward alone, no autograd node
                y2 = squash_affine(leaves["x"], leaves["alpha"], leaves["weight"], leaves["bias"],
                                   channel_dim=channel_dim, impl="triton")
            assert rel_err(y2, y64) <= 1e-5 and not y2.requires_grad
    if DEVICE == "cuda":  # the aligned signatures above left plans (the lean launch was taken, not the fallback)
        assert any(plan for plan in launch._FWD_PLANS.values()) and any(plan for plan in launch._BWD_PLANS.values())


def test_planned_calls_of_impl_auto_match_float64(monkeypatch):
    """Calls of one signature after the first take the op's planned path (``op._PlannedFunction``: the launch plans
    kept with the autograd node, the backward plan chosen by the gradients needed and the upstream gradient's
    layout). Each call on fresh inputs against float64 math: every gradient, partial gradients, a transposed upstream
    gradient, a shift, and no grad. On CUDA the plans are the real ones; under the interpreter, where Triton's C
    launcher does not exist, they are stand-ins that launch the ordinary way, so what is checked there is the
    bookkeeping around them (which plan, which gradients, in which order)."""
    from dyt_bench.ops.triton import op as op_module

    taken = {"fwd": 0, "bwd": 0}
    if DEVICE != "cuda":
        def run_forward(plan, x, a, w, b, s, index):
            taken["fwd"] += 1
            return launch.launch_forward(x, a, w, b, s, plan[0], plan[1])

        def backward_with_plan(dy, x, a, w, s, fn, channel_dim, *need):
            dx, out = launch.launch_backward(dy, x, a, w, s, fn, channel_dim, *need)
            return dx, out, (fn, channel_dim, need)

        def run_backward(plan, dy, x, a, w, s, index):
            taken["bwd"] += 1
            return launch.launch_backward(dy, x, a, w, s, plan[0], plan[1], *plan[2])

        monkeypatch.setattr(op_module, "forward_plan", lambda x, a, w, b, s, fn, channel_dim: (fn, channel_dim))
        monkeypatch.setattr(op_module, "run_forward", run_forward)
        monkeypatch.setattr(op_module, "backward_with_plan", backward_with_plan)
        monkeypatch.setattr(op_module, "run_backward", run_backward)
    monkeypatch.setattr(op_module, "_OP_PLANS", {})
    cases = [((6, 40, 96), -1, "tanh", False, None, ["x", "alpha", "weight", "bias"]),
             ((3, 16, 5, 7), 1, "tanh", False, None, ["x", "alpha", "weight", "bias"]),
             ((5, 33, 64), -1, "tanh", False, "transposed dy", ["x", "alpha", "bias"]),
             ((5, 33, 64), -1, "tanh", False, None, ["weight"]),
             ((4, 8, 48), -1, "erf", True, None, ["x", "alpha", "weight", "bias", "shift"])]
    for shape, channel_dim, fn, shift, variant, grads_of in cases:
        for call in range(3):
            x, a, w, b, s, dy = make_inputs(shape, channel_dim, seed=77 * call + shape[1], shift=shift)
            y64, g64 = float64_grads(x, a, w, b, s, dy, fn, channel_dim, grads_of)
            leaves = {"x": x, "alpha": a.reshape(1), "weight": w, "bias": b, "shift": None if s is None else s.reshape(1)}
            leaves = {k: None if v is None else v.float().to(DEVICE).requires_grad_(k in grads_of)
                      for k, v in leaves.items()}
            y = op_module.squash_affine_fused(leaves["x"], leaves["alpha"], leaves["weight"], leaves["bias"], fn,
                                              channel_dim, leaves["shift"])
            assert rel_err(y, y64) <= 1e-5, (shape, variant, call)
            dy_in = dy.float().to(DEVICE)
            if variant == "transposed dy":
                dy_in = dy_in.transpose(0, 1).contiguous().transpose(0, 1)  # same values, other strides
            grads = torch.autograd.grad(y, [leaves[k] for k in grads_of], dy_in)
            for k, g in zip(grads_of, grads, strict=True):
                want = g64[k].reshape(leaves[k].shape)
                assert g.shape == leaves[k].shape and g.dtype == leaves[k].dtype, (shape, call, k)
                # α and the shift are sums over every element: float32 accumulation, cancelling terms
                assert rel_err(g, want) <= (1e-4 if k in ("alpha", "shift") else 1e-5), (shape, variant, call, k)
            with torch.no_grad():
                y2 = op_module.squash_affine_fused(leaves["x"], leaves["alpha"], leaves["weight"], leaves["bias"], fn,
                                                   channel_dim, leaves["shift"])
            assert rel_err(y2, y64) <= 1e-5 and not y2.requires_grad
    plans = list(op_module._OP_PLANS.values())
    assert len(plans) == 4, "one plan per signature (the two (5, 33, 64) cases share theirs)"
    assert all(plan.bwd for plan in plans), "every signature made a backward plan"
    assert max(len(plan.bwd) for plan in plans) == 2, "(5, 33, 64): a transposed dy with three grads, then one grad"
    if DEVICE != "cuda":
        # planned forwards: with grad, calls 2-3 of each case and call 1 of the case sharing a plan (11), and every
        # no-grad call (15, the plan being made by the call before); planned backwards: call 3 of each case, calls 2-3
        # of the sharing one (6: the first backward under a plan makes its backward plan)
        assert taken == {"fwd": 26, "bwd": 6}


@pytest.mark.skipif(DEVICE != "cuda", reason="the C++ node launches compiled kernels through the CUDA driver")
def test_native_node_matches_the_python_node_bitwise_and_float64(monkeypatch):
    """The C++ autograd node (native.py) launches the kernels the Python node would, with the same plans: so on
    fresh inputs its output and every gradient are bitwise those of the Python node on the same inputs, and within
    float64 tolerance. Tokens and feature maps, channels-last memory, bfloat16 input with float32 and bfloat16
    parameters, partial gradients, a transposed upstream gradient, no γ / β (DiT's norms), α of shape (1,) and (),
    Derf's shift, and a misaligned view (the C++ node declines it, the Python path takes it)."""
    from dyt_bench.ops.triton import native
    from dyt_bench.ops.triton import op as op_module

    if native.module() is None:
        pytest.skip(f"the C++ node cannot be built here: {native.unavailable_reason()}")
    monkeypatch.setattr(op_module, "_OP_PLANS", {})
    monkeypatch.setattr(native, "_enabled", True)
    f32, bf16 = torch.float32, torch.bfloat16
    # shape, channel_dim, fn, shift, x dtype, parameter dtype, variant, gradients of
    cases = [((6, 40, 96), -1, "tanh", False, f32, f32, None, ["x", "alpha", "weight", "bias"]),
             ((3, 16, 5, 7), 1, "tanh", False, f32, f32, None, ["x", "alpha", "weight", "bias"]),
             ((3, 16, 5, 7), 1, "tanh", False, f32, f32, torch.channels_last, ["x", "alpha", "weight"]),
             ((4, 64, 256), -1, "tanh", False, bf16, f32, None, ["x", "alpha", "weight", "bias"]),
             ((4, 64, 256), -1, "tanh", False, bf16, bf16, None, ["x", "alpha", "weight", "bias"]),
             ((5, 33, 64), -1, "tanh", False, f32, f32, "transposed dy", ["x", "alpha", "bias"]),
             ((5, 33, 64), -1, "tanh", False, f32, f32, None, ["weight"]),
             ((8, 32, 48), -1, "tanh", False, f32, f32, "no affine", ["x", "alpha"]),
             ((8, 32, 48), -1, "tanh", False, f32, f32, "alpha ()", ["x", "alpha", "weight", "bias"]),
             ((4, 8, 48), -1, "erf", True, f32, f32, None, ["x", "alpha", "weight", "bias", "shift"]),
             ((8, 32, 48), -1, "tanh", False, bf16, f32, "stored channels-first", ["x", "alpha"]),
             ((2, 31, 64), -1, "tanh", False, f32, f32, "misaligned", ["x", "alpha", "weight", "bias"])]
    native_nodes = 0
    for shape, channel_dim, fn, shift, dtype, pdtype, variant, grads_of in cases:
        for call in range(4):
            x, a, w, b, s, dy = make_inputs(shape, channel_dim, seed=31 * call + shape[1] + len(grads_of), shift=shift)
            if variant in ("no affine", "stored channels-first"):  # DiT's norms have no γ / β
                w = b = None
            tol = TOL[dtype] if dtype != f32 else 1e-5
            y64, g64 = float64_grads(x.to(dtype).double(), a, w, b, s, dy, fn, channel_dim, grads_of)
            xt = x.to(dtype)
            if isinstance(variant, torch.memory_format):
                xt = xt.contiguous(memory_format=variant)
            xt = xt.to(DEVICE)
            if variant == "stored channels-first":  # DiT's token stream, (B, N, C) with strides (N·C, 1, N)
                xt = xt.transpose(1, 2).contiguous().transpose(1, 2)
            if variant == "misaligned" and call > 1:  # one element into a fresh buffer: not 16-byte aligned
                xt = torch.cat([xt.new_zeros(1), xt.flatten()])[1:].view(shape)
            dy_in = dy.to(dtype).to(DEVICE)
            if isinstance(variant, torch.memory_format):  # a channels-last activation's gradient comes channels-last
                dy_in = dy_in.contiguous(memory_format=variant)
            if variant == "transposed dy" and call > 1:  # the plans come from a contiguous dy; the C++ node copies
                dy_in = dy_in.transpose(0, 1).contiguous().transpose(0, 1)
            alpha = a.reshape(()) if variant == "alpha ()" else a.reshape(1)
            values = {"x": xt, "alpha": alpha, "weight": w, "bias": b,
                      "shift": None if s is None else s.reshape(1)}
            results = []
            for take_native in (True, False):
                monkeypatch.setattr(native, "_enabled", take_native)
                leaves = {k: None if v is None else (v if k == "x" else v.to(pdtype if k in ("weight", "bias")
                                                                                else f32).to(DEVICE))
                          for k, v in values.items()}
                leaves = {k: None if v is None else v.detach().requires_grad_(k in grads_of)
                          for k, v in leaves.items()}
                y = op_module.squash_affine_fused(leaves["x"], leaves["alpha"], leaves["weight"], leaves["bias"], fn,
                                                  channel_dim, leaves["shift"])
                grads = torch.autograd.grad(y, [leaves[k] for k in grads_of], dy_in)
                results.append((y, grads, "DyTNativeNode" in y.grad_fn.name()))
            (y, grads, node), (y_py, grads_py, node_py) = results
            assert not node_py, "the Python node was asked for"
            if call >= 2 and variant != "misaligned":  # call 1 made the backward plan; from call 2 on: the C++ node
                assert node, (shape, variant, call)
                native_nodes += 1
            if variant == "misaligned" and call > 1:
                assert not node, "a misaligned view must take the Python path"
            assert torch.equal(y, y_py), (shape, variant, call)
            assert rel_err(y, y64) <= tol, (shape, variant, call)
            for k, g, g_py in zip(grads_of, grads, grads_py, strict=True):
                leaf_shape = values[k].shape
                assert g.shape == leaf_shape and g.dtype == g_py.dtype, (shape, variant, call, k)
                assert torch.equal(g, g_py), (shape, variant, call, k)
                want = g64[k].reshape(leaf_shape)
                loose = k in ("alpha", "shift") or dtype != f32 or pdtype != f32
                assert rel_err(g, want) <= (1e-2 if dtype != f32 or pdtype != f32 else 1e-4 if loose else 1e-5), \
                    (shape, variant, call, k)
    assert native_nodes == 2 * (len(cases) - 1)


def test_autocast_input_dtype_with_float32_parameters():
    device_type = "cuda" if DEVICE == "cuda" else "cpu"
    lin = torch.nn.Linear(32, 32).to(DEVICE)
    norm = build_norm(NormSpec("dyt", impl="triton"), 32).to(DEVICE)
    ref = build_norm(NormSpec("dyt", impl="eager"), 32).to(DEVICE)
    x = torch.randn(6, 32, device=DEVICE)
    with torch.autocast(device_type, dtype=torch.bfloat16):
        h = lin(x)
        y, y_ref = norm(h), ref(h)
    assert h.dtype == torch.bfloat16 and y.dtype == torch.bfloat16 and norm.weight.dtype == torch.float32
    assert rel_err(y, y_ref) <= 1e-2
    y.float().sum().backward()
    assert norm.alpha.grad is not None and norm.weight.grad.dtype == torch.float32


def test_dispatch_and_layers_use_the_kernel():
    x = torch.randn(2, 6, 4, 4, device=DEVICE)
    w, b = torch.randn(6, device=DEVICE), torch.randn(6, device=DEVICE)
    ref = squash_affine(x, 0.7, w, b, fn="hardtanh", channel_dim=1, impl="eager")
    fused = squash_affine(x, 0.7, w, b, fn="hardtanh", channel_dim=1, impl="triton")
    assert rel_err(fused, ref) <= 1e-6
    layer = build_norm(NormSpec("derf", impl="triton"), 6, layout="channels_first").to(DEVICE)
    eager = build_norm(NormSpec("derf", impl="eager"), 6, layout="channels_first").to(DEVICE)
    eager.load_state_dict(layer.state_dict())
    assert rel_err(layer(x), eager(x)) <= 1e-6


@pytest.mark.skipif(DEVICE != "cuda", reason="needs a GPU with > 8 GB free")
def test_over_two_billion_elements_uses_int64_offsets():
    rows, cols = 2**31 // 1024 + 8, 1024  # 2^31 + 8192 elements, bf16
    x = torch.empty(rows, cols, device="cuda", dtype=torch.bfloat16)
    x[:8].normal_()
    x[-8:].normal_()
    x[8:-8].fill_(0.25)
    w = torch.randn(cols, device="cuda")
    y = squash_affine_triton(x, 0.5, w, None)
    for part in (slice(0, 8), slice(-8, None)):
        ref = squash_affine_reference(x[part], 0.5, w, None)
        assert rel_err(y[part], ref) <= 1e-2
    del y
    x.requires_grad_()
    wg = w.clone().requires_grad_()
    y = squash_affine_triton(x, 0.5, wg, None)
    y.backward(torch.ones_like(y))
    ref_w = (torch.tanh(0.5 * x.detach().float())).sum(0)
    assert rel_err(wg.grad, ref_w) <= 1e-3


@pytest.mark.parametrize("kind", POINTWISE_KINDS)
@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
def test_every_pointwise_kind_layer_matches_eager(kind, layout):
    """Each norm kind of the registry, built as a layer with impl="triton", against the same layer in eager."""
    fused = build_norm(NormSpec(kind, impl="triton", alpha_init=0.7, shift_init=0.2), 12, layout).to(DEVICE)
    eager = build_norm(NormSpec(kind, impl="eager", alpha_init=0.7, shift_init=0.2), 12, layout).to(DEVICE)
    with torch.no_grad():
        fused.weight.uniform_(0.5, 1.5)
        fused.bias.uniform_(-0.5, 0.5)
    eager.load_state_dict(fused.state_dict())
    gen = torch.Generator().manual_seed(zlib.crc32(kind.encode()))
    x = (torch.randn(3, 5, 12, generator=gen) if layout == "channels_last" else
         torch.randn(2, 12, 3, 5, generator=gen)).mul(2).to(DEVICE)
    assert rel_err(fused(x), eager(x)) <= 1e-6


def _ops_benchmark():
    """benchmarks/ops.py as a module (it is a script, not part of the package)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "ops.py"
    spec = importlib.util.spec_from_file_location("ops_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_benchmark_sweeps_build_and_launch_their_configurations():
    """Every configuration of benchmarks/ops.py's sweeps (--sweep, --sweep-wide, --sweep-fn) gives the heuristic
    valid tiles, and each distinct launch among them computes what the reference does (forward, and the backward's
    parameter gradients) on small token matrices and a feature map."""
    bench = _ops_benchmark()
    grids = {("tanh", "fwd"): bench.sweep_grid("fwd") + bench.sweep_grid("fwd", wide=True),
             ("tanh", "bwd"): bench.sweep_grid("bwd")}
    for stage in ("fwd", "bwd"):
        grids[("erf", stage)] = bench.sweep_fn_grid(stage, quick=False) + bench.sweep_fn_grid(stage, quick=True)
    assert all(len(configs) >= 8 for configs in grids.values())
    for shape, channel_dim in (((6, 96), -1), ((5, 640), -1), ((2, 8, 5, 7), 1)):
        x, a, w, b, s, dy = make_inputs(shape, channel_dim, seed=31, shift=True)
        xt, dyt, at, wt, bt = (t.float().to(DEVICE) for t in (x, dy, a, w, b))
        dim = channel_dim % x.dim()
        xv, channels_last, rows, cols, _ = launch.matrix_view(xt, dim)
        for (fn, stage), configs in grids.items():
            st = s.float().to(DEVICE) if fn == "erf" else None
            y64, g64 = float64_grads(x, a, w, b, s if fn == "erf" else None, dy, fn, channel_dim, ["weight", "bias"])
            launched = set()
            for label, knobs in configs:
                tiles = blocks.choose_blocks(rows, cols, stage, channels_last, fn, launch.sm_count(xt.device), knobs)
                assert tiles.block_r >= 1 and tiles.block_l >= 1 and tiles.num_warps >= 1, label
                if tiles in launched:
                    continue  # the same kernel launch as a configuration already checked
                launched.add(tiles)
                if stage == "fwd":
                    y = launch.launch_forward(xt, at, wt, bt, st, fn, dim, knobs)
                    assert rel_err(y, y64) <= 1e-5, (fn, label)
                else:
                    _, sums = launch.launch_backward(dyt, xt, at, wt, st, fn, dim, False, True, True, False, False,
                                                     knobs)
                    c = x.shape[dim]
                    assert rel_err(sums[:c], g64["weight"]) <= 1e-5, (fn, label)
                    assert rel_err(sums[c:2 * c], g64["bias"]) <= 1e-5, (fn, label)
