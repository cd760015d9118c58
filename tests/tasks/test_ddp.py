"""Two-process DDP on CPU (gloo) through the command line: the image and language tasks finish with one result.json
(``world_size: 2``), data preparation runs once, and a NaN loss on rank 1 alone stops both ranks as ``diverged``."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dyt_bench.results import RESULT_FILE, read_result

ROOT = Path(__file__).resolve().parents[2]

TEST_MODULE = '''
from pathlib import Path

import lightning.pytorch as pl
import torch

from dyt_bench.datamodules import TextDataModule


class NaNLossOnRank(pl.Callback):
    """From training step ``step`` on, rank ``rank`` reports a NaN loss (its gradients stay finite): only a decision
    taken jointly by the ranks stops both."""

    def __init__(self, rank: int = 1, step: int = 2):
        self.rank, self.step = rank, step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_rank == self.rank and trainer.global_step >= self.step:
            outputs["loss"] = torch.tensor(float("nan"))


class CountingText(TextDataModule):
    """TextDataModule that appends a line to ``counter`` each time prepare_data runs."""

    def __init__(self, counter: str = "", **kwargs):
        super().__init__(**kwargs)
        self.counter = counter

    def prepare_data(self):
        with open(self.counter, "a") as f:
            f.write("prepared\\n")
        super().prepare_data()
'''


@pytest.fixture
def ddp_env(tmp_path):
    (tmp_path / "ddptest_modules.py").write_text(TEST_MODULE)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH")]))}
    return env


def _fit(tmp_path, env, config, *extra, timeout=400):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "dyt_bench.cli", "fit", "--config", str(path), "--trainer.accelerator", "cpu",
               "--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.enable_progress_bar", "false",
               *extra]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = list((tmp_path / "run").rglob(RESULT_FILE))
    assert len(results) == 1, results  # written once, by rank 0
    return read_result(results[0])


def _image_config(tmp_path, **trainer):
    return {
        "seed_everything": 0,
        "trainer": {"max_steps": 4, "limit_val_batches": 2, "val_check_interval": 2, "check_val_every_n_epoch": None,
                    "num_sanity_val_steps": 0, "enable_model_summary": False, "log_every_n_steps": 1,
                    "default_root_dir": str(tmp_path / "run"),
                    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                               "init_args": {"save_dir": str(tmp_path / "run"), "name": ""}}, **trainer},
        "model": {"class_path": "dyt_bench.tasks.ImageClassification",
                  "init_args": {"model": "vit_tiny_patch16_224", "num_classes": 10, "img_size": 8, "in_chans": 1,
                                "model_kwargs": {"patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2},
                                "ema": {"decay": 0.99}, "norm": {"kind": "dyt"},
                                "optim": {"lr": 0.001, "warmup_steps": 0},
                                "divergence": {"check_every_n_steps": 2}}},
        "data": {"class_path": "dyt_bench.datamodules.ImageDataModule",
                 "init_args": {"source": "synthetic", "img_size": 8, "in_chans": 1, "num_classes": 10,
                               "batch_size": 8, "synthetic_samples": 128}},
    }


@pytest.mark.slow
def test_image_task_with_ema_runs_under_ddp_and_writes_one_result(tmp_path, ddp_env):
    result = _fit(tmp_path, ddp_env, _image_config(tmp_path))
    assert result.status == "completed" and result.steps == 4
    assert result.world_size == 2 and result.strategy == "ddp"
    assert "val/acc1" in result.metrics_final and "val/loss" in result.metrics_final


@pytest.mark.slow
def test_a_nan_loss_on_rank_1_only_stops_both_ranks_as_diverged(tmp_path, ddp_env):
    config = _image_config(tmp_path, max_steps=200, val_check_interval=100,
                           callbacks=[{"class_path": "ddptest_modules.NaNLossOnRank",
                                       "init_args": {"rank": 1, "step": 3}}])
    result = _fit(tmp_path, ddp_env, config, timeout=300)  # a rank left waiting in an all-reduce would time out
    assert result.status == "diverged" and result.world_size == 2
    assert "another rank" in result.divergence  # rank 0's own losses were finite: it stopped on rank 1's word
    assert 3 <= result.steps <= 6


@pytest.mark.slow
def test_language_task_under_ddp_prepares_its_data_once(tmp_path, ddp_env):
    counter = tmp_path / "prepared.txt"
    config = _image_config(tmp_path)
    config["model"] = {"class_path": "dyt_bench.tasks.LanguageModeling",
                       "init_args": {"vocab_size": 257, "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                                     "max_seq_len": 32, "norm": {"kind": "dyt"},
                                     "optim": {"lr": 0.003, "warmup_steps": 0}}}
    config["data"] = {"class_path": "ddptest_modules.CountingText",
                      "init_args": {"counter": str(counter), "source": "stdlib", "tokenizer": "bytes", "seq_len": 32,
                                    "batch_size": 4, "max_files": 12, "cache_dir": str(tmp_path / "cache")}}
    result = _fit(tmp_path, ddp_env, config)
    assert result.status == "completed" and result.steps == 4 and result.world_size == 2
    assert counter.read_text().splitlines() == ["prepared"]  # once, not once per rank
    assert len(list((tmp_path / "cache").glob("*.tokens"))) == 2  # train and val, built by prepare_data


def test_a_deferred_llama_is_built_in_configure_model_with_the_same_weights():
    import torch

    from dyt_bench.tasks import LanguageModeling

    kw = dict(vocab_size=64, hidden_size=16, num_layers=2, num_heads=2, max_seq_len=16, norm={"kind": "dyt"})
    torch.manual_seed(0)
    eager = LanguageModeling(**kw)
    torch.manual_seed(0)
    deferred = LanguageModeling(**kw, defer_build=True, activation_checkpointing=True)
    assert deferred.net is None  # nothing built yet: FSDP builds it inside its init context
    deferred.configure_model()
    net = deferred.net
    deferred.configure_model()  # a second call keeps the first network
    assert deferred.net is net and net.is_gradient_checkpointing and not eager.net.is_gradient_checkpointing
    assert deferred.norm_report.to_dict() == eager.norm_report.to_dict()
    theirs = eager.state_dict()
    for name, value in deferred.state_dict().items():
        torch.testing.assert_close(value, theirs[name], rtol=0, atol=0, msg=name)
    x = torch.randint(0, 64, (2, 9))
    deferred.train()
    loss = deferred._loss(x)
    loss.backward()  # through the recomputed activations
    assert all(p.grad is not None for p in deferred.net.parameters() if p.requires_grad)
