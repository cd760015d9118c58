"""SampleAndScore draws its sampling loop as a SamplingProgress bar: one bar per evaluation, advanced by every
generated batch up to the total, enabled on the global-zero rank only."""

import contextlib
from types import SimpleNamespace

import pytest
import torch

import dyt_bench.callbacks.sampling as sampling
from dyt_bench.callbacks.sampling import SampleAndScore, SampleGridConfig
from dyt_bench.diffusion.config import SamplingConfig
from dyt_bench.evaluation.fid import FidConfig, SamplingProgress


class _Recorder(SamplingProgress):
    made: list["_Recorder"] = []

    def __init__(self, total, description, enabled=True):
        super().__init__(total, description, enabled=False)  # draw nothing in the test, record what was asked
        self.asked_enabled, self.steps = enabled, []
        _Recorder.made.append(self)

    def advance(self, n):
        self.steps.append(n)
        super().advance(n)


class _Fid:
    def __init__(self):
        self.fake = 0

    def update(self, images, real):
        assert real is False
        self.fake += len(images)

    def compute(self):
        return torch.tensor(1.5)

    def reset(self):
        pass


def _module(fid):
    logged = {}
    return SimpleNamespace(
        fid_due=lambda stage: True, fid_metric=fid, real_seen=10, device=torch.device("cpu"), num_classes=3,
        sampler=SimpleNamespace(num_timesteps=2), evaluation={"fid_extractor": {"id": "x"}},
        generate=lambda labels, seed: torch.rand(len(labels), 1, 4, 4),
        log=lambda name, value, **kw: logged.__setitem__(name, float(value)), logged=logged)


def _trainer(zero: bool):
    return SimpleNamespace(world_size=1, global_rank=0, is_global_zero=zero, current_epoch=0, global_step=0,
                           precision_plugin=SimpleNamespace(val_step_context=contextlib.nullcontext))


@pytest.mark.parametrize("zero", [True, False])
def test_sampling_advances_one_bar_to_the_total(monkeypatch, zero):
    monkeypatch.setattr(sampling, "SamplingProgress", _Recorder)
    _Recorder.made = []
    fid = _Fid()
    callback = SampleAndScore(FidConfig(num_samples=10), SamplingConfig(batch_size=4),
                              SampleGridConfig(enabled=False))
    module = _module(fid)
    callback.sample_and_score(_trainer(zero), module, "val")
    (bar,) = _Recorder.made
    assert bar.total == 10 and bar.description == "[val] sampling + FID features"
    assert bar.steps == [4, 4, 2] and bar.done == 10 and fid.fake == 10
    assert bar.asked_enabled is zero
    assert module.logged == {"val/fid": 1.5}
