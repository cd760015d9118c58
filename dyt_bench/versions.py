"""The optional dependencies (the package's extras): which extra provides which library, the one error a feature raises
when its extra is missing, and the versions of every library a result depends on."""

from __future__ import annotations

import importlib
import platform
import sys
from importlib import metadata
from types import ModuleType

# extra → the distributions it adds (as pyproject.toml declares them; tests/test_extras.py keeps the two equal)
EXTRAS: dict[str, tuple[str, ...]] = {
    "speech": ("transformers", "soundfile", "torchaudio"),
    "language": ("transformers",),
    "gpu": ("triton",),
    "dna": ("genomic-benchmarks",),
    "fid": ("torch-fidelity",),
    "diffusion": ("diffusers",),
    "loggers": ("tensorboard", "wandb"),
}

# every library whose version a result records: the core dependencies, then the extras' (when installed)
VERSIONED = ("dyt-bench", "torch", "torchvision", "lightning", "timm", "torchmetrics", "jsonargparse", "triton",
             "transformers", "torchaudio", "soundfile", "torch-fidelity", "diffusers", "genomic-benchmarks",
             "tensorboard", "wandb")


class MissingExtraError(ModuleNotFoundError):
    """A feature needs a library of an extra that is not installed; the message names the pip command."""


def install_hint(extra: str) -> str:
    return f'pip install "dyt-bench[{extra}]"'


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` for ``feature``, or raise MissingExtraError naming the extra that provides it."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; extras: {', '.join(EXTRAS)}")
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(f"{feature} needs {' / '.join(EXTRAS[extra])}, which is not installed ({e}); "
                                f"install it with: {install_hint(extra)}") from e


def library_versions() -> dict[str, str]:
    """``python``, the version of every installed library in ``VERSIONED`` and, with a CUDA build of torch already
    loaded, ``cuda``."""
    out = {"python": platform.python_version()}
    for dist in VERSIONED:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    # torch's CUDA build only where torch is loaded already: importing it costs seconds (a grid process stays free of
    # it), and a run records its versions after torch has long been loaded
    torch = sys.modules.get("torch")
    cuda = getattr(getattr(torch, "version", None), "cuda", None)
    if cuda:
        out["cuda"] = cuda
    return out


__all__ = ["EXTRAS", "VERSIONED", "MissingExtraError", "install_hint", "library_versions", "require"]
