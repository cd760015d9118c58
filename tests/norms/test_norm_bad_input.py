"""Bad input to NormSpec, build_norm and replace_norms: one clear error naming the field (and what it allows), or the
case handled correctly (idempotent surgery, reset after to_empty)."""

import math

import pytest
import torch
from torch import nn

from dyt_bench.norms import (
    BatchNorm,
    ChannelsFirstLayerNorm,
    ChannelsFirstRMSNorm,
    NormSpec,
    SquashNorm,
    UnsupportedNormError,
    build_norm,
    replace_norms,
)


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_alpha_init_must_be_finite(value):
    with pytest.raises(ValueError, match="norm.alpha_init must be a finite number"):
        NormSpec("dyt", alpha_init=value)


def test_fixed_alpha_zero_is_refused_learnable_alpha_zero_trains():
    with pytest.raises(ValueError, match="norm.alpha_init must be non-zero when alpha is fixed"):
        NormSpec("tanh", alpha_init=0.0)  # tanh's alpha is fixed by default
    with pytest.raises(ValueError, match="norm.alpha_init"):
        NormSpec("dyt", alpha_init=0, learnable_alpha=False)
    # learnable α = 0: the output is β at first, but ∂y/∂α = γ·x moves α off zero on the first step
    layer = build_norm(NormSpec("dyt", alpha_init=0.0), 4)
    x = torch.randn(3, 4, dtype=torch.float64)
    layer = layer.double()
    (layer(x) * x).sum().backward()
    assert torch.allclose(layer.alpha.grad, (x * x).sum().reshape(1))  # d/dα Σ tanh(αx)·x at α = 0 is Σ x²


@pytest.mark.parametrize("field, value", [("learnable_alpha", "no"), ("learnable_alpha", 0), ("learnable_alpha", 1),
                                          ("learnable_shift", "false"), ("learnable_shift", None)])
def test_booleans_only_from_booleans(field, value):
    with pytest.raises(ValueError, match=f"norm.{field} must be true"):
        NormSpec("derf", **{field: value})


def test_booleans_accepted():
    assert NormSpec("dyt", learnable_alpha=False).resolved_learnable_alpha is False
    assert NormSpec("tanh", learnable_alpha=True).resolved_learnable_alpha is True
    assert NormSpec("dyt", learnable_alpha=None).resolved_learnable_alpha is True


def test_shift_init_must_be_finite():
    with pytest.raises(ValueError, match="norm.shift_init"):
        NormSpec("derf", shift_init=math.inf)


def test_affine_false_as_a_dict_builds_no_weights():
    layer = build_norm({"kind": "dyt", "affine": False}, 8)
    assert layer.weight is None and layer.bias is None
    x = torch.randn(2, 8)
    torch.testing.assert_close(layer(x), torch.tanh(layer.alpha * x))
    with pytest.raises(ValueError, match="norm.affine"):
        NormSpec.coerce({"kind": "dyt", "affine": "no"})


@pytest.mark.parametrize("value", [True, False, 0, -3, 2.0, "8"])
def test_num_features_must_be_a_positive_int(value):
    with pytest.raises(ValueError, match="num_features must be a positive int"):
        build_norm("dyt", num_features=value)


def _trained(model: nn.Module) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(0.25 if name.endswith("alpha") else 0.5)


