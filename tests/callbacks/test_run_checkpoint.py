"""Checkpoints and resumption: last.ckpt by default, SIGTERM then ``--ckpt_path last`` equals an uninterrupted run,
one stable run directory, the RNG states travelling in the checkpoint, artifacts in the run directory whatever the
logger."""

import os
import random
import signal

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.loggers import Logger

from dyt_bench.callbacks.checkpointing import (
    CheckpointConfig,
    RunCheckpoint,
    rng_states,
    run_checkpoint_callbacks,
    set_rng_states,
    settle_fit_run,
)
from dyt_bench.callbacks.run_files import run_dir, settle_run_dir
from dyt_bench.lightning_cli import main
from dyt_bench.results import read_result

pytestmark = pytest.mark.usefixtures("one_thread")


class SigtermAt(pl.Callback):
    """Sends this process SIGTERM (what SLURM or `timeout` sends) once training reaches ``step``."""

    def __init__(self, step: int = 1):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


class DirlessLogger(Logger):
    """A logger with no local directory (like W&B or MLflow): artifacts must not land in the working directory."""

    @property
    def name(self):
        return "dirless"

    @property
    def version(self):
        return "0"

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        pass


def _config(tmp_path, root, logger=None, **trainer):
    config = {
        "seed_everything": 0,
        "trainer": {"max_steps": 12, "accelerator": "cpu", "devices": 1, "limit_val_batches": 2,
                    "val_check_interval": 4, "check_val_every_n_epoch": None, "default_root_dir": str(root),
                    "logger": logger or {"class_path": "lightning.pytorch.loggers.CSVLogger",
                                         "init_args": {"save_dir": str(root), "name": ""}},
                    "enable_model_summary": False, "enable_progress_bar": False, "log_every_n_steps": 1, **trainer},
        "checkpoint": {"every_n_train_steps": 4},
        "model": {"class_path": "dyt_bench.tasks.ImageClassification",
                  "init_args": {"model": "vit_tiny_patch16_224", "num_classes": 10, "img_size": 8, "in_chans": 1,
                                "model_kwargs": {"patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2,
                                                 "global_pool": "avg", "class_token": False, "drop_rate": 0.1},
                                "norm": {"kind": "dyt"}, "optim": {"lr": 0.001, "warmup_steps": 0},
                                "mixup": {"mixup_alpha": 0.8, "cutmix_alpha": 1.0}}},
        "data": {"class_path": "dyt_bench.datamodules.ImageDataModule",
                 "init_args": {"source": "synthetic", "img_size": 8, "in_chans": 1, "num_classes": 10,
                               "batch_size": 16, "synthetic_samples": 64}},  # 4 steps an epoch
    }
    path = tmp_path / f"{root.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_sigterm_then_ckpt_path_last_ends_like_an_uninterrupted_run(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert main(["fit", "--config", _config(tmp_path, whole)]) == 0
    reference = read_result(whole / "version_0")
    assert reference.status == "completed" and reference.steps == 12 and reference.restarts == 0
    assert (whole / "version_0" / "checkpoints" / "last.ckpt").is_file()

    config = _config(tmp_path, parts)
    stop = ["--trainer.callbacks+=test_run_checkpoint.SigtermAt", "--trainer.callbacks.step", "8"]  # an epoch's end
    assert main(["fit", "--config", config, *stop]) == 143
    stopped = read_result(parts / "version_0")
    assert stopped.status == "interrupted" and stopped.error == "SIGTERM" and stopped.steps == 8
    assert torch.load(parts / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8

    assert main(["fit", "--config", config, "--ckpt_path", "last"]) == 0
    assert sorted(p.name for p in parts.iterdir()) == ["version_0"]  # continued in place, no version_1
    resumed = read_result(parts / "version_0")
    assert resumed.status == "completed" and resumed.steps == 12 and resumed.restarts == 1
    assert resumed.wall_time_s > stopped.wall_time_s
    assert resumed.started_at == stopped.started_at
    assert resumed.metrics_final.keys() == reference.metrics_final.keys()
    for name, value in reference.metrics_final.items():
        assert resumed.metrics_final[name] == pytest.approx(value, rel=1e-6, abs=1e-7), name
    assert resumed.metrics_best == pytest.approx(reference.metrics_best, rel=1e-6, abs=1e-7)
    # metrics.csv still holds the whole run: the steps before the interruption were kept, none twice
    assert _logged_steps(parts / "version_0") == _logged_steps(whole / "version_0")


def _logged_steps(directory):
    import csv

    with open(directory / "metrics.csv", newline="") as f:
        return sorted(int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss"))


def test_a_fresh_run_takes_the_next_version_and_last_the_newest_resumable_one(tmp_path, monkeypatch):
    monkeypatch.delenv("DYT_BENCH_RUN_VERSION", raising=False)
    for n in (0, 1, 2):
        (tmp_path / f"version_{n}").mkdir()
    (tmp_path / "version_1" / "checkpoints").mkdir()
    (tmp_path / "version_1" / "checkpoints" / "last.ckpt").write_bytes(b"x")

    def logger():
        return {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path),
                                                                                   "name": "", "version": None}}

    fresh = logger()
    assert settle_run_dir(fresh, None, resume_last=False) == (tmp_path / "version_3", False)
    assert fresh["init_args"]["version"] == "version_3"
    last = logger()
    assert settle_run_dir(last, None, resume_last=True) == (tmp_path / "version_1", False)
    pinned = logger()
    pinned["init_args"]["version"] = ""
    assert settle_run_dir(pinned, None, resume_last=False) == (tmp_path, True)
    other = {"class_path": "lightning.pytorch.loggers.WandbLogger", "init_args": {}}
    assert settle_run_dir(other, None, resume_last=True) == (None, False)


