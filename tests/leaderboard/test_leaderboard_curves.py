"""Validation curves and resource columns of the leaderboard: metrics CSVs per run, mean ± std over seeds per cell
(checked against numpy's own mean / std with ddof=1), one PNG per table, throughput and peak memory per cell."""

import csv
import json

import numpy as np
import pytest
from leaderboard_cases import make_result

from dyt_bench.leaderboard import main
from dyt_bench.leaderboard.collect import collect
from dyt_bench.leaderboard.curves import band, read_curve, table_bands
from dyt_bench.leaderboard.tables import Options, build_tables
from dyt_bench.results import write_result

STEPS = [10, 20, 30, 40]


def _write_metrics(path, rows):
    fields = ["epoch", "step", "train/loss", "val/acc1", "val/loss"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in fields})


def _curve(seed, kind):
    base = 0.6 if kind == "layernorm" else 0.5
    return [base + 0.1 * i + 0.01 * seed for i in range(len(STEPS))]


@pytest.fixture
def curved_runs(tmp_path):
    root = tmp_path / "runs"
    for kind in ("layernorm", "dyt"):
        for seed in range(3):
            run = root / f"{kind}_s{seed}"
            values = _curve(seed, kind)
            result = make_result(kind, seed, values[-1])
            result.throughput = {"train_samples_per_s": 100.0 * (seed + 1) + (50 if kind == "dyt" else 0)}
            result.peak_memory_mb = 10.0 + seed
            write_result(run, result)
            rows = []
            for step, v in zip(STEPS, values, strict=True):
                rows.append({"epoch": 0, "step": step - 1, "train/loss": 1.0})  # a training row without val
                rows.append({"epoch": 0, "step": step, "val/acc1": v, "val/loss": 1 - v})
            _write_metrics(run / "metrics.csv", rows)
    return root


def test_read_curve_keeps_validation_rows_and_stops_at_a_non_finite_value(tmp_path):
    path = tmp_path / "metrics.csv"
    _write_metrics(path, [{"step": 5, "train/loss": 2.0}, {"step": 10, "val/acc1": 0.3}, {"step": 20, "val/acc1": 0.4},
                          {"step": 30, "val/acc1": "nan"}, {"step": 40, "val/acc1": 0.9}])
    curve = read_curve(path, "val/acc1")
    assert curve.steps == [10, 20] and curve.values == [0.3, 0.4]
    assert read_curve(path, "val/acc5") is None


def test_band_is_mean_and_sample_std_over_seeds_with_interpolation():
    from dyt_bench.leaderboard.curves import Curve

    a = Curve([0, 10, 20], [0.0, 1.0, 2.0])
    b = Curve([0, 20], [1.0, 3.0])  # validates at other steps: 2.0 at step 10 by interpolation
    c = Curve([0, 10], [2.0, 2.0])  # ended early (diverged): absent at step 20
    out = band([a, b, c])
    assert out.steps == [0, 10, 20] and out.n == [3, 3, 2] and out.runs == 3
    np.testing.assert_allclose(out.mean, [1.0, np.mean([1.0, 2.0, 2.0]), 2.5])
    np.testing.assert_allclose(out.std, [np.std([0, 1, 2], ddof=1), np.std([1.0, 2.0, 2.0], ddof=1),
                                         np.std([2.0, 3.0], ddof=1)])
    assert band([]) is None


def test_cells_get_their_own_runs_curves(curved_runs):
    records, _ = collect([str(curved_runs)])
    opts = Options(metric="val/acc1", mode="max")
    (table,) = build_tables(records, opts)
    bands, notes = table_bands(table, records, "val/acc1")
    assert not notes and len(bands) == 2
    by_kind = {ck[0]: b for (_, ck), b in bands.items()}
    for kind in ("layernorm", "dyt"):
        expected = np.array([_curve(s, kind) for s in range(3)])
        assert by_kind[kind].steps == STEPS and by_kind[kind].runs == 3
        np.testing.assert_allclose(by_kind[kind].mean, expected.mean(axis=0))
        np.testing.assert_allclose(by_kind[kind].std, expected.std(axis=0, ddof=1))


def test_curves_png_and_resource_columns_from_the_command_line(curved_runs, tmp_path, capsys):
    png = tmp_path / "curves.png"
    assert main([str(curved_runs), "--curves", str(png), "--show", "throughput,memory", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "wrote" in err
    cells = {c["col"]: c for c in json.loads(out)["cells"]}
    assert cells["dyt"]["samples_per_s"] == pytest.approx(np.mean([150, 250, 350]))
    assert cells["layernorm"]["samples_per_s"] == pytest.approx(200.0)
    assert cells["layernorm"]["peak_memory_mb"] == pytest.approx(11.0)
    assert main([str(curved_runs), "--show", "throughput,memory", "--format", "md"]) == 0
    md = capsys.readouterr().out
    assert "250 samples/s · peak 11 MB" in md and "200 samples/s" in md
    assert main([str(curved_runs), "--format", "md"]) == 0
    assert "samples/s" not in capsys.readouterr().out  # only with --show


def test_runs_without_metrics_csv_are_named(tmp_path, capsys):
    root = tmp_path / "runs"
    write_result(root / "a", make_result("dyt", 0, 0.5))
    write_result(root / "b", make_result("layernorm", 0, 0.6))
    assert main([str(root), "--curves", str(tmp_path / "c.png"), "--format", "csv"]) == 0
    err = capsys.readouterr().err
    assert "2 run(s) have no metrics.csv" in err and (tmp_path / "c.png").is_file()


def test_bad_curve_and_show_options_are_refused(curved_runs, capsys):
    assert main([str(curved_runs), "--curves", "out.svg"]) == 2
    assert "--curves must name a .png file" in capsys.readouterr().err
    assert main([str(curved_runs), "--show", "flops"]) == 2
    assert "--show must be one of throughput, memory; got 'flops'" in capsys.readouterr().err


def test_export_carries_metrics_csv_so_copied_results_still_draw_curves(curved_runs, tmp_path, monkeypatch):
    from dyt_bench.leaderboard.doc_tables import export

    monkeypatch.chdir(tmp_path)
    written = export(curved_runs, tmp_path / "results" / "copy")
    copied = sorted(p.relative_to(tmp_path / "results" / "copy").as_posix() for p in written)
    assert "dyt_s0/metrics.csv" in copied and len(copied) == 12  # 6 result.json + 6 metrics.csv
    records, _ = collect([str(tmp_path / "results" / "copy")])
    (table,) = build_tables(records, Options(metric="val/acc1", mode="max"))
    bands, notes = table_bands(table, records, "val/acc1")
    assert len(bands) == 2 and not notes
