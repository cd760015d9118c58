"""Class-conditional image generation with DiT (pixels, or VAE latents): DDPM training with the hybrid loss, respaced
DDPM / DDIM sampling with classifier-free guidance, FID from torchmetrics (``val/fid``, ``test/fid``), sample grids."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from contextlib import nullcontext
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from torch import nn

from dyt_bench.datamodules.image import CIFAR_STATS, IMAGENET_STATS
from dyt_bench.models.diffusion import SAMPLING_METHODS, GaussianDiffusion, guided_model_fn
from dyt_bench.models.dit import build_dit
from dyt_bench.norms import NormSpec
from dyt_bench.norms.spec import check_choice

from .base import BenchTask, DivergenceConfig, OptimConfig
from .classification import EmaConfig

VAE_SCALE = 0.18215  # Stable Diffusion's latent scale factor, which DiT uses


@dataclass
class DiffusionConfig:
    """The diffusion process: ``num_timesteps`` steps of a linear β schedule (1e-4 → 0.02 at 1000 steps)."""

    num_timesteps: int = 1000
    beta_schedule: Literal["linear"] = "linear"

    def __post_init__(self) -> None:
        check_choice("model.diffusion.beta_schedule", self.beta_schedule, ("linear",))
        if self.num_timesteps < 2:
            raise ValueError(f"model.diffusion.num_timesteps must be >= 2; got {self.num_timesteps}")


@dataclass
class SamplingConfig:
    """How samples are drawn for FID and grids.

    ``steps``: respaced steps (DiT: 250). ``method``: ``ddpm`` (ancestral, the model's learned variance) or ``ddim``
    (``eta`` = 0: deterministic). ``cfg_scale``: classifier-free guidance scale (1 = none; DiT reports FID both at 1
    and 1.5). ``clip_denoised``: clip the predicted x_0 to [-1, 1] at every step; default: on in pixel space, off for
    latents. ``batch_size``: images per sampling batch.
    """

    steps: int = 250
    method: Literal["ddpm", "ddim"] = "ddpm"
    eta: float = 0.0
    cfg_scale: float = 1.0
    clip_denoised: bool | None = None
    batch_size: int = 64

    def __post_init__(self) -> None:
        check_choice("model.sampling.method", self.method, SAMPLING_METHODS)
        if self.steps < 1:
            raise ValueError(f"model.sampling.steps must be >= 1; got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"model.sampling.batch_size must be >= 1; got {self.batch_size}")
        if self.cfg_scale < 0:
            raise ValueError(f"model.sampling.cfg_scale must be >= 0; got {self.cfg_scale}")
        if not 0 <= self.eta <= 1:
            raise ValueError(f"model.sampling.eta must be in [0, 1]; got {self.eta}")


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
            raise ValueError("model.fid.feature_extractor must be inception, random_cnn, a file path or module:attribute")


@dataclass
class GridConfig:
    """Sample grids saved as PNG under ``<run_dir>/samples/``: ``num_images`` images (class i mod num_classes),
    ``nrow`` per row, from fixed noise so that grids of one run are comparable across epochs."""

    enabled: bool = True
    num_images: int = 64
    nrow: int = 8

    def __post_init__(self) -> None:
        if self.num_images < 1 or self.nrow < 1:
            raise ValueError("model.grid.num_images and model.grid.nrow must be >= 1")


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


def _weights_hash(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def build_fid_metric(fid: FidConfig):
    """The torchmetrics FID metric for ``fid.feature_extractor`` and a record of which extractor it uses."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    spec = fid.feature_extractor
    if spec == "inception":
        try:
            metric = FrechetInceptionDistance(feature=2048, normalize=True,
                                              feature_extractor_weights_path=fid.inception_weights)
        except ModuleNotFoundError as e:
            raise ModuleNotFoundError(
                f"model.fid.feature_extractor=inception needs torch-fidelity ({e}). Install it (pip install "
                "torch-fidelity) on a machine with network, or use an offline extractor: random_cnn, a TorchScript "
                "file, or module:attribute") from e
        except Exception as e:  # the weights download fails offline
            raise RuntimeError(
                f"could not load the Inception weights for FID ({type(e).__name__}: {e}). Run once with network to "
                "cache them, set model.fid.inception_weights to a local copy, or use an offline extractor "
                "(model.fid.feature_extractor: random_cnn | <file> | module:attribute)") from e
        name = "inception-v3-compat (torchmetrics, 2048-d)"
        ident = "inception-v3-compat-2048" + (f"@{os.path.basename(fid.inception_weights)}" if fid.inception_weights else "")
        return metric, {"feature_extractor": spec, "name": name, "id": ident, "num_features": 2048}
    if spec == "random_cnn":
        module = RandomConvFeatures(fid.random_cnn_dim, fid.random_cnn_seed)
        ident = f"random_cnn-d{fid.random_cnn_dim}-seed{fid.random_cnn_seed}-{_weights_hash(module)}"
        name = f"random conv features ({fid.random_cnn_dim}-d, seed {fid.random_cnn_seed}; dyt-bench, offline)"
    elif os.path.isfile(os.path.expanduser(spec)):
        path = os.path.expanduser(spec)
        try:
            module = torch.jit.load(path, map_location="cpu")
        except RuntimeError:
            module = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(module, nn.Module):
            raise TypeError(f"model.fid.feature_extractor={spec!r} holds a {type(module).__name__}, not an nn.Module")
        with open(path, "rb") as f:
            ident = f"{os.path.basename(path)}-{hashlib.sha256(f.read()).hexdigest()[:12]}"
        name = f"file {path}"
    elif ":" in spec:
        mod_name, _, attr = spec.partition(":")
        try:
            obj = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"model.fid.feature_extractor={spec!r}: cannot import {attr} from {mod_name} ({e})") from e
        module = obj if isinstance(obj, nn.Module) else obj()
        if not isinstance(module, nn.Module):
            raise TypeError(f"model.fid.feature_extractor={spec!r} did not give an nn.Module")
        ident = f"{spec}-{_weights_hash(module)}"
        name = f"module {spec}"
    else:
        raise ValueError(f"model.fid.feature_extractor must be inception, random_cnn, an existing file or "
                         f"module:attribute; got {spec!r} (no such file)")
    for p in module.parameters():  # (ScriptModules have no requires_grad_)
        p.requires_grad_(False)
    module.eval()
    metric = FrechetInceptionDistance(feature=module, normalize=True, input_img_size=(3, 32, 32))
    return metric, {"feature_extractor": spec, "name": name, "id": ident, "num_features": int(metric.real_features_sum.numel())}


