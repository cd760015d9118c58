"""Bad input to every command gets one line naming the field (and what is allowed), before anything trains.

Each case is checked at the parse / build level on a tiny config: ``dyt-bench fit`` returns 2, prints exactly one
``error:`` line on stderr (no traceback, no ``Namespace(...)`` dump) that names the field, and leaves no result.json
behind (no training step ran: the result writer records every run that starts training)."""

import warnings

import pytest
import torch
import yaml
from PIL import Image

from dyt_bench.cli import main
from dyt_bench.grid.spec import GridError, parse_grid
from dyt_bench.results import read_result

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(tmp_path, model=None, data=None, trainer=None):
    cfg = {
        "seed_everything": 0,
        "trainer": {"max_steps": 1, "accelerator": "cpu", "devices": 1, "default_root_dir": str(tmp_path / "run"),
                    "logger": False, "enable_progress_bar": False, "enable_model_summary": False,
                    "enable_checkpointing": False, "num_sanity_val_steps": 0, **(trainer or {})},
        "model": {"class_path": "dyt_bench.tasks.ImageClassification",
                  "init_args": {"model": "vit_tiny_patch16_224", "num_classes": 10, "img_size": 8, "in_chans": 1,
                                "model_kwargs": {"patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2},
                                "norm": {"kind": "dyt"}, **(model or {})}},
        "data": {"class_path": "dyt_bench.datamodules.ImageDataModule",
                 "init_args": {"source": "digits", "img_size": 8, "in_chans": 1, "batch_size": 16, **(data or {})}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _ran(tmp_path) -> bool:
    return any((tmp_path / "run").rglob("result.json")) if (tmp_path / "run").exists() else False


def _without_stale_log_errors(err: str) -> str:
    # Lightning's log handlers keep the stream of the test that first imported it (pytest closes it afterwards):
    # their "--- Logging error ---" reports belong to the test harness, not to the command
    out, skipping = [], False
    for line in err.splitlines():
        if line.startswith("--- Logging error ---"):
            skipping = True
        elif skipping and line.startswith("Arguments:"):
            skipping = False
        elif not skipping:
            out.append(line)
    return "\n".join(out)


def _one_error_line(err: str) -> str:
    err = _without_stale_log_errors(err)
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "Namespace(" not in err and "Given value" not in err, err
    return lines[0]


# (case, config changes or extra arguments, text the one line must hold). The field names are dotted config keys.
FIT_CASES = [
    ("batch_size 0", {"data": {"batch_size": 0}}, ["data.batch_size", ">= 1"]),
    ("eval_batch_size 0", {"data": {"eval_batch_size": 0}}, ["data.eval_batch_size", ">= 1"]),
    ("num_workers -1", {"data": {"num_workers": -1}}, ["data.num_workers", ">= 0"]),
    ("lr 0", {"model": {"optim": {"lr": 0.0}}}, ["optim.lr", "> 0"]),
    ("optim eps -1", {"model": {"optim": {"eps": -1.0}}}, ["optim.eps", "> 0"]),
    ("betas 1.5", {"model": {"optim": {"betas": [0.9, 1.5]}}}, ["optim.betas", "[0, 1)"]),
    ("label_smoothing 1.5", {"model": {"label_smoothing": 1.5}}, ["model.label_smoothing", "[0, 1)"]),
    ("lr .nan in YAML", {"model": {"optim": {"lr": float("nan")}}}, ["optim.lr", "finite"]),
    ("weight_decay .inf", {"model": {"optim": {"weight_decay": float("inf")}}}, ["optim.weight_decay", "finite"]),
    ("unknown timm model", {"model": {"model": "vit_tinyy_patch16_224"}}, ["model=", "vit_tiny_patch16_224"]),
    ("unknown torchvision model", {"model": {"model": "resnet500"}}, ["model=", "resnet50"]),
    ("img_size not a multiple of the patch", {"model": {"img_size": 10}, "data": {"img_size": 10}},
     ["model.img_size", "multiple of the patch size 4"]),
    ("root null for imagefolder", {"data": {"source": "imagefolder", "root": None}}, ["data.root", "required"]),
    ("on_corrupt unknown", {"data": {"on_corrupt": "ignore"}}, ["data.on_corrupt", "skip", "error"]),
    ("norm kind unknown", {"model": {"norm": {"kind": "dyno"}}}, ["model.norm.kind", "dyt", "layernorm"]),
    ("num_classes 1", {"model": {"num_classes": 1}}, ["model.num_classes", ">= 2"]),
]
if not torch.cuda.is_available():
    FIT_CASES.append(("impl triton without CUDA", {"model": {"norm": {"kind": "dyt", "impl": "triton"}}},
                      ["norm.impl", "CUDA", "eager"]))


@pytest.mark.parametrize("case,changes,expected", FIT_CASES, ids=[c[0] for c in FIT_CASES])
def test_fit_config_value_is_refused_in_one_line(tmp_path, capsys, case, changes, expected):
    code = main(["fit", "--config", str(_config(tmp_path, **changes))])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2, case
    assert all(text in line for text in expected), line
    assert not _ran(tmp_path)


@pytest.mark.parametrize("name,value,allowed", [
    ("DYT_BENCH_NATIVE_NODE", "on", ["auto", "off"]),
    ("DYT_BENCH_COMPILED_FORWARD", "fused", ["decomposed", "inductor", "custom_op"]),
])
def test_an_op_environment_switch_with_a_bad_value_is_refused_before_training(tmp_path, capsys, monkeypatch, name,
                                                                              value, allowed):
    monkeypatch.setenv(name, value)
    assert main(["fit", "--config", str(_config(tmp_path))]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert name in line and repr(value) in line and all(v in line for v in allowed), line
    assert not _ran(tmp_path)


@pytest.mark.parametrize("extra,expected", [
    (["--trainer.max_steps", "abc"], ["trainer.max_steps", "int"]),
    (["--model.norm.kindd", "dyt"], ["model.norm", "kindd"]),
    (["--trainerr.max_steps", "1"], ["unrecognized", "--trainerr.max_steps"]),
], ids=["wrong type", "unknown nested key", "unknown option"])
def test_fit_command_line_error_is_one_line(tmp_path, capsys, extra, expected):
    assert main(["fit", "--config", str(_config(tmp_path)), *extra]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert all(text in line for text in expected), line
    assert not _ran(tmp_path)


@pytest.mark.parametrize("content,expected", [("", "empty"), ("- a\n- b\n", "mapping"), ("a: [1\n", "YAML")],
                         ids=["empty", "a list", "broken YAML"])
def test_config_file_that_is_no_run_config_is_named(tmp_path, capsys, content, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    assert main(["fit", "--config", str(path)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--config" in line and str(path) in line and expected in line


def test_missing_config_file_is_named(tmp_path, capsys):
    assert main(["fit", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in _one_error_line(capsys.readouterr().err)


# --- image folders: unreadable files named, skipped and counted, or refused -----------------------------------------
def _image_folder(root, corrupt: dict[str, bytes] | None = None, empty_class: bool = False):
    for split in ("train", "val"):
        for cls in ("a", "b"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), (40 * i, 80, 120)).save(folder / f"{i}.png")
    for name, data in (corrupt or {}).items():
        (root / "train" / "a" / name).write_bytes(data)
    if empty_class:
        (root / "val" / "c").mkdir()


def _jpeg_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def _data(root, **kwargs):
    from dyt_bench.datamodules import ImageDataModule
    from dyt_bench.datamodules.image import AugmentConfig

    return ImageDataModule(source="imagefolder", root=str(root), img_size=8, in_chans=3, num_classes=2, batch_size=2,
                           augment=AugmentConfig(enabled=False), **kwargs)


@pytest.mark.parametrize("name,data", [("cut.jpg", _jpeg_bytes()[:300]), ("text.png", b"not an image at all\n")],
                         ids=["truncated JPEG", "text file named .png"])
def test_corrupt_image_is_skipped_with_a_warning_and_counted(tmp_path, name, data):
    _image_folder(tmp_path, {name: data})
    dm = _data(tmp_path)
    dm.setup("fit")
    index = next(i for i, (p, _) in enumerate(dm.train_set.samples) if p.endswith(name))
    with pytest.warns(UserWarning, match=name):
        img, _ = dm.train_set[index]
    assert img.shape == (3, 8, 8)
    assert len(dm.train_set.skipped) == 1 and dm.train_set.skipped[0].endswith(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning per file, not one per read
        dm.train_set[index]
    loaded = [dm.train_set[i][0] for i in range(len(dm.train_set))]  # every index serves a readable image
    assert len(loaded) == len(dm.train_set.samples)


def test_corrupt_image_with_on_corrupt_error_names_the_file(tmp_path):
    from dyt_bench.datamodules.image import CorruptImageError

    _image_folder(tmp_path, {"text.png": b"plain text"})
    dm = _data(tmp_path, on_corrupt="error")
    dm.setup("fit")
    index = next(i for i, (p, _) in enumerate(dm.train_set.samples) if p.endswith("text.png"))
    with pytest.raises(CorruptImageError, match=r"text\.png"):
        dm.train_set[index]


def test_empty_class_folder_names_split_and_path(tmp_path):
    _image_folder(tmp_path, empty_class=True)
    with pytest.raises(FileNotFoundError, match=r"'c' of the val/ split .*val/c"):
        _data(tmp_path).setup("fit")


def test_corrupt_image_in_a_run_is_one_line(tmp_path, capsys):
    _image_folder(tmp_path / "images", {"text.png": b"plain text"})
    cfg = _config(tmp_path, model={"num_classes": 2, "in_chans": 3},
                  data={"source": "imagefolder", "root": str(tmp_path / "images"), "num_classes": 2, "in_chans": 3,
                        "batch_size": 1, "on_corrupt": "error", "augment": {"enabled": False}},
                  trainer={"limit_val_batches": 0, "max_steps": 10})  # an epoch is every image: the bad one too
    assert main(["fit", "--config", str(cfg)]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "text.png" in line
    (result,) = (tmp_path / "run").rglob("result.json")
    assert read_result(result).status == "failed" and "text.png" in read_result(result).error


# --- grid files ---------------------------------------------------------------------------------------------------
def _grid(tmp_path, axes):
    base = _config(tmp_path)
    return {"name": "g", "base": str(base), "axes": axes, "output": str(tmp_path / "out")}


@pytest.mark.parametrize("axes,expected", [
    ({"model.init_args.norm.kind": ["layernorm", "dyt"],
      "fn": [{"label": "tanh", "model.init_args.norm.kind": "tanh"}, {"label": "sig", "model.init_args.norm.kind": "sigmoid"}]},
     ["model.init_args.norm.kind", "one axis"]),
    ({"model.init_args.optim": [None], "model.init_args.optim.lr": [0.1, 0.2]},
     ["model.init_args.optim", "one axis"]),
    ({"model.init_args.optim.lr": [1, 1.0]}, ["axes.model.init_args.optim.lr", "1 and 1.0", "distinct"]),
    ({"t": [{"label": "a", "model.init_args.img_size": 8}, {"label": "b", "model.init_args.img_size": 8.0}]},
     ["axes.t", "a and b", "distinct"]),
], ids=["two axes set one key", "an axis sets a key inside another's", "1 and 1.0", "tied values equal"])
def test_grid_axes_must_be_disjoint_and_distinct(tmp_path, axes, expected):
    with pytest.raises(GridError) as info:
        parse_grid(_grid(tmp_path, axes))
    assert all(text in str(info.value) for text in expected), str(info.value)


def test_grid_checks_every_distinct_cell_before_running_any(tmp_path, capsys):
    from dyt_bench.grid.cli import main as grid_main

    grid = _grid(tmp_path, {"data.init_args.batch_size": [16, 0]})  # the second cell is bad, the first fine
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({**grid, "seeds": [0, 1]}))
    assert grid_main([str(path)]) == 2
    err = _without_stale_log_errors(capsys.readouterr().err)
    assert "data.batch_size must be >= 1" in err and "batch_size=0" in err and "1 of 2 distinct" in err
    assert "does not parse or build" in err
    assert not list((tmp_path / "out").rglob("result.json"))  # nothing ran


def test_grid_unwritable_output_fails_first(tmp_path, capsys):
    from dyt_bench.grid.cli import main as grid_main

    blocker = tmp_path / "file"
    blocker.write_text("a file where the output directory would go")
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({**_grid(tmp_path, {"model.init_args.norm.kind": ["dyt"]}),
                                    "output": str(blocker / "out")}))
    assert grid_main([str(path)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "output" in line and str(blocker / "out") in line


# --- probe checkpoints ------------------------------------------------------------------------------------------
def _probe_config(tmp_path, kind="dyt"):
    return str(_config(tmp_path, model={"norm": {"kind": kind}}))


def test_probe_refuses_a_file_that_is_no_checkpoint(tmp_path, capsys):
    from dyt_bench.analysis.probe import main as probe_main

    bad = tmp_path / "last.ckpt"
    bad.write_bytes(b"1234 this is not a checkpoint")
    assert probe_main(["--config", _probe_config(tmp_path), "--ckpt_path", str(bad)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--ckpt_path" in line and str(bad) in line and "invalid literal" not in line


def test_probe_names_the_norm_kind_of_another_runs_checkpoint(tmp_path, capsys):
    from dyt_bench.analysis.probe import main as probe_main
    from dyt_bench.lightning_cli import build_from_config

    model, _ = build_from_config(_probe_config(tmp_path, "layernorm"))
    ckpt = tmp_path / "ln.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {"norm": {"kind": "layernorm"}}}, ckpt)
    assert probe_main(["--config", _probe_config(tmp_path, "dyt"), "--ckpt_path", str(ckpt)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--ckpt_path" in line and "'layernorm'" in line and "'dyt'" in line and "state_dict" not in line
