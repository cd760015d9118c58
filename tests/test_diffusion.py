"""Diffusion task: DiT shapes and adaLN-Zero, the hybrid loss against float64 math, samplers, FID, norm swap, a run."""

import glob
import json
import math
import os

import numpy as np
import pytest
import torch
from helpers import tiny_trainer
from scipy.stats import norm as scipy_norm
from sklearn.datasets import load_digits
from torch import nn

from dyt_bench.models.diffusion import GaussianDiffusion, guided_model_fn, space_timesteps
from dyt_bench.models.dit import DIT_NAMES, build_dit, parse_dit_name, sincos_2d
from dyt_bench.norms import SquashNorm
from dyt_bench.results import read_result
from dyt_bench.tasks.diffusion import DiffusionTask, FidConfig, RandomConvFeatures, build_fid_metric

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


# --- model ---------------------------------------------------------------------------------------------------------
# Parameter counts of the DiT paper (Table 4, 256×256 images = 32×32×4 latents): S 33M, B 130M, L 458M, XL 675M.
PAPER_PARAMS_M = {"S": 33.0, "B": 130.0, "L": 458.0, "XL": 675.0}


@pytest.mark.parametrize("name", DIT_NAMES)
def test_dit_size_names_parameter_counts_and_shapes(name):
    size = name.split("-")[1].split("/")[0]
    with torch.device("meta"):
        full = build_dit(name, input_size=32, in_channels=4, num_classes=1000)
    millions = sum(p.numel() for p in full.parameters()) / 1e6
    assert millions == pytest.approx(PAPER_PARAMS_M[size], rel=0.01)
    depth, hidden, heads, patch = parse_dit_name(name)
    assert (len(full.blocks), full.blocks[0].attn.num_heads, full.patch_size) == (depth, heads, patch)
    # forward / backward on a one-block model of the same width and patch
    net = build_dit(name, input_size=16, in_channels=4, num_classes=10, depth=1, zero_init=False)
    x = torch.randn(2, 4, 16, 16, requires_grad=True)
    out = net(x, torch.tensor([0, 999]), torch.tensor([1, 10]))  # label 10: the "no class" label
    assert out.shape == (2, 8, 16, 16)
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_dit_name_errors():
    for bad in ("DiT-M/2", "DiT-B/3", "dit-b/4", "ViT-B/16"):
        with pytest.raises(ValueError, match="model.model must be one of"):
            parse_dit_name(bad)


def test_adaln_zero_blocks_are_identity_at_init():
    net = build_dit("DiT-S/2", input_size=8, in_channels=3, num_classes=5, depth=3, hidden_size=48, num_heads=3)
    tokens = torch.randn(2, 16, 48)
    c = net.condition(torch.tensor([3, 700]), torch.tensor([0, 4]))
    for block in net.blocks:
        torch.testing.assert_close(block(tokens, c), tokens, rtol=0, atol=0)
    assert torch.count_nonzero(net(torch.randn(2, 3, 8, 8), torch.tensor([3, 700]), torch.tensor([0, 4]))) == 0
    # without the zero initialisation the same block changes its input
    net2 = build_dit("DiT-S/2", input_size=8, in_channels=3, num_classes=5, depth=1, hidden_size=48, num_heads=3,
                     zero_init=False)
    assert (net2.blocks[0](tokens, net2.condition(torch.tensor([3, 700]), torch.tensor([0, 4]))) - tokens).abs().max() > 1e-3


