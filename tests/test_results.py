"""result.json: schema round trip and atomic writes that never leave a torn file."""

import json
import os
from pathlib import Path

import pytest

from dyt_bench.results import RunResult, config_hash, make_result, read_result, utc_now, write_result


def _result(**kw):
    base = dict(task="image_classification", model="vit", dataset="digits", norm={"kind": "dyt"}, status="completed",
                seed=1, metrics_best={"val/acc1": 0.9})
    base.update(kw)
    return RunResult(**base)


def test_round_trip(tmp_path):
    path = write_result(tmp_path / "run", _result())
    assert path.name == "result.json"
    back = read_result(tmp_path / "run")
    assert back == _result()
    assert json.loads(path.read_text())["schema_version"] == 1


def test_invalid_status_is_named():
    with pytest.raises(ValueError, match="completed, diverged, failed, interrupted"):
        _result(status="done")


def test_crash_during_write_keeps_old_file(tmp_path, monkeypatch):
    write_result(tmp_path, _result(metrics_best={"val/acc1": 0.5}))

    def broken_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_result(tmp_path, _result(metrics_best={"val/acc1": 0.7}))
    assert read_result(tmp_path).metrics_best == {"val/acc1": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temp file left behind


def test_unknown_keys_are_ignored_when_reading(tmp_path):
    data = _result().to_dict() | {"added_in_a_later_version": 1}
    (tmp_path / "result.json").write_text(json.dumps(data))
    assert read_result(tmp_path / "result.json").task == "image_classification"


def test_task_defined_throughput_units_are_summed_over_training_batches(tmp_path):
    class Task(_linear_task_class()):
        metric_modes = {"val/widgets": "max"}
        evaluation = {"widget_counter": {"name": "abacus", "path": Path("/tmp/abacus")}}

        def throughput_units(self, batch):  # e.g. seconds of audio: here 2.5 per sample plus 1 per batch
            return {"widgets": 2.5 * batch[0].shape[0] + 1.0}

    _fit_tiny(tmp_path, task=Task())
    result = read_result(tmp_path / "result.json")
    batches, samples = 6, 22
    widgets = 2.5 * samples + 1.0 * batches
    tp = result.throughput
    assert tp["train_widgets_per_s"] > 0
    # the same training time divides both, so their ratio is exact
    assert tp["train_widgets_per_s"] / tp["train_samples_per_s"] == pytest.approx(widgets / samples, rel=1e-9)
    assert "steady_samples_per_s" not in tp, "six batches are all warm-up"
    # the task's metric directions and evaluation facts are recorded, JSON-normalised
    assert result.metric_modes == {"val/widgets": "max"}
    assert result.evaluation == {"widget_counter": {"name": "abacus", "path": "/tmp/abacus"}}
    assert result.versions["torch"] and result.config_hash and result.started_at <= result.finished_at


def _linear_task_class():
    """A one-layer LightningModule on (x,) batches of 3 features, SGD."""
    import lightning.pytorch as pl
    import torch

    class LinearTask(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 1)

        def training_step(self, batch, batch_idx):
            (x,) = batch
            return self.lin(x).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    return LinearTask


def _fit_tiny(tmp_path, accelerator="cpu", warmup_batches=None, data=None, task=None, **trainer_kwargs):
    """One epoch of 22 samples in batches of 4 under a ResultWriter; its result.json. The default task counts
    3 widgets per sample."""
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from dyt_bench.callbacks.result_writer import ResultWriter

    class Task(_linear_task_class()):
        def throughput_units(self, batch):
            return {"widgets": 3.0 * batch[0].shape[0]}

    writer = ResultWriter(run_dir=str(tmp_path))
    if warmup_batches is not None:
        writer.warmup_batches = warmup_batches
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator=accelerator, devices=1, callbacks=[writer],
                         **trainer_kwargs)
    trainer.fit(task if task is not None else Task(), DataLoader(data if data is not None else TensorDataset(torch.randn(22, 3)), batch_size=4))
    return read_result(tmp_path / "result.json")


def test_steady_throughput_leaves_out_the_warm_up_batches(tmp_path):
    # batches of 4, 4, 4, 4, 4, 2; two accumulated per optimizer step: steps end at batches 2, 4 and 6
    result = _fit_tiny(tmp_path, warmup_batches=2, accumulate_grad_batches=2)
    tp = result.throughput
    assert result.steps == 3 and tp["warmup_batches"] == 2
    # batches 3-6 hold 14 samples and end 2 steps; one time divides all three, so the ratios are exact
    assert tp["steady_samples_per_s"] / tp["steady_steps_per_s"] == pytest.approx(14 / 2, rel=1e-9)
    assert tp["steady_widgets_per_s"] / tp["steady_samples_per_s"] == pytest.approx(3.0, rel=1e-9)
    assert tp["train_samples_per_s"] / tp["train_steps_per_s"] == pytest.approx(22 / 3, rel=1e-9)


