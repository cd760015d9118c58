"""Malformed result files: the leaderboard names each one (the file and the field), skips it with a count, and never
crashes on one; a metric that is not a number is refused, not averaged."""

import json

import pytest

from dyt_bench.leaderboard.collect import LeaderboardError, collect
from dyt_bench.results import make_result, read_result, write_result


# --- result files -----------------------------------------------------------------------------------------
def _result(run_dir, **metrics):
    write_result(run_dir, make_result(task="t", model="m", dataset="d", norm={"kind": "dyt"}, status="completed",
                                      config={}, metrics_final=metrics, metrics_best=metrics,
                                      metric_modes={k: "max" for k in metrics}))


@pytest.mark.parametrize("text,expected", [
    ('[{"task": "t"}]', "JSON list"),
    ('{"task": "t", "status": "completed", "metrics_final": {"val/acc1": "0.9"}}', "val/acc1 must be a number"),
    ('{"task": "t", "status": "comp', "Unterminated"),
    ('{"task": "t", "status": "done"}', "status must be one of"),
    ('"text"', "JSON str"),
], ids=["JSON array", "metric as a string", "truncated", "unknown status", "JSON string"])
def test_malformed_result_is_refused_naming_the_file_and_field(tmp_path, text, expected):
    path = tmp_path / "result.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=expected):
        read_result(path)
    notes: list[str] = []
    _result(tmp_path / "good", **{"val/acc1": 0.5})
    records, summary = collect([str(tmp_path)], report=notes.append)
    assert len(records) == 1 and len(notes) == 1 and str(path) in notes[0] and expected in notes[0]
    assert any("1 malformed" in s for s in summary)


def test_leaderboard_when_every_result_is_malformed(tmp_path):
    for i, text in enumerate(("[1, 2]", "{", '{"task": 1')):
        (tmp_path / f"r{i}").mkdir()
        (tmp_path / f"r{i}" / "result.json").write_text(text)
    with pytest.raises(LeaderboardError, match=r"none of the 3 result.json file\(s\) .* is a valid result"):
        collect([str(tmp_path)], report=None)


def test_leaderboard_names_the_malformed_file_before_a_metric_error(tmp_path, capsys):
    from dyt_bench.leaderboard.cli import main as leaderboard_main

    _result(tmp_path / "a", **{"val/loss": 1.0})
    (tmp_path / "b").mkdir()
    full = json.dumps(read_result(tmp_path / "a").to_dict() | {"metrics_final": {"val/acc1": 0.9}})
    (tmp_path / "b" / "result.json").write_text(full[: len(full) // 2])  # the only file with val/acc1, truncated
    assert leaderboard_main([str(tmp_path), "--metric", "val/acc1"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "b" / "result.json") in err and "malformed" in err
