"""The squash-function registry (ops/functions.py): each entry's derivative, maximum slope and kernel code are
consistent with its formula, and its norm kinds reach the norms package; checked for every entry."""

import math

import numpy as np
import pytest
import torch

from dyt_bench.norms import NORM_KINDS, STATISTIC_KINDS, NormFactory, NormSpec
from dyt_bench.ops.functions import ALL_FUNCTIONS, FUNCTIONS, KINDS, POINTWISE_KINDS, get_function, get_kind

# The published formulas and derivatives of the paper's functions and Derf's erf, in numpy (independent of torch).
PUBLISHED = {
    "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    "hardtanh": (lambda z: np.clip(z, -1.0, 1.0), lambda z: ((z > -1) & (z < 1)).astype(np.float64)),
    "sigmoid": (lambda z: 1.0 / (1.0 + np.exp(-z)), lambda z: (1 / (1 + np.exp(-z))) * (1 - 1 / (1 + np.exp(-z)))),
    "identity": (lambda z: z, np.ones_like),
    "erf": (np.vectorize(math.erf), lambda z: 2 / math.sqrt(math.pi) * np.exp(-z * z)),
}

# a dense grid that misses the kinks of piecewise functions (hardtanh at ±1)
GRID = torch.linspace(-6, 6, 12001, dtype=torch.float64) + 1e-4


@pytest.mark.parametrize("fn", sorted(PUBLISHED))
def test_formula_and_derivative_match_published_math(fn):
    formula, derivative = PUBLISHED[fn]
    z = GRID.numpy()
    np.testing.assert_allclose(FUNCTIONS[fn].formula(GRID).numpy(), formula(z), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(FUNCTIONS[fn].derivative(GRID).numpy(), derivative(z), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fn", ALL_FUNCTIONS)
def test_derivative_is_the_formulas_gradient(fn):
    f = FUNCTIONS[fn]
    z = GRID.clone().requires_grad_()
    (grad,) = torch.autograd.grad(f.formula(z).sum(), [z])
    torch.testing.assert_close(f.derivative(GRID), grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fn", ALL_FUNCTIONS)
def test_max_slope_is_the_derivatives_maximum(fn):
    f = FUNCTIONS[fn]
    slope = f.derivative(torch.cat([GRID, torch.zeros(1, dtype=torch.float64)]))
    assert slope.min() >= 0, "a squash function is non-decreasing"
    assert slope.max().item() == pytest.approx(f.max_slope, rel=1e-9)
    assert f.relative_slope(GRID).max() <= 1 + 1e-12
    assert torch.equal(f(GRID), f.formula(GRID))


def test_entries_are_consistent():
    codes = [f.kernel_code for f in FUNCTIONS.values()]
    assert len(set(codes)) == len(codes), "one kernel branch per function"
    assert all(name == f.name for name, f in FUNCTIONS.items())
    assert not set(POINTWISE_KINDS) & set(STATISTIC_KINDS)
    assert len(POINTWISE_KINDS) == sum(len(f.kinds) for f in FUNCTIONS.values()), "kind names are unique"
    with pytest.raises(ValueError, match="fn must be one of"):
        get_function("relu")
    with pytest.raises(ValueError, match="point-wise norm kind"):
        get_kind("layernorm")


@pytest.mark.parametrize("kind", POINTWISE_KINDS)
def test_every_kind_is_a_norm_kind(kind):
    fn, entry = KINDS[kind]
    assert kind in NORM_KINDS and kind in NormFactory.kinds()
    spec = NormSpec(kind)
    assert spec.is_squash and spec.squash_fn == fn.name and spec.has_shift == entry.shift
    assert spec.resolved_learnable_alpha == entry.learnable_alpha
    assert spec.resolved_alpha_init == entry.default_alpha_init
    assert NormFactory.entry(kind).description == entry.description
