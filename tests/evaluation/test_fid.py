"""FID with the offline extractors: zero for identical sets, large for noise, the same through TorchScript."""

import pytest
import torch
from sklearn.datasets import load_digits

from dyt_bench.evaluation.fid import FidConfig, RandomConvFeatures, build_fid_metric


@pytest.fixture(autouse=True)
def _one_thread():
    # small matrices: one thread is faster than two on a shared two-core machine
    torch.set_num_threads(1)
    yield


def _digits(n: int) -> torch.Tensor:
    images = torch.tensor(load_digits().images[:n], dtype=torch.float32).unsqueeze(1) / 16
    return torch.nn.functional.interpolate(images, size=16, mode="bilinear").clamp(0, 1).expand(-1, 3, -1, -1)


def test_fid_with_offline_extractor_zero_for_identical_positive_for_different(tmp_path):
    real = _digits(300)
    metric, info = build_fid_metric(FidConfig(feature_extractor="random_cnn"))
    assert info["num_features"] == 64 and info["id"].startswith("random_cnn-d64-seed0-")
    metric.update(real, real=True)
    metric.update(real, real=False)
    same = float(metric.compute())
    assert abs(same) < 1e-3
    metric.reset()
    metric.update(real, real=True)
    metric.update(torch.rand(300, 3, 16, 16), real=False)
    noise_fid = float(metric.compute())
    metric.reset()
    metric.update(real[:150], real=True)
    metric.update(real[150:], real=False)
    halves = float(metric.compute())
    assert noise_fid > 100 * max(halves, 1e-6) and halves > 1e-3
    # the same extractor saved as TorchScript gives the same distance and is identified by its file
    path = tmp_path / "extractor.pt"
    torch.jit.script(RandomConvFeatures(64, 0)).save(str(path))
    scripted, info2 = build_fid_metric(FidConfig(feature_extractor=str(path)))
    assert info2["id"].startswith("extractor.pt-")
    scripted.update(real, real=True)
    scripted.update(torch.rand(300, 3, 16, 16, generator=torch.Generator().manual_seed(0)), real=False)
    metric.reset()
    metric.update(real, real=True)
    metric.update(torch.rand(300, 3, 16, 16, generator=torch.Generator().manual_seed(0)), real=False)
    assert float(scripted.compute()) == pytest.approx(float(metric.compute()), rel=1e-4)
    with pytest.raises(ValueError, match="model.fid.feature_extractor"):
        build_fid_metric(FidConfig(feature_extractor="no/such/file.pt"))
