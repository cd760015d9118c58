"""Faults while results are written: a kill between write and rename, a full disk, signals to ``dyt-bench fit``."""

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from dyt_bench.grid import cell_run
from dyt_bench.grid import state as state_module
from dyt_bench.grid.cli import main as grid_main
from dyt_bench.grid.launch_local import run_local
from dyt_bench.grid.progress import ProgressView
from dyt_bench.grid.spec import GRID_SUMMARY_FILE, parse_grid
from dyt_bench.grid.state import GridState
from dyt_bench.results import (
    RESULT_FILE,
    atomic_write_text,
    make_result,
    pending_writes,
    read_result,
    recover_pending_write,
    write_result,
)

ROOT = Path(__file__).resolve().parents[2]


def _result(status="completed", acc=0.5):
    return make_result(task="t", model="m", dataset="d", norm={"kind": "dyt"}, status=status, config={},
                       metrics_best={"val/acc1": acc}, metrics_final={"val/acc1": acc})


KILL_AT_RENAME = """
import os, sys
from dyt_bench import results
def killed(src, dst):  # the process dies here, as under SIGKILL: no cleanup runs
    os._exit(9)
results.os.replace = killed
results.write_result(sys.argv[1], results.make_result(task="t", model="m", dataset="d", norm={}, status="completed",
                     config={}, metrics_best={"val/acc1": 0.75}))
"""


def test_a_kill_between_write_and_rename_keeps_the_result(tmp_path):
    cell_dir = tmp_path / "cell"
    proc = subprocess.run([sys.executable, "-c", KILL_AT_RENAME, str(cell_dir)], cwd=ROOT, capture_output=True)
    assert proc.returncode == 9
    (tmp,) = pending_writes(cell_dir / RESULT_FILE)
    assert not (cell_dir / RESULT_FILE).exists()
    (cell_dir / ".result.json.zzz.tmp").write_text('{"task": "t", "sta')  # a torn one as well: removed
    assert recover_pending_write(cell_dir / RESULT_FILE)
    assert read_result(cell_dir).metrics_best == {"val/acc1": 0.75}
    assert pending_writes(cell_dir / RESULT_FILE) == []


def test_the_grid_counts_and_renames_a_result_left_by_a_killed_write(tmp_path, capsys):
    base = tmp_path / "base.yaml"
    base.write_text("model: {}\n")
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"name": "g", "base": str(base), "axes": {"model.init_args.x": [1]},
                                    "output": str(tmp_path / "out")}))
    (cell,) = parse_grid(yaml.safe_load(grid.read_text()), grid).cells()
    proc = subprocess.run([sys.executable, "-c", KILL_AT_RENAME, str(cell.dir)], cwd=ROOT, capture_output=True)
    assert proc.returncode == 9 and not (cell.dir / RESULT_FILE).exists()
    assert grid_main([str(grid), "--progress", "plain"]) == 0  # nothing to run: the cell is not re-run
    assert "1 already done, 0 to run" in capsys.readouterr().out
    assert read_result(cell.dir).status == "completed" and not pending_writes(cell.dir / RESULT_FILE)


def test_a_failed_write_cleans_up_and_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / RESULT_FILE
    write_result(tmp_path, _result(acc=0.1))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("dyt_bench.results.os.replace", full)
    with pytest.raises(OSError, match="No space"):
        write_result(tmp_path, _result(acc=0.9))
    assert read_result(path).metrics_best == {"val/acc1": 0.1} and not pending_writes(path)


def test_files_are_written_0644_under_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        os.umask(0o077)
        atomic_write_text(tmp_path / "b.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o600


def _quick_grid(tmp_path, n=3):
    base = tmp_path / "base.yaml"
    base.write_text("model: {class_path: dyt_bench.tasks.ImageClassification}\n")
    spec = parse_grid({"name": "q", "base": str(base), "axes": {"model.init_args.lr": [0.1 * (i + 1) for i in range(n)]},
                       "output": str(tmp_path / "out")})
    return spec, spec.cells()


@pytest.fixture
def quick_cells(monkeypatch):
    # each cell's process exits at once without a result: the grid writes the cell's result itself
    monkeypatch.setattr("dyt_bench.grid.spec.Cell.command", lambda self, spec: [sys.executable, "-c", "pass"])


def test_a_full_disk_fails_the_cell_with_the_reason_and_the_grid_goes_on(tmp_path, monkeypatch, quick_cells):
    spec, cells = _quick_grid(tmp_path)
    real = cell_run.write_result

    def no_space_for_the_first(run_dir, result):
        if Path(run_dir) == cells[0].dir:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(run_dir, result)

    monkeypatch.setattr(cell_run, "write_result", no_space_for_the_first)
    state = GridState(spec, cells, "local")
    with ProgressView(state, len(cells), 1) as view:
        assert run_local(spec, state, cells, 1, None, view, poll_s=0.01) == 0
    summary = json.loads((spec.output / GRID_SUMMARY_FILE).read_text())
    by_id = {c["id"]: c for c in summary["cells"]}
    first = by_id[cells[0].id]
    assert first["status"] == "failed" and "No space left on device" in first["error"]
    assert summary["counts"]["running"] == 0 and summary["counts"]["failed"] == 3  # the others ran (and failed)
    assert all((c.dir / RESULT_FILE).exists() for c in cells[1:])


def test_a_full_disk_for_grid_json_stops_the_grid_cleanly(tmp_path, monkeypatch, quick_cells, capsys):
    spec, cells = _quick_grid(tmp_path)
    state = GridState(spec, cells, "local")
    assert state.write()
    before = (spec.output / GRID_SUMMARY_FILE).read_text()
    real = state_module.atomic_write_text
    calls = []

    def full_after_the_first_cell_starts(path, text):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, text)

    monkeypatch.setattr(state_module, "atomic_write_text", full_after_the_first_cell_starts)
    with ProgressView(state, len(cells), 1) as view:
        assert run_local(spec, state, cells, 1, None, view, poll_s=0.01) == 1
    out = capsys.readouterr().out
    assert "stopping: could not write" in out and "No space left on device" in out
    json.loads((spec.output / GRID_SUMMARY_FILE).read_text())  # still a complete grid.json (the last one written)
    assert (spec.output / GRID_SUMMARY_FILE).read_text() != before
    assert sum((c.dir / RESULT_FILE).exists() for c in cells) < len(cells)  # it stopped starting cells


