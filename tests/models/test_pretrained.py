"""Pretrained image models: a tiny timm ViT saved locally, loaded through build_image_model and through a run config
(state dict, .safetensors and Lightning checkpoint), every tensor compared with the saved one; γ/β carried into DyT."""

import json
import os

import pytest
import timm
import torch
from torch import nn

from dyt_bench.models.image import build_image_model
from dyt_bench.norms import NormSpec, replace_norms

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_CONFIG = os.path.join(ROOT, "configs", "image", "finetune_pretrained_vit_dyt_tiny.yaml")
ARCH = "vit_tiny_patch16_224"
KW = dict(patch_size=2, embed_dim=64, depth=3, num_heads=2, global_pool="avg", class_token=False)


def _source(num_classes=10, img_size=16, in_chans=1) -> nn.Module:
    """A tiny LN ViT with non-trivial LayerNorm γ/β (so that inheriting them is visible)."""
    torch.manual_seed(0)
    model = timm.create_model(ARCH, num_classes=num_classes, img_size=img_size, in_chans=in_chans, **KW)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return model


def _assert_all_equal(model: nn.Module, reference: dict[str, torch.Tensor], skip=()) -> int:
    own = model.state_dict()
    checked = 0
    for name, tensor in reference.items():
        if any(name.startswith(s) for s in skip):
            continue
        assert name in own, f"{name} missing from the loaded model"
        torch.testing.assert_close(own[name], tensor, rtol=0, atol=0, msg=f"{name} differs from the file")
        checked += 1
    return checked


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_every_tensor_of_a_weights_file_is_loaded(tmp_path, fmt):
    src = _source()
    state = src.state_dict()
    path = tmp_path / f"tiny.{fmt}"
    if fmt == "pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model = build_image_model(ARCH, num_classes=10, img_size=16, in_chans=1, pretrained=True,
                              pretrained_file=str(path), **KW)
    assert _assert_all_equal(model, state) == len(state) == len(model.state_dict())
    assert model.pretrained_report["loaded"] == model.pretrained_report["total"] == len(state)
    assert model.pretrained_report["not_loaded"] == []
    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(model.eval()(x), src.eval()(x))  # the same network


def test_a_head_of_another_class_count_is_new_and_the_rest_loaded(tmp_path):
    state = _source(num_classes=10).state_dict()
    torch.save(state, tmp_path / "tiny.pth")
    model = build_image_model(ARCH, num_classes=4, img_size=16, in_chans=1, pretrained=True,
                              pretrained_file=str(tmp_path / "tiny.pth"), **KW)
    assert model.head.weight.shape == (4, 64)
    assert _assert_all_equal(model, state, skip=("head.",)) == len(state) - 2
    assert model.pretrained_report["not_loaded"] == ["head.bias", "head.weight"]


def test_inherited_gamma_beta_after_loading(tmp_path):
    src = _source()
    torch.save(src.state_dict(), tmp_path / "tiny.pth")
    model = build_image_model(ARCH, num_classes=10, img_size=16, in_chans=1, pretrained=True,
                              pretrained_file=str(tmp_path / "tiny.pth"), **KW)
    norms = {name: m for name, m in src.named_modules() if isinstance(m, nn.LayerNorm)}
    assert len(norms) == 7
    report = replace_norms(model, NormSpec(kind="dyt", alpha_init=0.5), inherit_affine=True)
    assert not any(isinstance(m, nn.LayerNorm) for m in model.modules()) and report
    new = dict(model.named_modules())
    x = torch.randn(3, 5, 64, dtype=torch.float64)
    for name, ln in norms.items():
        dyt = new[name]
        torch.testing.assert_close(dyt.weight, ln.weight, rtol=0, atol=0)
        torch.testing.assert_close(dyt.bias, ln.bias, rtol=0, atol=0)
        # the layer computes γ · tanh(α x) + β with the inherited γ, β (float64 reference)
        ref = ln.weight.double() * torch.tanh(0.5 * x) + ln.bias.double()
        torch.testing.assert_close(dyt.double()(x), ref)
    # everything that is not a norm is the file's
    own = model.state_dict()
    for name, tensor in src.state_dict().items():
        if name.rsplit(".", 1)[0] not in norms:
            torch.testing.assert_close(own[name], tensor, rtol=0, atol=0)


