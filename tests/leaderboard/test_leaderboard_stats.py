"""Leaderboard statistics against independent references: mean and sample std, Welch's and the paired t-test and
their CIs (scipy.stats.ttest_ind / ttest_rel), Holm (a hand-worked example), Fisher's exact test (hypergeometric
counts by hand), the bootstrap's guard, and the edge cases of constant cells."""

import math
import statistics

import pytest
from leaderboard_cases import ACC, cell_of, final, leaderboard_json, welch_reference
from scipy import stats as scipy_stats

from dyt_bench.leaderboard import (
    BOOTSTRAP_MIN_RUNS,
    CellStats,
    LeaderboardError,
    bootstrap,
    compare,
    fisher,
    holm,
    paired,
    welch,
)


def test_mean_std_and_welch_match_independent_references(runs, capsys):
    for value, shift in (("best", list), ("final", final)):
        data = leaderboard_json(capsys, runs, "--baseline", "model.norm.kind=layernorm", "--value", value)
        ln, dyt, rms = (cell_of(data, **{"model.norm.kind": k}) for k in ("layernorm", "dyt", "rmsnorm"))
        for cell, kind in ((ln, "layernorm"), (dyt, "dyt"), (rms, "rmsnorm")):
            accs = shift(ACC[kind])
            assert cell["n"] == len(accs) and cell["value"] == value and cell["test"] == "welch"
            assert cell["mean"] == pytest.approx(statistics.fmean(accs), abs=1e-12)
            assert cell["std"] == pytest.approx(statistics.stdev(accs), abs=1e-12)  # sample std, ddof=1
        assert ln["baseline"] and ln["delta"] is None and ln["p"] is None
        assert dyt["delta"] == pytest.approx(statistics.fmean(ACC["dyt"]) - statistics.fmean(ACC["layernorm"]))
        assert dyt["p"] == pytest.approx(welch_reference(ACC["dyt"], ACC["layernorm"]), rel=1e-9)
        assert rms["p"] == pytest.approx(welch_reference(ACC["rmsnorm"], ACC["layernorm"]), rel=1e-9)
        # two comparisons in the family: Holm doubles the smaller p, and the larger is at least that
        small, large = sorted((dyt, rms), key=lambda c: c["p"])
        assert small["p_holm"] == pytest.approx(min(1, 2 * small["p"]))
        assert large["p_holm"] == pytest.approx(max(small["p_holm"], large["p"]))
        assert dyt["diverged"] == 1 and dyt["significant"] is False and dyt["status"] == "partial"
    assert data["value"] == "final" and data["tables"][0]["comparisons"] == 2


@pytest.mark.parametrize("a, b", [([1.0, 1.1, 0.9, 1.05], [2.0, 2.1, 1.9]), ([0.5, 0.52, 0.49], [0.4, 0.6, 0.55]),
                                  ([3.0, 3.0, 3.5], [1.0, 5.0])])
def test_welch_p_and_ci_are_scipys(a, b):
    ours = welch(a, b)
    ref = scipy_stats.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert ours.p == pytest.approx(ref.pvalue, rel=1e-10)
    assert ours.ci95 == pytest.approx((ci.low, ci.high), rel=1e-10)
    assert ours.delta == pytest.approx(statistics.fmean(a) - statistics.fmean(b))


def test_paired_p_and_ci_are_scipys():
    a, b = {0: 1.0, 1: 1.3, 2: 0.8, 3: 1.1}, {0: 0.9, 1: 1.0, 2: 0.85, 3: 0.9}
    ours = paired(a, b)
    ref = scipy_stats.ttest_rel(list(a.values()), list(b.values()))
    ci = ref.confidence_interval(0.95)
    assert ours.p == pytest.approx(ref.pvalue, rel=1e-10)
    assert ours.ci95 == pytest.approx((ci.low, ci.high), rel=1e-10)
    assert paired({0: 1.0, 5: 2.0}, {1: 1.0}) is None  # no common seed


