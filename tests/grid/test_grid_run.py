"""Running grids for real on tiny CPU cells: statuses, Diverge, failures, resume after SIGKILL, Ctrl-C, submitit."""

import fcntl
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dyt_bench.grid import main as grid_main
from dyt_bench.leaderboard import main as leaderboard_main
from dyt_bench.results import read_result

# Test-only callbacks, importable by the cell processes through PYTHONPATH.
CALLBACKS = '''
import lightning.pytorch as pl
import torch


class NaNParams(pl.Callback):
    """Fills every parameter with NaN at training step ``step``: the loss turns NaN and the run diverges."""

    def __init__(self, step: int = 1):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                for p in pl_module.parameters():
                    p.fill_(float("nan"))


class RaiseAt(pl.Callback):
    """Raises at training step ``step``: the run fails mid-training."""

    def __init__(self, step: int = 1):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError(f"boom at step {self.step}")


class OutOfMemoryAt(pl.Callback):
    """Raises the error a CUDA allocation failure raises, at training step ``step``."""

    def __init__(self, step: int = 1):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 MiB")
'''

BASE = {
    "seed_everything": 0,
    "trainer": {"max_steps": 3, "accelerator": "cpu", "devices": 1, "enable_progress_bar": False,
                "enable_model_summary": False, "enable_checkpointing": False, "limit_val_batches": 2,
                "val_check_interval": 3, "num_sanity_val_steps": 0, "log_every_n_steps": 1},
    "model": {"class_path": "dyt_bench.tasks.ImageClassification",
              "init_args": {"model": "vit_tiny_patch16_224", "num_classes": 10, "img_size": 8, "in_chans": 1,
                            "model_kwargs": {"patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2},
                            "norm": {"kind": "dyt"}, "optim": {"lr": 0.001, "warmup_steps": 0}}},
    "data": {"class_path": "dyt_bench.datamodules.ImageDataModule",
             "init_args": {"source": "digits", "img_size": 8, "in_chans": 1, "num_classes": 10, "batch_size": 16}},
}
NAN = [{"class_path": "gridtest_callbacks.NaNParams", "init_args": {"step": 1}}]
RAISE = [{"class_path": "gridtest_callbacks.RaiseAt", "init_args": {"step": 1}}]
OOM = [{"class_path": "gridtest_callbacks.OutOfMemoryAt", "init_args": {"step": 1}}]


@pytest.fixture
def make_grid(tmp_path, monkeypatch):
    (tmp_path / "gridtest_callbacks.py").write_text(CALLBACKS)
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))

    def make(name, axes, seeds=(0,), **extra):
        grid = {"name": name, "base": "base.yaml", "output": str(tmp_path / name), "axes": axes,
                "seeds": list(seeds), **extra}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(grid, sort_keys=False))
        return path, tmp_path / name

    return make


def _results(out: Path) -> dict[str, object]:
    """Cell dir name → RunResult, for every result.json of the grid (earlier attempts excluded)."""
    return {p.parent.name: read_result(p) for p in out.rglob("result.json") if "attempts" not in p.parts}


def _summary(out: Path) -> dict:
    return json.loads((out / "grid.json").read_text())


def test_a_2x2x2_grid_runs_and_its_nan_cells_show_as_diverge(make_grid, capsys):
    axes = {"model.norm.kind": ["layernorm", "dyt"],
            "case": [{"label": "ok", "trainer.callbacks": None}, {"label": "nan", "trainer.callbacks": NAN}]}
    path, out = make_grid("ci", axes, seeds=(0, 1), baseline={"model.norm.kind": "layernorm"})
    assert grid_main([str(path), "--workers", "2", "--no-check", "--progress", "plain"]) == 0
    results = _results(out)
    assert len(results) == 8
    summary = _summary(out)
    assert summary["counts"]["completed"] == 4 and summary["counts"]["diverged"] == 4
    for cell in summary["cells"]:
        result = results[cell["dir"]]
        assert cell["status"] == result.status == ("diverged" if cell["axes"]["case"] == "nan" else "completed")
        assert result.seed == cell["seed"] and result.config["seed_everything"] == cell["seed"]
        cell_dir = out / cell["dir"]
        for name in ("config.yaml", "stdout.log", "stderr.log", "cell.json"):
            assert (cell_dir / name).is_file(), name
        assert yaml.safe_load((cell_dir / "config.yaml").read_text())["seed_everything"] == cell["seed"]
    # a re-run finds everything finished and runs nothing
    capsys.readouterr()
    assert grid_main([str(path), "--progress", "plain"]) == 0
    assert "8 already done, 0 to run" in capsys.readouterr().out
    assert _results(out) == results

    assert leaderboard_main([str(out), "--format", "json", "--stall-margin", "null"]) == 0
    cells = json.loads(capsys.readouterr().out)["cells"]
    for c in cells:
        kind, case = c["axes"]["model.norm.kind"], c["axes"]["case"]
        if case == "nan":
            assert c["status"] == "Diverge" and c["n"] == 0 and c["diverged"] == 2
        else:
            accs = [r.metrics_best["val/acc1"] for r in results.values()
                    if r.norm["kind"] == kind and r.status == "completed"]
            assert c["n"] == 2 and c["mean"] == pytest.approx(statistics.fmean(accs))
            assert c["std"] == pytest.approx(statistics.stdev(accs))
    assert leaderboard_main([str(path), "--format", "md"]) == 0
    md = capsys.readouterr().out
    nan_row = next(line for line in md.splitlines() if line.startswith("| dyt"))
    assert "Diverge (2/2)" in nan_row