def test_a_pinned_run_dir_resumes_from_its_last_checkpoint_unless_told_not_to(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")

    def config(**checkpoint):
        return {"ckpt_path": None, "checkpoint": checkpoint,
                "trainer": {"default_root_dir": str(tmp_path), "logger": {
                    "class_path": "lightning.pytorch.loggers.CSVLogger",
                    "init_args": {"save_dir": str(tmp_path), "name": "", "version": ""}}}}

    resumed = config()
    settle_fit_run(resumed)
    assert resumed["ckpt_path"] == str(tmp_path / "checkpoints" / "last.ckpt")
    kept = config(resume=False)
    settle_fit_run(kept)
    assert kept["ckpt_path"] is None


def test_the_checkpoint_callback_is_added_unless_disabled_or_the_config_has_its_own():
    (cb,) = run_checkpoint_callbacks({"every_n_train_steps": 7}, {"callbacks": None})
    assert isinstance(cb, RunCheckpoint) and cb._every_n_train_steps == 7 and cb.save_top_k == 0 and cb.save_last
    assert run_checkpoint_callbacks({"enabled": False}, {}) == []
    assert run_checkpoint_callbacks(None, {"enable_checkpointing": False}) == []
    assert run_checkpoint_callbacks(None, {"callbacks": [pl.callbacks.ModelCheckpoint()]}) == []
    with pytest.raises(ValueError, match="checkpoint.every_n_train_steps"):
        CheckpointConfig(every_n_train_steps=0)


def test_rng_states_survive_a_weights_only_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    torch.save({"rng": rng_states()}, tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(()).item())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    set_rng_states(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(()).item()) == expected


@pytest.mark.parametrize("logger", ["tensorboard", "wandb-offline", "dirless"])
def test_artifacts_go_to_the_run_directory_whatever_the_logger(tmp_path, monkeypatch, logger):
    if logger == "wandb-offline":  # the real W&B logger, offline: its files under save_dir, ours in the run dir
        pytest.importorskip("wandb")
        monkeypatch.setenv("WANDB_MODE", "offline")
        monkeypatch.setenv("WANDB_SILENT", "true")
        monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_files"))
        spec = {"class_path": "lightning.pytorch.loggers.WandbLogger",
                "init_args": {"save_dir": str(tmp_path / "wandb_files"), "offline": True, "project": "t"}}
        expected = tmp_path / "run"
    elif logger == "tensorboard":
        pytest.importorskip("tensorboard")
        spec = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(tmp_path / "run"), "name": ""}}
        expected = tmp_path / "run" / "version_0"
    else:
        spec = {"class_path": "test_run_checkpoint.DirlessLogger"}
        expected = tmp_path / "run"
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    config = _config(tmp_path, tmp_path / "run", logger=spec, max_steps=4)
    assert main(["fit", "--config", config, "--model.init_args.track_alpha", "true"]) == 0
    assert read_result(expected).status == "completed"
    assert (expected / "checkpoints" / "last.ckpt").is_file() and (expected / "alpha_tracker.csv").is_file()
    assert not any(work.iterdir())  # nothing in the working directory


def test_run_dir_of_a_trainer_without_a_versioned_logger_is_its_root(tmp_path):
    trainer = pl.Trainer(logger=False, default_root_dir=str(tmp_path), accelerator="cpu")
    assert run_dir(trainer) == tmp_path
