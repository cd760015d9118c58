"""norm.inherit_affine from a run config: the DyT layers a task places start with the replaced LayerNorms' γ/β (or
fresh 1/0 without it); the field is a boolean that leaves the config hash of specs without it unchanged; a task
whose network is built late (defer_build) is built by build_from_config and the probe's checkpoint loader."""

import json
import os

import pytest
import timm
import torch
import yaml
from torch import nn

from dyt_bench.norms import NormSpec
from dyt_bench.tasks import ImageClassification

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_CONFIG = os.path.join(ROOT, "configs", "image", "finetune_pretrained_vit_dyt_tiny.yaml")
ARCH = "vit_tiny_patch16_224"
KW = dict(patch_size=2, embed_dim=64, depth=3, num_heads=2, global_pool="avg", class_token=False)


def _ln_vit() -> nn.Module:
    """The tiny config's LN ViT with non-trivial γ/β, so that carrying them over is visible."""
    torch.manual_seed(0)
    model = timm.create_model(ARCH, num_classes=10, img_size=16, in_chans=1, **KW)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return model


def _build(tmp_path, monkeypatch, *overrides):
    from dyt_bench.lightning_cli import build_from_config

    src = _ln_vit()
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in src.state_dict().items()}}, ckpt)
    with open(TINY_CONFIG, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    kwargs = config["model"]["init_args"]["model_kwargs"]
    kwargs["pretrained_file"] = str(ckpt)
    monkeypatch.setenv("HOME", str(tmp_path))  # the extracted state dict is cached under ~/.cache/dyt-bench
    task, _ = build_from_config(TINY_CONFIG, ["--model.model_kwargs", json.dumps(kwargs), *overrides])
    norms = {name: m for name, m in src.named_modules() if isinstance(m, nn.LayerNorm)}
    return task, norms, config


def test_the_tiny_finetune_config_carries_gamma_beta_into_dyt(tmp_path, monkeypatch):
    task, norms, config = _build(tmp_path, monkeypatch)
    assert config["model"]["init_args"]["norm"]["inherit_affine"] is True
    assert task.norm_spec.inherit_affine is True and len(norms) == 7
    new = dict(task.net.named_modules())
    x = torch.randn(2, 5, 64, dtype=torch.float64)
    for name, ln in norms.items():
        layer = new[name]
        assert not isinstance(layer, nn.LayerNorm)
        torch.testing.assert_close(layer.weight, ln.weight, rtol=0, atol=0)
        torch.testing.assert_close(layer.bias, ln.bias, rtol=0, atol=0)
        alpha = float(layer.alpha.detach())
        ref = ln.weight.detach().double() * torch.tanh(alpha * x) + ln.bias.detach().double()  # float64 reference
        torch.testing.assert_close(layer.double()(x), ref)
    # the weights file's report reaches result.json's evaluation
    report = task.evaluation["pretrained"]
    assert report["loaded"] == report["total"] == len(_ln_vit().state_dict())
    assert task.norm_spec.to_dict()["inherit_affine"] is True


def test_without_inherit_affine_dyt_starts_at_one_and_zero(tmp_path, monkeypatch):
    task, norms, _ = _build(tmp_path, monkeypatch, "--model.norm.inherit_affine", "false")
    new = dict(task.net.named_modules())
    for name in norms:
        torch.testing.assert_close(new[name].weight, torch.ones(64), rtol=0, atol=0)
        torch.testing.assert_close(new[name].bias, torch.zeros(64), rtol=0, atol=0)
    assert "inherit_affine" not in task.norm_spec.to_dict()


def test_a_callers_keyword_wins_over_the_spec():
    task = ImageClassification(model=ARCH, num_classes=10, img_size=16, in_chans=1, model_kwargs=KW,
                               norm=NormSpec("dyt", inherit_affine=True))
    model = _ln_vit()
    task.place_norms(model, inherit_affine=False)
    assert all(torch.equal(m.weight, torch.ones(64)) for n, m in model.named_modules() if n.endswith("norm1"))


def test_inherit_affine_is_a_boolean_and_off_by_default():
    assert NormSpec().inherit_affine is False
    assert NormSpec("dyt").to_dict() == {k: v for k, v in NormSpec("dyt", inherit_affine=True).to_dict().items()
                                         if k != "inherit_affine"}
    for bad in ("yes", 1, None):
        with pytest.raises(ValueError, match="norm.inherit_affine must be true or false"):
            NormSpec(inherit_affine=bad)


def _deferred_config(tmp_path) -> str:
    cfg = {
        "seed_everything": 0,
        "trainer": {"max_steps": 1, "accelerator": "cpu", "devices": 1},
        "model": {"class_path": "dyt_bench.tasks.LanguageModeling",
                  "init_args": {"vocab_size": 257, "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                "max_seq_len": 16, "defer_build": True, "norm": {"kind": "dyt"}}},
        "data": {"class_path": "dyt_bench.datamodules.TextDataModule",
                 "init_args": {"source": "stdlib", "tokenizer": "bytes", "seq_len": 16, "batch_size": 2,
                               "max_files": 2}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_a_deferred_network_is_built_for_the_probe(tmp_path):
    from dyt_bench.analysis.probe import load_checkpoint_into
    from dyt_bench.lightning_cli import build_from_config
    from dyt_bench.norms import SquashNorm
    from dyt_bench.tasks import LanguageModeling

    config = _deferred_config(tmp_path)
    task, _ = build_from_config(config)
    assert task.hparams.defer_build and task.net is not None
    assert sum(isinstance(m, SquashNorm) for m in task.net.modules()) == 3  # two per block and the final norm
    # a checkpoint of the trained run loads into a deferred task the probe builds, tensor for tensor
    torch.manual_seed(1)
    trained = LanguageModeling(vocab_size=257, hidden_size=32, num_layers=1, num_heads=2, max_seq_len=16,
                               norm=NormSpec("dyt"))
    torch.save({"state_dict": trained.state_dict(), "hyper_parameters": {"norm": {"kind": "dyt"}}},
               tmp_path / "run.ckpt")
    late = LanguageModeling(vocab_size=257, hidden_size=32, num_layers=1, num_heads=2, max_seq_len=16,
                            norm=NormSpec("dyt"), defer_build=True)
    assert late.net is None
    load_checkpoint_into(late, str(tmp_path / "run.ckpt"))
    for name, tensor in trained.state_dict().items():
        torch.testing.assert_close(late.state_dict()[name], tensor, rtol=0, atol=0)
