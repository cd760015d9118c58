"""Loading the frozen diffusers ``AutoencoderKL`` that maps images to the latents a latent DiT models."""

from __future__ import annotations

import os

from torch import nn

VAE_SCALE = 0.18215  # Stable Diffusion's latent scale factor, which DiT uses


def load_vae(path: str) -> nn.Module:
    """The ``AutoencoderKL`` saved in the local folder ``path``, frozen and in eval mode (diffusers is imported only
    here: it is needed only for latent diffusion)."""
    from dyt_bench.versions import require

    AutoencoderKL = require("diffusers.models", "diffusion", "model.vae (a diffusers AutoencoderKL)").AutoencoderKL
    if not os.path.isdir(os.path.expanduser(path)):
        raise FileNotFoundError(f"model.vae={path!r} is not a directory; give a local diffusers AutoencoderKL "
                                "folder (config.json + weights), e.g. a saved stabilityai/sd-vae-ft-ema")
    vae = AutoencoderKL.from_pretrained(os.path.expanduser(path))
    vae.requires_grad_(False)
    return vae.eval()


__all__ = ["VAE_SCALE", "load_vae"]