def test_sincos_position_embedding_matches_numpy():
    dim, grid = 16, 4
    omega = 1.0 / 10000 ** (np.arange(dim // 4) / (dim / 4))

    def emb1d(pos):
        ang = np.outer(pos, omega)
        return np.concatenate([np.sin(ang), np.cos(ang)], axis=1)

    rows, cols = np.divmod(np.arange(grid * grid), grid)  # tokens in row-major order
    expected = np.concatenate([emb1d(cols), emb1d(rows)], axis=1)
    np.testing.assert_allclose(sincos_2d(dim, grid).numpy(), expected, atol=1e-12)


def test_timestep_embedding_is_cos_then_sin():
    from dyt_bench.models.dit import TimestepEmbedder

    t = torch.tensor([0.0, 17.0, 999.0])
    emb = TimestepEmbedder.sinusoidal(t, 8).double()
    freqs = np.exp(-math.log(10000) * np.arange(4) / 4)
    ang = np.outer(t.numpy(), freqs)
    np.testing.assert_allclose(emb.numpy(), np.concatenate([np.cos(ang), np.sin(ang)], axis=1), rtol=1e-5, atol=1e-5)


# --- diffusion -----------------------------------------------------------------------------------------------------
def _reference_hybrid_loss(x0, t, noise, eps, v):
    """L_simple + L_vlb of improved DDPM, in float64 numpy, derived independently: ᾱ by cumulative product, the
    posterior q(x_{t-1}|x_t,x_0) as a product of two Gaussians, KL in its log-ratio form, the decoder likelihood with
    the published tanh approximation of Φ."""
    betas = np.linspace(1e-4, 0.02, 1000)
    alphas = 1 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    # posterior of x_{t-1}: prior N(√ᾱ_{t-1} x0, 1-ᾱ_{t-1}) times likelihood N(x_t; √α_t x_{t-1}, β_t)
    # (at t = 0 the prior is a point mass: x_{-1} = x_0, variance 0)
    post_var = np.concatenate([[0.0], 1.0 / (1.0 / (1 - abar_prev[1:]) + alphas[1:] / betas[1:])])
    post_var_clipped = post_var.copy()
    post_var_clipped[0] = post_var[1]
    losses = []
    for i in range(x0.shape[0]):
        s = int(t[i])
        xt = np.sqrt(abar[s]) * x0[i] + np.sqrt(1 - abar[s]) * noise[i]
        mse = np.mean((noise[i] - eps[i]) ** 2)

        def post_mean(x_start, s=s, xt=xt):
            if s == 0:
                return x_start
            return post_var[s] * (np.sqrt(abar_prev[s]) * x_start / (1 - abar_prev[s]) + np.sqrt(alphas[s]) * xt / betas[s])

        x0_hat = (xt - np.sqrt(1 - abar[s]) * eps[i]) / np.sqrt(abar[s])
        model_mean = post_mean(x0_hat)
        frac = (v[i] + 1) / 2
        model_var = np.exp(frac * np.log(betas[s]) + (1 - frac) * np.log(post_var_clipped[s]))
        if s == 0:
            def cdf(z):
                return 0.5 * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)))

            sd = np.sqrt(model_var)
            upper = cdf((x0[i] - model_mean + 1 / 255) / sd)
            lower = cdf((x0[i] - model_mean - 1 / 255) / sd)
            prob = np.where(x0[i] < -0.999, upper, np.where(x0[i] > 0.999, 1 - lower, upper - lower))
            vb = np.mean(-np.log(np.maximum(prob, 1e-12))) / np.log(2)
        else:
            true_mean, true_var = post_mean(x0[i]), post_var_clipped[s]
            kl = 0.5 * np.log(model_var / true_var) + (true_var + (true_mean - model_mean) ** 2) / (2 * model_var) - 0.5
            vb = np.mean(kl) / np.log(2)
        losses.append((mse + vb, mse, vb))
    return np.array(losses)


def test_hybrid_loss_matches_float64_reference():
    gen = torch.Generator().manual_seed(0)
    shape = (5, 2, 4, 4)
    x0 = (torch.randint(0, 256, shape, generator=gen).double() / 127.5 - 1)  # quantised images in [-1, 1]
    t = torch.tensor([0, 1, 17, 500, 999])
    noise = torch.randn(shape, generator=gen, dtype=torch.float64)
    eps = torch.randn(shape, generator=gen, dtype=torch.float64)
    v = torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1
    diffusion = GaussianDiffusion.linear(1000, learn_sigma=True)
    seen = {}

    def model_fn(x_t, tt):
        seen["t"] = tt
        return torch.cat([eps, v], dim=1)

    terms = diffusion.training_losses(model_fn, x0, t, noise)
    ref = _reference_hybrid_loss(x0.numpy(), t.numpy(), noise.numpy(), eps.numpy(), v.numpy())
    np.testing.assert_allclose(terms["loss"].numpy(), ref[:, 0], rtol=1e-9)
    np.testing.assert_allclose(terms["mse"].numpy(), ref[:, 1], rtol=1e-12)
    np.testing.assert_allclose(terms["vb"].numpy(), ref[:, 2], rtol=1e-9)
    assert torch.equal(seen["t"], t)  # the model sees the original timesteps