def test_a_failing_cell_is_recorded_and_the_grid_goes_on(make_grid, capsys):
    axes = {"case": [{"label": "bad-model", "model.model": "not_a_model"},
                     {"label": "raises", "trainer.callbacks": RAISE},
                     {"label": "ok", "trainer.callbacks": None}]}
    path, out = make_grid("failing", axes)
    assert grid_main([str(path), "--workers", "2", "--no-check", "--progress", "plain"]) == 1  # failures reported
    by_case = {json.loads((out / d / "cell.json").read_text())["axes"]["case"]: r for d, r in _results(out).items()}
    assert by_case["ok"].status == "completed"
    bad, raises = by_case["bad-model"], by_case["raises"]
    assert bad.status == "failed" and "exited with code" in bad.error and "not_a_model" in bad.error
    assert bad.task == "image_classification" and bad.seed == 0  # recorded by the grid: the run never started
    assert bad.config["model"]["init_args"]["model"] == "not_a_model" and bad.config_hash and bad.versions["python"]
    assert raises.status == "failed" and "RuntimeError: boom at step 1" in raises.error  # recorded by the run
    assert _summary(out)["counts"] == {"pending": 0, "running": 0, "completed": 1, "diverged": 0, "failed": 2,
                                       "interrupted": 0}
    # without --retry-failed a re-run leaves failed cells alone; with it, only they run again
    assert grid_main([str(path), "--no-check", "--progress", "plain"]) == 1
    assert not list(out.rglob("attempts"))
    assert grid_main([str(path), "--workers", "2", "--no-check", "--progress", "plain", "--retry-failed"]) == 1
    attempts = sorted(p.name for p in out.rglob("attempts/*.json"))
    assert attempts == ["01-failed.json", "01-failed.json"]
    ok_dir = next(d for d, r in _results(out).items() if r.status == "completed")
    assert (out / ok_dir / "stdout.log").read_text().count("===== ") == 1  # the completed cell never re-ran
    capsys.readouterr()
    assert leaderboard_main([str(out), "--format", "md"]) == 0
    assert "failed 1" in capsys.readouterr().out


def test_cells_that_ran_out_of_gpu_memory_get_a_hint(make_grid, capsys):
    axes = {"case": [{"label": "oom", "trainer.callbacks": OOM}, {"label": "raises", "trainer.callbacks": RAISE}]}
    path, out = make_grid("oom", axes)
    assert grid_main([str(path), "--workers", "2", "--no-check", "--progress", "plain"]) == 1
    printed = capsys.readouterr().out
    by_case = {json.loads((out / d / "cell.json").read_text())["axes"]["case"]: r for d, r in _results(out).items()}
    assert by_case["oom"].status == "failed" and "CUDA out of memory" in by_case["oom"].error
    # one of the two failures is out of memory: the hint counts it and names the remedy
    assert "1 of them ran out of GPU memory with 2 cells at a time" in printed
    assert "--retry-failed and fewer --workers" in printed


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _counts(out):
    try:
        return _summary(out)["counts"]
    except (OSError, ValueError, KeyError):
        return None


