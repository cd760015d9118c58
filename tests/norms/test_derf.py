"""Derf (γ·erf(αx + s) + β): forward and all five gradients against float64 math, the shift parameter, the
saturation monitor's fraction against a direct count."""

import math
import os

import numpy as np
import pytest
import torch
from helpers import tiny_data, tiny_task, tiny_trainer

from dyt_bench.callbacks import SaturationMonitor
from dyt_bench.callbacks.saturation import CSV_NAME, relative_slope, saturated_fraction
from dyt_bench.norms import NormSpec, SquashNorm, build_norm, replace_norms
from dyt_bench.ops import squash_affine

SHAPES = {"channels_last": ((3, 5, 8), -1), "channels_first": ((2, 8, 3, 4), 1)}


@pytest.mark.parametrize("layout", SHAPES)
def test_derf_forward_and_all_gradients_against_float64(layout):
    shape, cdim = SHAPES[layout]
    gen = torch.Generator().manual_seed(0)
    layer = build_norm(NormSpec("derf", alpha_init=0.7, shift_init=0.3), 8, layout)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(8, generator=gen))
        layer.bias.copy_(torch.randn(8, generator=gen))
    x = (torch.randn(shape, generator=gen) * 2).requires_grad_(True)
    dy = torch.randn(shape, generator=gen)
    y = layer(x)
    (y * dy).sum().backward()

    xn, dyn = x.detach().double().numpy(), dy.double().numpy()
    bshape = [1] * len(shape)
    bshape[cdim] = 8
    w = layer.weight.detach().double().numpy().reshape(bshape)
    b = layer.bias.detach().double().numpy().reshape(bshape)
    z = 0.7 * xn + 0.3
    erf = np.vectorize(math.erf)(z)
    derf = 2 / math.sqrt(math.pi) * np.exp(-z * z)
    red = tuple(d for d in range(len(shape)) if d != cdim % len(shape))
    np.testing.assert_allclose(y.detach().double().numpy(), w * erf + b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(x.grad.double().numpy(), dyn * w * derf * 0.7, rtol=1e-5, atol=1e-6)
    assert layer.alpha.grad.item() == pytest.approx(float((dyn * w * derf * xn).sum()), rel=1e-5)
    assert layer.shift.grad.item() == pytest.approx(float((dyn * w * derf).sum()), rel=1e-5)
    np.testing.assert_allclose(layer.weight.grad.double().numpy(), (dyn * erf).sum(red), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.bias.grad.double().numpy(), dyn.sum(red), rtol=1e-5, atol=1e-6)


def test_derf_shift_parameter_and_defaults():
    layer = build_norm(NormSpec("derf"), 4)
    assert isinstance(layer.shift, torch.nn.Parameter) and layer.shift.item() == 0.0
    assert layer.alpha.item() == 0.5 and layer.alpha.requires_grad  # the Derf paper's init
    fixed = build_norm(NormSpec("derf", shift_init=0.2, learnable_shift=False), 4)
    assert "shift" in dict(fixed.named_buffers()) and fixed.shift.item() == pytest.approx(0.2)
    assert build_norm(NormSpec("dyt"), 4).shift is None
    with pytest.raises(ValueError, match="norm.shift_init"):
        NormSpec("derf", shift_init=float("nan"))


def test_derf_through_surgery_and_cpu_dispatch():
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.LayerNorm(6))
    report = replace_norms(model, "derf")
    assert report.target.startswith("derf") and isinstance(model[1], SquashNorm) and model[1].fn == "erf"
    x = torch.randn(2, 6)
    # auto on CPU is the eager reference; forcing the fused kernels on CPU (without the interpreter) is a clear error
    torch.testing.assert_close(squash_affine(x, 0.5, None, None, fn="erf", shift=0.1), torch.erf(0.5 * x + 0.1))
    if os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        with pytest.raises(RuntimeError, match="need CUDA tensors"):
            squash_affine(x, 1.0, None, None, fn="erf", impl="triton")


def test_saturated_fraction_equals_direct_count():
    x = torch.linspace(-4, 4, 801)
    tanh_layer = build_norm(NormSpec("dyt", alpha_init=1.0), 1)
    # |tanh(z)| > 0.9 ⇔ |z| > atanh(0.9) ≈ 1.472: the default threshold 1 - 0.9² marks exactly those
    direct = float((torch.tanh(x).abs() > 0.9).float().mean())
    assert saturated_fraction(tanh_layer, x) == pytest.approx(direct, abs=1 / 801)
    derf_layer = build_norm(NormSpec("derf", alpha_init=2.0, shift_init=0.5), 1)
    z = 2.0 * x.double() + 0.5
    direct_erf = float((np.exp(-z.numpy() ** 2) < 0.19).mean())  # erf' relative to its maximum
    assert saturated_fraction(derf_layer, x) == pytest.approx(direct_erf, abs=1e-6)
    assert relative_slope(torch.tensor([0.0]), "sigmoid").item() == pytest.approx(1.0)
    assert saturated_fraction(build_norm(NormSpec("identity"), 1), x) == 0.0


def test_saturation_monitor_logs_and_writes(tmp_path):
    monitor = SaturationMonitor(every_n_steps=2, max_elements=100)
    trainer = tiny_trainer(tmp_path, callbacks=[monitor], max_steps=5, limit_val_batches=0)
    trainer.fit(tiny_task("derf"), datamodule=tiny_data())
    steps = sorted({r["step"] for r in monitor.rows})
    assert steps == [0, 2, 4] and len(monitor.rows) == 3 * 3  # 3 layers at steps 0, 2, 4
    assert all(0 <= r["saturated_fraction"] <= 1 for r in monitor.rows)
    assert (tmp_path / CSV_NAME).exists() and (tmp_path / "saturation.png").exists()
    assert "sat/mean" in trainer.logged_metrics or "sat/mean" in trainer.callback_metrics