def test_tanh_cdf_approximation_is_close_to_exact():
    from dyt_bench.models.diffusion import approx_standard_normal_cdf

    z = torch.linspace(-6, 6, 1001, dtype=torch.float64)
    assert (approx_standard_normal_cdf(z) - torch.from_numpy(scipy_norm.cdf(z.numpy()))).abs().max() < 5e-4


def test_vb_term_trains_only_the_variance():
    diffusion = GaussianDiffusion.linear(1000)
    x0 = torch.rand(3, 2, 4, 4) * 2 - 1
    out = torch.randn(3, 4, 4, 4, requires_grad=True)
    terms = diffusion.training_losses(lambda x, t: out, x0, torch.tensor([0, 10, 900]))
    (grad_vb,) = torch.autograd.grad(terms["vb"].sum(), out, retain_graph=True)
    (grad_mse,) = torch.autograd.grad(terms["mse"].sum(), out)
    assert grad_vb[:, :2].abs().max() == 0 and grad_vb[:, 2:].abs().max() > 0
    assert grad_mse[:, 2:].abs().max() == 0 and grad_mse[:, :2].abs().max() > 0


def test_respacing_keeps_alpha_bar_at_kept_steps():
    base = GaussianDiffusion.linear(1000)
    use = space_timesteps(1000, 250)
    assert len(use) == 250 and use[0] == 0 and use[-1] == 999
    spaced = base.respaced(250)
    assert spaced.num_timesteps == 250 and spaced.timestep_map.tolist() == use
    torch.testing.assert_close(spaced.alphas_cumprod, base.alphas_cumprod[use], rtol=1e-12, atol=0)
    torch.testing.assert_close(base.respaced(1000).betas, base.betas, rtol=1e-12, atol=1e-15)
    # a respaced process respaced again maps to the original timesteps
    assert base.respaced(250).respaced(10).timestep_map.tolist() == [use[i] for i in space_timesteps(250, 10)]


@pytest.mark.parametrize("method", ["ddpm", "ddim"])
def test_samplers_recover_a_point_mass_with_an_oracle_model(method):
    """Data = one image x*: the exact ε is (x_t − √ᾱ x*) / √(1−ᾱ); DDPM and DDIM must both end exactly at x*."""
    target = torch.rand(1, 2, 4, 4, dtype=torch.float64) * 2 - 1
    sampler = GaussianDiffusion.linear(1000).respaced(10)
    abar = GaussianDiffusion.linear(1000).alphas_cumprod

    def oracle(x, t):
        a = abar[t].view(-1, 1, 1, 1)
        eps = (x - a.sqrt() * target) / (1 - a).sqrt()
        return torch.cat([eps, torch.zeros_like(eps)], dim=1)

    out = sampler.sample(oracle, (3, 2, 4, 4), method=method, generator=torch.Generator().manual_seed(0),
                         dtype=torch.float64)
    torch.testing.assert_close(out, target.expand(3, -1, -1, -1), rtol=0, atol=1e-9)


def test_ddim_is_deterministic_and_ddpm_is_not():
    sampler = GaussianDiffusion.linear(1000).respaced(5)

    def model(x, t):
        return torch.cat([0.5 * x, torch.zeros_like(x)], dim=1)

    noise = torch.randn(2, 1, 4, 4)
    a = sampler.sample(model, noise.shape, method="ddim", noise=noise.clone())
    b = sampler.sample(model, noise.shape, method="ddim", noise=noise.clone())
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    c = sampler.sample(model, noise.shape, method="ddpm", noise=noise.clone())
    d = sampler.sample(model, noise.shape, method="ddpm", noise=noise.clone())
    assert (c - d).abs().max() > 1e-3


