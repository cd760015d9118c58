"""replace_norms on fused norm + activation layers, channels-first variants, (1 + w) norms, kept and refused layers,
inherited γ/β and float64 channels-first layers, each against an independent reference (the library's own layer on the
same weights, torch's functional norms, or float64 math)."""

import copy
import importlib

import pytest
import torch
import torch.nn.functional as F
from timm.layers import BatchNormAct2d, GroupNormAct, LayerNormAct2d, RmsNormAct2d
from timm.layers.grn import GlobalResponseNorm
from timm.layers.norm_act import FrozenBatchNormAct2d, LayerNormAct2dFp32
from torch import nn

from dyt_bench.norms import ChannelsFirstLayerNorm, ChannelsFirstRMSNorm, NormSpec, UnsupportedNormError, replace_norms
from dyt_bench.norms.layers import NormAct
from dyt_bench.norms.recognise import describe_norm


def _hf(module: str, cls: str):
    pytest.importorskip("transformers")
    return getattr(importlib.import_module(f"transformers.models.{module}.modeling_{module}"), cls)


def _randomise(model: nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3 + (1.0 if name.endswith("weight") else 0.0))


def _dyt_float64(x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """γ·tanh(αx) + β over dim 1, in float64, from the layer's parameters."""
    view = (1, -1) + (1,) * (x.dim() - 2)
    a = layer.alpha.double()
    return torch.tanh(a * x.double()) * layer.weight.double().view(view) + layer.bias.double().view(view)


FUSED = [
    (lambda: BatchNormAct2d(6, act_layer=nn.SiLU), "SiLU"),
    (lambda: GroupNormAct(6, 2, act_layer=nn.GELU), "GELU"),
    (lambda: LayerNormAct2d(6, act_layer=nn.Hardswish), "Hardswish"),
    (lambda: LayerNormAct2dFp32(6, act_layer=nn.LeakyReLU), "LeakyReLU"),
    (lambda: RmsNormAct2d(6, act_layer=nn.ReLU6), "ReLU6"),
]


@pytest.mark.parametrize("make, act_name", FUSED, ids=[a for _, a in FUSED])
def test_fused_norm_act_keeps_activation(make, act_name):
    model = nn.Sequential(nn.Conv2d(3, 6, 1), make())
    act, drop = model[1].act, model[1].drop
    report = replace_norms(model, NormSpec("dyt", alpha_init=0.7))
    fused = model[1]
    assert isinstance(fused, NormAct) and fused.act is act and fused.drop is drop
    name = fused.source
    assert str(report).endswith(f"{name} ×1 (activation kept: {act_name}) (channels_first ×1)")
    assert report.activations == {name: {act_name: 1}}
    _randomise(fused)
    x = torch.randn(2, 6, 3, 4)
    expected = act.double()(_dyt_float64(x, fused.norm)) if act_name != "ReLU6" else F.relu6(_dyt_float64(x, fused.norm))
    torch.testing.assert_close(fused(x).double(), expected, rtol=1e-5, atol=1e-6)


def test_fused_layers_counted_per_activation_and_resurgery_keeps_them():
    model = nn.Sequential(BatchNormAct2d(4, act_layer=nn.SiLU), BatchNormAct2d(4, act_layer=nn.SiLU),
                          BatchNormAct2d(4, apply_act=False))
    report = replace_norms(model, "dyt")
    assert "BatchNormAct2d ×3 (activation kept: SiLU ×2, none ×1)" in str(report)
    report = replace_norms(model, "layernorm")  # the new norm inside NormAct is replaced; the activation stays
    assert report.counts == {"SquashNorm": 3}
    assert [type(m.act).__name__ for m in model] == ["SiLU", "SiLU", "Identity"]
    assert all(isinstance(m.norm, ChannelsFirstLayerNorm) for m in model)


def test_frozen_fused_and_gated_norms_refused_with_reason():
    with pytest.raises(UnsupportedNormError, match="FrozenBatchNormAct2d.*frozen batch statistics"):
        replace_norms(nn.Sequential(FrozenBatchNormAct2d(4)), "dyt")
    gated = _hf("mamba2", "MambaRMSNormGated")(8, 4)
    with pytest.raises(UnsupportedNormError, match="MambaRMSNormGated.*gated"):
        replace_norms(nn.Sequential(nn.Linear(8, 8), gated), "dyt")


def test_unknown_norm_is_refused_with_probe_reason():
    no_norm = _hf("mobilebert", "NoNorm")(8)  # x * w + b: named a norm, normalises nothing
    with pytest.raises(UnsupportedNormError, match="NoNorm.*matches no LayerNorm / RMSNorm formula"):
        replace_norms(nn.Sequential(no_norm), "dyt")


def test_response_norms_kept_and_reported():
    model = nn.Sequential(nn.LayerNorm(8), GlobalResponseNorm(8, channels_last=True),
                          _hf("convnextv2", "ConvNextV2GRN")(8))
    report = replace_norms(model, "dyt")
    assert report.counts == {"LayerNorm": 1}
    assert set(report.kept) == {"1", "2"} and "response normalisation" in report.kept["2"]
    assert "kept in place: ConvNextV2GRN ×1, GlobalResponseNorm ×1" in str(report)


@pytest.mark.parametrize("make", [lambda: LayerNormAct2d(5, act_layer=nn.Identity),
                                  lambda: _hf("convnext", "ConvNextLayerNorm")(5, data_format="channels_first")],
                         ids=["timm_LayerNormAct2d", "hf_ConvNextLayerNorm"])
def test_channels_first_declared_layout_with_c_equal_w(make):
    """C == W == 5: reading the wrong axis would run without error; the output must equal the library layer's."""
    reference = make()
    _randomise(reference)
    model = nn.Sequential(copy.deepcopy(reference))
    report = replace_norms(model, "layernorm", inherit_affine=True)
    assert report.layouts == {"channels_first": 1}
    x = torch.randn(2, 5, 3, 5)
    torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)


