"""The diffusion process DiT trains and samples with: β schedules, the hybrid loss, DDPM / DDIM samplers, guidance,
their configs, and the VAE of latent diffusion. Not a model builder (the DiT is ``dyt_bench.models.dit``)."""

from .config import DiffusionConfig, SamplingConfig
from .guidance import guided_model_fn
from .likelihood import approx_standard_normal_cdf, discretized_gaussian_log_likelihood, mean_flat, normal_kl
from .process import SAMPLING_METHODS, GaussianDiffusion, ModelFn
from .schedules import BETA_SCHEDULES, linear_beta_schedule, space_timesteps
from .vae import VAE_SCALE, load_vae

__all__ = ["BETA_SCHEDULES", "SAMPLING_METHODS", "VAE_SCALE", "DiffusionConfig", "GaussianDiffusion", "ModelFn",
           "SamplingConfig", "approx_standard_normal_cdf", "discretized_gaussian_log_likelihood", "guided_model_fn",
           "linear_beta_schedule", "load_vae", "mean_flat", "normal_kl", "space_timesteps"]
