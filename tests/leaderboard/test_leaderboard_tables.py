"""Leaderboard tables: Diverge entries, grid-file layout and baselines, --argbest, one table per task and per FID
feature extractor, and each metric's direction."""

import statistics

import pytest
import yaml
from leaderboard_cases import ACC, cell_of, leaderboard_json, make_result, welch_reference

from dyt_bench.leaderboard import main
from dyt_bench.results import write_result


def test_diverged_cells_show_diverge_and_partial_divergence_is_counted(runs, capsys):
    assert main([str(runs), "--format", "md", "--baseline", "model.norm.kind=layernorm", "--scale", "100",
                 "--value", "best"]) == 0
    md = capsys.readouterr().out
    row = next(line for line in md.splitlines() if line.startswith("| all"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    header = next(line for line in md.splitlines() if line.startswith("| ") and "layernorm" in line)
    names = [c.strip() for c in header.strip("|").split("|")]
    by_kind = dict(zip(names, cells, strict=True))
    assert by_kind["identity"].startswith("Diverge (3/3)")
    # the survivors' mean, the count and what the diverged seed reached; never ranked, never a ★
    assert by_kind["dyt"].startswith("92.45 ± 0.92 (2) · 1/3 diverged (reached 50.00)")
    assert "survivors only" in by_kind["dyt"] and "★" not in by_kind["dyt"]
    assert "not trained 1/3 vs 0/3: Fisher p=1.00" in by_kind["dyt"]
    assert by_kind["batchnorm"].startswith("failed 1")
    assert by_kind["layernorm"].startswith("91.27 ± 0.80 (3)<br>baseline")
    assert by_kind["rmsnorm"].startswith("**▸ 91.33 ± 1.53 (3)**")  # best of the cells where every run trained
    assert "n.s." in by_kind["rmsnorm"] and "(Holm " in by_kind["rmsnorm"]
    assert "at the best validation" in md and "Holm over 2 comparisons" in md


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
            (4, "dyt"): [0.70, 0.72]}  # best values; the final ones, shown by default, are 0.01 lower
    for (depth, kind), values in accs.items():
        for seed, acc in enumerate(values):
            write_result(out / f"d{depth}_{kind}_{seed}", make_result(kind, seed, acc, depth=depth))
    data = leaderboard_json(capsys, path)
    assert [t["rows"] for t in data["tables"]] == [["model.model_kwargs.depth"]]
    d2_dyt = cell_of(data, **{"model.norm.kind": "dyt", "model.model_kwargs.depth": "2"})
    d4_dyt = cell_of(data, **{"model.norm.kind": "dyt", "model.model_kwargs.depth": "4"})
    d4_ln = cell_of(data, **{"model.norm.kind": "layernorm", "model.model_kwargs.depth": "4"})
    assert d2_dyt["best_in_row"] and d4_ln["best_in_row"] and not d4_dyt["best_in_row"]
    assert d4_dyt["paper"] == 82.5 and d2_dyt["paper"] is None
    assert d4_dyt["delta"] == pytest.approx(0.71 - 0.96)  # against layernorm at the same depth
    assert d4_dyt["p"] == pytest.approx(welch_reference([0.70, 0.72], [0.95, 0.97]), rel=1e-9)
    assert main([str(path)]) == 0  # the rich terminal table
    text = capsys.readouterr().out
    assert "paper 82.5" in text and "▸ 90.00 ± 1.41 (2)" in text and "toy · image_classification" in text
    assert data["tables"][0]["header"] == ("val/acc1 ×100 at the final validation, max is better · Welch t-test, "
                                           "Holm over 2 comparisons · paper version: not stated")


def test_argbest_gives_the_best_value_of_an_axis_per_cell_of_the_others(runs, tmp_path, capsys):
    root = tmp_path / "alpha"
    accs = {(1, 0.5): [0.90, 0.91], (1, 1.0): [0.80, 0.82], (2, 0.5): [0.70, 0.71], (2, 1.0): [0.95, 0.96],
            (1, 2.0): [0.99, None], (2, 2.0): [None, None]}  # None: that seed diverged
    for (depth, a0), values in accs.items():
        for seed, acc in enumerate(values):
            r = make_result("dyt", seed, acc, depth=depth, status="completed" if acc is not None else "diverged")
            r.config["model"]["init_args"]["norm"]["alpha_init"] = a0
            write_result(root / f"{depth}_{a0}_{seed}", r)
    data = leaderboard_json(capsys, root, "--argbest", "alpha_init", "--cols", "depth")
    d1, d2 = (cell_of(data, **{"model.model_kwargs.depth": d}) for d in ("1", "2"))
    # α0 = 2.0 at depth 1 has the best survivor (0.99) but one seed diverged: it is listed, not chosen
    assert d1["argbest"] == "0.5" and d1["runner_up"] == "1.0" and d1["delta"] == pytest.approx(0.095)
    assert d2["argbest"] == "1.0" and d2["runner_up"] == "0.5" and d2["delta"] == pytest.approx(0.25)
    assert d1["not_trained_values"] == {"2.0": {"diverged": 1, "stalled": 0, "runs": 2}}
    assert d2["not_trained_values"] == {"2.0": {"diverged": 2, "stalled": 0, "runs": 2}}
    for c in (d1, d2):  # the winner was picked by its mean: no test against the runner-up, no star
        assert c["p"] is None and c["p_holm"] is None and c["significant"] is False and c["ci95"] is None
    assert main([str(root), "--argbest", "alpha_init", "--cols", "depth", "--format", "md"]) == 0
    md = capsys.readouterr().out
    assert "alpha_init=0.5: 0.8950 ± 0.0071 (2)<br>runner-up 1.0: Δ +0.0950<br>not trained: alpha_init=2.0 " \
           "(1/2 diverged)" in md
    assert "untested (the winner is selected by it)" in md and "★" not in md.split("\n\n")[1]


def test_seeds_and_where_a_run_writes_are_never_axes(tmp_path, capsys):
    root = tmp_path / "runs"
    for kind in ("layernorm", "dyt"):
        for seed in range(2):
            r = make_result(kind, seed, 0.9 + 0.01 * seed)
            r.config["trainer"]["default_root_dir"] = f"runs/{kind}_{seed}"
            r.config["trainer"]["logger"] = {"init_args": {"save_dir": f"logs/{seed}"}}
            write_result(root / f"{kind}_s{seed}", r)
    data = leaderboard_json(capsys, root)
    assert [(t["rows"], t["cols"]) for t in data["tables"]] == [([], ["model.norm.kind"])]
    assert cell_of(data, **{"model.norm.kind": "dyt"})["n"] == 2


def test_final_metric_and_min_mode(runs, capsys):
    data = leaderboard_json(capsys, runs, "--metric", "val/loss")
    assert data["mode"] == "min" and data["value"] == "final"  # as the task declared; the final value by default
    ln = cell_of(data, **{"model.norm.kind": "layernorm"})
    assert ln["mean"] == pytest.approx(statistics.fmean(1 - a - 0.01 for a in ACC["layernorm"]))
    best = [c for c in data["cells"] if c["best_in_row"]]
    assert [c["axes"]["model.norm.kind"] for c in best] == ["rmsnorm"]  # lowest loss where every run trained


def _scored_runs(root, modes):
    """Two norm kinds whose `val/score` (a name that says nothing about its direction) differs; ``modes`` is what
    each run's task declares (None: a result file written before tasks declared directions)."""
    for kind, scores in {"layernorm": [0.30, 0.31], "dyt": [0.10, 0.11]}.items():
        for seed, score in enumerate(scores):
            r = make_result(kind, seed, None, modes=modes)
            r.metrics_best = r.metrics_final = {"val/score": score}
            write_result(root / f"{kind}_s{seed}", r)
    return root


def test_the_direction_is_the_one_the_task_declares(tmp_path, capsys):
    root = _scored_runs(tmp_path / "runs", {"val/score": "min"})
    data = leaderboard_json(capsys, root, "--metric", "val/score")
    assert data["mode"] == "min"
    assert [c["axes"]["model.norm.kind"] for c in data["cells"] if c["best_in_row"]] == ["dyt"]
    data = leaderboard_json(capsys, root, "--metric", "val/score", "--mode", "max")  # an explicit --mode still wins
    assert data["mode"] == "max"
    assert [c["axes"]["model.norm.kind"] for c in data["cells"] if c["best_in_row"]] == ["layernorm"]


@pytest.mark.parametrize("modes", [None, {"val/loss": "min"}], ids=["old-result-files", "other-metrics-only"])
def test_an_undeclared_direction_is_an_error_asking_for_mode(tmp_path, capsys, modes):
    root = _scored_runs(tmp_path / "runs", modes)
    for metric in ("val/score", "val/loss_like_name"):  # no name heuristic: not even a name that says "loss"
        for r in root.rglob("result.json"):
            text = r.read_text().replace('"val/score"', f'"{metric}"').replace('"val/loss_like_name"', f'"{metric}"')
            r.write_text(text)
        assert main([str(root), "--metric", metric, "--format", "json"]) == 2
        err = capsys.readouterr().err
        assert f"--mode: no result declares whether {metric!r} is better high or low" in err
        assert "give --mode max or --mode min" in err
        assert leaderboard_json(capsys, root, "--metric", metric, "--mode", "min")["mode"] == "min"


def test_contradicting_declared_directions_ask_for_mode(tmp_path, capsys):
    root = _scored_runs(tmp_path / "runs", {"val/score": "min"})
    r = make_result("rmsnorm", 0, None, modes={"val/score": "max"})
    r.metrics_best = r.metrics_final = {"val/score": 0.2}
    write_result(root / "rmsnorm_s0", r)
    assert main([str(root), "--metric", "val/score", "--format", "json"]) == 2
    assert "the results declare both max and min for 'val/score'" in capsys.readouterr().err
    assert leaderboard_json(capsys, root, "--metric", "val/score", "--mode", "min")["mode"] == "min"


def test_one_table_per_task(runs, capsys):
    write_result(runs / "other_task", make_result("dyt", 0, 0.5, task="text_classification"))
    data = leaderboard_json(capsys, runs)
    assert sorted(t["task"] for t in data["tables"]) == ["image_classification", "text_classification"]


FIDS = {("layernorm", "random_cnn-a"): [30.0, 32.0], ("dyt", "random_cnn-a"): [28.0, 29.0],
        ("layernorm", "inception-2048"): [9.0, 9.5], ("dyt", "inception-2048"): [8.8, 9.1]}


@pytest.mark.parametrize("recorded_in", ["evaluation", "config"])  # config: result files written before `evaluation`
def test_fids_from_different_feature_extractors_never_share_a_table(tmp_path, capsys, recorded_in):
    root = tmp_path / "runs"
    for (kind, extractor), values in FIDS.items():
        for seed, fid in enumerate(values):
            r = make_result(kind, seed, None, task="diffusion")
            metrics = {"val/fid": fid, "val/loss": 0.01 * fid}
            r.metrics_best, r.metrics_final = dict(metrics), dict(metrics)
            getattr(r, recorded_in)["fid_extractor"] = {"name": extractor.split("-")[0], "id": extractor}
            write_result(root / f"{kind}_{extractor}_s{seed}", r)
    data = leaderboard_json(capsys, root, "--metric", "val/fid", "--mode", "min")
    titles = sorted(t["title"] for t in data["tables"])
    assert len(titles) == 2 and "inception-2048" in titles[0] and "random_cnn-a" in titles[1]
    for extractor in ("random_cnn-a", "inception-2048"):
        (table,) = [t for t in data["tables"] if extractor in t["title"]]
        cells = [c for c in data["cells"] if c["table"] == table["title"]]
        # each table holds only its own extractor's runs: the mean is over the two seeds of that extractor
        for c in cells:
            kind = c["axes"]["model.norm.kind"]
            assert c["mean"] == pytest.approx(statistics.fmean(FIDS[(kind, extractor)]))
    # other metrics of the same runs are not split by the extractor
    data = leaderboard_json(capsys, root, "--metric", "val/loss")
    assert len(data["tables"]) == 1
