"""Grid files: validation with clear errors, expansion into cells with stable ids, the fit command of a cell."""

import argparse
import json
import os

import pytest
import yaml

from dyt_bench.grid import GridError, assign, load_grid, lookup, main
from dyt_bench.grid.launch_slurm import slurm_parameters

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _write(tmp_path, data, name="grid.yaml"):
    (tmp_path / "base.yaml").write_text("model:\n  class_path: dyt_bench.tasks.ImageClassification\n")
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    return path


def _grid(**extra):
    data = {"name": "g", "base": "base.yaml", "axes": {"model.norm.kind": ["layernorm", "dyt"],
                                                        "size": [{"label": "small", "model.model_kwargs.depth": 1,
                                                                  "data.batch_size": 8},
                                                                 {"label": "big", "model.model_kwargs.depth": 2,
                                                                  "data.batch_size": 4}]},
            "seeds": [0, 1, 2], "output": "out"}
    data.update(extra)
    return data


def test_expansion_is_the_product_of_axes_and_seeds(tmp_path):
    spec = load_grid(_write(tmp_path, _grid()), output=tmp_path / "out")
    cells = spec.cells()
    assert len(cells) == 2 * 2 * 3
    assert len({c.id for c in cells}) == len(cells) and len({c.dir for c in cells}) == len(cells)
    combos = {(c.assignments["model.norm.kind"], c.assignments["data.batch_size"], c.seed) for c in cells}
    assert combos == {(k, b, s) for k in ("layernorm", "dyt") for b in (8, 4) for s in (0, 1, 2)}
    tied = [c for c in cells if c.labels["size"] == "big"]
    assert all(c.assignments["model.model_kwargs.depth"] == 2 and c.assignments["data.batch_size"] == 4 for c in tied)
    # ids are readable and stable across loads
    again = load_grid(_write(tmp_path, _grid()), output=tmp_path / "out").cells()
    assert [c.id for c in cells] == [c.id for c in again]
    assert cells[0].id.startswith("kind=layernorm_small_s0-")


def test_ids_do_not_depend_on_the_other_axes_order_of_values(tmp_path):
    a = load_grid(_write(tmp_path, _grid()), output=tmp_path / "o").cells()
    data = _grid()
    data["axes"]["model.norm.kind"] = ["dyt", "layernorm"]
    b = load_grid(_write(tmp_path, data), output=tmp_path / "o").cells()
    assert {c.id for c in a} == {c.id for c in b}


def test_cell_loggers_keep_the_base_configs_own_after_a_csv_logger():
    from dyt_bench.grid.spec import cell_loggers

    tb = {"class_path": "lightning.pytorch.loggers.TensorBoardLogger", "init_args": {"save_dir": "x", "log_graph": True}}
    wandb = {"class_path": "lightning.pytorch.loggers.WandbLogger", "init_args": {"project": "p"}}
    other = {"class_path": "my.loggers.Custom", "init_args": {"where": "y"}}
    csv_first = {"class_path": "lightning.pytorch.loggers.CSVLogger",
                 "init_args": {"save_dir": "/c", "name": "", "version": ""}}
    assert cell_loggers(None, "/c") == cell_loggers(False, "/c") == [csv_first]
    assert cell_loggers(dict(csv_first, init_args={"save_dir": "z"}), "/c") == [csv_first]  # one CSV, in the cell
    got = cell_loggers([tb, wandb, other], "/c")
    assert got[0] == csv_first
    assert got[1]["init_args"] == {"save_dir": "/c", "log_graph": True, "name": "", "version": ""}
    assert got[2]["init_args"] == {"project": "p", "save_dir": "/c"}
    assert got[3] == other  # a logger without a known save_dir argument is passed on unchanged


