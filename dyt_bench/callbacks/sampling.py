"""SampleAndScore: at the end of validation and test, sample images from the task, score them by FID
(``<stage>/fid``) and save a grid of them as a PNG under ``<run_dir>/samples/``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from dyt_bench.diffusion.config import SamplingConfig
from dyt_bench.evaluation.fid import FidConfig, SamplingProgress, three_channels

from .run_files import run_dir

if TYPE_CHECKING:
    from pathlib import Path

SAMPLES_DIR = "samples"


@dataclass
class SampleGridConfig:
    """Sample grids saved as PNG under ``<run_dir>/samples/``: ``num_images`` images (class i mod num_classes),
    ``nrow`` per row, from fixed noise so that grids of one run are comparable across epochs."""

    enabled: bool = True
    num_images: int = 64
    nrow: int = 8

    def __post_init__(self) -> None:
        if self.num_images < 1 or self.nrow < 1:
            raise ValueError("model.grid.num_images and model.grid.nrow must be >= 1")


class SampleAndScore(pl.Callback):
    """Samples, scores and saves when FID is due (validation epochs ``fid.every_n_epochs``, 2·n, …; every test).

    The task provides ``generate(labels, seed)`` ([0, 1] images), ``num_classes``, ``sampler`` (its respaced
    process), ``fid_due(stage)``, ``fid_metric`` (the FID metric holding this epoch's real images, or None),
    ``real_seen`` (how many real images it holds) and ``evaluation["fid_extractor"]`` (which extractor scores).
    Each rank generates its share of ``fid.num_samples`` (``fid.test_num_samples`` at test) with its own seeds; rank 0
    also the grid's images. Run before the result writer, so that it records the epoch's FID.
    """

    def __init__(self, fid: FidConfig | None = None, sampling: SamplingConfig | None = None,
                 grid: SampleGridConfig | None = None) -> None:
        self.fid = fid if fid is not None else FidConfig()
        self.sampling = sampling if sampling is not None else SamplingConfig()
        self.grid = grid if grid is not None else SampleGridConfig()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.sample_and_score(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.sample_and_score(trainer, pl_module, "test")

    def sample_and_score(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Sample images, update and compute FID (``<stage>/fid``) and save a sample grid, when due."""
        if not pl_module.fid_due(stage):
            return
        fid, fid_cfg, cfg = pl_module.fid_metric, self.fid, self.sampling
        n_fid = (fid_cfg.test_num_samples or fid_cfg.num_samples) if stage == "test" else fid_cfg.num_samples
        world, rank = trainer.world_size, trainer.global_rank
        n_fid = -(-n_fid // world) if fid is not None and pl_module.real_seen >= 2 else 0  # this rank's share
        n_grid = self.grid.num_images if self.grid.enabled and rank == 0 else 0
        total = max(n_fid, n_grid)
        if total == 0:
            return
        grid_images, done, batch_no = [], 0, 0
        n_batches = -(-total // cfg.batch_size)
        rank_zero_info(f"[{stage}] sampling {total} images ({cfg.method}, {pl_module.sampler.num_timesteps} steps, "
                       f"cfg {cfg.cfg_scale:g}) in {n_batches} batches")
        with SamplingProgress(total, f"[{stage}] sampling + FID features", enabled=trainer.is_global_zero) as bar:
            while done < total:
                n = min(cfg.batch_size, total - done)
                labels = (torch.arange(done, done + n, device=pl_module.device) + rank * n_fid) % pl_module.num_classes
                # sample under the run's precision (e.g. bf16 autocast), as validation steps run
                with trainer.precision_plugin.val_step_context():
                    images = pl_module.generate(labels, seed=fid_cfg.seed * 1_000_003 + rank * 10_007 + batch_no)
                if done < n_fid:
                    with torch.autocast(pl_module.device.type, enabled=False):
                        fid.update(three_channels(images[: n_fid - done].float()), real=False)
                have = sum(len(g) for g in grid_images)
                if have < n_grid:
                    grid_images.append(images[: n_grid - have].cpu())
                done += n
                batch_no += 1
                bar.advance(n)
                if n_batches >= 10 and batch_no % max(1, n_batches // 10) == 0:
                    rank_zero_info(f"[{stage}] sampled {done}/{total}")
        extractor = pl_module.evaluation.get("fid_extractor")
        if n_fid:
            value = fid.compute()
            fid.reset()
            pl_module.log(f"{stage}/fid", value.float(), sync_dist=False, rank_zero_only=False)
            rank_zero_info(f"[{stage}] FID ({extractor['id']}, {n_fid * world} generated vs "
                           f"{pl_module.real_seen} real per rank): {float(value):.4g}")
        if n_grid:
            name = f"{stage}_epoch{trainer.current_epoch:04d}_step{trainer.global_step:07d}.png"
            path = run_dir(trainer) / SAMPLES_DIR / name
            self.save_grid(torch.cat(grid_images), path, extractor)
            rank_zero_info(f"[{stage}] sample grid: {path}")

    @rank_zero_only
    def save_grid(self, images: torch.Tensor, path: Path, fid_extractor: dict | None = None) -> None:
        """Write ``images`` ([0, 1], (B, C, H, W)) as one PNG grid of ``grid.nrow`` per row; the first time, also
        ``fid_extractor.json`` beside it (which extractor scores this run's samples)."""
        from torchvision.utils import save_image

        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(images, str(path), nrow=self.grid.nrow, padding=2, pad_value=1.0)
        record = path.parent / "fid_extractor.json"
        if fid_extractor is not None and not record.exists():
            record.write_text(json.dumps(fid_extractor, indent=2) + "\n")


__all__ = ["SampleAndScore", "SampleGridConfig"]