def test_a_cell_stopped_by_sigterm_is_interrupted_not_failed(tmp_path):
    spec, (cell, *_) = _quick_grid(tmp_path, 1)
    outcome = cell_run.finalize_cell(spec, cell, 143, 1.0, "")
    assert outcome.status == "interrupted" and "SIGTERM" in outcome.error


# --- signals to dyt-bench fit ----------------------------------------------------------------------------------
STARTED = """
import pathlib
import lightning.pytorch as pl


class TouchWhenTraining(pl.Callback):
    def __init__(self, path: str):
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        pathlib.Path(self.path).touch()
"""


def _fit(tmp_path, extra=()):
    (tmp_path / "fault_callbacks.py").write_text(STARTED)
    config = {
        "trainer": {"max_steps": 100000, "accelerator": "cpu", "devices": 1, "logger": False,
                    "enable_progress_bar": False, "enable_model_summary": False, "enable_checkpointing": False,
                    "num_sanity_val_steps": 0, "limit_val_batches": 0,
                    "callbacks": [{"class_path": "fault_callbacks.TouchWhenTraining",
                                   "init_args": {"path": str(tmp_path / "training")}}]},
        "model": {"class_path": "dyt_bench.tasks.ImageClassification",
                  "init_args": {"model": "vit_tiny_patch16_224", "num_classes": 10, "img_size": 8, "in_chans": 1,
                                "model_kwargs": {"patch_size": 4, "embed_dim": 8, "depth": 1, "num_heads": 1},
                                "norm": {"kind": "dyt"}}},
        "data": {"class_path": "dyt_bench.datamodules.ImageDataModule",
                 "init_args": {"source": "synthetic", "img_size": 8, "in_chans": 1, "batch_size": 4,
                               "synthetic_samples": 64}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "dyt_bench.cli", "fit", "--config", str(path),
                             "--trainer.default_root_dir", str(tmp_path / "run"), *extra],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow)],
                         ids=["SIGTERM", "SIGINT"])
def test_fit_stopped_by_a_signal_while_training_exits_128_plus_the_signal(tmp_path, sig, code):
    proc = _fit(tmp_path)
    deadline = time.time() + 240
    while not (tmp_path / "training").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read()[-2000:]
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == code, proc.stderr.read()[-2000:]
    result = read_result(tmp_path / "run")
    assert result.status == "interrupted" and result.steps >= 1


def test_fit_stopped_by_sigterm_while_starting_records_interrupted(tmp_path):
    proc = _fit(tmp_path)
    time.sleep(0.5)  # python is up, torch / Lightning still loading
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143, proc.stderr.read()[-2000:]
    result = read_result(tmp_path / "run")
    assert result.status == "interrupted" and "SIGTERM" in result.error and result.steps == 0


def test_a_finished_grid_returns_without_loading_lightning(tmp_path):
    spec, cells = _quick_grid(tmp_path, 2)
    for cell in cells:
        write_result(cell.dir, _result())
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({"name": "q", "base": str(spec.base), "output": str(spec.output),
                                    "axes": {"model.init_args.lr": [c.assignments["model.init_args.lr"] for c in cells]}}))
    code = ("import sys, time; t = time.perf_counter(); from dyt_bench.cli import main; "
            f"rc = main(['grid', {str(grid)!r}]); print(rc, time.perf_counter() - t, "
            "[m for m in ('lightning', 'torch') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True).stdout
    rc, seconds, loaded = out.strip().splitlines()[-1].split(" ", 2)
    assert rc == "0" and loaded == "[]", out