def test_fit_args_put_the_axis_values_after_the_fixed_overrides(tmp_path):
    spec = load_grid(_write(tmp_path, _grid(overrides={"trainer.max_steps": 5, "model.norm.kind": "rmsnorm"})),
                     output=tmp_path / "out")
    cell = spec.cells()[0]
    args = cell.fit_args(spec)
    assert args[:3] == ["fit", "--config", str(tmp_path / "base.yaml")]
    kinds = [args[i + 1] for i, a in enumerate(args) if a == "--model.norm.kind"]
    assert kinds == ["layernorm"]  # the axis value wins over the fixed override of the same key
    assert args[args.index("--seed_everything") + 1] == "0"
    assert args[args.index("--trainer.default_root_dir") + 1] == str(cell.dir)
    loggers = json.loads(args[args.index("--trainer.logger") + 1])
    assert loggers == [{"class_path": "lightning.pytorch.loggers.CSVLogger",
                        "init_args": {"save_dir": str(cell.dir), "name": "", "version": ""}}]
    assert args[args.index("--trainer.max_steps") + 1] == "5"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"colour": "red"}, "unknown key(s) 'colour'; allowed: name"),
        ({"axes": {"norm.kind": ["dyt"]}}, "must start with one of model, data, trainer"),
        ({"axes": {"model.norm.kind": []}}, "axes.model.norm.kind: must be a non-empty list"),
        ({"axes": {"model.norm.kind": ["dyt", "dyt"]}}, "values must be distinct; repeated: dyt"),
        ({"seeds": [0, 0]}, "seeds: must be a list of distinct integers"),
        ({"base": "missing.yaml"}, "base: config 'missing.yaml' not found"),
        ({"baseline": {"model.norm.kind": "batchnorm"}}, "'batchnorm' is not a value of axis 'model.norm.kind'; "
                                                         "allowed: layernorm, dyt"),
        ({"baseline": {"depth": 3}}, "unknown axis 'depth'; the axes of grid 'g' are: model.norm.kind, size"),
        ({"leaderboard": {"format": "md"}}, "leaderboard: unknown key(s) 'format'; allowed: rows, cols, metric"),
        ({"slurm": {"partitions": "gpu"}}, "slurm: unknown key(s) 'partitions'; allowed: partition, time"),
        ({"paper": {"values": [{"model.norm.kind": "dyt"}]}}, "paper.values[0]: must be a mapping of axis values"),
        ({"name": "two words"}, "name: must be a non-empty string"),
    ],
)
def test_bad_grid_files_name_the_field_and_the_allowed_values(tmp_path, change, message):
    with pytest.raises(GridError) as info:
        load_grid(_write(tmp_path, _grid(**change)))
    assert message in str(info.value)


def test_bad_grid_file_exits_2_before_running_anything(tmp_path, capsys):
    path = _write(tmp_path, _grid(seeds="many"))
    assert main([str(path)]) == 2
    assert "seeds: must be a list of distinct integers" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_base_is_found_next_to_the_grid_file_or_in_the_cwd(tmp_path, monkeypatch):
    sub = tmp_path / "grids"
    sub.mkdir()
    data = _grid(base="base.yaml")
    (sub / "grid.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "base.yaml").write_text("model: {}\n")
    assert load_grid(sub / "grid.yaml").base == tmp_path / "base.yaml"  # from the cwd
    (sub / "base.yaml").write_text("model: {}\n")
    assert load_grid(sub / "grid.yaml").base == sub / "base.yaml"  # the grid file's folder wins


def test_dotted_lookup_and_assign_go_through_init_args():
    config = {"model": {"class_path": "X", "init_args": {"norm": {"kind": "dyt"}}}, "trainer": {"max_steps": 3}}
    assert lookup(config, "model.norm.kind") == "dyt"
    assert lookup(config, "model.init_args.norm.kind") == "dyt"
    assert lookup(config, "trainer.max_steps") == 3
    with pytest.raises(KeyError):
        lookup(config, "model.norm.alpha")
    assign(config, "model.norm.alpha_init", 0.5)
    assign(config, "data.batch_size", 4)
    assert config["model"]["init_args"]["norm"] == {"kind": "dyt", "alpha_init": 0.5}
    assert config["data"] == {"batch_size": 4}


def test_dry_run_lists_cells_and_commands_and_runs_nothing(tmp_path, capsys):
    path = _write(tmp_path, _grid())
    assert main([str(path), "--dry-run", "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "12 cells, 12 to run" in out and out.count("[run ]") == 12
    assert out.count("-m dyt_bench.cli fit --config") == 12
    assert not (tmp_path / "out").exists()


def test_slurm_settings_come_from_the_grid_file_and_flags(tmp_path):
    spec = load_grid(_write(tmp_path, _grid(slurm={"partition": "gpu", "time": "02:30:00", "account": "lab",
                                                   "cpus_per_task": 8, "additional": {"exclusive": True}})))
    args = argparse.Namespace(partition=None, time=None, gpus=2, account="other", workers=None)
    params = slurm_parameters(spec, args, "slurm")
    assert params["slurm_partition"] == "gpu" and params["timeout_min"] == 150
    assert params["gpus_per_node"] == 2 and params["slurm_account"] == "other" and params["cpus_per_task"] == 8
    assert params["slurm_additional_parameters"] == {"exclusive": True}
    args = argparse.Namespace(partition="debug", time="45", gpus=None, account=None, workers=None)
    params = slurm_parameters(spec, args, "slurm")
    assert params["slurm_partition"] == "debug" and params["timeout_min"] == 45 and params["gpus_per_node"] == 1


GRIDS = os.path.join(ROOT, "configs", "grids")


@pytest.mark.parametrize("name", sorted(os.path.relpath(os.path.join(d, f), GRIDS) for d, _, files in os.walk(GRIDS)
                                        for f in files if f.endswith(".yaml")))
def test_shipped_grid_files_are_valid(name, tmp_path):
    path = os.path.join(GRIDS, name)
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    if not os.path.exists(os.path.join(os.path.dirname(path), raw["base"])):
        pytest.skip(f"{name}: its base config {raw['base']} is not in the repository yet")
    spec = load_grid(path, output=tmp_path)
    assert spec.cells() and (spec.leaderboard.get("rows") or spec.leaderboard.get("cols"))
    json.dumps(spec.to_dict())
