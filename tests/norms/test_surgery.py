"""replace_norms on timm, torchvision and transformers models, checked against the libraries' own layers."""

import copy
from functools import partial

import pytest
import timm
import torch
import torchvision
from torch import nn

from dyt_bench.norms import (
    BatchNorm,
    ChannelsFirstLayerNorm,
    ChannelsFirstRMSNorm,
    NormSpec,
    SquashNorm,
    UnsupportedNormError,
    count_norms,
    replace_norms,
)


def tiny_vit(**kwargs):
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5, img_size=16, patch_size=4,
                             embed_dim=32, depth=2, num_heads=2, **kwargs)


class PermutedLayerNorm(nn.LayerNorm):
    """Reference channels-first LayerNorm: permute to channels-last and use torch's own layer."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class PermutedRMSNorm(nn.RMSNorm):
    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class TokenBatchNorm(nn.BatchNorm1d):
    """Reference BN on (B, N, C) tokens: torch's BatchNorm1d on (B, C, N)."""

    def forward(self, x):
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def _check_equal(ours: nn.Module, reference: nn.Module, x: torch.Tensor, train: bool = False) -> None:
    ours.load_state_dict(reference.state_dict(), strict=True)
    ours.train(train), reference.train(train)
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)


def _randomise_norm_params(model: nn.Module) -> None:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5 + (1.0 if name.endswith("weight") else 0.0))


@pytest.mark.parametrize(
    "kind, reference_norm, train",
    [
        ("layernorm", partial(nn.LayerNorm, eps=1e-6), False),
        ("rmsnorm", partial(nn.RMSNorm, eps=1e-6), False),
        ("batchnorm", partial(TokenBatchNorm, eps=1e-6), True),
    ],
)
def test_vit_surgery_equals_library_layers(kind, reference_norm, train):
    torch.manual_seed(0)
    reference = tiny_vit(norm_layer=reference_norm)
    _randomise_norm_params(reference)
    ours = tiny_vit()
    report = replace_norms(ours, kind)
    assert report.total == 2 * 2 + 1 and report.counts == {"LayerNorm": 5}
    _check_equal(ours, reference, torch.randn(4, 3, 16, 16), train=train)


@pytest.mark.parametrize(
    "kind, reference_norm, train",
    [
        ("batchnorm", nn.BatchNorm2d, True),
        ("batchnorm", nn.BatchNorm2d, False),
        ("layernorm", partial(PermutedLayerNorm, eps=1e-5), False),
        ("rmsnorm", partial(PermutedRMSNorm, eps=1e-5), False),
    ],
)
def test_resnet_surgery_equals_library_layers(kind, reference_norm, train):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(num_classes=5, norm_layer=reference_norm)
    _randomise_norm_params(reference)
    ours = torchvision.models.resnet18(num_classes=5)
    report = replace_norms(ours, kind)
    assert report.counts == {"BatchNorm2d": 20} and report.layouts == {"channels_first": 20}
    _check_equal(ours, reference, torch.randn(2, 3, 32, 32), train=train)


def test_vit_dyt_counts_params_and_init():
    ln_model = tiny_vit()
    dyt_model = copy.deepcopy(ln_model)
    report = replace_norms(dyt_model, NormSpec("dyt", alpha_init=0.8))
    assert report.total == 5
    assert count_norms(dyt_model) == {"SquashNorm": 5}
    n_ln = sum(p.numel() for p in ln_model.parameters())
    assert sum(p.numel() for p in dyt_model.parameters()) == n_ln + 5  # one α per layer on top of γ, β
    for m in dyt_model.modules():
        if isinstance(m, SquashNorm):
            assert m.alpha.item() == pytest.approx(0.8) and m.alpha.requires_grad
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    fixed = copy.deepcopy(ln_model)
    replace_norms(fixed, NormSpec("tanh"))
    assert sum(p.numel() for p in fixed.parameters()) == n_ln
    assert sum(1 for n, _ in fixed.named_buffers() if n.endswith("alpha")) == 5


def test_gradient_reaches_every_alpha():
    model = tiny_vit()
    replace_norms(model, "dyt")
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 16, 16)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    alphas = [m.alpha for m in model.modules() if isinstance(m, SquashNorm)]
    assert len(alphas) == 5
    assert all(a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().item() > 0 for a in alphas)


def test_convnext_channels_first_layernorm2d():
    model = timm.create_model("convnext_atto", pretrained=False, num_classes=3)
    before = count_norms(model)
    report = replace_norms(model, "dyt")
    assert report.total == sum(before.values()) and report.layouts.get("channels_first", 0) > 0
    layouts = {m.layout for m in model.modules() if isinstance(m, SquashNorm)}
    assert "channels_first" in layouts
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    # channels-first LayerNorm from surgery equals timm's LayerNorm2d on the same weights
    ref = timm.layers.LayerNorm2d(16)
    ours = ChannelsFirstLayerNorm(16, eps=ref.eps)
    _randomise_norm_params(ref)
    _check_equal(ours, ref, torch.randn(2, 16, 5, 5))


def test_torchvision_convnext_layernorm2d_is_channels_first():
    model = torchvision.models.convnext_tiny(num_classes=3)
    report = replace_norms(model, "rmsnorm")
    assert "LayerNorm2d" in report.counts
    assert any(isinstance(m, ChannelsFirstRMSNorm) for m in model.modules())


