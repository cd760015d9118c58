"""Diffusion task: sampling, norm swap, config errors, training on digits, a run with grids, FID and its result."""

import glob
import json
import math
import os

import pytest
import torch
from helpers import tiny_trainer
from sklearn.datasets import load_digits
from torch import nn

from dyt_bench.diffusion import guided_model_fn, load_vae
from dyt_bench.norms import SquashNorm
from dyt_bench.results import read_result
from dyt_bench.tasks.diffusion import DiffusionTask

TINY = dict(model="DiT-S/4", depth=2, hidden_size=32, num_heads=2, img_size=16, in_chans=1, num_classes=10)


@pytest.fixture(autouse=True)
def _one_thread():
    # small matrices: one thread is faster than two on a shared two-core machine
    torch.set_num_threads(1)
    yield


def tiny_task(**kwargs) -> DiffusionTask:
    args = dict(TINY, fid={"feature_extractor": "random_cnn", "num_samples": 32}, sampling={"steps": 10})
    args.update(kwargs)
    return DiffusionTask(**args)


def _digits(n: int) -> torch.Tensor:
    images = torch.tensor(load_digits().images[:n], dtype=torch.float32).unsqueeze(1) / 16
    return torch.nn.functional.interpolate(images, size=16, mode="bilinear").clamp(0, 1).expand(-1, 3, -1, -1)


def test_sampling_10_steps_returns_images_in_range():
    task = tiny_task(zero_init=False)
    labels = torch.arange(6) % 10
    images = task.generate(labels, seed=0)
    assert images.shape == (6, 1, 16, 16) and torch.isfinite(images).all()
    assert images.min() >= 0 and images.max() <= 1
    torch.testing.assert_close(task.generate(labels, seed=0), images)  # a seed fixes the samples
    # the sampler's own output (model space) is in [-1, 1] with clipping of x_0
    z = task.sampler.sample(guided_model_fn(task.net, labels, 1.5, task.net.null_class), (6, 1, 16, 16),
                            method="ddpm", clip_denoised=True, generator=torch.Generator().manual_seed(1))
    assert z.abs().max() <= 1 + 1e-6


