"""The diffusion process: the hybrid loss against float64 math, respacing, DDPM / DDIM samplers, guidance."""

import numpy as np
import pytest
import torch
from scipy.stats import norm as scipy_norm

from dyt_bench.diffusion import GaussianDiffusion, guided_model_fn, space_timesteps


@pytest.fixture(autouse=True)
def _one_thread():
    # small matrices: one thread is faster than two on a shared two-core machine
    torch.set_num_threads(1)
    yield


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
    from dyt_bench.diffusion import approx_standard_normal_cdf

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


def test_training_losses_call_the_model_with_the_original_timesteps_copied_to_the_device_once(monkeypatch):
    """A respaced process calls the model with the original timesteps; the map is moved to the device on first use
    and kept (moving it from host memory on every training step makes the host wait for the GPU)."""
    spaced = GaussianDiffusion.linear(1000).respaced(10)
    seen = []

    def model(x_t, t):
        seen.append(t.clone())
        return torch.zeros(x_t.shape[0], 2 * x_t.shape[1], *x_t.shape[2:], dtype=x_t.dtype)

    moves = []
    original_to = torch.Tensor.to

    def counting_to(self, *args, **kwargs):
        if self is spaced.timestep_map:
            moves.append(args)
        return original_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", counting_to)
    t = torch.tensor([0, 4, 9])
    for _ in range(3):
        spaced.training_losses(model, torch.randn(3, 1, 4, 4), t)
    expected = torch.tensor([space_timesteps(1000, 10)[i] for i in (0, 4, 9)])
    assert all(torch.equal(s, expected) for s in seen)
    assert len(moves) == 1


@pytest.mark.gpu
def test_a_training_loss_on_cuda_makes_the_host_wait_nowhere():
    """CUDA's sync debug mode raises on any host-device synchronisation inside the loss."""
    diffusion = GaussianDiffusion.linear(1000)
    x = torch.randn(4, 2, 8, 8, device="cuda")
    t = torch.randint(0, 1000, (4,), device="cuda")
    model = torch.nn.Conv2d(2, 4, 1).cuda()
    diffusion.training_losses(lambda x_t, tt: model(x_t), x, t)  # first use moves the tables
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = diffusion.training_losses(lambda x_t, tt: model(x_t), x, t)["loss"].mean()
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss.detach()).item()


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
