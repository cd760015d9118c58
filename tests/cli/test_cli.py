"""The dyt-bench command: a tiny fit through YAML, one-line overrides, and config errors caught before training."""

import glob
import os

import pytest
import yaml

from dyt_bench.cli import main
from dyt_bench.norms import NORM_KINDS
from dyt_bench.results import read_result


def _tiny_config(tmp_path, **norm):
    cfg = {
        "seed_everything": 3,
        "trainer": {
            "max_steps": 4, "accelerator": "cpu", "devices": 1, "default_root_dir": str(tmp_path),
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path), "name": ""}},
            "enable_progress_bar": False, "enable_model_summary": False, "enable_checkpointing": False,
            "limit_val_batches": 2, "val_check_interval": 2, "num_sanity_val_steps": 0,
        },
        "model": {
            "class_path": "dyt_bench.tasks.ImageClassification",
            "init_args": {"model": "vit_tiny_patch16_224", "num_classes": 10, "img_size": 8, "in_chans": 1,
                          "model_kwargs": {"patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2},
                          "norm": {"kind": "dyt", "alpha_init": 0.5, **norm}},
        },
        "data": {"class_path": "dyt_bench.datamodules.ImageDataModule",
                 "init_args": {"source": "digits", "img_size": 8, "in_chans": 1, "batch_size": 16}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _results(tmp_path):
    return sorted(glob.glob(os.path.join(tmp_path, "**", "result.json"), recursive=True))


def test_fit_from_yaml_writes_result(tmp_path, capsys):
    main(["fit", "--config", _tiny_config(tmp_path)])
    (path,) = _results(tmp_path)
    result = read_result(path)
    assert result.status == "completed" and result.steps == 4 and result.seed == 3
    assert result.model == "vit_tiny_patch16_224" and result.dataset == "digits"
    assert result.config["model"]["init_args"]["norm"]["kind"] == "dyt"
    assert "[dyt-bench] result:" in capsys.readouterr().out
    assert os.path.exists(os.path.join(os.path.dirname(path), "config.yaml"))  # the resolved config sits beside it


def test_one_line_override_switches_the_norm(tmp_path):
    main(["fit", "--config", _tiny_config(tmp_path), "--model.norm.kind", "layernorm"])
    result = read_result(_results(tmp_path)[0])
    assert result.norm["kind"] == "layernorm" and result.norm_replacement["target"] == "layernorm"
    hashes = {result.config_hash}
    main(["fit", "--config", _tiny_config(tmp_path)])
    hashes |= {read_result(p).config_hash for p in _results(tmp_path)}
    assert len(hashes) == 2  # a different norm is a different config


@pytest.mark.parametrize(
    "override, field, allowed",
    [
        ({"kind": "dyno"}, "kind", NORM_KINDS),
        ({"impl": "cuda"}, "impl", ("auto", "triton", "eager")),
    ],
)
def test_invalid_norm_field_fails_before_training(tmp_path, capsys, override, field, allowed):
    assert main(["fit", "--config", _tiny_config(tmp_path, **override)]) == 2
    err = capsys.readouterr().err
    assert f"model.norm.{field}" in err and all(value in err for value in allowed)
    assert not _results(tmp_path)  # nothing ran


def test_invalid_data_source_fails_before_training(tmp_path, capsys):
    path = _tiny_config(tmp_path)
    assert main(["fit", "--config", path, "--data.source", "mnist"]) == 2
    err = capsys.readouterr().err
    assert "source" in err and "digits" in err and "synthetic" in err
    assert not _results(tmp_path)


def test_print_config(tmp_path, capsys):
    assert main(["fit", "--config", _tiny_config(tmp_path), "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["init_args"]["norm"]["kind"] == "dyt"


def test_quickstart_config_parses(capsys):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert main(["fit", "--config", os.path.join(root, "configs", "quickstart.yaml"), "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["init_args"]["norm"]["kind"] == "dyt"
    assert printed["data"]["init_args"]["source"] == "digits"
