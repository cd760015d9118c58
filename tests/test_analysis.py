"""Analysis tools: the norm probe's pre-affine outputs and tanh fit, and the α tracker's 1/std, against direct math."""

import csv
import glob

import lightning.pytorch as pl
import pytest
import timm
import torch
import torch.nn.functional as F
from helpers import tiny_data, tiny_task, tiny_trainer
from torch import nn

from dyt_bench.callbacks.alpha_tracker import CSV_NAME, AlphaTracker, pearson
from dyt_bench.callbacks.probe import fit_tanh, normalize_without_affine, probe_model, write_probe
from dyt_bench.callbacks.probe import main as probe_main
from dyt_bench.norms import SquashNorm, build_norm


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
    written = write_probe(probes, tmp_path, color_by="token")
    assert (tmp_path / "probe_summary.csv").exists()
    pngs = [p for k, p in written.items() if k.startswith("png:")]
    assert len(pngs) == 4 and all(p.stat().st_size > 1000 for p in pngs)
    with open(tmp_path / "probe_summary.csv") as f:
        assert len(list(csv.DictReader(f))) == len(probes)


def test_probe_command_on_a_fresh_model(tmp_path):
    from test_cli import _tiny_config

    out = tmp_path / "probe"
    assert probe_main(["--config", _tiny_config(tmp_path), "--output", str(out), "--layers", "norm1"]) == 0
    assert (out / "probe_summary.csv").exists() and glob.glob(str(out / "probe_*norm1.png"))
    with pytest.raises(ValueError, match="matches no norm layer"):
        probe_main(["--config", _tiny_config(tmp_path), "--output", str(out), "--layers", "nonexistent"])


def test_alpha_tracker_inv_std_equals_direct_computation(tmp_path):
    task = tiny_task("dyt")
    captured: dict[str, list[torch.Tensor]] = {}
    counter = {"val_batches": 0}

    class Capture(pl.Callback):  # a plain Callback that keeps the inputs of the first 2 val batches
        def on_validation_epoch_start(self, trainer, pl_module):
            counter["val_batches"] = 0
            captured.clear()
            self.handles = [m.register_forward_hook(
                lambda mod, inp, out, n=n: captured.setdefault(n, []).append(inp[0].detach().clone())
                if counter["val_batches"] < 2 else None) for n, m in pl_module.named_modules() if isinstance(m, SquashNorm)]

        def on_validation_batch_end(self, *args, **kwargs):
            counter["val_batches"] += 1

        def on_validation_epoch_end(self, trainer, pl_module):
            for h in self.handles:
                h.remove()

    tracker = AlphaTracker(num_batches=2)
    trainer = tiny_trainer(tmp_path, callbacks=[Capture(), tracker], max_steps=4, val_check_interval=2,
                           limit_val_batches=3)
    trainer.fit(task, datamodule=tiny_data())
    last_epoch_rows = {r["layer"]: r for r in tracker.rows}  # the last validation's values win
    assert set(last_epoch_rows) == set(captured) and len(captured) == 3
    for name, tensors in captured.items():
        direct = torch.cat([t.flatten() for t in tensors]).double().std()
        assert last_epoch_rows[name]["inv_std"] == pytest.approx(1 / direct.item(), rel=1e-9)
        alpha = dict(task.named_modules())[name].alpha.item()
        assert last_epoch_rows[name]["alpha"] == pytest.approx(alpha)
    with open(tmp_path / CSV_NAME) as f:
        assert len(list(csv.DictReader(f))) == len(tracker.rows) == 3 * 2  # 3 layers × 2 validations
    assert (tmp_path / "alpha_vs_inv_std.png").stat().st_size > 1000
    assert (tmp_path / "alpha_over_training.png").stat().st_size > 1000


def test_track_alpha_is_one_config_line():
    assert any(isinstance(cb, AlphaTracker) for cb in tiny_task("dyt", track_alpha=True).configure_callbacks())
    assert not any(isinstance(cb, AlphaTracker) for cb in tiny_task("dyt").configure_callbacks())


def test_pearson_matches_torch():
    a, b = [1.0, 2.0, 3.5, 4.0], [2.0, 2.5, 5.0, 4.5]
    assert pearson(a, b) == pytest.approx(torch.corrcoef(torch.tensor([a, b]))[0, 1].item(), rel=1e-6)


