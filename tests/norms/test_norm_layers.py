"""Every norm kind's forward against float64 math; init, parameters, gradients and layouts. The point-wise kinds
and their formulas come from the squash-function registry (ops/functions.py; its formulas are checked against
published math in tests/ops/test_squash_functions.py)."""

import numpy as np
import pytest
import torch
from torch import nn

from dyt_bench.norms import NORM_KINDS, SQUASH_KINDS, NormSpec, SquashNorm, build_norm
from dyt_bench.norms.spec import DEFAULT_ALPHA_INIT_LEARNABLE, SHIFT_KINDS, SQUASH_FN
from dyt_bench.ops.functions import FUNCTIONS


def _f64(kind: str, fn_attr: str, z: np.ndarray) -> np.ndarray:
    """The registry's formula (or derivative) of ``kind``'s function, in float64."""
    return getattr(FUNCTIONS[SQUASH_FN[kind]], fn_attr)(torch.from_numpy(np.asarray(z, dtype=np.float64))).numpy()


def _randomise_affine(layer: nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for name in ("weight", "bias"):
            p = getattr(layer, name, None)
            if isinstance(p, torch.Tensor):
                p.copy_(torch.randn(p.shape, generator=gen))


def _expected_float64(kind: str, x: np.ndarray, layer: nn.Module, layout: str, eps: float) -> np.ndarray:
    """The published formula of each kind, in float64 numpy, channel axis moved last."""
    xl = np.moveaxis(x, 1, -1) if layout == "channels_first" else x
    w = layer.weight.detach().double().numpy() if getattr(layer, "weight", None) is not None else 1.0
    b = layer.bias.detach().double().numpy() if getattr(layer, "bias", None) is not None else 0.0
    if kind in SQUASH_KINDS:
        a = float(layer.alpha.item())
        shift = float(layer.shift.item()) if layer.shift is not None else 0.0
        y = w * _f64(kind, "formula", a * xl + shift) + b
    elif kind == "layernorm":
        mu = xl.mean(-1, keepdims=True)
        var = ((xl - mu) ** 2).mean(-1, keepdims=True)
        y = (xl - mu) / np.sqrt(var + eps) * w + b
    elif kind == "rmsnorm":
        y = xl / np.sqrt((xl**2).mean(-1, keepdims=True) + eps) * w
    elif kind == "batchnorm":  # training mode: per channel over every other axis, biased variance
        flat = xl.reshape(-1, xl.shape[-1])
        mu, var = flat.mean(0), flat.var(0)
        y = (xl - mu) / np.sqrt(var + eps) * w + b
    else:
        raise AssertionError(kind)
    return np.moveaxis(y, -1, 1) if layout == "channels_first" else y


SHAPES = {"channels_last": (3, 7, 16), "channels_first": (3, 16, 5, 4)}


@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
@pytest.mark.parametrize("kind", NORM_KINDS)
def test_forward_matches_float64_formula(kind, layout):
    gen = torch.Generator().manual_seed(0)
    eps = 1e-5
    spec = NormSpec(kind=kind, alpha_init=0.7) if kind in SQUASH_KINDS else NormSpec(kind=kind, eps=eps)
    layer = build_norm(spec, 16, layout)
    _randomise_affine(layer, gen)
    layer.train()
    x = torch.randn(SHAPES[layout], generator=gen) * 2.5 + 0.3
    y = layer(x)
    assert y.dtype == torch.float32 and y.shape == x.shape
    expected = _expected_float64(kind, x.double().numpy(), layer, layout, eps)
    np.testing.assert_allclose(y.detach().double().numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", NORM_KINDS)
def test_channels_first_and_channels_last_agree(kind):
    gen = torch.Generator().manual_seed(1)
    spec = NormSpec(kind=kind)
    cf, cl = build_norm(spec, 12, "channels_first"), build_norm(spec, 12, "channels_last")
    _randomise_affine(cf, gen)
    cl.load_state_dict(cf.state_dict())
    x = torch.randn(2, 12, 5, 3, generator=gen)
    y_cf = cf(x)
    y_cl = cl(x.permute(0, 2, 3, 1).contiguous()).permute(0, 3, 1, 2)
    torch.testing.assert_close(y_cf, y_cl, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", SQUASH_KINDS)
@pytest.mark.parametrize("learnable", [True, False])
def test_squash_init_and_parameters(kind, learnable):
    layer = build_norm(NormSpec(kind=kind, alpha_init=0.3, learnable_alpha=learnable), 10)
    assert isinstance(layer, SquashNorm)
    assert torch.equal(layer.weight, torch.ones(10)) and torch.equal(layer.bias, torch.zeros(10))
    assert layer.alpha.shape == (1,) and layer.alpha.item() == pytest.approx(0.3)
    params = dict(layer.named_parameters())
    buffers = dict(layer.named_buffers())
    shift = {"shift"} if kind in SHIFT_KINDS else set()  # Derf's learnable shift, init 0
    if learnable:
        assert set(params) == {"alpha", "weight", "bias"} | shift and not buffers
    else:
        assert set(params) == {"weight", "bias"} | shift and set(buffers) == {"alpha"}
    assert sum(p.numel() for p in layer.parameters()) == 20 + int(learnable) + len(shift)


def test_alpha_defaults():
    assert NormSpec("dyt").resolved_learnable_alpha
    assert NormSpec("dyt").resolved_alpha_init == DEFAULT_ALPHA_INIT_LEARNABLE  # the supplied text's 1 (§4.2)
    assert NormSpec("derf").resolved_learnable_alpha and NormSpec("derf").resolved_alpha_init == 0.5
    for kind in ("tanh", "hardtanh", "sigmoid", "identity"):
        spec = NormSpec(kind)
        assert not spec.resolved_learnable_alpha and spec.resolved_alpha_init == 1.0
    assert NormSpec("tanh", learnable_alpha=True).resolved_alpha_init == DEFAULT_ALPHA_INIT_LEARNABLE == 1.0
    # Derf keeps its own paper's 0.5 only with its own (learnable) α
    assert NormSpec("derf", learnable_alpha=False).resolved_alpha_init == 1.0


@pytest.mark.parametrize("kind", SQUASH_KINDS)
@pytest.mark.parametrize("layout", ["channels_last", "channels_first"])
def test_alpha_gradient_matches_analytic(kind, layout):
    """dL/dα = Σ dy · γ · f'(αx) · x, computed in float64 numpy, for L = Σ dy ⊙ y."""
    gen = torch.Generator().manual_seed(2)
    layer = build_norm(NormSpec(kind=kind, alpha_init=0.6, learnable_alpha=True), 8, layout)
    _randomise_affine(layer, gen)
    x = torch.randn(SHAPES[layout][:-1] + (8,) if layout == "channels_last" else (2, 8, 3, 3), generator=gen) * 2
    dy = torch.randn(x.shape, generator=gen)
    (layer(x) * dy).sum().backward()
    xn, dyn, a = x.double().numpy(), dy.double().numpy(), 0.6
    w = layer.weight.detach().double().numpy()
    w = w.reshape((1, -1, 1, 1)) if layout == "channels_first" else w
    z = a * xn
    deriv = _f64(kind, "derivative", z)
    expected = float((dyn * w * deriv * xn).sum())
    assert layer.alpha.grad is not None
    assert layer.alpha.grad.item() == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_fixed_alpha_gets_no_gradient_and_is_saved():
    layer = build_norm(NormSpec(kind="tanh", alpha_init=2.0), 4)
    layer(torch.randn(3, 4, requires_grad=True)).sum().backward()
    assert not layer.alpha.requires_grad and layer.alpha.grad is None
    assert layer.state_dict()["alpha"].item() == 2.0  # a buffer, still checkpointed


def test_no_affine_squash():
    layer = build_norm("dyt", 6, affine=False)
    assert layer.weight is None and layer.bias is None
    x = torch.randn(2, 6)
    torch.testing.assert_close(layer(x), torch.tanh(DEFAULT_ALPHA_INIT_LEARNABLE * x))


@pytest.mark.parametrize("bad", ["dytt", "LayerNorm", ""])
def test_invalid_kind_lists_valid_values(bad):
    with pytest.raises(ValueError) as err:
        NormSpec(kind=bad)
    msg = str(err.value)
    assert "norm.kind" in msg and all(k in msg for k in NORM_KINDS)


def test_invalid_layout_lists_valid_values():
    with pytest.raises(ValueError) as err:
        build_norm("dyt", 8, layout="nhwc")
    assert "layout" in str(err.value) and "channels_last" in str(err.value) and "channels_first" in str(err.value)


def test_invalid_impl_and_eps():
    with pytest.raises(ValueError, match="norm.impl"):
        NormSpec(kind="dyt", impl="cuda")
    with pytest.raises(ValueError, match="norm.eps"):
        NormSpec(kind="layernorm", eps=-1.0)


def test_batchnorm_matches_torch_batchnorm2d_including_running_stats():
    gen = torch.Generator().manual_seed(3)
    ours, ref = build_norm("batchnorm", 5, "channels_first", eps=1e-5), nn.BatchNorm2d(5)
    _randomise_affine(ours, gen)
    ref.load_state_dict(ours.state_dict())
    for _ in range(3):
        x = torch.randn(4, 5, 6, 6, generator=gen) * 3 + 1
        torch.testing.assert_close(ours(x), ref(x))
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    ours.eval(), ref.eval()
    x = torch.randn(2, 5, 3, 3, generator=gen)
    torch.testing.assert_close(ours(x), ref(x))


def test_token_batchnorm_equals_batchnorm1d_over_tokens():
    """(B, N, C) tokens: each channel normalised over batch and tokens, as BatchNorm1d on (B, C, N)."""
    gen = torch.Generator().manual_seed(4)
    ours, ref = build_norm("batchnorm", 8, "channels_last", eps=1e-5), nn.BatchNorm1d(8)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 10, 8, generator=gen) * 2
    torch.testing.assert_close(ours(x), ref(x.transpose(1, 2)).transpose(1, 2))
    torch.testing.assert_close(ours.running_var, ref.running_var)


def test_layer_keeps_dtype():
    layer = build_norm("dyt", 4, dtype=torch.float64)
    assert layer.weight.dtype == torch.float64
    assert layer(torch.randn(2, 4, dtype=torch.float64)).dtype == torch.float64
    ln = build_norm("layernorm", 4, "channels_first")
    assert ln(torch.randn(2, 4, 3, dtype=torch.bfloat16)).dtype == torch.bfloat16