def test_loaded_through_the_run_config_from_a_lightning_checkpoint(tmp_path, monkeypatch):
    from dyt_bench.lightning_cli import build_from_config

    src = _source()
    state = src.state_dict()
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in state.items()}, "pytorch-lightning_version": "2.6"}, ckpt)
    with open(TINY_CONFIG, encoding="utf-8") as f:
        import yaml

        kwargs = yaml.safe_load(f)["model"]["init_args"]["model_kwargs"]
    assert kwargs["pretrained"] is True
    kwargs["pretrained_file"] = str(ckpt)
    monkeypatch.setenv("HOME", str(tmp_path))  # the extracted state dict is cached under ~/.cache/dyt-bench
    task, _ = build_from_config(TINY_CONFIG, ["--model.model_kwargs", json.dumps(kwargs)])
    assert task.norm_spec.kind == "dyt"
    report = task.net.pretrained_report
    assert report["loaded"] == report["total"] == len(state)  # every tensor, before the surgery
    own = task.net.state_dict()
    ln_names = {n for n, m in src.named_modules() if isinstance(m, nn.LayerNorm)}
    compared = 0
    for name, tensor in state.items():
        if name.rsplit(".", 1)[0] in ln_names:
            continue  # replaced by DyT
        torch.testing.assert_close(own[name], tensor, rtol=0, atol=0)
        compared += 1
    assert compared == len(state) - 2 * len(ln_names)


def test_bad_pretrained_input_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="model.model_kwargs.pretrained_file"):
        build_image_model(ARCH, num_classes=10, img_size=16, in_chans=1, pretrained=True,
                          pretrained_file=str(tmp_path / "missing.pth"), **KW)
    torch.save(_source().state_dict(), tmp_path / "tiny.pth")
    with pytest.raises(ValueError, match="pretrained is false"):
        build_image_model(ARCH, num_classes=10, pretrained_file=str(tmp_path / "tiny.pth"))
    torch.save({"state_dict": {"other.weight": torch.zeros(1)}}, tmp_path / "x.ckpt")
    with pytest.raises(ValueError, match="without network weights"):
        build_image_model(ARCH, num_classes=10, img_size=16, in_chans=1, pretrained=True,
                          pretrained_file=str(tmp_path / "x.ckpt"), **KW)


def test_wav2vec2_from_a_local_directory_loads_every_tensor(tmp_path):
    from dyt_bench.models.wav2vec2 import build_wav2vec2, wav2vec2_config

    config = wav2vec2_config("tiny", pre_norm=True)
    torch.manual_seed(0)
    src = build_wav2vec2(config)
    src.save_pretrained(tmp_path / "w2v")
    loaded = build_wav2vec2(config, pretrained=str(tmp_path / "w2v"))
    assert _assert_all_equal(loaded, src.state_dict()) == len(src.state_dict()) == len(loaded.state_dict())
    with pytest.raises(FileNotFoundError, match="model.pretrained"):
        build_wav2vec2(config, pretrained=str(tmp_path / "none"))


def test_torchvision_weights_file_loads_every_tensor_and_refuses_foreign_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    torch.manual_seed(0)
    src = build_image_model("resnet18", num_classes=10, in_chans=1, small_input=True)
    state = src.state_dict()
    torch.save(state, tmp_path / "r18.pth")
    model = build_image_model("resnet18", num_classes=10, in_chans=1, small_input=True, pretrained=True,
                              pretrained_file=str(tmp_path / "r18.pth"))
    assert _assert_all_equal(model, state) == len(state)
    assert model.pretrained_report["loaded"] == model.pretrained_report["total"] == len(state)
    with pytest.raises(ValueError, match="need model.model_kwargs.pretrained_file"):
        build_image_model("resnet18", num_classes=10, pretrained=True)
    torch.save({**state, "extra.weight": torch.zeros(1)}, tmp_path / "foreign.pth")
    with pytest.raises(ValueError, match="holds tensors this model lacks"):
        build_image_model("resnet18", num_classes=10, in_chans=1, small_input=True, pretrained=True,
                          pretrained_file=str(tmp_path / "foreign.pth"))
