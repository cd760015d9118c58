"""Leaderboard statistics against independent references: mean, sample std, Welch's t-test, bootstrap CI."""

import statistics

import pytest
from leaderboard_cases import ACC, cell_of, leaderboard_json, welch_reference
from scipy import stats as scipy_stats

from dyt_bench.leaderboard import bootstrap_ci, welch_p


def test_mean_std_and_welch_p_match_independent_references(runs, capsys):
    data = leaderboard_json(capsys, runs, "--baseline", "model.norm.kind=layernorm")
    ln, dyt, rms = (cell_of(data, **{"model.norm.kind": k}) for k in ("layernorm", "dyt", "rmsnorm"))
    for cell, accs in ((ln, ACC["layernorm"]), (dyt, ACC["dyt"]), (rms, ACC["rmsnorm"])):
        assert cell["n"] == len(accs)
        assert cell["mean"] == pytest.approx(statistics.fmean(accs), abs=1e-12)
        assert cell["std"] == pytest.approx(statistics.stdev(accs), abs=1e-12)  # sample std, ddof=1
    assert ln["baseline"] and ln["delta"] is None
    assert dyt["delta"] == pytest.approx(statistics.fmean(ACC["dyt"]) - statistics.fmean(ACC["layernorm"]), abs=1e-12)
    assert dyt["p_value"] == pytest.approx(welch_reference(ACC["dyt"], ACC["layernorm"]), rel=1e-9)
    assert rms["p_value"] == pytest.approx(welch_reference(ACC["rmsnorm"], ACC["layernorm"]), rel=1e-9)
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
