"""The shared norm-input hooks, run directory and CSV writer; the saturation slope read from the function registry."""

import csv

import pytest
import torch
from torch import nn

from dyt_bench.callbacks.norm_hooks import NormInputHooks, all_norms, pointwise_norms
from dyt_bench.callbacks.run_files import write_csv
from dyt_bench.callbacks.saturation import relative_slope
from dyt_bench.norms import build_norm
from dyt_bench.ops.functions import FUNCTIONS


def _model() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), build_norm({"kind": "dyt"}, 6), nn.Linear(6, 6),
                         build_norm({"kind": "derf"}, 6))


def test_layer_selection():
    model = _model()
    assert list(pointwise_norms(model)) == ["2", "4"]
    assert list(all_norms(model)) == ["1", "2", "4"]


def test_first_call_only_and_every_call():
    model = _model()
    x = torch.randn(3, 4)
    with NormInputHooks(model, lambda module, inp: inp.clone(), layers=all_norms) as hooks:
        model(x)
        model(x + 1)
    assert list(hooks.results) == ["1", "2", "4"]
    torch.testing.assert_close(hooks.results["1"], model[0](x))  # the first call's input
    with NormInputHooks(model, lambda module, inp: float(inp.detach().sum()), first_only=False) as every:
        model(x)
        model(x)
    assert list(every.results) == ["2", "4"] and all(len(v) == 2 for v in every.results.values())
    assert not any(m._forward_hooks for m in model.modules())


def test_hooks_leave_outputs_alone_and_can_span_two_calls():
    model = _model()
    x = torch.randn(3, 4)
    expected = model(x)
    hooks = NormInputHooks(model, lambda module, inp: inp.mean()).attach()
    torch.testing.assert_close(model(x), expected)
    hooks.remove()
    hooks.remove()  # idempotent
    model(x)
    assert len(hooks.results) == 2


def test_write_csv(tmp_path):
    path = write_csv(tmp_path / "sub" / "rows.csv", [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}], ("a", "b"))
    with open(path) as f:
        assert list(csv.DictReader(f)) == [{"a": "1", "b": "x"}, {"a": "2", "b": "y"}]


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_relative_slope_is_the_registry_derivative_over_its_maximum(fn):
    z = torch.linspace(-3, 3, 61, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(FUNCTIONS[fn](z).sum(), [z])
    slope = relative_slope(z.detach(), fn)
    mask = (z.detach().abs() - 1).abs() > 1e-9  # hardtanh has no derivative at ±1
    torch.testing.assert_close(slope[mask], grad[mask] / FUNCTIONS[fn].max_slope)
    assert slope.max().item() == pytest.approx(1.0)


def test_relative_slope_of_an_unknown_function():
    with pytest.raises(ValueError, match="no slope for fn 'gelu'"):
        relative_slope(torch.zeros(1), "gelu")