@pytest.mark.parametrize("layout_model", ["tokens", "image"])
def test_replace_norms_twice_keeps_trained_values(layout_model):
    if layout_model == "tokens":
        model = nn.Sequential(nn.Linear(6, 6), nn.LayerNorm(6))
    else:
        model = nn.Sequential(nn.Conv2d(3, 6, 1), nn.BatchNorm2d(6))
    first = replace_norms(model, "dyt")
    assert first.total == 1
    _trained(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    again = replace_norms(model, "dyt")
    assert again.total == 0 and again.already == ["1"]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_replace_norms_to_another_spec_converts_and_carries_gamma_beta_only_when_asked():
    model = nn.Sequential(nn.Linear(6, 6), nn.LayerNorm(6))
    replace_norms(model, "dyt")
    _trained(model)
    gamma, beta = model[1].weight.detach().clone(), model[1].bias.detach().clone()
    report = replace_norms(model, NormSpec("dyt", alpha_init=0.3), inherit_affine=True)
    assert report.total == 1 and report.counts == {"SquashNorm": 1}
    assert model[1].alpha.item() == pytest.approx(0.3)  # the new spec's α0
    torch.testing.assert_close(model[1].weight, gamma)
    torch.testing.assert_close(model[1].bias, beta)
    replace_norms(model, NormSpec("dyt", alpha_init=0.4))  # default: fresh γ = 1, β = 0
    assert torch.equal(model[1].weight, torch.ones(6)) and torch.equal(model[1].bias, torch.zeros(6))


def test_skip_that_matches_nothing_is_an_error():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    with pytest.raises(ValueError, match=r"skip entries \['does.not.exist'\] match no module path or class name"):
        replace_norms(model, "dyt", skip=["does.not.exist"])
    with pytest.raises(TypeError, match="skip must be a list"):
        replace_norms(model, "dyt", skip="1")
    report = replace_norms(model, "dyt", skip=["LayerNorm"])  # a class name matches
    assert report.total == 0 and report.skipped == ["1"]


def test_quantized_layernorm_is_refused():
    qln = torch.ao.nn.quantized.LayerNorm(4, weight=nn.Parameter(torch.ones(4)), bias=nn.Parameter(torch.zeros(4)),
                                          scale=1.0, zero_point=0)
    model = nn.Sequential(nn.Identity(), qln)
    with pytest.raises(UnsupportedNormError, match=r"torch\.ao\.nn\.quantized.*LayerNorm at '1' \(a quantized layer"):
        replace_norms(model, "dyt")
    assert model[1] is qln


@pytest.mark.parametrize("make, expected", [
    (lambda: build_norm(NormSpec("dyt", alpha_init=0.7), 5), {"alpha": 0.7, "weight": 1.0, "bias": 0.0}),
    (lambda: build_norm(NormSpec("derf", alpha_init=0.6, shift_init=0.2), 5),
     {"alpha": 0.6, "shift": 0.2, "weight": 1.0, "bias": 0.0}),
    (lambda: build_norm(NormSpec("tanh", alpha_init=2.0), 5), {"alpha": 2.0, "weight": 1.0, "bias": 0.0}),
    (lambda: ChannelsFirstLayerNorm(5), {"weight": 1.0, "bias": 0.0}),
    (lambda: ChannelsFirstRMSNorm(5), {"weight": 1.0}),
    (lambda: BatchNorm(5, layout="channels_last"), {"weight": 1.0, "bias": 0.0, "running_mean": 0.0,
                                                    "running_var": 1.0}),
])
def test_every_layer_resets_after_to_empty(make, expected):
    with torch.device("meta"):
        model = nn.Sequential(make())
    layer = model.to_empty(device="cpu")[0]
    with torch.no_grad():
        for t in list(layer.parameters()) + [b for b in layer.buffers() if b.is_floating_point()]:
            t.fill_(123.0)  # what uninitialised memory might hold
    for m in model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    tensors = dict(layer.named_parameters()) | dict(layer.named_buffers())
    assert set(expected) <= set(tensors)
    for name, value in expected.items():
        assert torch.equal(tensors[name], torch.full_like(tensors[name], value)), name


def test_squash_norm_reset_matches_a_fresh_layer():
    fresh = SquashNorm(4, fn="erf", alpha_init=0.8, shift_init=-0.1)
    used = SquashNorm(4, fn="erf", alpha_init=0.8, shift_init=-0.1)
    _trained(used)
    used.reset_parameters()
    for (k, a), (_, b) in zip(fresh.state_dict().items(), used.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
