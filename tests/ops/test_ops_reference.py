"""The eager squash-affine op (the specification) against float64 math for every function of the registry, and its
argument checks."""

import re

import numpy as np
import pytest
import torch

from dyt_bench.ops import ALL_FUNCTIONS, FUNCTIONS, squash_affine, squash_affine_reference


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.bfloat16, 1e-2), (torch.float16, 2e-3)])
@pytest.mark.parametrize("channel_dim", [-1, 1])
def test_reference_against_float64(dtype, tol, channel_dim):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 3, 5, generator=gen).to(dtype)
    c = x.shape[channel_dim]
    w, b = torch.randn(c, generator=gen), torch.randn(c, generator=gen)
    y = squash_affine(x, torch.tensor([0.7]), w, b, fn="tanh", channel_dim=channel_dim, impl="eager")
    assert y.dtype == dtype
    shape = [1, 1, 1, 1]
    shape[channel_dim] = c
    ref = w.double().numpy().reshape(shape) * np.tanh(0.7 * x.double().numpy()) + b.double().numpy().reshape(shape)
    np.testing.assert_allclose(y.double().numpy(), ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("fn", ALL_FUNCTIONS)
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.bfloat16, 1e-2), (torch.float16, 2e-3)])
@pytest.mark.parametrize("channel_dim", [-1, 1])
def test_every_function_against_float64_with_its_derivative(fn, dtype, tol, channel_dim):
    """y in each dtype against the registry's formula in float64; dx and dα (float32) from its derivative."""
    gen = torch.Generator().manual_seed(1)
    x64 = torch.randn(2, 6, 3, 5, generator=gen, dtype=torch.float64) * 2
    c = x64.shape[channel_dim]
    w, b = torch.randn(c, generator=gen, dtype=torch.float64), torch.randn(c, generator=gen, dtype=torch.float64)
    shape = [1, 1, 1, 1]
    shape[channel_dim] = c
    f, alpha, shift = FUNCTIONS[fn], 0.7, 0.2
    z = alpha * x64.to(dtype).double() + shift
    y = squash_affine_reference(x64.to(dtype), alpha, w, b, fn=fn, channel_dim=channel_dim, shift=shift)
    assert y.dtype == dtype
    expected = w.view(shape) * f.formula(z) + b.view(shape)
    torch.testing.assert_close(y.double(), expected, rtol=tol, atol=tol)

    x = x64.float().requires_grad_()
    a = torch.tensor(alpha, requires_grad=True)
    dy = torch.randn(x.shape, generator=gen)
    y = squash_affine_reference(x, a, w.float(), b.float(), fn=fn, channel_dim=channel_dim, shift=shift)
    gx, ga = torch.autograd.grad(y, [x, a], dy)
    dz = dy.double() * w.view(shape) * f.derivative(alpha * x64 + shift)
    torch.testing.assert_close(gx.double(), dz * alpha, rtol=1e-5, atol=1e-5)
    assert ga.item() == pytest.approx((dz * x64).sum().item(), rel=1e-4, abs=1e-4)


def test_auto_uses_eager_on_cpu_and_bad_arguments_are_named():
    x = torch.randn(3, 4)
    w, b = torch.ones(4), torch.zeros(4)
    torch.testing.assert_close(squash_affine(x, 1.0, w, b, impl="auto"), torch.tanh(x))
    with pytest.raises(ValueError, match="impl"):
        squash_affine(x, 1.0, w, b, impl="cuda")
    with pytest.raises(ValueError, match="fn"):
        squash_affine_reference(x, 1.0, w, b, fn="relu")
    with pytest.raises(ValueError, match="weight"):
        squash_affine_reference(x, 1.0, torch.ones(3), b)
    with pytest.raises(ValueError, match="alpha"):
        squash_affine_reference(x, torch.ones(2), w, b)
    with pytest.raises(ValueError, match="channel_dim"):
        squash_affine_reference(torch.randn(2, 3, 4, 5), 1.0, None, None, channel_dim=2)


def test_empty_input():
    x = torch.empty(0, 4)
    assert squash_affine_reference(x, 0.5, torch.ones(4), None).shape == (0, 4)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64])
def test_non_float_input_is_refused_with_its_dtype_named(dtype):
    x = torch.ones(3, 4).to(dtype)
    for impl in ("auto", "eager"):
        with pytest.raises(TypeError, match=re.escape(str(dtype))) as err:
            squash_affine(x, 0.5, torch.ones(4), torch.zeros(4), impl=impl)
        assert "float32" in str(err.value) and "bfloat16" in str(err.value)
