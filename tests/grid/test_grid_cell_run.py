"""One cell's end without running it: the fallback result, and the one finish path both launchers share."""

import yaml

from dyt_bench.grid import GridState, load_grid
from dyt_bench.grid.cell_run import finalize_cell, finish_cell
from dyt_bench.results import RunResult, read_result, write_result

BASE = {"model": {"class_path": "dyt_bench.tasks.ImageClassification",
                  "init_args": {"model": "vit_tiny_patch16_224", "norm": {"kind": "layernorm"}}},
        "data": {"class_path": "dyt_bench.datamodules.ImageDataModule", "init_args": {"source": "digits"}},
        "trainer": {"max_steps": 3, "default_root_dir": "somewhere"}}


class RecordingView:
    def __init__(self):
        self.finished_cells = []

    def finished(self, cell, outcome):
        self.finished_cells.append((cell.id, outcome.status))


def _spec(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    grid = {"name": "g", "base": "base.yaml", "axes": {"model.norm.kind": ["dyt", "tanh"]}, "seeds": [4],
            "overrides": {"trainer.max_steps": 7}}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    return load_grid(tmp_path / "grid.yaml", output=tmp_path / "out")


def test_a_cell_without_a_result_gets_one_named_after_its_task_and_config(tmp_path):
    spec = _spec(tmp_path)
    cell = spec.cells()[0]
    (cell.dir).mkdir(parents=True)
    (cell.dir / "stderr.log").write_text("Traceback ...\nValueError: no such model\n")
    outcome = finalize_cell(spec, cell, 1, 2.5, "2020-01-01T00:00:00+00:00")
    assert outcome.status == "failed" and "exited with code 1" in outcome.error and "no such model" in outcome.error
    result = read_result(cell.dir)
    assert (result.task, result.model, result.dataset) == ("image_classification", "vit_tiny_patch16_224", "digits")
    assert result.norm == {"kind": "dyt"} and result.seed == 4 and result.wall_time_s == 2.5
    assert result.config["trainer"]["max_steps"] == 7 and result.config["seed_everything"] == 4
    assert result.config_hash and result.versions["python"]
    assert result.started_at == "2020-01-01T00:00:00+00:00" and result.finished_at


def test_finish_cell_settles_the_result_updates_grid_json_and_tells_the_view(tmp_path):
    spec = _spec(tmp_path)
    ran, broken = spec.cells()
    write_result(ran.dir, RunResult(task="image_classification", model="vit", dataset="digits",
                                    norm={"kind": "dyt"}, status="completed", seed=4, wall_time_s=9.0,
                                    metrics_best={"val/acc1": 0.5}))
    state = GridState(spec, [ran, broken], "submitit-local")
    view = RecordingView()
    state.start(broken)
    assert state.counts()["running"] == 1
    finish_cell(spec, state, view, ran, 0, 10.0, "now")
    finish_cell(spec, state, view, broken, None, 3.0, "now", error="submitit job 12_1 failed: killed")
    assert view.finished_cells == [(ran.id, "completed"), (broken.id, "failed")]
    assert state.wall[ran.id] == 9.0 and state.metrics[ran.id] == {"val/acc1": 0.5}
    assert read_result(broken.dir).error == "submitit job 12_1 failed: killed"
    summary = yaml.safe_load((spec.output / "grid.json").read_text())
    assert summary["counts"]["completed"] == 1 and summary["counts"]["failed"] == 1


def test_an_interrupted_grid_marks_a_cell_without_a_result_interrupted(tmp_path):
    spec = _spec(tmp_path)
    cell = spec.cells()[1]
    outcome = finalize_cell(spec, cell, -2, 1.0, "now", interrupted=True)
    assert outcome.status == "interrupted" and read_result(cell.dir).norm == {"kind": "tanh"}
