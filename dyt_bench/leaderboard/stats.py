"""The statistics behind a leaderboard cell: a metric over seeds, divergence and stalls as outcomes, Δ against a
baseline with a 95% confidence interval and a test (Welch, paired or bootstrap), Holm's correction, Fisher's exact
test of the divergence rate. No tables and no rendering here.

Holm's step-down adjustment and the t-interval are written out (a few lines each); the distributions come from scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dyt_bench.leaderboard.collect import LeaderboardError
from dyt_bench.results import RunResult

MODES = ("max", "min")
TESTS = ("welch", "paired", "bootstrap")
VALUES = ("final", "best")
DEFAULT_VALUE = "final"  # the last validation: the best of many validations on one set is optimistic
DEFAULT_TEST = "welch"
DEFAULT_ALPHA = 0.05
DEFAULT_STALL_MARGIN = 0.02  # in the metric's own units (0.02 = 2 accuracy points, or 0.02 nats of loss)
CONFIDENCE = 0.95  # every Δ carries this confidence interval, whatever the significance level
BOOTSTRAP_MIN_RUNS = 8  # below this the percentile bootstrap rejects far more often than its level
BOOTSTRAP_RESAMPLES = 9999
ZERO_SPREAD = 1e-12  # a standard error this small relative to the means is no spread at all (float round-off)


@dataclass
class CellStats:
    """One table cell: the metric over the seeds that trained, plus the runs that did not (diverged, stalled at
    chance) and those that tell nothing about training (failed, interrupted, metric missing)."""

    values: list[float] = field(default_factory=list)
    seeds: list[int | None] = field(default_factory=list)
    diverged: int = 0
    stalled: int = 0
    failed: int = 0
    interrupted: int = 0
    missing: int = 0  # completed runs without the metric
    diverged_best: list[float] = field(default_factory=list)  # best metric seen before diverging, where logged
    stalled_values: list[float] = field(default_factory=list)  # final metric of each stalled run
    outcome_seeds: list[int | None] = field(default_factory=list)  # seeds of every trained, diverged or stalled run
    chance: float | None = None  # the metric's chance level, as the runs' task recorded it

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def not_trained(self) -> int:
        """Runs that diverged or stalled: the outcome counted by Fisher's test."""
        return self.diverged + self.stalled

    @property
    def runs(self) -> int:
        """Runs with an outcome: trained, diverged or stalled."""
        return self.n + self.not_trained

    @property
    def partial(self) -> bool:
        """Some runs trained and some did not: the mean is over the survivors only."""
        return self.n > 0 and self.not_trained > 0

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof=1); NaN with fewer than two runs."""
        return float(np.std(self.values, ddof=1)) if self.n >= 2 else math.nan

    def by_seed(self) -> dict[Any, float]:
        return dict(zip(self.seeds, self.values, strict=True))


@dataclass(frozen=True)
class Comparison:
    """A cell against its reference: Δ of the means, its 95% CI and the test's two-sided p (None where the test is
    undefined: fewer than two runs a side, or no spread at all with different means; ``note`` says which)."""

    delta: float
    ci95: tuple[float, float] | None = None
    p: float | None = None
    note: str | None = None


# ---------------------------------------------------------------------------------------------------------------
# Tests of a difference in means
# ---------------------------------------------------------------------------------------------------------------
def _t_interval(delta: float, se: float, df: float, scale: float) -> Comparison:
    """p and CI of a t statistic ``delta / se`` with ``df`` degrees of freedom; a zero ``se`` is handled apart."""
    if se <= ZERO_SPREAD * max(1.0, scale):
        if delta == 0 or abs(delta) <= ZERO_SPREAD * max(1.0, scale):
            return Comparison(0.0 if delta == 0 else delta, ci95=(delta, delta), p=1.0, note="identical, no spread")
        return Comparison(delta, note="no spread: no test")
    from scipy.special import stdtr, stdtrit

    p = float(2 * stdtr(df, -abs(delta) / se))
    half = float(stdtrit(df, 0.5 + CONFIDENCE / 2)) * se
    return Comparison(delta, ci95=(delta - half, delta + half), p=min(1.0, p))


def welch(a: list[float], b: list[float]) -> Comparison | None:
    """Two-sided Welch t-test of mean(a) − mean(b) (unequal variances, Welch–Satterthwaite df) and its 95% CI; None
    when either side is empty; no p or CI below two runs a side."""
    if not a or not b:
        return None
    x, y = np.asarray(a, float), np.asarray(b, float)
    delta = float(x.mean() - y.mean())
    if len(x) < 2 or len(y) < 2:
        return Comparison(delta, note="n<2: no test")
    va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(x) - 1) + vb ** 2 / (len(y) - 1)) if se > 0 else 1.0
    return _t_interval(delta, se, df, float(max(abs(x.mean()), abs(y.mean()))))


def paired(a: dict[Any, float], b: dict[Any, float]) -> Comparison | None:
    """Paired t-test over the seeds both sides trained on (seed → value); None when they share none."""
    common = [s for s in a if s in b]
    if not common:
        return None
    d = np.array([a[s] - b[s] for s in common], float)
    delta = float(d.mean())
    if len(d) < 2:
        return Comparison(delta, note="n<2: no test")
    se = float(d.std(ddof=1)) / math.sqrt(len(d))
    scale = max(abs(float(np.mean([a[s] for s in common]))), abs(float(np.mean([b[s] for s in common]))))
    return _t_interval(delta, se, len(d) - 1, scale)


def bootstrap(a: list[float], b: list[float], n_resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> Comparison:
    """Percentile bootstrap of mean(a) − mean(b), each side resampled on its own: the 95% CI and the p that inverts it
    (twice the smaller share of resampled Δ on either side of 0). Only for >= BOOTSTRAP_MIN_RUNS runs a side."""
    from scipy import stats

    x, y = np.asarray(a, float), np.asarray(b, float)
    delta = float(x.mean() - y.mean())

    def diff(u, v, axis):
        return np.mean(u, axis=axis) - np.mean(v, axis=axis)

    res = stats.bootstrap((x, y), diff, n_resamples=n_resamples, confidence_level=CONFIDENCE, method="percentile",
                          vectorized=True, rng=np.random.default_rng(seed))
    dist = np.asarray(res.bootstrap_distribution)
    p = min(1.0, 2 * min(float(np.mean(dist <= 0)), float(np.mean(dist >= 0))))
    return Comparison(delta, ci95=(float(res.confidence_interval.low), float(res.confidence_interval.high)), p=p)


def compare(cell: CellStats, base: CellStats, test: str, where: str = "") -> Comparison | None:
    """``cell`` against ``base`` with ``test``; None when either has no trained run. Refuses (LeaderboardError) a
    bootstrap below BOOTSTRAP_MIN_RUNS runs a side and a paired test over different seed sets."""
    if cell.n == 0 or base.n == 0:
        return None
    if test == "welch":
        return welch(cell.values, base.values)
    if test == "paired":
        if sorted(map(str, cell.outcome_seeds)) != sorted(map(str, base.outcome_seeds)):
            raise LeaderboardError(
                f"--test paired{where}: the two cells ran different seeds ({_seeds(cell)} vs {_seeds(base)}); a paired "
                "test needs the same seeds on both sides: use --test welch")
        return paired(cell.by_seed(), base.by_seed())
    if test == "bootstrap":
        if min(cell.n, base.n) < BOOTSTRAP_MIN_RUNS:
            raise LeaderboardError(
                f"--test bootstrap{where}: needs at least {BOOTSTRAP_MIN_RUNS} trained runs per cell, got "
                f"{cell.n} and {base.n} (the percentile bootstrap is anti-conservative with few runs): use --test welch")
        return bootstrap(cell.values, base.values)
    raise LeaderboardError(f"--test must be one of {', '.join(TESTS)}; got {test!r}")


def _seeds(s: CellStats) -> str:
    return "{" + ", ".join(str(x) for x in sorted(s.outcome_seeds, key=str)) + "}"


# ---------------------------------------------------------------------------------------------------------------
# Multiple comparisons and divergence rates
# ---------------------------------------------------------------------------------------------------------------
def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values of one family (None entries are not tests and stay None): the i-th smallest
    of m gets (m − i + 1)·p, made monotone and capped at 1. Reject where the adjusted p < α."""
    order = sorted((i for i, p in enumerate(pvalues) if p is not None), key=lambda i: pvalues[i])
    m = len(order)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def fisher(k1: int, n1: int, k2: int, n2: int) -> float | None:
    """Two-sided Fisher's exact test of k1/n1 against k2/n2; None when a side has no runs."""
    if n1 == 0 or n2 == 0:
        return None
    from scipy import stats

    return float(stats.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]]).pvalue)


