"""The SLURM launcher: sbatch's time formats, and a cell requeued after a (simulated) time-out through submitit's
checkpointing hook, continuing from its own last.ckpt, on submitit's local executor."""

import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from dyt_bench.grid import main as grid_main
from dyt_bench.grid.cell_run import run_cell_job
from dyt_bench.grid.launch_slurm import _minutes, slurm_parameters
from dyt_bench.grid.spec import GridError, load_grid
from dyt_bench.results import read_result

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(("text", "minutes"), [
    ("90", 90), (45, 45), ("30:00", 30), ("30:01", 31), ("02:30:00", 150), ("1-00:00:00", 1440),
    ("2-12:30:00", 2 * 1440 + 12 * 60 + 30), ("1-06", 1440 + 360), ("1-06:15", 1440 + 375), ("0-00:00:30", 1),
])
def test_time_accepts_every_sbatch_format(text, minutes):
    assert _minutes(text) == minutes


@pytest.mark.parametrize("bad", ["1h", "1-", "1:2:3:4", "-5", "0", "0:00", "", True, None])
def test_a_bad_time_is_one_clear_error_naming_the_formats(bad):
    with pytest.raises(GridError, match=r"slurm\.time"):
        _minutes(bad)


def test_the_time_flag_overrides_the_grid_file(tmp_path):
    path = tmp_path / "g.yaml"
    (tmp_path / "base.yaml").write_text("model: {}\n")
    path.write_text(yaml.safe_dump({"name": "t", "base": "base.yaml", "axes": {"model.norm.kind": ["dyt"]},
                                    "slurm": {"time": "10"}, "output": str(tmp_path / "out")}))
    spec = load_grid(path)
    args = SimpleNamespace(partition=None, time="1-02:00:00", gpus=None, account=None, workers=None)
    assert slurm_parameters(spec, args, "slurm")["timeout_min"] == 26 * 60
    args.time = None
    assert slurm_parameters(spec, args, "local")["timeout_min"] == 10


CALLBACKS = '''
import time

import lightning.pytorch as pl


class SlowSteps(pl.Callback):
    """Sleeps after every training step, so that a time-out can arrive mid-training."""

    def __init__(self, seconds: float = 0.2):
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        time.sleep(self.seconds)
'''

BASE = {
    "seed_everything": 0,
    "trainer": {"max_steps": 40, "accelerator": "cpu", "devices": 1, "enable_progress_bar": False,
                "enable_model_summary": False, "limit_val_batches": 1, "val_check_interval": 20,
                "check_val_every_n_epoch": None, "num_sanity_val_steps": 0,
                "callbacks": [{"class_path": "slurmtest_callbacks.SlowSteps", "init_args": {"seconds": 0.25}}]},
    "checkpoint": {"every_n_train_steps": 4},
    "model": {"class_path": "dyt_bench.tasks.ImageClassification",
              "init_args": {"model": "vit_tiny_patch16_224", "num_classes": 10, "img_size": 8, "in_chans": 1,
                            "model_kwargs": {"patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2},
                            "norm": {"kind": "dyt"}, "optim": {"lr": 0.001, "warmup_steps": 0}}},
    "data": {"class_path": "dyt_bench.datamodules.ImageDataModule",
             "init_args": {"source": "synthetic", "img_size": 8, "in_chans": 1, "num_classes": 10, "batch_size": 16,
                           "synthetic_samples": 64}},
}


@pytest.fixture
def grid_file(tmp_path, monkeypatch):
    (tmp_path / "slurmtest_callbacks.py").write_text(CALLBACKS)
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"name": "slurm", "base": "base.yaml", "output": str(tmp_path / "out"),
                                    "axes": {"model.norm.kind": ["dyt"]}, "seeds": [0],
                                    "slurm": {"time": "0-00:10:00"}}))
    return path


def _task_pid(job) -> int:
    """The pid of the task process that submitit's local controller (``job._process``) started for the job."""
    controller = job._process.pid
    children = Path(f"/proc/{controller}/task/{controller}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the job's task through /proc")
@pytest.mark.slow  # a cell started twice in submitit's local executor: about a minute on two shared cores
def test_a_timed_out_cell_is_requeued_and_resumes_from_its_checkpoint(grid_file, tmp_path):
    submitit = pytest.importorskip("submitit")
    spec = load_grid(grid_file)
    (cell,) = spec.cells()
    executor = submitit.AutoExecutor(folder=str(tmp_path / "submitit"), cluster="local")
    executor.update_parameters(timeout_min=10)
    job = executor.submit(run_cell_job, {"spec": spec.to_dict(), "output": str(spec.output), "cell_id": cell.id})
    deadline = time.monotonic() + 240
    while not (cell.dir / "checkpoints" / "last.ckpt").exists():  # training is under way
        assert not job.done(), job.stderr()
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.5)
    # What SLURM does before a time limit: USR2 to the job's task (submitit's checkpoint-and-requeue handler). With a
    # 10-minute limit submitit counts any USR2 as a time-out (guaranteed time: min(0.8 × limit, limit − 10 min)).
    os.kill(_task_pid(job), signal.SIGUSR2)
    assert job.result() == "completed"
    result = read_result(cell.dir)
    assert result.status == "completed" and result.steps == 40 and result.restarts == 1
    (earlier,) = (cell.dir / "attempts").glob("*.json")
    first = read_result(earlier)
    assert earlier.name.endswith("interrupted.json") and first.error == "SIGTERM" and 4 <= first.steps < 40
    assert (cell.dir / "stdout.log").read_text().count("===== ") == 2  # the requeued job ran the cell again


@pytest.mark.slow
def test_grid_with_the_submitit_local_launcher_and_a_day_format_time(grid_file, capsys):
    assert grid_main([str(grid_file), "--launcher", "submitit-local", "--no-check", "--progress", "plain",
                      "--time", "0-00:20:00"]) == 0
    (result,) = [read_result(p) for p in (grid_file.parent / "out").glob("*/result.json")]
    assert result.status == "completed" and result.steps == 40 and result.restarts == 0
