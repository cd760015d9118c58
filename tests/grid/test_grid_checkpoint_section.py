"""The run config's ``checkpoint:`` section in grids: an axis or override may set it (it is a config root), it does
not change a cell's config hash (how often a run saves is not what it computes), and ``--time`` lists SLURM's forms."""

import pytest
import yaml

from dyt_bench.config_keys import NON_SEMANTIC_KEYS
from dyt_bench.grid import GridError, load_grid
from dyt_bench.grid.cli import build_parser
from dyt_bench.grid.launch_slurm import TIME_FORMATS
from dyt_bench.results import config_hash


def _grid(tmp_path, **extra):
    (tmp_path / "base.yaml").write_text("model:\n  class_path: dyt_bench.tasks.ImageClassification\n")
    data = {"name": "g", "base": "base.yaml", "axes": {"model.norm.kind": ["layernorm", "dyt"]}, "output": "out"}
    data.update(extra)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_grid_may_set_the_checkpoint_section(tmp_path):
    spec = load_grid(_grid(tmp_path, overrides={"checkpoint.every_n_train_steps": 50}), output=tmp_path / "out")
    for cell in spec.cells():
        args = cell.fit_args(spec)
        i = args.index("--checkpoint.every_n_train_steps")
        assert args[i + 1] == "50"
    with pytest.raises(GridError, match="checkpoints.every_n_train_steps.*is not a dotted config key"):
        load_grid(_grid(tmp_path, overrides={"checkpoints.every_n_train_steps": 50}), output=tmp_path / "out")


def test_the_checkpoint_interval_does_not_change_the_config_hash():
    assert "checkpoint" in NON_SEMANTIC_KEYS
    base = {"model": {"init_args": {"norm": {"kind": "dyt"}}}, "seed_everything": 0}
    saved = {**base, "checkpoint": {"enabled": True, "every_n_train_steps": 50, "resume": True}}
    assert config_hash(saved) == config_hash(base)
    assert config_hash({**base, "seed_everything": 1}) != config_hash(base)  # the hash still sees what is computed


def test_time_help_lists_every_form_the_parser_accepts():
    help_text = " ".join(build_parser().format_help().split())
    assert f"--time TIME SLURM time limit per cell: {TIME_FORMATS} (overrides slurm.time)" in help_text
    for shown in ("MM,", "HH:MM:SS,", "D-HH:MM:SS"):
        assert shown in TIME_FORMATS
