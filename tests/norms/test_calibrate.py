"""alpha_init: calibrate — α0 = k / std(input) of each point-wise norm from one forward pass, against a float64 hand
computation; the NormSpec field and its checks."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from dyt_bench.norms import NormSpec, SquashNorm, build_norm
from dyt_bench.norms.calibrate import calibrate_alpha, input_stds
from dyt_bench.norms.spec import DEFAULT_ALPHA_INIT_LEARNABLE


def _tiny(alpha0: float = 0.5) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(4, 6, dtype=torch.float64),
        SquashNorm(6, alpha_init=alpha0, dtype=torch.float64, impl="eager"),
        nn.Linear(6, 3, dtype=torch.float64),
        SquashNorm(3, alpha_init=alpha0, dtype=torch.float64, impl="eager"),
    )


def _hand_stds(model: nn.Sequential, x: np.ndarray, alpha0: float) -> tuple[float, float]:
    """Population std of each norm's input, numpy float64, with every α at its initial value (one pass)."""
    w1, b1 = model[0].weight.detach().numpy(), model[0].bias.detach().numpy()
    w2, b2 = model[2].weight.detach().numpy(), model[2].bias.detach().numpy()
    h1 = x @ w1.T + b1
    g, beta = model[1].weight.detach().numpy(), model[1].bias.detach().numpy()
    h2 = (g * np.tanh(alpha0 * h1) + beta) @ w2.T + b2
    return float(np.sqrt(np.mean((h1 - h1.mean()) ** 2))), float(np.sqrt(np.mean((h2 - h2.mean()) ** 2)))


@pytest.mark.parametrize("k", [1.0, 2.5])
def test_alpha_is_k_over_input_std_by_hand(k):
    model = _tiny()
    x = np.random.default_rng(1).normal(0.0, 3.0, size=(5, 7, 4))
    s1, s2 = _hand_stds(model, x, 0.5)
    record = calibrate_alpha(model, lambda: model(torch.from_numpy(x)), k=k)
    assert record["k"] == k and record["skipped"] == []
    assert record["layers"]["1"]["input_std"] == pytest.approx(s1, rel=1e-12)
    assert record["layers"]["3"]["input_std"] == pytest.approx(s2, rel=1e-12)
    assert model[1].alpha.item() == pytest.approx(k / s1, rel=1e-12)
    assert model[3].alpha.item() == pytest.approx(k / s2, rel=1e-12)
    assert record["layers"]["3"]["alpha"] == model[3].alpha.item()


def test_calibration_keeps_the_mode_and_skips_layers_not_reached():
    model = _tiny(alpha0=0.7)
    model.train()
    record = calibrate_alpha(model, lambda: model[:2](torch.randn(3, 4, dtype=torch.float64)))
    assert model.training and model[1].training  # back in train mode after the eval-mode pass
    assert record["skipped"] == ["3"] and model[3].alpha.item() == pytest.approx(0.7)
    assert set(record["layers"]) == {"1"}


def test_input_stds_pool_repeated_calls_of_one_layer():
    norm = SquashNorm(2, impl="eager", dtype=torch.float64)
    a = torch.tensor([[0.0, 2.0]], dtype=torch.float64)
    b = torch.tensor([[4.0, 6.0]], dtype=torch.float64)
    stds = input_stds(norm, lambda: (norm(a), norm(b)))
    assert stds[""] == pytest.approx(math.sqrt(5.0))  # population std of 0, 2, 4, 6


def test_spec_calibrate_field_and_checks():
    spec = NormSpec("dyt", alpha_init="calibrate")
    assert spec.calibrates and spec.calibrate_k == 1.0  # the paper: learned α tracks 1 / std (Figures 3-4)
    assert spec.to_dict()["alpha_init"] == "calibrate" and spec.to_dict()["calibrate_k"] == 1.0
    assert spec.label() == "dyt(α0=1/std)"
    assert "calibrate_k" not in NormSpec("dyt").to_dict()  # other specs (and their config hashes) are unchanged
    assert not NormSpec("layernorm", alpha_init="calibrate").calibrates
    layer = build_norm(spec, 8)  # before calibration: the kind's default α0
    assert layer.alpha.item() == pytest.approx(DEFAULT_ALPHA_INIT_LEARNABLE)
    with pytest.raises(ValueError, match="norm.calibrate_k"):
        NormSpec("dyt", alpha_init="calibrate", calibrate_k=0)
    with pytest.raises(ValueError, match="'calibrate'"):
        NormSpec("dyt", alpha_init="calibrated")