def _coerce(cls, value, field: str):
    """A config dataclass from itself, a dict of its fields (unknown keys are an error naming them) or None."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        allowed = {f.name for f in fields(cls)}
        unknown = set(value) - allowed
        if unknown:
            raise ValueError(f"unknown {field} field(s) {sorted(unknown)}; allowed: {', '.join(sorted(allowed))}")
        return cls(**value)
    raise TypeError(f"{field} must be a {cls.__name__} or a dict; got {type(value).__name__}")


def input_stats(datamodule) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) that map a datamodule's images back to [0, 1] (``x · std + mean``); None when its images are
    already in the model's space (the synthetic source)."""
    source = getattr(datamodule, "source", None)
    if source == "digits":
        if getattr(datamodule.hparams, "normalize", True):
            raise ValueError("data.normalize must be false for the diffusion task: it needs the digits in [0, 1] "
                             "(they are scaled to [-1, 1] here)")
        return (0.0,), (1.0,)
    if source in CIFAR_STATS:
        return CIFAR_STATS[source]
    if source == "imagefolder":
        return IMAGENET_STATS
    if source == "synthetic":
        return None
    raise ValueError(f"the diffusion task does not know the pixel range of data source {source!r}; supported: "
                     "digits, cifar10, cifar100, imagefolder, synthetic")


