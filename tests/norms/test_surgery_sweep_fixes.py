"""One tiny module per class the full model sweep (docs/surgery.md) found mishandled, each checked against float64
math: timm's GroupNorm1NoBias / LayerNorm2dNoBias (known classes subclassed), NFNet's NormFreeBlock (no norm),
weightless RMSNorms of undeclared width (Gemma 4, DeepSeek V4, FalconMamba's placeholder buffer), and the sweep's
float64 round trip of a model whose float64 output is NaN (canine)."""

import importlib

import pytest
import torch
from torch import nn

from dyt_bench.norms import NormSpec, UnsupportedNormError, replace_norms
from dyt_bench.norms.recognise import describe_norm


def _hf(module: str, cls: str):
    pytest.importorskip("transformers")
    try:
        return getattr(importlib.import_module(f"transformers.models.{module}.modeling_{module}"), cls)
    except (ImportError, AttributeError):
        pytest.skip(f"transformers has no {cls} here")


def _dyt64(x, alpha, weight=None, bias=None, dim=-1):
    view = [1] * x.dim()
    view[dim] = -1
    y = torch.tanh(alpha.double() * x.double())
    if weight is not None:
        y = y * weight.double().view(view)
    if bias is not None:
        y = y + bias.double().view(view)
    return y


def test_groupnorm1_nobias_is_a_groupnorm_without_bias():
    metaformer = pytest.importorskip("timm.models.metaformer")
    layer = metaformer.GroupNorm1NoBias(6)
    info = describe_norm(layer)
    assert (info.family, info.layout, info.affine, info.bias) == ("groupnorm", "channels_first", True, False)
    model = nn.Sequential(nn.Conv2d(3, 6, 1), layer)
    report = replace_norms(model, NormSpec("dyt", alpha_init=0.7))
    assert report.counts == {"GroupNorm1NoBias": 1} and model[1].bias is None
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 6, 3, 5)
    torch.testing.assert_close(model[1](x).double(), _dyt64(x, model[1].alpha, model[1].weight, dim=1))


def test_layernorm2d_nobias_keeps_the_channels_first_layout():
    metaformer = pytest.importorskip("timm.models.metaformer")
    layer = metaformer.LayerNorm2dNoBias(6).double()
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
    assert describe_norm(layer).layout == "channels_first"
    model = nn.Sequential(nn.Identity(), layer)
    report = replace_norms(model, "layernorm", inherit_affine=True)
    assert report.layouts == {"channels_first": 1}
    x = torch.randn(2, 6, 3, 5, dtype=torch.float64)
    mean, var = x.mean(1, keepdim=True), x.var(1, keepdim=True, unbiased=False)
    expected = (x - mean) / torch.sqrt(var + layer.eps) * layer.weight.view(1, -1, 1, 1)
    torch.testing.assert_close(model[1](x), expected)


def test_norm_free_block_is_not_refused():
    nfnet = pytest.importorskip("timm.models.nfnet")
    block = nfnet.NormFreeBlock(8, 8, alpha=0.2, beta=1.0, act_layer=nn.ReLU,
                                conv_layer=nfnet.ScaledStdConv2d)
    model = nn.Sequential(block)
    report = replace_norms(model, "dyt")
    assert report.total == 0 and model[0] is block


@pytest.mark.parametrize("make", [
    lambda: _hf("gemma4", "Gemma4RMSNorm")(8, with_scale=False),
    lambda: _hf("deepseek_v4", "DeepseekV4UnweightedRMSNorm")(eps=1e-6),
    lambda: _hf("falcon_mamba", "FalconMambaWeightlessRMSNorm")(64),  # a placeholder buffer of the wrong width
], ids=["gemma4", "deepseek_v4", "falcon_mamba"])
def test_weightless_rmsnorm_of_any_width(make):
    layer = make()
    info = describe_norm(layer)
    assert info is not None and (info.family, info.num_features, info.affine) == ("rmsnorm", 0, False)
    model = nn.Sequential(nn.Identity(), layer)
    report = replace_norms(model, NormSpec("dyt", alpha_init=0.9))
    assert report.total == 1 and model[1].weight is None
    x = torch.randn(2, 3, 5)  # a width the layer never declared
    torch.testing.assert_close(model[1](x).double(), _dyt64(x, model[1].alpha))