# --- norm swap -----------------------------------------------------------------------------------------------------
def test_norm_swap_classes_and_affine():
    ln = tiny_task()
    norms = [m for m in ln.net.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 2 * 2 + 1 and all(m.weight is None for m in norms)
    assert ln.norm_report.counts == {"LayerNorm": 5} and ln.zero_init

    dyt = tiny_task(norm={"kind": "dyt"})
    assert not any(isinstance(m, nn.LayerNorm) for m in dyt.net.modules())
    squash = [m for m in dyt.net.modules() if isinstance(m, SquashNorm)]
    assert len(squash) == 5 and dyt.norm_report.counts == {"LayerNorm": 5}
    assert all(m.fn == "tanh" and m.weight is None and m.bias is None and m.learnable_alpha for m in squash)
    assert all(float(m.alpha) == 1.0 for m in squash)  # the supplied text's α0 = 1
    x = torch.randn(2, 3, 32)
    torch.testing.assert_close(squash[0](x), torch.tanh(1.0 * x))  # DyT in DiT: tanh(αx), no γ/β
    assert dyt.zero_init  # one variable at a time: adaLN-Zero kept for DyT as for LayerNorm
    authors = tiny_task(norm={"kind": "dyt"}, zero_init=None)
    assert not authors.zero_init  # null: the DyT authors' DiT code, which drops adaLN-Zero for DyT

    affine = tiny_task(norm={"kind": "dyt"}, norm_affine=True, zero_init=True)
    squash = [m for m in affine.net.modules() if isinstance(m, SquashNorm)]
    assert all(m.weight is not None and m.bias is not None for m in squash) and affine.zero_init
    tokens = torch.randn(2, 16, 32)
    block = affine.net.blocks[0]
    torch.testing.assert_close(block(tokens, affine.net.condition(torch.tensor([1, 2]), torch.tensor([0, 1]))), tokens)

    rms = tiny_task(norm={"kind": "rmsnorm"})
    assert sum(isinstance(m, nn.RMSNorm) and m.weight is None for m in rms.net.modules()) == 5


def test_bad_config_errors_name_the_field():
    with pytest.raises(ValueError, match="model.model must be one of"):
        tiny_task(model="DiT-XXL/2")
    with pytest.raises(ValueError, match="model.sampling.method"):
        tiny_task(sampling={"method": "euler"})
    with pytest.raises(ValueError, match="model.fid.num_samples"):
        tiny_task(fid={"num_samples": 1})
    with pytest.raises(ValueError, match="model.img_size must be a multiple of 8"):
        tiny_task(vae="/somewhere", img_size=12)
    with pytest.raises((ImportError, FileNotFoundError), match="model.vae"):
        load_vae("/no/such/vae")


# --- training ------------------------------------------------------------------------------------------------------
def test_a_few_training_steps_on_digits_reduce_the_loss():
    torch.manual_seed(0)
    task = tiny_task(model="DiT-S/4", hidden_size=64, num_heads=4)
    images = _digits(512)[:, :1]  # [0, 1], as the datamodule gives them with normalize: false
    labels = torch.tensor(load_digits().target[:512])
    task._stats = (torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1))

    def held_out_loss():
        gen = torch.Generator().manual_seed(123)
        with torch.no_grad():
            return float(task._losses(task.net.eval(), images[:256], labels[:256], generator=gen)["mse"])

    before = held_out_loss()
    opt = torch.optim.AdamW(task.net.parameters(), lr=2e-3, weight_decay=0)
    task.net.train()
    for step in range(40):
        idx = torch.randint(0, 512, (64,), generator=torch.Generator().manual_seed(step))
        loss = task._losses(task.net, images[idx], labels[idx])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_out_loss()
    assert after < 0.7 * before, (before, after)


def test_fit_on_digits_writes_grid_fid_and_result(tmp_path):
    from dyt_bench.datamodules import ImageDataModule

    task = tiny_task(norm={"kind": "dyt"}, fid={"feature_extractor": "random_cnn", "num_samples": 24},
                     sampling={"steps": 5, "batch_size": 16}, grid={"num_images": 16, "nrow": 4},
                     ema={"decay": 0.9, "warmup": False})
    data = ImageDataModule(source="digits", img_size=16, in_chans=1, num_classes=10, normalize=False, batch_size=32)
    trainer = tiny_trainer(tmp_path, max_steps=4, limit_val_batches=1, val_check_interval=4)
    trainer.fit(task, data)
    trainer.test(task, data)
    result = read_result(tmp_path / "result.json")
    assert result.status == "completed" and result.task == "diffusion"
    assert result.model == "DiT-S/4(depth=2,hidden=32,heads=2)" and result.norm["kind"] == "dyt"
    assert "val/fid" in result.metrics_best and math.isfinite(result.metrics_best["val/fid"])
    assert result.evaluation["fid_extractor"]["id"].startswith("random_cnn-d64-seed0-")
    assert "fid_extractor" not in result.config  # an evaluation fact, not part of the config (nor its hash)
    assert result.config["data"]["source"] == "digits"
    # a checkpoint of the task loads back (its hyperparameters are the constructor's arguments)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    loaded = DiffusionTask.load_from_checkpoint(tmp_path / "last.ckpt", weights_only=False)  # our own file
    torch.testing.assert_close(loaded.net.blocks[0].norm1.alpha, task.net.blocks[0].norm1.alpha)
    grids = sorted(glob.glob(str(tmp_path / "samples" / "*.png")))
    assert [os.path.basename(g).split("_")[0] for g in grids] == ["test", "val"]
    from PIL import Image

    assert Image.open(grids[0]).size == (4 * 18 + 2, 4 * 18 + 2)  # 4×4 images of 16 px, 2 px padding
    assert json.loads((tmp_path / "samples" / "fid_extractor.json").read_text())["feature_extractor"] == "random_cnn"
    assert "test/fid" in trainer.callback_metrics