def test_groupnorm_and_batchnorm1d():
    model = nn.Sequential(nn.Conv1d(3, 8, 3), nn.GroupNorm(2, 8), nn.Conv1d(8, 8, 1), nn.BatchNorm1d(8))
    report = replace_norms(model, "dyt")
    assert report.counts == {"GroupNorm": 1, "BatchNorm1d": 1}
    assert all(m.layout == "channels_first" for m in model.modules() if isinstance(m, SquashNorm))
    assert model(torch.randn(2, 3, 10)).shape == (2, 8, 8)


def test_surgery_keeps_device_dtype_and_training_mode():
    model = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6)).to(torch.float64).eval()
    replace_norms(model, "batchnorm")
    bn = model[1]
    assert isinstance(bn, BatchNorm) and bn.weight.dtype == torch.float64 and not bn.training


def test_surgery_is_repeatable_on_own_layers():
    model = tiny_vit()
    replace_norms(model, "dyt")
    report = replace_norms(model, "layernorm")
    assert report.counts == {"SquashNorm": 5}
    assert count_norms(model) == {"LayerNorm": 5}


def test_unknown_norm_class_raises_clear_error():
    class MyFancyNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(4))

        def forward(self, x):
            return x / x.norm(dim=-1, keepdim=True) * self.scale

    model = nn.Sequential(nn.Linear(4, 4), MyFancyNorm(), nn.LayerNorm(4))
    with pytest.raises(UnsupportedNormError) as err:
        replace_norms(model, "dyt")
    msg = str(err.value)
    assert "MyFancyNorm" in msg and "'1'" in msg and "skip=" in msg
    assert isinstance(model[2], nn.LayerNorm)  # nothing was half-replaced
    report = replace_norms(model, "dyt", skip=["MyFancyNorm"])
    assert report.skipped == ["1"] and report.counts == {"LayerNorm": 1}


def test_frozen_batchnorm_is_refused():
    from torchvision.ops import FrozenBatchNorm2d

    with pytest.raises(UnsupportedNormError, match="FrozenBatchNorm2d"):
        replace_norms(nn.Sequential(nn.Conv2d(3, 4, 1), FrozenBatchNorm2d(4)), "dyt")


def test_multi_dim_layernorm_is_refused():
    with pytest.raises(UnsupportedNormError, match="one dim"):
        replace_norms(nn.Sequential(nn.LayerNorm([4, 5])), "dyt")


def test_transformers_llama_rmsnorm():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=32)
    torch.manual_seed(0)
    reference = transformers.LlamaForCausalLM(config).eval()
    _randomise_norm_params(reference)
    ours = copy.deepcopy(reference)
    report = replace_norms(ours, "rmsnorm")
    assert report.counts == {"LlamaRMSNorm": 2 * 2 + 1}
    assert all(isinstance(m, nn.RMSNorm) for m in ours.modules() if "RMSNorm" in type(m).__name__)
    ours.load_state_dict(reference.state_dict())
    ids = torch.randint(0, 50, (2, 7))
    torch.testing.assert_close(ours(ids).logits, reference(ids).logits, rtol=1e-5, atol=1e-5)
    replace_norms(ours, "dyt")
    assert sum(isinstance(m, SquashNorm) for m in ours.modules()) == 5
    assert torch.isfinite(ours(ids).logits).all()


def test_weight_norm_parametrizations_are_not_activation_norms():
    """A conv under torch's weight-norm / spectral-norm parametrization (as in wav2vec 2.0's positional conv) is left
    alone, while the model's real norms are replaced."""
    from torch.nn.utils.parametrizations import spectral_norm, weight_norm

    model = torch.nn.Sequential(weight_norm(torch.nn.Conv1d(4, 4, 3, padding=1)), torch.nn.LayerNorm(4),
                                spectral_norm(torch.nn.Linear(4, 4)))
    report = replace_norms(model, "dyt")
    assert report.paths == ["1"]
    assert hasattr(model[0], "parametrizations") and hasattr(model[2], "parametrizations")


def test_affine_override_gives_or_removes_gamma_beta():
    """norm.affine: null keeps each replaced layer's affine-ness; true adds γ/β to layers that had none (DiT's adaLN
    norms); false removes them."""
    def model():
        return nn.Sequential(nn.LayerNorm(8, elementwise_affine=False), nn.LayerNorm(8))

    kept = model()
    replace_norms(kept, NormSpec("dyt"))
    assert kept[0].weight is None and kept[1].weight is not None and kept[1].bias is not None
    added = model()
    replace_norms(added, NormSpec("dyt", affine=True))
    assert all(m.weight is not None and m.bias is not None for m in added)
    x = torch.randn(3, 8)
    torch.testing.assert_close(added[0](x), torch.tanh(added[0].alpha * x))  # γ = 1, β = 0 at init
    removed = model()
    replace_norms(removed, NormSpec("layernorm", affine=False))
    assert all(m.weight is None for m in removed)
    with pytest.raises(ValueError, match="norm.affine"):
        NormSpec("dyt", affine="yes")
    assert "affine" not in NormSpec("dyt").to_dict() and NormSpec("dyt", affine=True).to_dict()["affine"] is True
