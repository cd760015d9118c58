"""The leaderboard's error rates by simulation, through the real table code (build_tables on in-memory results):
under the null the share of tables with any ★ stays at the level, and the 95% Welch CI of Δ covers the true Δ."""

from pathlib import Path

import numpy as np
import pytest

from dyt_bench.grid.spec import Axis, AxisValue, GridSpec
from dyt_bench.leaderboard import Options, Record, build_tables
from dyt_bench.results import RunResult

TABLES = 2000  # simulated tables per setting
KINDS = ("identity", "tanh", "hardtanh", "sigmoid")
ALPHAS = ("without", "with")
# A Table-8-shaped grid: 2 × 4 cells, every cell against one baseline: a family of 7 comparisons.
GRID = GridSpec(
    name="sim", base=Path("base.yaml"), seeds=[], output=Path("sim"),
    axes=[Axis("alpha", tuple(AxisValue(a, {"model.alpha": a}) for a in ALPHAS)),
          Axis("model.kind", tuple(AxisValue(k, {"model.kind": k}) for k in KINDS))],
    baseline=[{"when": {}, "ref": {"alpha": "with", "model.kind": "tanh"}}],
    leaderboard={"rows": ["alpha"], "cols": ["model.kind"]})
CELLS = [(a, k) for a in ALPHAS for k in KINDS]


def _records(values: np.ndarray) -> list[Record]:
    """One completed run per (cell, seed) with the simulated final val/acc1 ``values[cell, seed]``."""
    out = []
    for (alpha, kind), row in zip(CELLS, values, strict=True):
        for seed, v in enumerate(row):
            r = RunResult(task="sim", model="m", dataset="d", norm={}, status="completed", seed=seed,
                          metrics_final={"val/acc1": float(v)}, metric_modes={"val/acc1": "max"},
                          config={"model": {"alpha": alpha, "kind": kind}})
            out.append(Record(Path(f"{alpha}/{kind}/{seed}"), r, GRID))
    return out


def _comparisons(values: np.ndarray) -> list:
    (table,) = build_tables(_records(values), Options(metric="val/acc1", mode="max"))
    assert table.comparisons == len(CELLS) - 1
    return [c for c in table.cells.values() if not c.is_baseline]


@pytest.mark.parametrize("n", [3, 5])
def test_under_the_null_at_most_six_percent_of_tables_get_a_star(n):
    rng = np.random.default_rng(20250 + n)
    any_star = stars = raw = 0
    for _ in range(TABLES):
        cells = _comparisons(rng.normal(0.7, 0.02, size=(len(CELLS), n)))  # every cell the same distribution
        any_star += any(c.significant for c in cells)
        stars += sum(c.significant for c in cells)
        raw += sum(c.p < 0.05 for c in cells)
    m = len(CELLS) - 1
    fwer, per_comparison, uncorrected = any_star / TABLES, stars / (TABLES * m), raw / (TABLES * m)
    print(f"\nnull, n={n}: tables with a ★ {fwer:.4f}; ★ per comparison {per_comparison:.4f}; "
          f"uncorrected Welch p<0.05 per comparison {uncorrected:.4f} ({TABLES} tables × {m} comparisons)")
    assert fwer <= 0.06 and per_comparison <= 0.06
    assert 0.02 <= uncorrected <= 0.065  # the raw test holds its level too, so the ★ rate is not low by accident


def test_the_welch_ci_covers_the_true_difference_at_n5():
    rng = np.random.default_rng(7)
    covered = total = 0
    for _ in range(TABLES):
        means = rng.uniform(0.5, 0.9, size=len(CELLS))
        sds = rng.uniform(0.005, 0.05, size=len(CELLS))  # unequal variances: what Welch is for
        values = rng.normal(means[:, None], sds[:, None], size=(len(CELLS), 5))
        base = means[CELLS.index(("with", "tanh"))]
        for c in _comparisons(values):
            true = means[CELLS.index((c.labels["alpha"], c.labels["model.kind"]))] - base
            covered += c.ci95[0] <= true <= c.ci95[1]
            total += 1
    coverage = covered / total
    print(f"\nWelch 95% CI coverage at n=5: {coverage:.4f} ({total} intervals)")
    assert 0.93 <= coverage <= 0.97
