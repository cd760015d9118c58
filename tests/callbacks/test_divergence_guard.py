"""DivergenceGuard's device-side statistics against a float64 reference written out in Python, and its joint decision."""

import math
from types import SimpleNamespace

import pytest
import torch

from dyt_bench.callbacks import DivergenceGuard


def _trainer(step=0, decide=None):
    strategy = SimpleNamespace(reduce_boolean_decision=decide or (lambda d, all=True: d))
    return SimpleNamespace(strategy=strategy, should_stop=False, global_step=step)


def _reference(losses, ratio, min_steps, smoothing):
    """The rule in plain float64 Python: (first bad step, 'nan' | 'blowup') or None."""
    ema, best, seen = None, math.inf, 0
    for step, v in enumerate(losses):
        if not math.isfinite(v):
            return step, "nan"
        seen += 1
        ema = v if ema is None else smoothing * ema + (1 - smoothing) * v
        if seen >= min_steps:
            if ema > ratio * best:
                return step, "blowup"
            best = min(best, ema)
    return None


@pytest.mark.parametrize("losses", [
    [2.0, 1.8, 1.5, 1.4, 1.3, 1.2, 1.1, 1.0],
    [2.0, 1.5, float("nan"), 1.0, 1.0],
    [2.0, 1.0, 0.5, 0.4, 0.3, 30.0, 300.0, 3000.0, 1.0],
    [1.0, float("inf"), 1.0],
])
def test_the_guard_matches_the_float64_rule_and_checks_only_every_n_steps(losses):
    guard = DivergenceGuard(max_loss_ratio=4.0, min_steps=3, smoothing=0.5, check_every_n_steps=100)
    for step, v in enumerate(losses):
        guard.observe(torch.tensor(v, dtype=torch.float32), step)
    assert guard.reason is None  # nothing is read on the host before a check
    trainer = _trainer(step=len(losses))
    expected = _reference([float(torch.tensor(v, dtype=torch.float32)) for v in losses], 4.0, 3, 0.5)
    assert guard.check(trainer) is (expected is not None)
    assert trainer.should_stop is (expected is not None)
    if expected is not None:
        step, kind = expected
        assert f"at step {step}" in guard.reason
        assert ("non-finite" in guard.reason) is (kind == "nan")


def test_another_ranks_divergence_stops_this_one_too():
    guard = DivergenceGuard(check_every_n_steps=1)
    guard.observe(torch.tensor(1.0), 0)
    votes = []
    trainer = _trainer(step=1, decide=lambda d, all=True: votes.append((d, all)) or True)  # the other rank says yes
    assert guard.check(trainer) and trainer.should_stop
    assert votes == [(False, False)]  # this rank's own vote, combined with "any"
    assert "another rank" in guard.reason


def test_state_survives_a_checkpoint():
    guard = DivergenceGuard(max_loss_ratio=4.0, min_steps=1, smoothing=0.0)
    for step, v in enumerate([1.0, 0.5]):
        guard.observe(torch.tensor(v), step)
    again = DivergenceGuard(max_loss_ratio=4.0, min_steps=1, smoothing=0.0)
    again.load_state_dict(guard.state_dict())
    again.observe(torch.tensor(3.0), 2)  # 3.0 > 4 × 0.5 only if the best (0.5) was restored
    assert again.check(_trainer(step=3)) and "blew up at step 2" in again.reason