def test_digits_must_not_be_standardised(tmp_path):
    from dyt_bench.datamodules import ImageDataModule

    data = ImageDataModule(source="digits", img_size=16, in_chans=1, num_classes=10, normalize=True, batch_size=32)
    with pytest.raises(ValueError, match="data.normalize must be false"):
        tiny_trainer(tmp_path, max_steps=1).fit(tiny_task(), data)


def test_dit_digits_benchmark_runs_and_reuses_an_earlier_run(tmp_path):
    """benchmarks/dit_step.py digits --smoke trains a tiny DiT and tabulates it; with --reuse the second call takes
    that run (no training) and shows validation loss and FID by step."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "dit_step.py"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    base = [sys.executable, str(script), "digits", "--smoke", "--kinds", "layernorm", "--out", str(tmp_path / "b")]
    first = subprocess.run(base + ["--output", str(tmp_path / "first.md")], capture_output=True, text=True,
                           env=env, timeout=600)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    (result_path,) = glob.glob(str(tmp_path / "b" / "layernorm" / "**" / "result.json"), recursive=True)
    result = json.loads(Path(result_path).read_text())
    second = subprocess.run(base + ["--reuse", "--output", str(tmp_path / "second.md")], capture_output=True,
                            text=True, env=env, timeout=300)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    assert "reusing the completed run" in second.stdout and "$ fit" not in second.stdout
    row = next(line for line in (tmp_path / "second.md").read_text().splitlines() if line.startswith("| layernorm"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "completed" and cells[2] == str(result["steps"]) and cells[9] == "earlier run"
    last_val = f"{result['metrics_final']['val/loss']:.4f}@"
    assert last_val in cells[4] and "@" in cells[5]  # validation loss and FID by step
    assert len(glob.glob(str(tmp_path / "b" / "layernorm" / "*"))) == 1  # no second run directory


@pytest.mark.parametrize("kind", ["layernorm", "dyt"])
def test_compiled_dit_trains_like_the_eager_one(kind):
    """model.compile: the DiT is compiled in place (a whole graph: fullgraph=True fails on any break), keeps its
    parameter names, and a few training steps give the eager twin's losses."""
    images = _digits(64)[:, :1] * 2 - 1
    labels = torch.tensor(load_digits().target[:64])
    losses = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        task = tiny_task(norm={"kind": kind},
                         compile={"backend": "aot_eager", "fullgraph": True} if compiled else False)
        assert all("_orig_mod" not in name for name in task.state_dict())
        assert (getattr(task.net, "_compiled_call_impl", None) is not None) == compiled  # nn.Module.compile's mark
        opt = torch.optim.SGD(task.net.parameters(), lr=0.1)
        run = []
        for step in range(3):
            t = torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(step))
            noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(100 + step))
            net = task.net
            loss = task.diffusion.training_losses(lambda x, tt, net=net: net(x, tt, labels), images, t, noise=noise)
            loss = loss["loss"].mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.append(loss.item())
        losses[compiled] = run
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


def test_compile_option_is_checked():
    with pytest.raises(ValueError, match="model.compile"):
        tiny_task(compile="yes")


def test_config_classes_keep_their_import_paths_and_name_unknown_fields():
    from dyt_bench.callbacks.sampling import SampleGridConfig
    from dyt_bench.diffusion import SamplingConfig
    from dyt_bench.evaluation.fid import FidConfig
    from dyt_bench.tasks import diffusion as task_module

    assert task_module.GridConfig is SampleGridConfig  # the class's former name
    assert (task_module.SamplingConfig, task_module.FidConfig) == (SamplingConfig, FidConfig)
    assert tiny_task(grid={"num_images": 4}).grid_config == SampleGridConfig(num_images=4, nrow=8)
    with pytest.raises(ValueError, match=r"unknown model.grid field\(s\) \['rows'\]"):
        tiny_task(grid={"rows": 2})
    with pytest.raises(ValueError, match=r"unknown model.ema field\(s\) \['beta'\]"):
        tiny_task(ema={"beta": 0.9})
    assert tiny_task().ema is None