class SampleAndScore(pl.Callback):
    """At the end of validation and test: sample, save a grid, compute FID (see ``DiffusionTask.generate_and_score``)."""

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: DiffusionTask) -> None:
        pl_module.generate_and_score("val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: DiffusionTask) -> None:
        pl_module.generate_and_score("test")


class DiffusionTask(BenchTask):
    """A class-conditional DiT trained as a DDPM (ε-prediction, learned variance, hybrid loss), evaluated by FID.

    Args:
        model: a DiT name, ``DiT-{S,B,L,XL}/{2,4,8}``; ``depth``, ``hidden_size``, ``num_heads`` override its size.
        img_size, in_chans, num_classes: the data's images (checked against the datamodule). With ``vae`` the model
            runs on latents of ``img_size / 8`` pixels and the VAE's channels.
        class_dropout_prob: label dropout for classifier-free guidance (DiT: 0.1).
        learn_sigma: learned variance (hybrid loss); false trains with L_simple and samples with β̃.
        zero_init: adaLN-Zero initialisation. Default (null): on for the statistics-based norms and off for the
            point-wise ones (DyT …), as in the DyT authors' DiT code, which removes the zero initialisation when it
            swaps LayerNorm for DyT.
        norm_affine: give the DiT norms per-channel γ/β. Default false: DiT's LayerNorms have none (adaLN modulates
            them) and the DyT authors' DyT there is ``tanh(αx)`` without γ/β.
        vae: a local diffusers ``AutoencoderKL`` directory: images are encoded on the fly to latents (× ``vae_scale``)
            and samples decoded for FID and grids. Absent: pixel space, images scaled to [-1, 1].
        hflip: random horizontal flips of training images (DiT's only augmentation).
        diffusion, sampling, fid, grid, ema: see their classes. ``ema``: the weights that sample (DiT: decay 0.9999).
        compile: ``torch.compile`` the DiT that trains: ``true``, or a mapping of ``torch.compile`` arguments (e.g.
            ``{mode: max-autotune}``). Small DiTs are host-bound, DyT more than LayerNorm (docs/benchmarks.md): a
            compiled step launches fused kernels instead of one Python call per layer. The EMA copy that samples
            stays eager. Default false.
        norm, optim, divergence, track_alpha, track_saturation: see ``BenchTask``. Default optimiser: DiT's constant
            learning rate 1e-4, no weight decay, no warmup.
    """

    task_name = "diffusion"
    metric_modes = {"val/fid": "min", "val/loss": "min", "val/mse": "min"}

    def __init__(
        self,
        model: str = "DiT-S/2",
        img_size: int = 32,
        in_chans: int = 3,
        num_classes: int = 10,
        depth: int | None = None,
        hidden_size: int | None = None,
        num_heads: int | None = None,
        class_dropout_prob: float = 0.1,
        learn_sigma: bool = True,
        zero_init: bool | None = None,
        norm_affine: bool = False,
        vae: str | None = None,
        vae_scale: float = VAE_SCALE,
        hflip: bool = False,
        diffusion: DiffusionConfig | None = None,
        sampling: SamplingConfig | None = None,
        fid: FidConfig | None = None,
        grid: GridConfig | None = None,
        ema: EmaConfig | None = None,
        norm: NormSpec | None = None,
        optim: OptimConfig | None = None,
        divergence: DivergenceConfig | None = None,
        track_alpha: bool = False,
        track_saturation: bool = False,
        compile: bool | dict[str, Any] = False,
    ) -> None:
        optim = optim if optim is not None else OptimConfig(lr=1e-4, weight_decay=0.0, warmup_steps=0, schedule="constant")
        super().__init__(norm=norm or NormSpec("layernorm"), optim=optim, divergence=divergence,
                         track_alpha=track_alpha, track_saturation=track_saturation)
        if num_classes < 1:
            raise ValueError(f"model.num_classes must be >= 1; got {num_classes}")
        if not 0 <= class_dropout_prob < 1:
            raise ValueError(f"model.class_dropout_prob must be in [0, 1); got {class_dropout_prob}")
        if not isinstance(compile, (bool, dict)):
            raise ValueError(f"model.compile must be true, false or a mapping of torch.compile arguments; got {compile!r}")
        if vae is not None and img_size % 8:
            raise ValueError(f"model.img_size must be a multiple of 8 with a VAE (latents are img_size / 8); got {img_size}")
        self.save_hyperparameters()
        self.img_size, self.in_chans, self.num_classes = img_size, in_chans, num_classes
        self.vae_path, self.vae_scale, self.hflip = vae, vae_scale, hflip
        self.diffusion_config = _coerce(DiffusionConfig, diffusion, "model.diffusion")
        self.sampling_config = _coerce(SamplingConfig, sampling, "model.sampling")
        self.fid_config = _coerce(FidConfig, fid, "model.fid")
        self.grid_config = _coerce(GridConfig, grid, "model.grid")
        ema = _coerce(EmaConfig, ema, "model.ema") if ema is not None else None
        self.zero_init = (not self.norm_spec.is_squash) if zero_init is None else bool(zero_init)
        self.latent_channels = 4 if vae is not None else in_chans
        self.latent_size = img_size // 8 if vae is not None else img_size
        net = build_dit(model, input_size=self.latent_size, in_channels=self.latent_channels, num_classes=num_classes,
                        class_dropout_prob=class_dropout_prob, learn_sigma=learn_sigma, zero_init=self.zero_init,
                        norm_affine=norm_affine, depth=depth, hidden_size=hidden_size, num_heads=num_heads)
        overrides = [f"{k}={v}" for k, v in (("depth", depth), ("hidden", hidden_size), ("heads", num_heads)) if v]
        self.model_name = model + (f"({','.join(overrides)})" if overrides else "")
        self.net = self.place_norms(net)
        rank_zero_info(f"{self.model_name}: {sum(p.numel() for p in self.net.parameters()):,} parameters, "
                       f"adaLN-Zero init {'on' if self.zero_init else 'off'}, norm γ/β {'on' if norm_affine else 'off'}")
        self.diffusion = GaussianDiffusion.linear(self.diffusion_config.num_timesteps, learn_sigma=learn_sigma)
        self.sampler = self.diffusion.respaced(min(self.sampling_config.steps, self.diffusion_config.num_timesteps))
        self.ema_config = ema
        self.ema = None
        if ema is not None:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.net, decay=ema.decay, use_warmup=ema.warmup)
        if compile:  # after the EMA copy, which stays eager; in place, so checkpoints keep their parameter names
            self.net.compile(**(compile if isinstance(compile, dict) else {}))
        # Evaluation helpers kept out of the module tree: not trained, not checkpointed, not touched by norm surgery.
        self._aux: dict[str, object] = {}
        self.fid_extractor: dict | None = None
        self._stats: tuple[torch.Tensor, torch.Tensor] | None = None
        self._real_seen = 0

    # --- set-up -------------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        self.check_datamodule(num_classes=self.num_classes, img_size=self.img_size, in_chans=self.in_chans)
        dm = self.trainer.datamodule if self._trainer is not None else None
        stats = input_stats(dm) if dm is not None else None
        if stats is not None:
            self._stats = (torch.tensor(stats[0]).view(1, -1, 1, 1), torch.tensor(stats[1]).view(1, -1, 1, 1))
        if self.vae_path is not None and "vae" not in self._aux:
            self._aux["vae"] = self._load_vae(self.vae_path)
        if self.fid_config.enabled and "fid" not in self._aux:
            metric, info = build_fid_metric(self.fid_config)
            self._aux["fid"] = metric
            self.fid_extractor = info
            rank_zero_info(f"FID feature extractor: {info['name']} [{info['id']}]")
            # results say which extractor produced their FID: FIDs of different extractors are never comparable.
            # (Not in hparams: those are the constructor's arguments when a checkpoint is loaded.)
            if self.run_config is None:  # built outside the CLI: the config the result writer would record
                self.run_config = {"model": dict(self.hparams)}
                if dm is not None:
                    self.run_config["data"] = dict(getattr(dm, "hparams", {}))
            self.run_config["fid_extractor"] = info

    @staticmethod
    def _load_vae(path: str) -> nn.Module:
        try:
            from diffusers.models import AutoencoderKL
        except ImportError as e:
            raise ImportError("model.vae needs the diffusers package (pip install diffusers) to load an "
                              f"AutoencoderKL; it is not installed ({e})") from e
        if not os.path.isdir(os.path.expanduser(path)):
            raise FileNotFoundError(f"model.vae={path!r} is not a directory; give a local diffusers AutoencoderKL "
                                    "folder (config.json + weights), e.g. a saved stabilityai/sd-vae-ft-ema")
        vae = AutoencoderKL.from_pretrained(os.path.expanduser(path))
        vae.requires_grad_(False)
        return vae.eval()

    def _aux_module(self, name: str):
        module = self._aux.get(name)
        if module is not None and getattr(module, "device", None) != self.device:
            module = self._aux[name] = module.to(self.device)
        return module

    def eval_network(self) -> nn.Module:
        """The network that is evaluated and samples: the EMA copy when ``ema.evaluate``, else the trained one."""
        if self.ema is not None and self.ema_config.evaluate:
            return self.ema.module
        return self.net

    # --- data ↔ model space -------------------------------------------------------------------------------------
    def to_unit(self, images: torch.Tensor) -> torch.Tensor | None:
        """Datamodule images → [0, 1] pixels (None for the synthetic source, which has no pixel range)."""
        if self._stats is None:
            return None
        mean, std = (s.to(images.device, images.dtype) for s in self._stats)
        return (images * std + mean).clamp(0, 1)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Datamodule images → what the DiT models: [-1, 1] pixels, or scaled VAE latents."""
        unit = self.to_unit(images)
        x = images if unit is None else unit * 2 - 1
        vae = self._aux_module("vae")
        if vae is None:
            return x
        with torch.no_grad():
            return vae.encode(x.to(next(vae.parameters()).dtype)).latent_dist.sample().float() * self.vae_scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Model space → [0, 1] pixels."""
        vae = self._aux_module("vae")
        if vae is not None:
            with torch.no_grad():
                z = vae.decode((z / self.vae_scale).to(next(vae.parameters()).dtype)).sample.float()
        return ((z.float() + 1) / 2).clamp(0, 1)

    @staticmethod
    def _rgb(unit: torch.Tensor) -> torch.Tensor:
        return unit.expand(-1, 3, -1, -1) if unit.shape[1] == 1 else unit[:, :3]

    # --- training -----------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(x, t, y)

    def _losses(self, net: nn.Module, images: torch.Tensor, labels: torch.Tensor, generator=None) -> dict[str, torch.Tensor]:
        x = self.encode(images)
        t = torch.randint(0, self.diffusion.num_timesteps, (x.shape[0],), device=x.device, generator=generator)
        noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
        terms = self.diffusion.training_losses(lambda xt, tt: net(xt, tt, labels), x, t, noise)
        return {k: v.mean() for k, v in terms.items()}

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        if self.hflip:
            flip = torch.rand(images.shape[0], device=images.device) < 0.5
            images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
        losses = self._losses(self.net, images, labels)
        self.log("train/loss", losses["loss"], prog_bar=True)
        self.log("train/mse", losses["mse"])
        if "vb" in losses:
            self.log("train/vb", losses["vb"])
        return losses["loss"]

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.net, step=self.global_step)

    # --- evaluation ---------------------------------------------------------------------------------------------
    def _fid_due(self, stage: str) -> bool:
        if self._trainer is not None and self.trainer.sanity_checking:
            return False
        return stage == "test" or (self.current_epoch + 1) % self.fid_config.every_n_epochs == 0

    def _eval_step(self, batch, batch_idx: int, stage: str) -> None:
        images, labels = batch
        # fixed timesteps and noise per batch: evaluation losses are comparable across epochs and runs
        gen = torch.Generator(device=images.device).manual_seed(10_000 + batch_idx)
        losses = self._losses(self.eval_network(), images, labels, generator=gen)
        for name, value in losses.items():
            self.log(f"{stage}/{name}", value, prog_bar=name == "loss", batch_size=images.shape[0])
        fid = self._aux_module("fid")
        if fid is None or not self._fid_due(stage):
            return
        limit = self.fid_config.num_real
        unit = self.to_unit(images)
        real = unit if unit is not None else self.decode(images)
        if limit is not None:
            real = real[: max(0, limit - self._real_seen)]
        if len(real):
            with torch.autocast(self.device.type, enabled=False):
                fid.update(self._rgb(real.float()), real=True)
            self._real_seen += len(real)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def on_validation_epoch_start(self) -> None:
        self._real_seen = 0

    def on_test_epoch_start(self) -> None:
        self._real_seen = 0

    def configure_callbacks(self):
        # sampling and FID run before the result writer reads the epoch's metrics (callbacks run in list order,
        # and before the module's own epoch-end hook)
        return [SampleAndScore(), *super().configure_callbacks()]

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, seed: int | None = None, net: nn.Module | None = None) -> torch.Tensor:
        """Sample images of classes ``labels`` with the sampling settings; returns [0, 1] pixels (B, C, H, W)."""
        cfg = self.sampling_config
        net = net if net is not None else self.eval_network()
        was_training = net.training
        net.eval()
        try:
            gen = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
            shape = (len(labels), self.latent_channels, self.latent_size, self.latent_size)
            clip = cfg.clip_denoised if cfg.clip_denoised is not None else self.vae_path is None
            fn = guided_model_fn(net, labels.to(self.device), cfg.cfg_scale, net.null_class)
            z = self.sampler.sample(fn, shape, method=cfg.method, eta=cfg.eta, clip_denoised=clip, generator=gen,
                                    device=self.device)
            return self.decode(z)
        finally:
            net.train(was_training)

    def generate_and_score(self, stage: str) -> None:
        """Sample images, update and compute FID (``<stage>/fid``) and save a sample grid, when due."""
        fid = self._aux_module("fid")
        if not self._fid_due(stage):
            return
        grid_cfg, fid_cfg, cfg = self.grid_config, self.fid_config, self.sampling_config
        n_fid = (fid_cfg.test_num_samples or fid_cfg.num_samples) if stage == "test" else fid_cfg.num_samples
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self._trainer is not None else (1, 0)
        n_fid = -(-n_fid // world) if fid is not None and self._real_seen >= 2 else 0  # this rank's share
        n_grid = grid_cfg.num_images if grid_cfg.enabled and rank == 0 else 0
        total = max(n_fid, n_grid)
        if total == 0:
            return
        grid_images, done, batch_no = [], 0, 0
        n_batches = -(-total // cfg.batch_size)
        rank_zero_info(f"[{stage}] sampling {total} images ({cfg.method}, {self.sampler.num_timesteps} steps, "
                       f"cfg {cfg.cfg_scale:g}) in {n_batches} batches")
        while done < total:
            n = min(cfg.batch_size, total - done)
            labels = (torch.arange(done, done + n, device=self.device) + rank * n_fid) % self.num_classes
            # sample under the run's precision (e.g. bf16 autocast), as validation steps run
            with self.trainer.precision_plugin.val_step_context() if self._trainer is not None else nullcontext():
                images = self.generate(labels, seed=fid_cfg.seed * 1_000_003 + rank * 10_007 + batch_no)
            if done < n_fid:
                with torch.autocast(self.device.type, enabled=False):
                    fid.update(self._rgb(images[: n_fid - done].float()), real=False)
            have = sum(len(g) for g in grid_images)
            if have < n_grid:
                grid_images.append(images[: n_grid - have].cpu())
            done += n
            batch_no += 1
            if n_batches >= 10 and batch_no % max(1, n_batches // 10) == 0:
                rank_zero_info(f"[{stage}] sampled {done}/{total}")
        if n_fid:
            value = fid.compute()
            fid.reset()
            self.log(f"{stage}/fid", value.float(), sync_dist=False, rank_zero_only=False)
            rank_zero_info(f"[{stage}] FID ({self.fid_extractor['id']}, {n_fid * world} generated vs "
                           f"{self._real_seen} real per rank): {float(value):.4g}")
        if n_grid:
            self._save_grid(torch.cat(grid_images), stage)

    @rank_zero_only
    def _save_grid(self, images: torch.Tensor, stage: str) -> None:
        from torchvision.utils import save_image

        run_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir) if self._trainer is not None else Path(".")
        path = run_dir / "samples" / f"{stage}_epoch{self.current_epoch:04d}_step{self.global_step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(images, str(path), nrow=self.grid_config.nrow, padding=2, pad_value=1.0)
        if self.fid_extractor is not None and not (path.parent / "fid_extractor.json").exists():
            (path.parent / "fid_extractor.json").write_text(json.dumps(self.fid_extractor, indent=2) + "\n")
        rank_zero_info(f"[{stage}] sample grid: {path}")

    def probe_forward(self, batch):
        images, labels = batch
        x = self.encode(images.to(self.device))
        t = torch.full((x.shape[0],), self.diffusion.num_timesteps // 2, device=self.device, dtype=torch.long)
        return self.net(self.diffusion.q_sample(x, t, torch.randn_like(x)), t, labels.to(self.device))


__all__ = ["DiffusionConfig", "DiffusionTask", "FidConfig", "GridConfig", "RandomConvFeatures", "SamplingConfig",
           "build_fid_metric", "input_stats"]