def test_holm_against_a_hand_worked_example():
    # p sorted: 0.01 (×4 = 0.04), 0.02 (×3 = 0.06), 0.03 (×2 = 0.06, kept monotone), 0.5 (×1 = 0.5); None: no test
    raw = [0.03, None, 0.5, 0.01, 0.02]
    assert holm(raw) == pytest.approx([0.06, None, 0.5, 0.04, 0.06])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1 (0.6 × 2), then monotone
    assert holm([]) == [] and holm([None]) == [None]
    # the digits Table 8 of docs/reproduction.md: of p = <0.001, 0.015, 0.045, 0.17, 0.19, 0.37, 1.00 only the first
    # stays below 0.05 once adjusted over the 7 comparisons
    adjusted = holm([0.0005, 0.015, 0.045, 0.17, 0.19, 0.37, 1.0])
    assert [p < 0.05 for p in adjusted] == [True] + [False] * 6


def test_fisher_against_counts_by_hand():
    # 3/3 vs 0/3: the one table as extreme as this on each side, each of probability 1 / C(6, 3) = 1/20
    assert fisher(3, 3, 0, 3) == pytest.approx(2 / 20)
    # 1/3 vs 0/3: every table with the margins (1 of 6 failed) is as likely as this one or more: p = 1
    assert fisher(1, 3, 0, 3) == pytest.approx(1.0)
    # 5/5 vs 0/5: 2 / C(10, 5)
    assert fisher(5, 5, 0, 5) == pytest.approx(2 / math.comb(10, 5))
    assert fisher(0, 0, 1, 3) is None


def _cell(values, seeds=None, **counts):
    s = CellStats(values=list(values), seeds=list(seeds if seeds is not None else range(len(values))), **counts)
    s.outcome_seeds = list(s.seeds)
    return s


@pytest.mark.filterwarnings("ignore:Precision loss occurred")  # scipy's reference, on a constant sample
def test_identical_constant_cells_are_equal_and_different_constants_are_untestable():
    same = compare(_cell([0.1028] * 3), _cell([0.1028] * 3), "welch")
    assert same.delta == 0 and same.p == 1.0 and same.ci95 == (0.0, 0.0)
    differ = compare(_cell([0.5] * 3), _cell([0.4] * 3), "welch")
    assert differ.delta == pytest.approx(0.1) and differ.p is None and differ.ci95 is None
    assert differ.note == "no spread: no test"
    one_constant = compare(_cell([0.5] * 3), _cell([0.4, 0.41, 0.39]), "welch")  # Welch is defined: df = n - 1
    ref = scipy_stats.ttest_ind([0.5] * 3, [0.4, 0.41, 0.39], equal_var=False)
    assert one_constant.p == pytest.approx(ref.pvalue, rel=1e-9)
    small = compare(_cell([0.5]), _cell([0.4, 0.41]), "welch")
    assert small.p is None and small.note == "n<2: no test" and small.delta == pytest.approx(0.095)
    assert compare(_cell([]), _cell([0.4, 0.41]), "welch") is None


def test_bootstrap_is_refused_below_eight_runs_and_covers_the_difference_above():
    few = _cell([0.5, 0.6, 0.55])
    with pytest.raises(LeaderboardError, match=f"needs at least {BOOTSTRAP_MIN_RUNS} trained runs per cell, got 3"):
        compare(few, _cell([0.4] * 8), "bootstrap")
    a = [2.0, 2.1, 1.9, 2.05, 1.95, 2.02, 1.98, 2.1]
    b = [1.0, 1.1, 0.9, 1.05, 0.95, 1.02, 0.98, 1.0]
    res = compare(_cell(a), _cell(b), "bootstrap")
    assert res.ci95[0] < 1.0 + 0.01 < res.ci95[1] and res.ci95[0] > 0.8 and res.p < 0.001
    res = bootstrap([1.0, 1.2, 0.8, 1.1, 0.9, 1.05, 0.95, 1.0], [1.05, 0.95, 1.1, 1.0, 0.9, 1.0, 1.02, 0.98])
    assert res.ci95[0] < 0 < res.ci95[1] and res.p > 0.2


def test_paired_test_refuses_different_seed_sets():
    with pytest.raises(LeaderboardError, match=r"ran different seeds \(\{0, 1, 2\} vs \{0, 1, 3\}\)"):
        compare(_cell([0.5, 0.6, 0.55]), _cell([0.4, 0.5, 0.45], seeds=[0, 1, 3]), "paired")
    res = compare(_cell([0.5, 0.6, 0.55]), _cell([0.4, 0.5, 0.46]), "paired")
    assert res.p == pytest.approx(scipy_stats.ttest_rel([0.5, 0.6, 0.55], [0.4, 0.5, 0.46]).pvalue, rel=1e-10)
