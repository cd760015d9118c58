"""Gaussian diffusion as DiT trains and samples it (Ho et al. 2020; Nichol & Dhariwal 2021): the forward process,
ε-prediction with a learned variance trained by the hybrid loss L_simple + L_vlb, respaced DDPM and DDIM sampling."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .likelihood import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from .schedules import linear_beta_schedule, space_timesteps

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, timesteps) → model output
SAMPLING_METHODS = ("ddpm", "ddim")


class GaussianDiffusion:
    """The forward process q and the learned reverse process p of a DDPM, for one β schedule.

    ``timestep_map``: for a respaced process, the original timestep each of its steps stands for (the model is
    always called with original timesteps). Schedules are held in float64 and cast to the input's dtype when used.
    """

    def __init__(self, betas: torch.Tensor, learn_sigma: bool = True, timestep_map: list[int] | None = None) -> None:
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.dim() != 1 or not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError("betas must be a 1-D tensor with values in (0, 1]")
        self.num_timesteps = int(betas.shape[0])
        self.learn_sigma = learn_sigma
        self.timestep_map = torch.tensor(timestep_map if timestep_map is not None else range(self.num_timesteps))
        alphas = 1.0 - betas
        acp = torch.cumprod(alphas, dim=0)
        acp_prev = torch.cat([torch.ones(1, dtype=torch.float64), acp[:-1]])
        posterior_variance = betas * (1.0 - acp_prev) / (1.0 - acp)
        self._tables: dict[str, torch.Tensor] = {
            "betas": betas,
            "log_betas": torch.log(betas),
            "alphas_cumprod": acp,
            "alphas_cumprod_prev": acp_prev,
            "sqrt_alphas_cumprod": torch.sqrt(acp),
            "sqrt_one_minus_alphas_cumprod": torch.sqrt(1.0 - acp),
            "sqrt_recip_alphas_cumprod": torch.sqrt(1.0 / acp),
            "sqrt_recipm1_alphas_cumprod": torch.sqrt(1.0 / acp - 1.0),
            "posterior_variance": posterior_variance,
            # the variance is 0 at t = 0: its log is clipped to the t = 1 value
            "posterior_log_variance_clipped": torch.log(torch.cat([posterior_variance[1:2], posterior_variance[1:]])),
            "posterior_mean_coef1": betas * torch.sqrt(acp_prev) / (1.0 - acp),
            "posterior_mean_coef2": (1.0 - acp_prev) * torch.sqrt(alphas) / (1.0 - acp),
        }
        self._cache: dict[tuple[str, torch.device, torch.dtype], torch.Tensor] = {}

    @classmethod
    def linear(cls, num_timesteps: int = 1000, learn_sigma: bool = True) -> GaussianDiffusion:
        return cls(linear_beta_schedule(num_timesteps), learn_sigma=learn_sigma)

    def __getattr__(self, name: str) -> torch.Tensor:
        tables = self.__dict__.get("_tables", {})
        if name in tables:
            return tables[name]
        raise AttributeError(name)

    def _at(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Table ``name`` at timesteps ``t`` (B,), shaped (B, 1, …) to broadcast against ``like``."""
        key = (name, like.device, like.dtype)
        table = self._cache.get(key)
        if table is None:
            table = self._cache[key] = self._tables[name].to(device=like.device, dtype=like.dtype)
        return table[t.to(like.device)].reshape(-1, *([1] * (like.dim() - 1)))

    def _model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """The original timesteps the model is called with for this process's steps ``t``. The map is copied to t's
        device once and kept: a copy from host memory on every training step would wait for the GPU to drain."""
        key = ("timestep_map", t.device, torch.long)
        table = self._cache.get(key)
        if table is None:
            table = self._cache[key] = self.timestep_map.to(t.device)
        return table[t]

    # --- forward process ----------------------------------------------------------------------------------------
    def q_sample(self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε."""
        return (self._at("sqrt_alphas_cumprod", t, x_start) * x_start
                + self._at("sqrt_one_minus_alphas_cumprod", t, x_start) * noise)

    def q_posterior(self, x_start: torch.Tensor, x_t: torch.Tensor,
                    t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        mean = self._at("posterior_mean_coef1", t, x_t) * x_start + self._at("posterior_mean_coef2", t, x_t) * x_t
        return mean, self._at("posterior_log_variance_clipped", t, x_t)

    def predict_xstart_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return (self._at("sqrt_recip_alphas_cumprod", t, x_t) * x_t
                - self._at("sqrt_recipm1_alphas_cumprod", t, x_t) * eps)

    def predict_eps_from_xstart(self, x_t: torch.Tensor, t: torch.Tensor, x_start: torch.Tensor) -> torch.Tensor:
        return ((self._at("sqrt_recip_alphas_cumprod", t, x_t) * x_t - x_start)
                / self._at("sqrt_recipm1_alphas_cumprod", t, x_t))

    # --- reverse process ----------------------------------------------------------------------------------------
    def split_output(self, output: torch.Tensor, x_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(ε, variance values) of a model output: with a learned variance the output has twice x_t's channels."""
        if self.learn_sigma:
            if output.shape[1] != 2 * x_t.shape[1]:
                raise ValueError(f"a learned-variance model must output {2 * x_t.shape[1]} channels; "
                                 f"got {output.shape[1]}")
            return output.split(x_t.shape[1], dim=1)
        return output, None

    def p_mean_variance(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, clip_denoised: bool = False
                        ) -> dict[str, torch.Tensor]:
        """p(x_{t-1} | x_t) from a model output: mean, log-variance and the predicted x_0.

        A learned variance interpolates in log space between the posterior variance β̃_t and β_t:
        ``log σ² = v' · log β_t + (1 − v') · log β̃_t`` with ``v' = (v + 1) / 2``; without one, β̃_t (clipped).
        """
        eps, var_values = self.split_output(output, x_t)
        min_log = self._at("posterior_log_variance_clipped", t, x_t)
        if var_values is not None:
            frac = (var_values + 1) / 2
            log_variance = frac * self._at("log_betas", t, x_t) + (1 - frac) * min_log
        else:
            log_variance = min_log.expand_as(x_t)
        pred_xstart = self.predict_xstart_from_eps(x_t, t, eps)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean, _ = self.q_posterior(pred_xstart, x_t, t)
        return {"mean": mean, "log_variance": log_variance, "pred_xstart": pred_xstart, "eps": eps}

    def vb_terms_bpd(self, output: torch.Tensor, x_start: torch.Tensor, x_t: torch.Tensor,
                     t: torch.Tensor) -> torch.Tensor:
        """The variational-bound term of each sample, in bits per dimension: KL(q(x_{t-1}|x_t,x_0) ‖ p(x_{t-1}|x_t))
        for t > 0, the discretised decoder negative log-likelihood of x_0 at t = 0."""
        true_mean, true_log_var = self.q_posterior(x_start, x_t, t)
        p = self.p_mean_variance(output, x_t, t, clip_denoised=False)
        kl = mean_flat(normal_kl(true_mean, true_log_var, p["mean"], p["log_variance"])) / math.log(2.0)
        log_likelihood = discretized_gaussian_log_likelihood(x_start, p["mean"], 0.5 * p["log_variance"])
        nll = -mean_flat(log_likelihood) / math.log(2.0)
        return torch.where(t == 0, nll, kl)

    def training_losses(self, model_fn: ModelFn, x_start: torch.Tensor, t: torch.Tensor,
                        noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-sample losses at timesteps ``t``: ``mse`` (L_simple, ε-prediction), with a learned variance ``vb``
        (L_vlb, through the variance only: the mean is frozen so the bound does not pull on ε), and their sum
        ``loss`` (the hybrid loss of improved DDPM / DiT; λ = 1 with 1000 steps, scaled by T/1000 otherwise)."""
        if noise is None:
            noise = torch.randn_like(x_start)
        x_t = self.q_sample(x_start, t, noise)
        output = model_fn(x_t, self._model_timesteps(t))
        eps, var_values = self.split_output(output, x_t)
        mse = mean_flat((noise - eps) ** 2)
        terms = {"mse": mse}
        if var_values is not None:
            frozen = torch.cat([eps.detach(), var_values], dim=1)
            terms["vb"] = self.vb_terms_bpd(frozen, x_start, x_t, t) * (self.num_timesteps / 1000.0)
            terms["loss"] = mse + terms["vb"]
        else:
            terms["loss"] = mse
        return terms

    # --- sampling -----------------------------------------------------------------------------------------------
    def respaced(self, steps: int) -> GaussianDiffusion:
        """The same process on ``steps`` evenly spaced timesteps: new βs that keep ᾱ at the kept steps."""
        use = space_timesteps(self.num_timesteps, steps)
        acp = self._tables["alphas_cumprod"]
        betas, last = [], 1.0
        for i in use:
            betas.append(1.0 - float(acp[i]) / last)
            last = float(acp[i])
        original = self.timestep_map.tolist()
        return GaussianDiffusion(torch.tensor(betas, dtype=torch.float64), self.learn_sigma, [original[i] for i in use])

    @torch.no_grad()
    def sample(
        self,
        model_fn: ModelFn,
        shape: tuple[int, ...],
        method: str = "ddpm",
        eta: float = 0.0,
        clip_denoised: bool = False,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Run the reverse process of this diffusion (respace it first for fewer steps) from Gaussian noise.

        ``method``: ``ddpm`` (ancestral sampling with the model's variance) or ``ddim`` (η = ``eta``; 0 is
        deterministic). ``generator`` makes the noise reproducible; ``progress(i, n)`` is called after each step.
        """
        if method not in SAMPLING_METHODS:
            raise ValueError(f"sampling.method must be one of {', '.join(SAMPLING_METHODS)}; got {method!r}")
        if device is None:
            device = noise.device if noise is not None else "cpu"
        device = torch.device(device)
        x = noise if noise is not None else torch.randn(shape, generator=generator, device=device, dtype=dtype)
        steps = list(range(self.num_timesteps))[::-1]
        model_t = self.timestep_map.to(device)
        for n, i in enumerate(steps):
            t = torch.full((x.shape[0],), i, device=device, dtype=torch.long)
            out = self.p_mean_variance(model_fn(x, model_t[t]), x, t, clip_denoised=clip_denoised)
            if method == "ddpm":
                z = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
                x = out["mean"] + (i > 0) * torch.exp(0.5 * out["log_variance"]) * z
            else:
                x = self._ddim_step(x, t, out["pred_xstart"], eta, generator)
            if progress is not None:
                progress(n + 1, len(steps))
        return x

    def _ddim_step(self, x: torch.Tensor, t: torch.Tensor, pred_xstart: torch.Tensor, eta: float,
                   generator: torch.Generator | None) -> torch.Tensor:
        eps = self.predict_eps_from_xstart(x, t, pred_xstart)
        acp = self._at("alphas_cumprod", t, x)
        acp_prev = self._at("alphas_cumprod_prev", t, x)
        sigma = eta * torch.sqrt((1 - acp_prev) / (1 - acp)) * torch.sqrt(1 - acp / acp_prev)
        mean = pred_xstart * torch.sqrt(acp_prev) + torch.sqrt((1 - acp_prev - sigma**2).clamp(min=0)) * eps
        if eta == 0:
            return mean
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return mean + (t > 0).to(x.dtype).reshape(-1, *([1] * (x.dim() - 1))) * sigma * z


__all__ = ["SAMPLING_METHODS", "GaussianDiffusion", "ModelFn"]