def test_dit_stores_its_token_stream_token_major_and_computes_the_same_values():
    """The patch embedding leaves DiT's token stream channel-major in memory (strides (N·C, 1, N)), and residual adds
    keep it so. ``DiT(contiguous_tokens=True)`` (the default) copies it once, so every norm sees contiguous tokens;
    the output and every gradient equal those of the reference layout (float64, the same weights). The throughput
    benchmark's ``--channel-major-stream`` builds the reference layout."""
    import importlib.util
    from pathlib import Path

    from dyt_bench.models.dit import build_dit
    from dyt_bench.norms import NormSpec, replace_norms

    def run(contiguous: bool):
        torch.manual_seed(0)
        net = build_dit("DiT-S/4", input_size=8, in_channels=1, num_classes=10, depth=2, hidden_size=32, num_heads=2,
                        zero_init=False, contiguous_tokens=contiguous).double()
        replace_norms(net, NormSpec("dyt", impl="eager"))
        seen = []
        for block in net.blocks:
            block.norm1.register_forward_hook(lambda m, args, out: seen.append((args[0], out)))
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(3, 1, 8, 8, generator=gen, dtype=torch.float64)
        out = net.eval()(x, torch.tensor([1, 500, 999]), torch.tensor([0, 3, 9]))
        out.square().sum().backward()
        return seen, out, [p.grad for p in net.parameters()]

    seen_ref, out_ref, grads_ref = run(False)
    seen, out, grads = run(True)
    assert not any(x.is_contiguous() for x, _ in seen_ref), "the stream as the patch embedding leaves it"
    assert all(x.is_contiguous() and y.is_contiguous() for x, y in seen)
    torch.testing.assert_close(out, out_ref, rtol=1e-12, atol=1e-12)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "dit_step.py"
    spec = importlib.util.spec_from_file_location("dit_step_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    overrides = {"depth": 1, "hidden_size": 32, "num_heads": 2}
    for channel_major in (False, True):
        trainer = bench.DiTTrainer("DiT-S/4", NormSpec("dyt", impl="eager"), 2, 8, 1, "fp32", "cpu", overrides,
                                   channel_major)
        assert trainer.net.contiguous_tokens is not channel_major


def test_dit_benchmark_gpu_timeline_busy_and_gaps_match_a_brute_force_count():
    """``dit_step.py --timeline`` merges overlapping kernel intervals: its busy time and gaps equal a count of the
    covered unit cells of random integer intervals, and each gap names the kernel that ended last before it."""
    import importlib.util
    import random
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "dit_step.py"
    spec = importlib.util.spec_from_file_location("dit_step_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rng = random.Random(0)
    for _ in range(50):
        kernels = []
        for i in range(rng.randint(1, 12)):
            start = rng.randint(0, 150)
            kernels.append((f"k{i}", start, start + rng.randint(1, 30)))
        covered = {t for _, s, e in kernels for t in range(s, e)}
        timeline = bench.gpu_gaps(kernels)
        first, last = min(s for _, s, _ in kernels), max(e for _, _, e in kernels)
        assert timeline["busy"] == len(covered) and timeline["span"] == last - first
        assert sum(g for g, _, _ in timeline["gaps"]) == (last - first) - len(covered)
        for gap, before, after in timeline["gaps"]:
            end_before = max(e for n, _, e in kernels if n == before)
            assert all(t not in covered for t in range(end_before, end_before + gap))
            assert min(s for n, s, _ in kernels if n == after) == end_before + gap