def test_weightless_rmsnorm_refused_when_the_spec_needs_its_width():
    layer = _hf("gemma4", "Gemma4RMSNorm")(8, with_scale=False)
    for spec in ("rmsnorm", NormSpec("dyt", affine=True), NormSpec("dyt", alpha_init="auto")):
        model = nn.Sequential(nn.Identity(), layer)
        with pytest.raises(UnsupportedNormError, match=r"Gemma4RMSNorm at '1' \(it has no weight and does not declare"):
            replace_norms(model, spec)


def test_round_trip_falls_back_to_float32_when_float64_output_is_nan():
    from dyt_bench.norms.sweep import _round_trip

    class NanIn64(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj, self.norm = nn.Linear(4, 4), nn.LayerNorm(4)

        def forward(self, x):
            y = self.norm(self.proj(x))
            return y * float("nan") if y.dtype == torch.float64 else y

    err, layers = _round_trip(NanIn64(), {"x": torch.randn(3, 4)})
    assert layers == "1/1 (float32)" and err <= 1e-6


def test_round_trip_of_a_model_that_draws_in_its_forward():
    """A forward that draws random numbers (ViTMAE's random masking) compares like with like: the round trip
    reseeds before each forward, so a same-kind replacement is exact (it measured 1.6 as 'silently changed')."""
    from dyt_bench.norms.sweep import _round_trip

    class RandomMask(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj, self.norm = nn.Linear(4, 4), nn.LayerNorm(4)

        def forward(self, x):
            keep = torch.rand(x.shape[0], 1, dtype=x.dtype) > 0.5
            return self.norm(self.proj(x)) * keep

    torch.manual_seed(1)
    err, layers = _round_trip(RandomMask(), {"x": torch.randn(16, 4)})
    assert layers == "1/1" and err <= 1e-12


def test_wide_rmsnorm_is_told_apart_from_simple_norm():
    """At 1536 channels per-channel offsets average to ~0, where x/√var and x/√mean(x²) nearly agree: the probe's
    input has a mean far from 0, so HYV4RMSNorm (a plain RMSNorm) is described as exactly one formula."""

    class WideRMSNorm(nn.Module):  # transformers' usual RMSNorm, outside any table
        def __init__(self, n):
            super().__init__()
            self.weight, self.variance_epsilon = nn.Parameter(torch.ones(n)), 1e-6

        def forward(self, x):
            return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)

    info = describe_norm(WideRMSNorm(1536))
    assert info is not None and info.family == "rmsnorm" and info.num_features == 1536


def test_normed_embedding_is_no_norm_its_child_norm_is_replaced():
    class ToyRMSNorm(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(n))

        def forward(self, x):
            return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)

    class NormedEmbedding(nn.Embedding):
        def __init__(self):
            super().__init__(10, 6)
            self.embed_norm = ToyRMSNorm(6)

        def forward(self, ids):
            return self.embed_norm(super().forward(ids))

    model = nn.Sequential(NormedEmbedding())
    report = replace_norms(model, NormSpec("dyt", alpha_init=0.6))
    assert report.paths == ["0.embed_norm"]
    ids = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(model(ids).double(), _dyt64(model[0].weight[ids], model[0].embed_norm.alpha))


def test_block_with_an_int_buffer_named_like_a_norm_is_descended_into():
    """transformers' RobertaPreLayerNormEmbeddings: sub-modules and an int position_ids buffer, no norm itself."""

    class PreLayerNormEmbeddings(nn.Module):
        def __init__(self):
            super().__init__()
            self.word = nn.Embedding(10, 4)
            self.LayerNorm = nn.LayerNorm(4)
            self.register_buffer("position_ids", torch.arange(8))

        def forward(self, ids):
            return self.LayerNorm(self.word(ids))

    model = nn.Sequential(PreLayerNormEmbeddings())
    report = replace_norms(model, "dyt")
    assert report.paths == ["0.LayerNorm"]
