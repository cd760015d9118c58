"""A model whose library is missing says which extra installs it: diffusers for the latent DiT's VAE (``diffusion``),
transformers for LLaMA (``language``); the checkpoint callbacks are importable from ``dyt_bench.callbacks``."""

import sys

import pytest

from dyt_bench.versions import MissingExtraError


def test_the_vae_without_diffusers_names_the_diffusion_extra(monkeypatch, tmp_path):
    from dyt_bench.diffusion.vae import load_vae

    monkeypatch.setitem(sys.modules, "diffusers.models", None)  # an import of it now fails
    with pytest.raises(MissingExtraError, match=r"model.vae.*pip install \"dyt-bench\[diffusion\]\""):
        load_vae(str(tmp_path))


def test_llama_without_transformers_names_the_language_extra(monkeypatch):
    from dyt_bench.models.llama import build_llama

    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingExtraError, match=r"LLaMA.*pip install \"dyt-bench\[language\]\""):
        build_llama(32, 16, 1, 2)


def test_the_checkpoint_callbacks_are_exported():
    import dyt_bench.callbacks as callbacks
    from dyt_bench.callbacks.checkpointing import CheckpointConfig, RunCheckpoint

    assert callbacks.RunCheckpoint is RunCheckpoint and callbacks.CheckpointConfig is CheckpointConfig
    assert {"RunCheckpoint", "CheckpointConfig"} <= set(callbacks.__all__)
