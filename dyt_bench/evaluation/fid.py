"""FID as the diffusion task measures it: torchmetrics' ``FrechetInceptionDistance`` with the Inception features or an
offline extractor (a seeded random CNN, a TorchScript / pickled module file, or ``module:attribute``), and a record of
which extractor, with a hash of its weights, produced the number. torchmetrics offers no offline extractor and no
such record, hence this module."""

from __future__ import annotations

import hashlib
import importlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dyt_bench.versions import install_hint


@dataclass
class FidConfig:
    """Fréchet distance between generated and real images (torchmetrics ``FrechetInceptionDistance``).

    ``feature_extractor``: ``inception`` (the standard 2048-d Inception-v3 features: needs torch-fidelity and its
    weights, downloaded once or given as ``inception_weights``), ``random_cnn`` (a fixed, seeded random convolutional
    network built here: offline, deterministic, comparable only with itself), a file (a TorchScript module, or a
    pickled ``nn.Module``) or ``package.module:attribute`` (an ``nn.Module`` or a function returning one). A custom
    extractor takes float images in [0, 1], shape (B, 3, H, W), and returns (B, D) features. Results record which
    extractor (and a hash of its weights) produced them: FIDs from different extractors are not comparable.
    ``num_samples``: generated images per evaluation (the paper protocol: 50,000); ``test_num_samples`` at test
    (default: the same). Real images: the validation / test set, at most ``num_real`` (null: all batches seen).
    ``every_n_epochs``: validation computes FID (and saves a grid) in epochs n, 2n, … (counted from 1, as
    ``trainer.check_val_every_n_epoch`` counts); test always does.
    ``enabled: false`` skips FID (grids are still saved).
    """

    enabled: bool = True
    feature_extractor: str = "inception"
    inception_weights: str | None = None
    random_cnn_dim: int = 64
    random_cnn_seed: int = 0
    num_samples: int = 1000
    test_num_samples: int | None = None
    num_real: int | None = None
    every_n_epochs: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_samples < 2:
            raise ValueError(f"model.fid.num_samples must be >= 2; got {self.num_samples}")
        if self.test_num_samples is not None and self.test_num_samples < 2:
            raise ValueError(f"model.fid.test_num_samples must be >= 2; got {self.test_num_samples}")
        if self.every_n_epochs < 1:
            raise ValueError(f"model.fid.every_n_epochs must be >= 1; got {self.every_n_epochs}")
        if not self.feature_extractor:
            raise ValueError("model.fid.feature_extractor must be inception, random_cnn, a file path or "
                             "module:attribute")


class RandomConvFeatures(nn.Module):
    """A fixed random convolutional network (seeded): features for an offline Fréchet distance. It measures how far
    two image sets are apart in a random feature space; its numbers are comparable only with the same extractor."""

    def __init__(self, num_features: int = 64, seed: int = 0, input_size: int = 32) -> None:
        super().__init__()
        self.num_features = num_features
        self.input_size = input_size
        gen = torch.Generator().manual_seed(seed)
        widths = [3, 32, 64, num_features]
        self.convs = nn.ModuleList()
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * (2.0 / (c_in * 9)) ** 0.5)
                conv.bias.zero_()
            self.convs.append(conv)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> RandomConvFeatures:
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images.float(), size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = (x - 0.5) / 0.5
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.convs) - 1:
                x = F.relu(x)
        return x.mean(dim=(2, 3))


def three_channels(images: torch.Tensor) -> torch.Tensor:
    """Images (B, C, H, W) as the three channels FID extractors take: grey repeated, extra channels dropped."""
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images[:, :3]