def test_throughput_counts_the_time_spent_loading_each_batch(tmp_path):
    """A loader that takes 5 ms per sample cannot feed more than 200 samples/s, whatever the model's speed (the
    epoch's first batch is timed from its start: its loading falls before the loop runs)."""
    import time

    import torch
    from torch.utils.data import Dataset

    class Slow(Dataset):
        def __len__(self):
            return 22

        def __getitem__(self, i):
            time.sleep(0.005)
            return (torch.full((3,), float(i)),)

    tp = _fit_tiny(tmp_path, warmup_batches=1, data=Slow()).throughput
    assert tp["steady_samples_per_s"] < 200  # batches 2-6, 18 samples: at least 90 ms of loading
    assert tp["train_samples_per_s"] < 22 / (18 * 0.005)
    assert tp["steady_samples_per_s"] > 20  # the sleep is most of the time, not an order of magnitude under it


@pytest.mark.gpu
def test_a_gpu_run_records_its_gpu_and_gpu_memory(tmp_path):
    """Lightning moves the model back to the CPU before fit's end hooks: the record must still name the GPU."""
    import torch

    result = _fit_tiny(tmp_path, accelerator="gpu")
    assert result.device == torch.cuda.get_device_name(0)
    assert 0 < result.peak_memory_mb < torch.cuda.get_device_properties(0).total_memory / 2**20


def test_make_result_fills_timestamps_versions_and_the_hash_of_the_config():
    config = {"model": {"class_path": "X", "init_args": {"norm": {"kind": "dyt"}, "root": Path("/data")}},
              "seed_everything": 3}
    before = utc_now()
    result = make_result(task="t", model="m", dataset="d", norm={"kind": "dyt"}, status="failed", config=config,
                         seed=3, error="boom")
    assert result.config == {"model": {"class_path": "X", "init_args": {"norm": {"kind": "dyt"}, "root": "/data"}},
                             "seed_everything": 3}
    assert result.config_hash == config_hash(config) and len(result.config_hash) == 16
    assert "python" in result.versions and result.metric_modes == {} and result.evaluation == {}
    assert before <= result.started_at <= result.finished_at and result.finished_at.endswith("+00:00")
    assert result.seed == 3 and result.error == "boom"
    assert make_result(task="t", model="m", dataset="d", norm={}, status="completed", config={},
                       started_at="2020-01-01T00:00:00+00:00").started_at == "2020-01-01T00:00:00+00:00"


def test_config_hash_ignores_where_a_run_writes_but_not_what_it_computes():
    config = {"model": {"class_path": "X", "init_args": {"norm": {"kind": "dyt"}}}, "seed_everything": 0,
              "trainer": {"max_steps": 5, "default_root_dir": "/a", "logger": {"init_args": {"save_dir": "/a"}}}}
    moved = json.loads(json.dumps(config))
    moved["trainer"].update(default_root_dir="/b", logger={"init_args": {"save_dir": "/b"}}, log_every_n_steps=7)
    moved["ckpt_path"] = "/b/last.ckpt"
    assert config_hash(moved) == config_hash(config)
    for key, value in (("seed_everything", 1), ("trainer", {"max_steps": 6})):
        assert config_hash({**config, key: value}) != config_hash(config), key
    other = json.loads(json.dumps(config))
    other["model"]["init_args"]["norm"]["kind"] = "tanh"
    assert config_hash(other) != config_hash(config)


def test_config_hash_is_still_importable_from_the_callbacks():
    from dyt_bench.callbacks import config_hash as from_callbacks
    from dyt_bench.callbacks.result_writer import config_hash as from_writer

    assert from_callbacks is config_hash and from_writer is config_hash


def test_make_result_records_every_library_of_versions_py():
    import torch

    from dyt_bench.versions import library_versions

    result = make_result(task="t", model="m", dataset="d", norm={}, status="completed", config={})
    assert result.versions == library_versions()  # torch is loaded here: its CUDA version too, when a CUDA build
    assert {"python", "torch", "lightning", "jsonargparse"} <= set(result.versions)
    assert ("cuda" in result.versions) == bool(torch.version.cuda)


def test_make_result_does_not_load_torch_into_a_process_without_it():
    import subprocess
    import sys

    code = ("import sys, json; from dyt_bench.results import make_result; "
            "r = make_result(task='t', model='m', dataset='d', norm={}, status='failed', config={}); "
            "print(json.dumps(['torch' in sys.modules, sys.modules.get('torch', 0) is None, r.versions]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded, blocked, versions = json.loads(out.strip().splitlines()[-1])
    assert not loaded and not blocked  # neither imported nor left blocked
    assert {"python", "torch", "jsonargparse"} <= set(versions) and "cuda" not in versions
