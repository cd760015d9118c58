"""The norm probe: pre-affine outputs against library math, the tanh fit, the files it writes, and the command."""

import csv
import glob

import pytest
import timm
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from dyt_bench.analysis.layer_probe import fit_tanh, normalize_without_affine, probe_model
from dyt_bench.analysis.probe import build_parser, split_overrides
from dyt_bench.analysis.probe import main as probe_main
from dyt_bench.analysis.report import write_probe
from dyt_bench.norms import build_norm


def _randomise(layer: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name in ("weight", "bias"):  # γ and β; α stays at its init
            p = getattr(layer, name, None)
            if p is not None:
                p.copy_(torch.randn(p.shape, generator=gen))
    return layer


def _affine(layer: nn.Module, pre: torch.Tensor, channel_dim: int) -> torch.Tensor:
    shape = [1] * pre.dim()
    shape[channel_dim] = -1
    out = pre * layer.weight.view(shape)
    return out + layer.bias.view(shape) if getattr(layer, "bias", None) is not None else out


def _tiny_run_config(tmp_path) -> str:
    """A run config of a one-block ViT on the shipped digits (what ``dyt-bench fit`` saves as config.yaml)."""
    cfg = {
        "seed_everything": 3,
        "trainer": {"max_steps": 4, "accelerator": "cpu", "devices": 1, "default_root_dir": str(tmp_path)},
        "model": {
            "class_path": "dyt_bench.tasks.ImageClassification",
            "init_args": {"model": "vit_tiny_patch16_224", "num_classes": 10, "img_size": 8, "in_chans": 1,
                          "model_kwargs": {"patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2},
                          "norm": {"kind": "dyt", "alpha_init": 0.5}},
        },
        "data": {"class_path": "dyt_bench.datamodules.ImageDataModule",
                 "init_args": {"source": "digits", "img_size": 8, "in_chans": 1, "batch_size": 16}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


X_LAST = torch.randn(3, 7, 16) * 3 + 1
X_FIRST = torch.randn(3, 16, 4, 5) * 3 + 1
CASES = {
    "layernorm": (lambda: nn.LayerNorm(16), X_LAST, -1, lambda x: F.layer_norm(x, (16,), eps=1e-5)),
    "layernorm2d": (lambda: timm.layers.LayerNorm2d(16), X_FIRST, 1,
                    lambda x: F.layer_norm(x.permute(0, 2, 3, 1), (16,), eps=1e-6).permute(0, 3, 1, 2)),
    "rmsnorm": (lambda: nn.RMSNorm(16, eps=1e-6), X_LAST, -1, lambda x: F.rms_norm(x, (16,), eps=1e-6)),
    "batchnorm-train": (lambda: nn.BatchNorm2d(16).train(), X_FIRST, 1,
                        lambda x: F.batch_norm(x, None, None, training=True, eps=1e-5)),
    "groupnorm": (lambda: nn.GroupNorm(4, 16), X_FIRST, 1, lambda x: F.group_norm(x, 4, eps=1e-5)),
    "dyt": (lambda: build_norm({"kind": "dyt", "alpha_init": 0.7}, 16), X_LAST, -1, lambda x: torch.tanh(0.7 * x)),
    "derf": (lambda: build_norm({"kind": "derf", "alpha_init": 0.7, "shift_init": 0.2}, 16), X_LAST, -1,
             lambda x: torch.erf(0.7 * x + 0.2)),
}


@pytest.mark.parametrize("case", CASES)
def test_pre_affine_output_matches_library_math_and_the_layer(case):
    make, x, channel_dim, library = CASES[case]
    layer = _randomise(make())
    pre = normalize_without_affine(layer, x)
    torch.testing.assert_close(pre, library(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(_affine(layer, pre, channel_dim), layer(x), rtol=1e-5, atol=1e-5)


def test_batchnorm_eval_uses_running_statistics():
    bn = nn.BatchNorm2d(16)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.eval()
    expected = (X_FIRST - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(bn.running_var.view(1, -1, 1, 1) + bn.eps)
    torch.testing.assert_close(normalize_without_affine(bn, X_FIRST), expected)


def test_tanh_fit_recovers_parameters():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(20000, generator=gen) * 8 - 4
    y = 1.7 * torch.tanh(0.6 * x) + 0.01 * torch.randn(20000, generator=gen)
    fit = fit_tanh(x, y)
    assert fit.a == pytest.approx(0.6, rel=0.01) and fit.scale == pytest.approx(1.7, rel=0.01)
    assert fit.rmse == pytest.approx(0.01, rel=0.1) and fit.r2 > 0.999
    linear = fit_tanh(x, 0.5 * x)  # a line is tanh with tiny a and large s: still a near-perfect fit
    assert linear.r2 > 0.999


def test_probe_model_covers_every_norm_and_writes_files(tmp_path):
    model = timm.create_model("convnext_atto", pretrained=False, num_classes=3)
    probes = probe_model(model, lambda: model(torch.randn(2, 3, 32, 32)), max_points=500)
    assert len(probes) == sum(1 for m in model.modules() if isinstance(m, timm.layers.LayerNorm2d))
    assert all(p.x.numel() == p.y.numel() <= 500 for p in probes)
    assert {p.layout for p in probes} == {"channels_first"}
    assert not any(m._forward_hooks for m in model.modules())  # every hook removed
    written = write_probe(probes, tmp_path, color_by="token")
    assert (tmp_path / "probe_summary.csv").exists()
    pngs = [p for k, p in written.items() if k.startswith("png:")]
    assert len(pngs) == 4 and all(p.stat().st_size > 1000 for p in pngs)
    with open(tmp_path / "probe_summary.csv") as f:
        assert len(list(csv.DictReader(f))) == len(probes)
    with pytest.raises(ValueError, match="color_by must be one of channel, token"):
        write_probe(probes, tmp_path, color_by="layer")


def test_probe_command_on_a_fresh_model(tmp_path):
    out = tmp_path / "probe"
    assert probe_main(["--config", _tiny_run_config(tmp_path), "--output", str(out), "--layers", "norm1"]) == 0
    assert (out / "probe_summary.csv").exists() and glob.glob(str(out / "probe_*norm1.png"))
    with pytest.raises(ValueError, match="matches no norm layer"):
        probe_main(["--config", _tiny_run_config(tmp_path), "--output", str(out), "--layers", "nonexistent"])


def test_probe_command_passes_unknown_options_to_the_run_config(tmp_path):
    out = tmp_path / "probe_ln"
    assert probe_main(["--config", _tiny_run_config(tmp_path), "--model.norm.kind", "layernorm", "--output",
                       str(out), "--max-points", "100"]) == 0
    with open(out / "probe_summary.csv") as f:
        assert {row["class"] for row in csv.DictReader(f)} == {"LayerNorm"}


def test_probe_options_and_overrides_are_split():
    parser = build_parser()
    own, overrides = split_overrides(parser, ["--config", "c.yaml", "--model.norm.kind=dyt", "--layers", "a", "b",
                                              "--data.batch_size", "8", "--max-points", "-1"])
    assert own == ["--config", "c.yaml", "--layers", "a", "b", "--max-points", "-1"]
    assert overrides == ["--model.norm.kind=dyt", "--data.batch_size", "8"]


def test_probe_options_come_from_a_yaml_file(tmp_path):
    options = tmp_path / "probe.yaml"
    options.write_text(yaml.safe_dump({"config": "run.yaml", "layers": ["norm1"], "color_by": "token"}))
    args = build_parser().parse_args(["--probe_config", str(options)])
    assert args.config == "run.yaml" and args.layers == ["norm1"] and args.color_by == "token"


def test_probe_rejects_bad_options(tmp_path, capsys):
    with pytest.raises(SystemExit):
        probe_main(["--config", _tiny_run_config(tmp_path), "--max-points", "0"])
    with pytest.raises(SystemExit):
        probe_main(["--config", _tiny_run_config(tmp_path), "--ckpt_path", str(tmp_path / "missing.ckpt")])
    assert "does not exist" in capsys.readouterr().err