def weights_hash(module: nn.Module) -> str:
    """A short hash of a module's state (names and values): the same extractor gives the same hash."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def load_extractor_file(path: str) -> tuple[nn.Module, str]:
    """A feature extractor saved as TorchScript or as a pickled ``nn.Module``, and an id naming the file and a hash of
    its bytes."""
    try:
        module = torch.jit.load(path, map_location="cpu")
    except RuntimeError:  # not TorchScript: a pickled module, which loads only with the explicit opt-in
        from dyt_bench.results import load_torch_file

        module = load_torch_file(path, "model.fid.feature_extractor")
    if not isinstance(module, nn.Module):
        raise TypeError(f"model.fid.feature_extractor={path!r} holds a {type(module).__name__}, not an nn.Module")
    with open(path, "rb") as f:
        ident = f"{os.path.basename(path)}-{hashlib.sha256(f.read()).hexdigest()[:12]}"
    return module, ident


def load_extractor_attribute(spec: str) -> tuple[nn.Module, str]:
    """The ``nn.Module`` named by ``package.module:attribute`` (the attribute, or what calling it returns), and an id
    naming it and a hash of its weights."""
    mod_name, _, attr = spec.partition(":")
    try:
        obj = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"model.fid.feature_extractor={spec!r}: cannot import {attr} from {mod_name} ({e})") from e
    module = obj if isinstance(obj, nn.Module) else obj()
    if not isinstance(module, nn.Module):
        raise TypeError(f"model.fid.feature_extractor={spec!r} did not give an nn.Module")
    return module, f"{spec}-{weights_hash(module)}"


def _inception_metric(fid: FidConfig) -> tuple[Any, dict[str, Any]]:
    from torchmetrics.image.fid import FrechetInceptionDistance

    try:
        metric = FrechetInceptionDistance(feature=2048, normalize=True,
                                          feature_extractor_weights_path=fid.inception_weights)
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            f"model.fid.feature_extractor=inception needs torch-fidelity ({e}). Install the fid extra "
            f"({install_hint('fid')}) on a machine with network, or use an offline extractor: random_cnn, a "
            "TorchScript file, or module:attribute") from e
    except Exception as e:  # the weights download fails offline
        raise RuntimeError(
            f"could not load the Inception weights for FID ({type(e).__name__}: {e}). Run once with network to "
            "cache them, set model.fid.inception_weights to a local copy, or use an offline extractor "
            "(model.fid.feature_extractor: random_cnn | <file> | module:attribute)") from e
    name = "inception-v3-compat (torchmetrics, 2048-d)"
    weights = f"@{os.path.basename(fid.inception_weights)}" if fid.inception_weights else ""
    ident = "inception-v3-compat-2048" + weights
    return metric, {"feature_extractor": fid.feature_extractor, "name": name, "id": ident, "num_features": 2048}


class SamplingProgress:
    """A rich progress bar over the images a FID evaluation generates and passes through the feature extractor (the
    slow part of a diffusion validation); ``enabled`` false (other ranks, logs) draws nothing.

        with SamplingProgress(total, "[val] sampling + FID features") as progress:
            for batch in ...:
                ...
                progress.advance(len(images))
    """

    def __init__(self, total: int, description: str, enabled: bool = True) -> None:
        self.total, self.description, self.enabled = total, description, enabled
        self.done = 0
        self._bar = None

    def __enter__(self) -> SamplingProgress:
        if self.enabled:
            from rich.markup import escape
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn())
            self._bar.__enter__()
            self._task = self._bar.add_task(escape(self.description), total=self.total)
        return self

    def advance(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, completed=min(self.done, self.total))

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None


def build_fid_metric(fid: FidConfig) -> tuple[Any, dict[str, Any]]:
    """The torchmetrics FID metric for ``fid.feature_extractor`` and a record of which extractor it uses
    (``feature_extractor``, ``name``, ``id``, ``num_features``)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    spec = fid.feature_extractor
    if spec == "inception":
        return _inception_metric(fid)
    if spec == "random_cnn":
        module = RandomConvFeatures(fid.random_cnn_dim, fid.random_cnn_seed)
        ident = f"random_cnn-d{fid.random_cnn_dim}-seed{fid.random_cnn_seed}-{weights_hash(module)}"
        name = f"random conv features ({fid.random_cnn_dim}-d, seed {fid.random_cnn_seed}; dyt-bench, offline)"
    elif os.path.isfile(os.path.expanduser(spec)):
        path = os.path.expanduser(spec)
        module, ident = load_extractor_file(path)
        name = f"file {path}"
    elif ":" in spec:
        module, ident = load_extractor_attribute(spec)
        name = f"module {spec}"
    else:
        raise ValueError(f"model.fid.feature_extractor must be inception, random_cnn, an existing file or "
                         f"module:attribute; got {spec!r} (no such file)")
    for p in module.parameters():  # (ScriptModules have no requires_grad_)
        p.requires_grad_(False)
    module.eval()
    metric = FrechetInceptionDistance(feature=module, normalize=True, input_img_size=(3, 32, 32))
    return metric, {"feature_extractor": spec, "name": name, "id": ident,
                    "num_features": int(metric.real_features_sum.numel())}


__all__ = ["FidConfig", "RandomConvFeatures", "SamplingProgress", "build_fid_metric", "load_extractor_attribute", "load_extractor_file",
           "three_channels", "weights_hash"]
