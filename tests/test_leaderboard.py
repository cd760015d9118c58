"""Leaderboard on hand-made result files: statistics against independent references, Diverge, formats, errors."""

import csv
import io
import json
import math
import statistics

import pytest
import yaml
from scipy import stats as scipy_stats

from dyt_bench.leaderboard import bootstrap_ci, main, welch_p
from dyt_bench.results import RunResult, write_result

# val/acc1 of three seeds per norm kind; dyt seed 2 diverged
ACC = {"layernorm": [0.912, 0.905, 0.921], "dyt": [0.931, 0.918], "rmsnorm": [0.90, 0.91, 0.93]}


def _result(kind, seed, acc, status="completed", depth=2, task="image_classification"):
    config = {"seed_everything": seed, "trainer": {"max_steps": 10, "default_root_dir": "x"},
              "model": {"class_path": "dyt_bench.tasks.ImageClassification",
                        "init_args": {"model": "vit", "model_kwargs": {"depth": depth}, "norm": {"kind": kind}}}}
    metrics = {"val/acc1": acc, "val/loss": 1 - acc} if acc is not None else {}
    return RunResult(task=task, model="vit", dataset="digits", norm={"kind": kind}, status=status, seed=seed,
                     metrics_best=dict(metrics), metrics_final={k: v - 0.01 for k, v in metrics.items()},
                     config=config, finished_at=f"2025-01-01T00:00:0{seed}")


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    for kind, accs in ACC.items():
        for seed, acc in enumerate(accs):
            write_result(root / f"{kind}_s{seed}", _result(kind, seed, acc))
    write_result(root / "dyt_s2", _result("dyt", 2, 0.5, status="diverged"))
    for seed in range(3):  # every seed of identity diverged
        write_result(root / f"identity_s{seed}", _result("identity", seed, None, status="diverged"))
    write_result(root / "batchnorm_s0", _result("batchnorm", 0, None, status="failed"))
    return root


