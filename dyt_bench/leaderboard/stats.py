"""The statistics behind a leaderboard cell: a metric over seeds, Welch's t-test and a bootstrap CI of Δ against a
baseline, and which direction of a metric is better. No tables and no rendering here."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dyt_bench.results import RunResult

MODES = ("max", "min")
TESTS = ("welch", "bootstrap")
VALUES = ("best", "final")
# Name fragments of metrics where lower is better; used only for a metric no result declares a direction for.
LOWER_IS_BETTER = ("loss", "err", "fid", "ppl", "perplexity", "wer", "nll")


@dataclass
class CellStats:
    """One table cell: the metric over seeds of the finished, non-diverged runs, plus what else happened."""

    values: list[float] = field(default_factory=list)
    seeds: list[int | None] = field(default_factory=list)
    diverged: int = 0
    failed: int = 0
    interrupted: int = 0
    missing: int = 0  # completed runs without the metric
    diverged_best: list[float] = field(default_factory=list)  # best metric seen before diverging, where logged

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def runs(self) -> int:
        return self.n + self.diverged

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof=1); NaN with fewer than two runs."""
        return float(np.std(self.values, ddof=1)) if self.n >= 2 else math.nan


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided Welch t-test p-value (unequal variances); None when either side has fewer than two runs."""
    if len(a) < 2 or len(b) < 2:
        return None
    import warnings

    from scipy import stats

    with warnings.catch_warnings():  # near-identical seeds (e.g. all at chance) trip a precision warning, not an error
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return None if math.isnan(p) else p


def bootstrap_ci(a: list[float], b: list[float], confidence: float = 0.95, n_resamples: int = 9999,
                 seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap CI of mean(a) − mean(b), resampling each side independently; None below two runs each."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy import stats

    def diff(x, y, axis):
        return np.mean(x, axis=axis) - np.mean(y, axis=axis)

    res = stats.bootstrap((np.asarray(a, float), np.asarray(b, float)), diff, n_resamples=n_resamples,
                          confidence_level=confidence, method="percentile", vectorized=True,
                          rng=np.random.default_rng(seed))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return None if math.isnan(lo) or math.isnan(hi) else (lo, hi)


def metric_of(result: RunResult, metric: str, value: str) -> float | None:
    """A run's best or final value of ``metric``; None when it was not logged or is NaN."""
    source = result.metrics_best if value == "best" else result.metrics_final
    v = source.get(metric)
    if v is None and value == "best":
        v = result.metrics_final.get(metric)  # a metric without a tracked best: its final value
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def is_better(a: float, b: float, mode: str) -> bool:
    return a > b if mode == "max" else a < b


def guess_mode(metric: str) -> str:
    """The direction of a metric from its name alone: min for losses, errors, FID, perplexity, WER; else max."""
    return "min" if any(s in metric.lower() for s in LOWER_IS_BETTER) else "max"


def cell_stats(results: list[RunResult], metric: str, value: str) -> CellStats:
    """The statistics of one cell's runs, one run per seed (the newest, should a seed appear twice, e.g. the same
    run copied elsewhere)."""
    newest: dict[Any, RunResult] = {}
    for r in results:
        key = r.seed if r.seed is not None else id(r)
        if key not in newest or r.finished_at > newest[key].finished_at:
            newest[key] = r
    s = CellStats()
    for res in sorted(newest.values(), key=lambda r: (r.seed is None, r.seed or 0)):
        if res.status == "diverged":
            s.diverged += 1
            v = metric_of(res, metric, "best")
            if v is not None:
                s.diverged_best.append(v)
        elif res.status == "completed":
            v = metric_of(res, metric, value)
            if v is None:
                s.missing += 1
            else:
                s.values.append(v)
                s.seeds.append(res.seed)
        elif res.status == "failed":
            s.failed += 1
        else:
            s.interrupted += 1
    return s


@dataclass(frozen=True)
class Comparison:
    """A cell against its reference: Δ of the means, and the test's p-value or CI and verdict (None below n=2)."""

    delta: float
    p_value: float | None = None
    ci: tuple[float, float] | None = None
    significant: bool | None = None


def compare(cell: CellStats, base: CellStats, test: str, alpha: float) -> Comparison | None:
    """``cell`` against ``base`` with a Welch t-test or a bootstrap CI at level ``alpha``; None when either is empty."""
    if cell.n == 0 or base.n == 0:
        return None
    delta = cell.mean - base.mean
    if test == "welch":
        p = welch_p(cell.values, base.values)
        return Comparison(delta, p_value=p, significant=None if p is None else p < alpha)
    ci = bootstrap_ci(cell.values, base.values, confidence=1 - alpha)
    return Comparison(delta, ci=ci, significant=None if ci is None else not (ci[0] <= 0 <= ci[1]))