def _lock_free(cell_dir):
    fd = os.open(cell_dir / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _start_grid(path, sigint_ignored=False):
    """The grid as its own process; ``sigint_ignored``: started the way a script's background job (`… &`) is."""
    return subprocess.Popen([sys.executable, "-m", "dyt_bench.cli", "grid", str(path), "--no-check", "--progress",
                             "plain"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_ignore_sigint if sigint_ignored else None)


def test_sigkill_mid_grid_then_rerun_finishes_without_rerunning_or_duplicating(make_grid, capsys):
    path, out = make_grid("killed", {"model.norm.kind": ["layernorm", "dyt"]}, seeds=(0, 1),
                          overrides={"trainer.max_steps": 200, "trainer.val_check_interval": 50})
    proc = _start_grid(path)
    try:
        _wait_for(lambda: (c := _counts(out)) and c["completed"] >= 1 and c["running"] == 1, 150,
                  "one finished cell and one running")
    finally:
        proc.kill()  # SIGKILL: no chance to clean up
        proc.wait()
    summary = _summary(out)
    finished = {c["dir"] for c in summary["cells"] if c["status"] == "completed"}
    (running,) = [c["dir"] for c in summary["cells"] if c["status"] == "running"]
    before = {d: (out / d / "result.json").read_bytes() for d in finished}
    # the orphaned cell is told to stop (parent-death signal) and releases the cell lock
    _wait_for(lambda: _lock_free(out / running), 60, "the orphaned cell to exit")
    assert (read_result(out / running).status if (out / running / "result.json").exists() else None) in (
        None, "interrupted")

    assert grid_main([str(path), "--no-check", "--progress", "plain"]) == 0
    results = _results(out)
    assert len(results) == 4 and all(r.status == "completed" for r in results.values())
    assert len(list(out.rglob("result.json"))) == 4  # no stray or duplicate result files
    for d in finished:  # untouched: same bytes, ran once
        assert (out / d / "result.json").read_bytes() == before[d]
        assert (out / d / "stdout.log").read_text().count("===== ") == 1
    assert (out / running / "stdout.log").read_text().count("===== ") == 2
    assert [p.name for p in (out / running).glob("attempts/*.json")] in ([], ["01-interrupted.json"])
    assert _summary(out)["counts"]["completed"] == 4
    capsys.readouterr()
    assert leaderboard_main([str(out), "--format", "json", "--stall-margin", "null"]) == 0
    assert sorted(c["n"] for c in json.loads(capsys.readouterr().out)["cells"]) == [2, 2]


@pytest.mark.parametrize("sigint_ignored", [False, True], ids=["terminal", "background-job"])
def test_ctrl_c_marks_the_running_cell_interrupted_and_keeps_the_rest(make_grid, sigint_ignored):
    path, out = make_grid("ctrlc", {"model.norm.kind": ["layernorm", "dyt"]},
                          overrides={"trainer.max_steps": 100000, "trainer.val_check_interval": 50})
    proc = _start_grid(path, sigint_ignored)
    try:
        _wait_for(lambda: (c := _counts(out)) and c["running"] == 1, 60, "a running cell")
        # hparams.yaml is written when fit starts: from then on the run itself records the interruption
        _wait_for(lambda: list(out.glob("*/hparams.yaml")), 60, "training to start")
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output
    counts = _summary(out)["counts"]
    assert counts["interrupted"] == 1 and counts["pending"] == 1 and counts["running"] == 0
    (result,) = _results(out).values()
    assert result.status == "interrupted" and result.error == "KeyboardInterrupt"  # written by the run's ResultWriter


def test_submitit_local_executor_runs_a_two_cell_grid(make_grid, capsys):
    path, out = make_grid("submitit", {"model.norm.kind": ["layernorm", "dyt"]})
    assert grid_main([str(path), "--launcher", "submitit-local", "--no-check", "--progress", "plain"]) == 0
    results = _results(out)
    assert sorted(r.norm["kind"] for r in results.values()) == ["dyt", "layernorm"]
    assert all(r.status == "completed" for r in results.values())
    summary = _summary(out)
    assert summary["launcher"] == "submitit-local" and len(summary["jobs"]) == 2
    assert summary["counts"]["completed"] == 2
    assert (out / ".submitit").is_dir()


def test_a_misspelt_key_fails_once_before_any_cell_runs(make_grid, capsys):
    path, out = make_grid("typo", {"model.norm.knd": ["layernorm", "dyt"]}, seeds=(0, 1))
    assert grid_main([str(path), "--progress", "plain"]) == 2
    err = capsys.readouterr().err
    assert "does not parse" in err and "knd" in err
    # no cell started: no grid.json, no cell directory (the writability check may have made the output folder)
    assert not out.exists() or not [p for p in out.iterdir() if p.name != ".preflight.json"]


def test_a_grid_keeps_the_base_configs_logger(make_grid, tmp_path, capsys):
    """A base config logging to TensorBoard: each cell logs there too (into its own directory), a CSV logger beside
    it writes the metrics the leaderboard's curves read, and result.json sits in the cell directory."""
    pytest.importorskip("tensorboard")
    base = yaml.safe_load((tmp_path / "base.yaml").read_text())
    base["trainer"]["logger"] = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                                 "init_args": {"save_dir": str(tmp_path / "elsewhere")}}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    path, out = make_grid("tb", {"model.norm.kind": ["layernorm", "dyt"]})
    assert grid_main([str(path), "--workers", "2", "--no-check", "--progress", "plain"]) == 0
    summary = _summary(out)
    assert summary["counts"]["completed"] == 2
    for cell in summary["cells"]:
        cell_dir = out / cell["dir"]
        assert read_result(cell_dir / "result.json").status == "completed"
        assert list(cell_dir.glob("events.out.tfevents.*")), sorted(p.name for p in cell_dir.iterdir())
        assert (cell_dir / "metrics.csv").is_file()
    assert not (tmp_path / "elsewhere").exists()  # nothing written where the base config's logger pointed
    capsys.readouterr()
    assert leaderboard_main([str(out), "--format", "json"]) == 0
    assert {c["axes"]["model.norm.kind"] for c in json.loads(capsys.readouterr().out)["cells"]} == {"layernorm", "dyt"}
