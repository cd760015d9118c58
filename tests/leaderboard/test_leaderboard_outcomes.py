"""Divergence and stalls as outcomes, on hand-made results: a partly diverged cell, a stalled cell (at the chance
level the task recorded), a `min` metric; Fisher's test of the rates; the paired and bootstrap tests' refusals."""

import pytest
from leaderboard_cases import cell_of, leaderboard_json, make_result

from dyt_bench.leaderboard import main
from dyt_bench.results import write_result

CHANCE = {"val/acc1": 0.1}  # ImageClassification with 10 classes records this
# final val/acc1 per seed; None: the seed diverged (after reaching 0.61 by its best validation)
FINAL = {"layernorm": [0.90, 0.91, 0.92], "dyt": [0.93, 0.94, None], "sigmoid": [0.1028, 0.1028, 0.1028],
         "hardtanh": [0.88, 0.105, 0.90]}


@pytest.fixture
def outcomes(tmp_path):
    root = tmp_path / "outcomes"
    for kind, values in FINAL.items():
        for seed, acc in enumerate(values):
            r = make_result(kind, seed, 0.61 if acc is None else acc + 0.01, chance=CHANCE,
                            status="diverged" if acc is None else "completed")
            write_result(root / f"{kind}_s{seed}", r)
    return root


def test_partly_diverged_and_stalled_cells_are_outcomes(outcomes, capsys):
    data = leaderboard_json(capsys, outcomes, "--baseline", "kind=layernorm")
    dyt, sigmoid, hardtanh, ln = (cell_of(data, **{"model.norm.kind": k})
                                  for k in ("dyt", "sigmoid", "hardtanh", "layernorm"))
    assert (dyt["n"], dyt["diverged"], dyt["runs"], dyt["status"]) == (2, 1, 3, "partial")
    assert dyt["mean"] == pytest.approx(0.935) and dyt["diverged_best"] == [0.61]
    assert dyt["p"] is not None and dyt["significant"] is False  # survivors only: never a ★
    assert (sigmoid["n"], sigmoid["stalled"], sigmoid["status"], sigmoid["mean"]) == (0, 3, "Stalled", None)
    assert sigmoid["stalled_values"] == pytest.approx([0.1028] * 3) and sigmoid["chance"] == 0.1
    assert sigmoid["delta"] is None and sigmoid["p"] is None
    assert (hardtanh["n"], hardtanh["stalled"], hardtanh["status"]) == (2, 1, "partial")
    # Fisher's exact test of the diverged-or-stalled rate, Holm over the table's three such tests
    assert sigmoid["fisher_p"] == pytest.approx(0.1) and sigmoid["fisher_p_holm"] == pytest.approx(0.3)
    assert dyt["fisher_p"] == pytest.approx(1.0) and hardtanh["fisher_p"] == pytest.approx(1.0)
    assert not any(c["fisher_significant"] for c in data["cells"])
    assert ln["fisher_p"] is None and ln["baseline"]
    assert [c["axes"]["model.norm.kind"] for c in data["cells"] if c["best_in_row"]] == []  # ln is alone
    table = data["tables"][0]
    assert table["comparisons"] == 2 and table["fisher_tests"] == 3 and table["chance"] == 0.1

    assert main([str(outcomes), "--baseline", "kind=layernorm", "--format", "md", "--scale", "100"]) == 0
    md = capsys.readouterr().out
    assert "93.50 ± 0.71 (2) · 1/3 diverged (reached 61.00)" in md
    assert "Stalled (3/3) · at 10.28, 10.28, 10.28<br>not trained 3/3 vs 0/3: Fisher p=0.10 (Holm 0.30)" in md
    assert "89.00 ± 1.41 (2) · 1/3 stalled (at 10.50)" in md
    assert "Stalled = finished no better than chance 10.00 + 2.00" in md
    assert "Fisher's exact test of the diverged-or-stalled rate against the baseline, Holm over the table's 3" in md


def test_a_min_metric_ranks_the_lowest_and_the_margin_sets_what_stalls(outcomes, capsys):
    data = leaderboard_json(capsys, outcomes, "--metric", "val/loss", "--baseline", "kind=layernorm")
    assert data["mode"] == "min"  # declared by the task, not guessed from the name
    ln, dyt = (cell_of(data, **{"model.norm.kind": k}) for k in ("layernorm", "dyt"))
    # make_result's final loss is 0.98 − final accuracy: layernorm 0.07, dyt's survivors 0.045
    assert ln["mean"] == pytest.approx(0.98 - 0.91) and dyt["delta"] == pytest.approx(-(0.935 - 0.91))
    assert dyt["diverged"] == 1 and cell_of(data, **{"model.norm.kind": "sigmoid"})["stalled"] == 0  # no chance
    assert [c["axes"]["model.norm.kind"] for c in data["cells"] if c["best_in_row"]] == ["layernorm"]  # the lowest
    data = leaderboard_json(capsys, outcomes, "--metric", "val/loss", "--baseline", "kind=hardtanh")
    assert data["tables"][0]["chance"] is None
    # a tighter stall margin: 0.105 is more than 0.004 above chance, so that hardtanh seed trained; 0.1028 is not
    data = leaderboard_json(capsys, outcomes, "--stall-margin", "0.004")
    hardtanh = cell_of(data, **{"model.norm.kind": "hardtanh"})
    assert hardtanh["stalled"] == 0 and hardtanh["n"] == 3
    assert cell_of(data, **{"model.norm.kind": "sigmoid"})["stalled"] == 3
    data = leaderboard_json(capsys, outcomes, "--stall-margin", "null")  # no stall check at all
    assert cell_of(data, **{"model.norm.kind": "sigmoid"})["n"] == 3
    assert "no stall check (--stall-margin null)" in data["tables"][0]["legend"]


def test_the_best_in_row_is_chosen_among_cells_where_every_run_trained(outcomes, capsys):
    for seed, acc in enumerate([0.95, 0.96, 0.97]):
        write_result(outcomes / f"rmsnorm_s{seed}", make_result("rmsnorm", seed, acc + 0.01, chance=CHANCE))
    data = leaderboard_json(capsys, outcomes, "--baseline", "kind=layernorm")
    assert [c["axes"]["model.norm.kind"] for c in data["cells"] if c["best_in_row"]] == ["rmsnorm"]
    rms = cell_of(data, **{"model.norm.kind": "rmsnorm"})
    assert rms["significant"] == (rms["p_holm"] < 0.05) and rms["ci95"][0] > 0


def test_paired_and_bootstrap_refusals_name_the_cells(outcomes, capsys):
    data = leaderboard_json(capsys, outcomes, "--baseline", "kind=layernorm", "--test", "paired")
    dyt = cell_of(data, **{"model.norm.kind": "dyt"})  # seeds 0 and 1 trained on both sides, each 0.03 better
    assert data["test"] == "paired" and dyt["delta"] == pytest.approx(0.03) and dyt["note"] == "no spread: no test"
    write_result(outcomes / "layernorm_s7", make_result("layernorm", 7, 0.9, chance=CHANCE))
    assert main([str(outcomes), "--baseline", "kind=layernorm", "--test", "paired"]) == 2
    err = capsys.readouterr().err
    assert "--test paired (kind=dyt): the two cells ran different seeds ({0, 1, 2} vs {0, 1, 2, 7})" in err
    assert main([str(outcomes), "--baseline", "kind=layernorm", "--test", "bootstrap"]) == 2
    assert "--test bootstrap (kind=dyt): needs at least 8 trained runs per cell, got 2 and 4" in capsys.readouterr().err
