"""result.json: schema round trip and atomic writes that never leave a torn file."""

import json
import os

import pytest

from dyt_bench.results import RunResult, read_result, write_result


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
