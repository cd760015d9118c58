"""Class-conditional image generation with DiT (pixels, or VAE latents): DDPM training with the hybrid loss, respaced
DDPM / DDIM sampling with classifier-free guidance, FID from torchmetrics (``val/fid``, ``test/fid``), sample grids."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from dyt_bench.callbacks.sampling import SampleAndScore, SampleGridConfig
from dyt_bench.coerce import coerce_dataclass
from dyt_bench.datamodules.image import CIFAR_STATS, IMAGENET_STATS
from dyt_bench.diffusion import VAE_SCALE, DiffusionConfig, GaussianDiffusion, SamplingConfig, guided_model_fn, load_vae
from dyt_bench.evaluation.fid import FidConfig, RandomConvFeatures, build_fid_metric, three_channels
from dyt_bench.models.dit import build_dit
from dyt_bench.norms import NormSpec

from .base import BenchTask, DivergenceConfig, OptimConfig
from .classification import EmaConfig

GridConfig = SampleGridConfig  # the name ``model.grid``'s class had before "grid" came to mean an ablation grid


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


class DiffusionTask(BenchTask):
    """A class-conditional DiT trained as a DDPM (ε-prediction, learned variance, hybrid loss), evaluated by FID.

    Args:
        model: a DiT name, ``DiT-{S,B,L,XL}/{2,4,8}``; ``depth``, ``hidden_size``, ``num_heads`` override its size.
        img_size, in_chans, num_classes: the data's images (checked against the datamodule). With ``vae`` the model
            runs on latents of ``img_size / 8`` pixels and the VAE's channels.
        class_dropout_prob: label dropout for classifier-free guidance (DiT: 0.1).
        learn_sigma: learned variance (hybrid loss); false trains with L_simple and samples with β̃.
        zero_init: adaLN-Zero initialisation. Default true for every norm: the supplied text's only change to DiT
            is the norm (Appendix A.3), so both arms of a comparison differ in one variable. null: on for the
            statistics-based norms and off for the point-wise ones (DyT …), as in the DyT authors' DiT code, which
            removes the zero initialisation when it swaps LayerNorm for DyT.
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
        zero_init: bool | None = True,
        norm_affine: bool = False,
        vae: str | None = None,
        vae_scale: float = VAE_SCALE,
        hflip: bool = False,
        diffusion: DiffusionConfig | None = None,
        sampling: SamplingConfig | None = None,
        fid: FidConfig | None = None,
        grid: SampleGridConfig | None = None,
        ema: EmaConfig | None = None,
        norm: NormSpec | None = None,
        optim: OptimConfig | None = None,
        divergence: DivergenceConfig | None = None,
        track_alpha: bool = False,
        track_saturation: bool = False,
        compile: bool | dict[str, Any] = False,
    ) -> None:
        if optim is None:  # DiT's recipe
            optim = OptimConfig(lr=1e-4, weight_decay=0.0, warmup_steps=0, schedule="constant")
        super().__init__(norm=norm or NormSpec("layernorm"), optim=optim, divergence=divergence,
                         track_alpha=track_alpha, track_saturation=track_saturation)
        if num_classes < 1:
            raise ValueError(f"model.num_classes must be >= 1; got {num_classes}")
        if not 0 <= class_dropout_prob < 1:
            raise ValueError(f"model.class_dropout_prob must be in [0, 1); got {class_dropout_prob}")
        if not isinstance(compile, (bool, dict)):
            raise ValueError("model.compile must be true, false or a mapping of torch.compile arguments; "
                             f"got {compile!r}")
        if vae is not None and img_size % 8:
            raise ValueError("model.img_size must be a multiple of 8 with a VAE (latents are img_size / 8); "
                             f"got {img_size}")
        self.save_hyperparameters()
        self.img_size, self.in_chans, self.num_classes = img_size, in_chans, num_classes
        self.vae_path, self.vae_scale, self.hflip = vae, vae_scale, hflip
        self.diffusion_config = coerce_dataclass(DiffusionConfig, diffusion, "model.diffusion")
        self.sampling_config = coerce_dataclass(SamplingConfig, sampling, "model.sampling")
        self.fid_config = coerce_dataclass(FidConfig, fid, "model.fid")
        self.grid_config = coerce_dataclass(SampleGridConfig, grid, "model.grid")
        ema = coerce_dataclass(EmaConfig, ema, "model.ema", none_is_default=False)
        self.zero_init = (not self.norm_spec.is_squash) if zero_init is None else bool(zero_init)
        self.latent_channels = 4 if vae is not None else in_chans
        self.latent_size = img_size // 8 if vae is not None else img_size
        net = build_dit(model, input_size=self.latent_size, in_channels=self.latent_channels, num_classes=num_classes,
                        class_dropout_prob=class_dropout_prob, learn_sigma=learn_sigma, zero_init=self.zero_init,
                        norm_affine=norm_affine, depth=depth, hidden_size=hidden_size, num_heads=num_heads)
        overrides = [f"{k}={v}" for k, v in (("depth", depth), ("hidden", hidden_size), ("heads", num_heads)) if v]
        self.model_name = model + (f"({','.join(overrides)})" if overrides else "")
        self.net = self.place_norms(net)
        rank_zero_info(f"{self.model_name}: {sum(p.numel() for p in self.net.parameters()):,} parameters, adaLN-Zero "
                       f"init {'on' if self.zero_init else 'off'}, norm γ/β {'on' if norm_affine else 'off'}")
        self.diffusion = GaussianDiffusion.linear(self.diffusion_config.num_timesteps, learn_sigma=learn_sigma)
        self.sampler = self.diffusion.respaced(min(self.sampling_config.steps, self.diffusion_config.num_timesteps))
        self.ema_config = ema
        self.ema = None
        if ema is not None:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.net, decay=ema.decay, use_warmup=ema.warmup)
        if compile:  # after the EMA copy, which stays eager; in place, so checkpoints keep their parameter names
            self.net.compile(**(compile if isinstance(compile, dict) else {}))
        # Evaluation modules kept out of the module tree: not trained, not checkpointed, not touched by norm surgery.
        self._aux: dict[str, object] = {}
        self._stats: tuple[torch.Tensor, torch.Tensor] | None = None
        self.real_seen = 0  # real images in the FID metric this epoch (this rank)

    # --- set-up -------------------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        self.check_datamodule(num_classes=self.num_classes, img_size=self.img_size, in_chans=self.in_chans)
        dm = self.trainer.datamodule if self._trainer is not None else None
        stats = input_stats(dm) if dm is not None else None
        if stats is not None:
            self._stats = (torch.tensor(stats[0]).view(1, -1, 1, 1), torch.tensor(stats[1]).view(1, -1, 1, 1))
        if self.vae_path is not None and "vae" not in self._aux:
            self._aux["vae"] = load_vae(self.vae_path)
        if self.fid_config.enabled and "fid" not in self._aux:
            metric, info = build_fid_metric(self.fid_config)
            self._aux["fid"] = metric
            rank_zero_info(f"FID feature extractor: {info['name']} [{info['id']}]")
            # results say which extractor produced their FID: FIDs of different extractors are never comparable
            self.evaluation["fid_extractor"] = info

    @property
    def fid_extractor(self) -> dict | None:
        """Which feature extractor scores FID (name, id with a weights hash, feature size); None before set-up."""
        return self.evaluation.get("fid_extractor")

    @property
    def fid_metric(self):
        """The FID metric on this module's device, or None when FID is off (or before set-up)."""
        return self._aux_module("fid")

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

    # --- training -----------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(x, t, y)

    def _losses(self, net: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                generator=None) -> dict[str, torch.Tensor]:
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
    def fid_due(self, stage: str) -> bool:
        """Whether FID is computed in this validation epoch (never in the sanity check) or test."""
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
        fid = self.fid_metric
        if fid is None or not self.fid_due(stage):
            return
        limit = self.fid_config.num_real
        unit = self.to_unit(images)
        real = unit if unit is not None else self.decode(images)
        if limit is not None:
            real = real[: max(0, limit - self.real_seen)]
        if len(real):
            with torch.autocast(self.device.type, enabled=False):
                fid.update(three_channels(real.float()), real=True)
            self.real_seen += len(real)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def on_validation_epoch_start(self) -> None:
        self.real_seen = 0

    def on_test_epoch_start(self) -> None:
        self.real_seen = 0

    def configure_callbacks(self):
        # sampling and FID run before the result writer reads the epoch's metrics (callbacks run in list order,
        # and before the module's own epoch-end hook)
        return [SampleAndScore(self.fid_config, self.sampling_config, self.grid_config), *super().configure_callbacks()]

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

    def probe_forward(self, batch):
        images, labels = batch
        x = self.encode(images.to(self.device))
        t = torch.full((x.shape[0],), self.diffusion.num_timesteps // 2, device=self.device, dtype=torch.long)
        return self.net(self.diffusion.q_sample(x, t, torch.randn_like(x)), t, labels.to(self.device))


__all__ = ["DiffusionConfig", "DiffusionTask", "FidConfig", "GridConfig", "RandomConvFeatures", "SampleAndScore",
           "SampleGridConfig", "SamplingConfig", "build_fid_metric", "input_stats"]