# ---------------------------------------------------------------------------------------------------------------
# A cell's runs
# ---------------------------------------------------------------------------------------------------------------
def metric_of(result: RunResult, metric: str, value: str) -> float | None:
    """A run's best or final value of ``metric``; None when it was not logged or is NaN."""
    source = result.metrics_best if value == "best" else result.metrics_final
    v = source.get(metric)
    if v is None and value == "best":
        v = result.metrics_final.get(metric)  # a metric without a tracked best: its final value
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def is_better(a: float, b: float, mode: str) -> bool:
    return a > b if mode == "max" else a < b


def is_stalled(final: float, chance: float | None, mode: str, margin: float | None) -> bool:
    """A finished run stalled: its final value is no better than chance by more than ``margin`` (None: never)."""
    if chance is None or margin is None:
        return False
    return final <= chance + margin if mode == "max" else final >= chance - margin


def chance_of(result: RunResult, metric: str) -> float | None:
    v = (getattr(result, "chance", None) or {}).get(metric)
    return None if v is None else float(v)


def cell_stats(results: list[RunResult], metric: str, value: str, mode: str = "max",
               stall_margin: float | None = DEFAULT_STALL_MARGIN) -> CellStats:
    """The statistics of one cell's runs, one run per seed (the newest, should a seed appear twice, e.g. the same
    run copied elsewhere). A completed run whose final value is at chance (within ``stall_margin``) is stalled."""
    newest: dict[Any, RunResult] = {}
    for r in results:
        key = r.seed if r.seed is not None else id(r)
        if key not in newest or r.finished_at > newest[key].finished_at:
            newest[key] = r
    s = CellStats()
    for res in sorted(newest.values(), key=lambda r: (r.seed is None, r.seed or 0)):
        chance = chance_of(res, metric)
        if chance is not None:
            s.chance = chance
        if res.status == "diverged":
            s.diverged += 1
            s.outcome_seeds.append(res.seed)
            v = metric_of(res, metric, "best")
            if v is not None:
                s.diverged_best.append(v)
        elif res.status == "completed":
            v = metric_of(res, metric, value)
            final = metric_of(res, metric, "final")
            if v is None:
                s.missing += 1
            elif final is not None and is_stalled(final, chance, mode, stall_margin):
                s.stalled += 1
                s.stalled_values.append(final)
                s.outcome_seeds.append(res.seed)
            else:
                s.values.append(v)
                s.seeds.append(res.seed)
                s.outcome_seeds.append(res.seed)
        elif res.status == "failed":
            s.failed += 1
        else:
            s.interrupted += 1
    return s