def test_classifier_free_guidance_combines_conditional_and_unconditional():
    def model(x, t, y):  # ε depends on the label; the variance channel says which half it came from
        return torch.cat([x * 0 + y.view(-1, 1, 1, 1).float(), x * 0 + 10 * y.view(-1, 1, 1, 1).float()], dim=1)

    x, t, labels = torch.zeros(2, 1, 2, 2), torch.tensor([5, 5]), torch.tensor([3, 7])
    guided = guided_model_fn(model, labels, cfg_scale=4.0, null_label=10)(x, t)
    expected_eps = 10 + 4.0 * (labels.float() - 10)  # uncond + s · (cond − uncond)
    torch.testing.assert_close(guided[:, 0, 0, 0], expected_eps)
    torch.testing.assert_close(guided[:, 1, 0, 0], 10 * labels.float())  # variance from the conditional half
    torch.testing.assert_close(guided_model_fn(model, labels, 1.0)(x, t), model(x, t, labels))
    with pytest.raises(ValueError, match="class_dropout_prob"):
        guided_model_fn(model, labels, 1.5, None)


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


# --- FID -----------------------------------------------------------------------------------------------------------
def _digits(n: int) -> torch.Tensor:
    images = torch.tensor(load_digits().images[:n], dtype=torch.float32).unsqueeze(1) / 16
    return torch.nn.functional.interpolate(images, size=16, mode="bilinear").clamp(0, 1).expand(-1, 3, -1, -1)


def test_fid_with_offline_extractor_zero_for_identical_positive_for_different(tmp_path):
    real = _digits(300)
    metric, info = build_fid_metric(FidConfig(feature_extractor="random_cnn"))
    assert info["num_features"] == 64 and info["id"].startswith("random_cnn-d64-seed0-")
    metric.update(real, real=True)
    metric.update(real, real=False)
    same = float(metric.compute())
    assert abs(same) < 1e-3
    metric.reset()
    metric.update(real, real=True)
    metric.update(torch.rand(300, 3, 16, 16), real=False)
    noise_fid = float(metric.compute())
    metric.reset()
    metric.update(real[:150], real=True)
    metric.update(real[150:], real=False)
    halves = float(metric.compute())
    assert noise_fid > 100 * max(halves, 1e-6) and halves > 1e-3
    # the same extractor saved as TorchScript gives the same distance and is identified by its file
    path = tmp_path / "extractor.pt"
    torch.jit.script(RandomConvFeatures(64, 0)).save(str(path))
    scripted, info2 = build_fid_metric(FidConfig(feature_extractor=str(path)))
    assert info2["id"].startswith("extractor.pt-")
    scripted.update(real, real=True)
    scripted.update(torch.rand(300, 3, 16, 16, generator=torch.Generator().manual_seed(0)), real=False)
    metric.reset()
    metric.update(real, real=True)
    metric.update(torch.rand(300, 3, 16, 16, generator=torch.Generator().manual_seed(0)), real=False)
    assert float(scripted.compute()) == pytest.approx(float(metric.compute()), rel=1e-4)
    with pytest.raises(ValueError, match="model.fid.feature_extractor"):
        build_fid_metric(FidConfig(feature_extractor="no/such/file.pt"))


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
    assert all(float(m.alpha) == 0.5 for m in squash)
    x = torch.randn(2, 3, 32)
    torch.testing.assert_close(squash[0](x), torch.tanh(0.5 * x))  # DyT in DiT: tanh(αx), no γ/β
    assert not dyt.zero_init  # the DyT authors' DiT code drops the adaLN-Zero initialisation

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
        DiffusionTask._load_vae("/no/such/vae")


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
    assert result.config["fid_extractor"]["id"].startswith("random_cnn-d64-seed0-")
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

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "dit_step.py"
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