def _json(capsys, *args):
    assert main([*map(str, args), "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def _cell(data, **axes):
    (cell,) = [c for c in data["cells"] if all(c["axes"].get(k) == v for k, v in axes.items())]
    return cell


def _welch_reference(a, b):
    """Welch's t-test written out: t statistic, Welch–Satterthwaite degrees of freedom, two-sided p."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    t = (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return 2 * scipy_stats.t.sf(abs(t), df)


def test_mean_std_and_welch_p_match_independent_references(runs, capsys):
    data = _json(capsys, runs, "--baseline", "model.norm.kind=layernorm")
    ln, dyt, rms = (_cell(data, **{"model.norm.kind": k}) for k in ("layernorm", "dyt", "rmsnorm"))
    for cell, accs in ((ln, ACC["layernorm"]), (dyt, ACC["dyt"]), (rms, ACC["rmsnorm"])):
        assert cell["n"] == len(accs)
        assert cell["mean"] == pytest.approx(statistics.fmean(accs), abs=1e-12)
        assert cell["std"] == pytest.approx(statistics.stdev(accs), abs=1e-12)  # sample std, ddof=1
    assert ln["baseline"] and ln["delta"] is None
    assert dyt["delta"] == pytest.approx(statistics.fmean(ACC["dyt"]) - statistics.fmean(ACC["layernorm"]), abs=1e-12)
    assert dyt["p_value"] == pytest.approx(_welch_reference(ACC["dyt"], ACC["layernorm"]), rel=1e-9)
    assert rms["p_value"] == pytest.approx(_welch_reference(ACC["rmsnorm"], ACC["layernorm"]), rel=1e-9)
    assert dyt["significant"] is False and dyt["diverged"] == 1  # 3 and 2 seeds, ~1% apart: not significant


def test_welch_p_is_scipys_and_separates_clearly_different_groups():
    a, b = [1.0, 1.1, 0.9, 1.05], [2.0, 2.1, 1.9]
    assert welch_p(a, b) == pytest.approx(scipy_stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-12)
    assert welch_p(a, b) < 1e-3 and welch_p(a, [1.0, 1.02, 0.98]) > 0.5
    assert welch_p([1.0], b) is None


def test_bootstrap_ci_covers_the_difference_and_excludes_zero_only_when_clear():
    lo, hi = bootstrap_ci([2.0, 2.1, 1.9, 2.05], [1.0, 1.1, 0.9])
    assert lo < 1.0 + 0.02 < hi + 0.2 and lo > 0.5
    lo, hi = bootstrap_ci([1.0, 1.2, 0.8], [1.05, 0.95, 1.1])
    assert lo < 0 < hi


def test_diverged_cells_show_diverge_and_partial_divergence_is_counted(runs, capsys):
    assert main([str(runs), "--format", "md", "--baseline", "model.norm.kind=layernorm", "--scale", "100"]) == 0
    md = capsys.readouterr().out
    row = next(line for line in md.splitlines() if line.startswith("| all"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    header = next(line for line in md.splitlines() if line.startswith("| ") and "layernorm" in line)
    names = [c.strip() for c in header.strip("|").split("|")]
    by_kind = dict(zip(names, cells, strict=True))
    assert by_kind["identity"].startswith("Diverge (3/3)")
    assert "Diverge 1/3" in by_kind["dyt"] and by_kind["dyt"].startswith("**★ 92.45 ± 0.92 (2)")
    assert by_kind["batchnorm"].startswith("failed 1")
    assert by_kind["layernorm"].startswith("91.27 ± 0.80 (3)<br>baseline")
    assert "n.s." in by_kind["dyt"]


def test_grid_file_gives_axes_baseline_paper_and_best_per_row(tmp_path, capsys):
    (tmp_path / "base.yaml").write_text("model: {}\n")
    out = tmp_path / "out"
    grid = {"name": "toy", "base": "base.yaml", "output": str(out),
            "axes": {"model.model_kwargs.depth": [2, 4], "model.norm.kind": ["layernorm", "dyt"]},
            "seeds": [0, 1], "baseline": {"model.norm.kind": "layernorm"},
            "leaderboard": {"rows": "model.model_kwargs.depth", "cols": "model.norm.kind", "scale": 100},
            "paper": {"source": "made up", "values": [{"model.norm.kind": "dyt", "model.model_kwargs.depth": 4,
                                                       "value": 82.5}]}}
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(grid))
    accs = {(2, "layernorm"): [0.80, 0.82], (2, "dyt"): [0.90, 0.92], (4, "layernorm"): [0.95, 0.97],
            (4, "dyt"): [0.70, 0.72]}
    for (depth, kind), values in accs.items():
        for seed, acc in enumerate(values):
            write_result(out / f"d{depth}_{kind}_{seed}", _result(kind, seed, acc, depth=depth))
    data = _json(capsys, path)
    assert [t["rows"] for t in data["tables"]] == [["model.model_kwargs.depth"]]
    d2_dyt = _cell(data, **{"model.norm.kind": "dyt", "model.model_kwargs.depth": "2"})
    d4_dyt = _cell(data, **{"model.norm.kind": "dyt", "model.model_kwargs.depth": "4"})
    d4_ln = _cell(data, **{"model.norm.kind": "layernorm", "model.model_kwargs.depth": "4"})
    assert d2_dyt["best_in_row"] and d4_ln["best_in_row"] and not d4_dyt["best_in_row"]
    assert d4_dyt["paper"] == 82.5 and d2_dyt["paper"] is None
    assert d4_dyt["delta"] == pytest.approx(0.71 - 0.96)  # against layernorm at the same depth
    assert d4_dyt["p_value"] == pytest.approx(_welch_reference([0.70, 0.72], [0.95, 0.97]), rel=1e-9)
    assert main([str(path)]) == 0  # the rich terminal table
    text = capsys.readouterr().out
    assert "paper 82.5" in text and "★ 91.00 ± 1.41 (2)" in text and "toy · image_classification" in text


def test_argbest_gives_the_best_value_of_an_axis_per_cell_of_the_others(runs, tmp_path, capsys):
    root = tmp_path / "alpha"
    accs = {(1, 0.5): [0.90, 0.91], (1, 1.0): [0.80, 0.82], (2, 0.5): [0.70, 0.71], (2, 1.0): [0.95, 0.96]}
    for (depth, a0), values in accs.items():
        for seed, acc in enumerate(values):
            r = _result("dyt", seed, acc, depth=depth)
            r.config["model"]["init_args"]["norm"]["alpha_init"] = a0
            write_result(root / f"{depth}_{a0}_{seed}", r)
    data = _json(capsys, root, "--argbest", "alpha_init", "--cols", "depth")
    assert _cell(data, **{"model.model_kwargs.depth": "1"})["argbest"] == "0.5"
    assert _cell(data, **{"model.model_kwargs.depth": "2"})["argbest"] == "1.0"
    assert _cell(data, **{"model.model_kwargs.depth": "2"})["runner_up"] == "0.5"


def test_csv_html_and_png_outputs(runs, tmp_path, capsys):
    assert main([str(runs), "--output", str(tmp_path / "t.csv")]) == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "t.csv").read_text())))
    assert {r["model.norm.kind"] for r in rows} == {"layernorm", "dyt", "rmsnorm", "identity", "batchnorm"}
    identity = next(r for r in rows if r["model.norm.kind"] == "identity")
    assert identity["status"] == "Diverge" and identity["n"] == "0" and identity["diverged"] == "3"
    assert main([str(runs), "--output", str(tmp_path / "t.html")]) == 0
    page = (tmp_path / "t.html").read_text()
    assert page.startswith("<!doctype html>") and "Diverge" in page and "<table>" in page
    assert main([str(runs), "--output", str(tmp_path / "t.png")]) == 0
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_final_metric_and_min_mode(runs, capsys):
    data = _json(capsys, runs, "--metric", "val/loss", "--value", "final")
    assert data["mode"] == "min"  # a loss: lower is better by default
    ln = _cell(data, **{"model.norm.kind": "layernorm"})
    assert ln["mean"] == pytest.approx(statistics.fmean(1 - a - 0.01 for a in ACC["layernorm"]))
    best = [c for c in data["cells"] if c["best_in_row"]]
    assert [c["axes"]["model.norm.kind"] for c in best] == ["dyt"]  # the lowest loss


@pytest.mark.parametrize(
    "args, message",
    [
        (["--metric", "val/acc9"], "--metric: unknown metric 'val/acc9'; metrics in these results: val/acc1, val/loss"),
        (["--rows", "width"], "--rows (table image_classification): unknown axis 'width'; the axes of this table "
                              "are: model.norm.kind"),
        (["--argbest", "lr"], "unknown axis 'lr'"),
        (["--baseline", "kind=groupnorm"], "'groupnorm' is not a value of axis 'model.norm.kind'; allowed: "),
        (["--baseline", "kind"], "--baseline must be AXIS=VALUE"),
        (["--output", "table.xlsx"], "cannot tell the format from '.xlsx'"),
        (["--format", "png"], "--format png needs --output FILE.png"),
    ],
)
def test_bad_input_is_refused_with_the_field_and_allowed_values(runs, capsys, tmp_path, args, message):
    assert main([str(runs), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "table.xlsx").exists()


def test_bad_format_and_mode_are_refused_by_the_parser(runs, capsys):
    for args, allowed in ((["--format", "xls"], "'terminal', 'md', 'csv', 'json', 'html', 'png'"),
                          (["--mode", "up"], "'max', 'min'")):
        with pytest.raises(SystemExit) as info:
            main([str(runs), *args])
        assert info.value.code == 2 and allowed in capsys.readouterr().err


def test_no_results_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no result.json found under" in capsys.readouterr().err


def test_one_table_per_task(runs, capsys):
    write_result(runs / "other_task", _result("dyt", 0, 0.5, task="text_classification"))
    data = _json(capsys, runs)
    assert sorted(t["task"] for t in data["tables"]) == ["image_classification", "text_classification"]


def test_fids_from_different_feature_extractors_never_share_a_table(tmp_path, capsys):
    root = tmp_path / "runs"
    fids = {("layernorm", "random_cnn-a"): [30.0, 32.0], ("dyt", "random_cnn-a"): [28.0, 29.0],
            ("layernorm", "inception-2048"): [9.0, 9.5], ("dyt", "inception-2048"): [8.8, 9.1]}
    for (kind, extractor), values in fids.items():
        for seed, fid in enumerate(values):
            r = _result(kind, seed, None, task="diffusion")
            metrics = {"val/fid": fid, "val/loss": 0.01 * fid}
            r.metrics_best, r.metrics_final = dict(metrics), dict(metrics)
            r.config["fid_extractor"] = {"name": extractor.split("-")[0], "id": extractor}
            write_result(root / f"{kind}_{extractor}_s{seed}", r)
    data = _json(capsys, root, "--metric", "val/fid", "--mode", "min")
    titles = sorted(t["title"] for t in data["tables"])
    assert len(titles) == 2 and "inception-2048" in titles[0] and "random_cnn-a" in titles[1]
    for extractor in ("random_cnn-a", "inception-2048"):
        (table,) = [t for t in data["tables"] if extractor in t["title"]]
        cells = [c for c in data["cells"] if c["table"] == table["title"]]
        # each table holds only its own extractor's runs: the mean is over the two seeds of that extractor
        for c in cells:
            kind = c["axes"]["model.norm.kind"]
            assert c["mean"] == pytest.approx(statistics.fmean(fids[(kind, extractor)]))
    # other metrics of the same runs are not split by the extractor
    data = _json(capsys, root, "--metric", "val/loss")
    assert len(data["tables"]) == 1