LN_RMS_VARIANTS = [
    ("t5", "T5LayerNorm", (8,), "rmsnorm", 0.0, False),
    ("mt5", "MT5LayerNorm", (8,), "rmsnorm", 0.0, False),
    ("olmo", "OlmoLayerNorm", (8,), "layernorm", 0.0, False),
    ("cohere", "CohereLayerNorm", (8,), "layernorm", 0.0, False),
    ("deberta", "DebertaLayerNorm", (8,), "layernorm", 0.0, True),
    ("gemma", "GemmaRMSNorm", (8,), "rmsnorm", 1.0, False),
    ("nemotron", "NemotronLayerNorm1P", (8,), "layernorm", 1.0, True),
    ("llama", "LlamaRMSNorm", (8,), "rmsnorm", 0.0, False),
]


@pytest.mark.parametrize("module, cls, args, family, offset, has_bias", LN_RMS_VARIANTS,
                         ids=[v[1] for v in LN_RMS_VARIANTS])
def test_transformers_norm_variants_described_and_round_trip(module, cls, args, family, offset, has_bias):
    reference = _hf(module, cls)(*args)
    _randomise(reference)
    info = describe_norm(reference)
    assert info is not None and info.family == family and info.weight_offset == offset
    assert info.layout == "channels_last" and info.num_features == 8
    assert info.affine == (cls != "OlmoLayerNorm") and info.centred == (family == "layernorm")
    if family == "layernorm":
        assert info.bias == has_bias
    model = nn.Sequential(copy.deepcopy(reference))
    report = replace_norms(model, family, inherit_affine=True)
    assert report.counts == {cls: 1} and report.inherited == int(info.affine)
    x = torch.randn(2, 3, 8) + 0.5
    torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)


def test_gemma_one_plus_w_inherited_into_dyt_gamma():
    gemma = _hf("gemma", "GemmaRMSNorm")(8)
    _randomise(gemma)
    model = nn.Sequential(copy.deepcopy(gemma))
    replace_norms(model, "dyt", inherit_affine=True)
    torch.testing.assert_close(model[0].weight, 1.0 + gemma.weight)  # γ = 1 + w, exactly
    assert torch.all(model[0].bias == 0)


@pytest.mark.parametrize("make, kind", [(lambda: nn.LayerNorm(8), "layernorm"), (lambda: nn.RMSNorm(8), "rmsnorm"),
                                        (lambda: nn.RMSNorm(8, eps=1e-5), "rmsnorm"),
                                        (lambda: nn.BatchNorm1d(8), "batchnorm")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_same_kind_round_trip_with_inherit_affine(make, kind, dtype):
    """Replacing a norm by its own kind with inherit_affine gives the same function: bitwise in float32 and float64
    (nn.RMSNorm's eps=None, the input dtype's machine epsilon, is carried as that rule)."""
    torch.manual_seed(0)
    reference = make().to(dtype)
    _randomise(reference)
    if kind == "batchnorm":
        reference.train()(torch.randn(16, 8, dtype=dtype) * 2 + 1)  # non-trivial running statistics
    reference.eval()
    model = nn.Sequential(copy.deepcopy(reference))
    report = replace_norms(model, kind, inherit_affine=True)
    assert report.inherited == 1 and "inherited by 1" in str(report)
    assert getattr(model[0], "eps", None) == getattr(reference, "eps", None)
    x = torch.randn(4, 8, dtype=dtype) * 3 + 1
    torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)


def test_rmsnorm_eps_none_becomes_float32_epsilon_in_another_statistics_kind():
    """A LayerNorm replacing nn.RMSNorm(eps=None) takes float32's machine epsilon (the closest fixed value), checked
    against F.layer_norm with that epsilon in float64."""
    model = nn.Sequential(nn.RMSNorm(8).double())
    replace_norms(model, "layernorm")
    assert model[0].eps == torch.finfo(torch.float32).eps
    x = torch.randn(3, 8, dtype=torch.float64) * 1e-3
    torch.testing.assert_close(model(x), F.layer_norm(x, (8,), eps=torch.finfo(torch.float32).eps),
                               rtol=1e-12, atol=1e-12)


def test_default_is_fresh_gamma_beta():
    reference = nn.LayerNorm(8)
    _randomise(reference)
    model = nn.Sequential(copy.deepcopy(reference))
    report = replace_norms(model, "layernorm")
    assert report.inherited == 0 and torch.all(model[0].weight == 1) and torch.all(model[0].bias == 0)


@pytest.mark.parametrize("layer_cls", [ChannelsFirstLayerNorm, ChannelsFirstRMSNorm])
def test_channels_first_float64_exact(layer_cls):
    layer = layer_cls(6, eps=1e-6, dtype=torch.float64)
    _randomise(layer)
    x = torch.randn(2, 6, 4, 3, dtype=torch.float64) * 3 + 1
    xl = x.permute(0, 2, 3, 1)
    if layer_cls is ChannelsFirstLayerNorm:
        expected = F.layer_norm(xl, (6,), layer.weight, layer.bias, 1e-6)
    else:
        expected = F.rms_norm(xl, (6,), layer.weight, 1e-6)
    y = layer(x)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, expected.permute(0, 3, 1, 2), rtol=1e-12, atol=1e-12)
