"""A grid cell killed by SIGKILL mid-training continues from its own last.ckpt on the next ``dyt-bench grid``: it ends
with the steps of an uninterrupted run and ``restarts: 1``; finished cells are not run again."""

import os

import pytest
import yaml

from dyt_bench.grid import main as grid_main
from dyt_bench.results import read_result

pytestmark = pytest.mark.usefixtures("one_thread")

CALLBACKS = '''
import os
import signal
from pathlib import Path

import lightning.pytorch as pl


class KillOnceAt(pl.Callback):
    """SIGKILLs its own process at training step ``step`` of the cell whose norm is ``kind`` (once: a marker file in
    the run directory remembers it): no handler runs, no result is written, only the periodic checkpoint is left."""

    def __init__(self, step: int = 1, kind: str = "dyt"):
        self.step, self.kind = step, kind

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        marker = Path(trainer.default_root_dir) / "killed-once"
        if pl_module.norm_spec.kind == self.kind and trainer.global_step == self.step and not marker.exists():
            marker.write_text("")
            os.kill(os.getpid(), signal.SIGKILL)
'''

BASE = {
    "seed_everything": 0,
    "trainer": {"max_steps": 12, "accelerator": "cpu", "devices": 1, "enable_progress_bar": False,
                "enable_model_summary": False, "limit_val_batches": 2, "val_check_interval": 6, "check_val_every_n_epoch": None,
                "num_sanity_val_steps": 0, "log_every_n_steps": 1,
                "callbacks": [{"class_path": "resumetest_callbacks.KillOnceAt", "init_args": {"step": 7}}]},
    "checkpoint": {"every_n_train_steps": 5},
    "model": {"class_path": "dyt_bench.tasks.ImageClassification",
              "init_args": {"model": "vit_tiny_patch16_224", "num_classes": 10, "img_size": 8, "in_chans": 1,
                            "model_kwargs": {"patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2},
                            "norm": {"kind": "dyt"}, "optim": {"lr": 0.001, "warmup_steps": 0}}},
    "data": {"class_path": "dyt_bench.datamodules.ImageDataModule",
             "init_args": {"source": "synthetic", "img_size": 8, "in_chans": 1, "num_classes": 10, "batch_size": 16,
                           "synthetic_samples": 64}},
}


@pytest.mark.slow  # three cell processes: about a minute on two shared cores
def test_a_sigkilled_cell_resumes_from_its_checkpoint_and_nothing_else_reruns(tmp_path, monkeypatch, capsys):
    (tmp_path / "resumetest_callbacks.py").write_text(CALLBACKS)
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    out = tmp_path / "grid"
    grid = {"name": "resume", "base": "base.yaml", "output": str(out),
            "axes": {"model.norm.kind": ["layernorm", "dyt"]}, "seeds": [0]}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))

    grid_main([str(path), "--no-check", "--progress", "plain"])
    cells = {read_result(p).norm["kind"]: p.parent for p in out.glob("*/result.json")}
    assert read_result(cells["layernorm"]).status == "completed"
    killed = read_result(cells["dyt"])
    assert killed.status == "interrupted" and "SIGKILL" in killed.error
    assert (cells["dyt"] / "checkpoints" / "last.ckpt").is_file()  # saved at step 5, before the kill at step 7
    finished_before = (cells["layernorm"] / "result.json").read_bytes()

    assert grid_main([str(path), "--no-check", "--progress", "plain"]) == 0
    resumed = read_result(cells["dyt"])
    assert resumed.status == "completed" and resumed.steps == 12 and resumed.restarts == 1
    assert "resuming from" in (cells["dyt"] / "stdout.log").read_text()
    assert (cells["layernorm"] / "result.json").read_bytes() == finished_before  # not run again
    assert (cells["layernorm"] / "stdout.log").read_text().count("===== ") == 1
    assert read_result(cells["layernorm"]).restarts == 0
