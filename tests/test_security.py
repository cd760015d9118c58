"""A crafted pickle loaded through any path that reads a user's file is refused, and never runs its code: the probe's
checkpoint, a DNA run's ``init_from``, a pickled FID extractor, an image model's pretrained checkpoint."""

import pathlib

import pytest
import torch

from dyt_bench.results import TRUST_PICKLES_ENV, UnsafeFileError, load_torch_file


class _Payload:
    """Unpickling this calls ``Path.touch(marker)``: stands for any code a crafted file would run."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.fixture
def crafted(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hyper_parameters": {"x": _Payload(marker)}}, path)
    return path, marker


def test_the_payload_runs_under_full_unpickling(crafted, monkeypatch):
    # the control: the file really runs code when loaded with full unpickling (the explicit opt-in)
    path, marker = crafted
    monkeypatch.setenv(TRUST_PICKLES_ENV, "1")
    load_torch_file(path, "field")
    assert marker.exists()


def test_load_torch_file_refuses_and_names_the_field(crafted, monkeypatch):
    path, marker = crafted
    monkeypatch.delenv(TRUST_PICKLES_ENV, raising=False)
    with pytest.raises(UnsafeFileError, match=rf"^some.field: {path} holds Python objects.*{TRUST_PICKLES_ENV}=1"):
        load_torch_file(path, "some.field")
    assert not marker.exists()


def test_plain_checkpoints_still_load(tmp_path):
    import numpy as np

    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {"w": torch.ones(3)}, "rng": np.random.get_state(), "step": 3}, path)
    loaded = load_torch_file(path, "field")
    assert torch.equal(loaded["state_dict"]["w"], torch.ones(3)) and loaded["step"] == 3


def test_probe_checkpoint(crafted, monkeypatch):
    from dyt_bench.analysis.probe import load_checkpoint_into

    path, marker = crafted
    monkeypatch.delenv(TRUST_PICKLES_ENV, raising=False)
    with pytest.raises(UnsafeFileError, match="--ckpt_path"):
        load_checkpoint_into(torch.nn.Linear(2, 2), str(path))
    assert not marker.exists()


def test_dna_init_from(crafted, monkeypatch):
    from dyt_bench.models.hyena import HyenaConfig
    from dyt_bench.norms import NormSpec
    from dyt_bench.tasks.dna import load_backbone

    path, marker = crafted
    monkeypatch.delenv(TRUST_PICKLES_ENV, raising=False)
    with pytest.raises(UnsafeFileError, match="model.init_from"):
        load_backbone(torch.nn.Linear(2, 2), str(path), HyenaConfig(), NormSpec())
    assert not marker.exists()


def test_pickled_fid_extractor(crafted, monkeypatch):
    from dyt_bench.evaluation.fid import load_extractor_file

    path, marker = crafted
    monkeypatch.delenv(TRUST_PICKLES_ENV, raising=False)
    with pytest.raises(UnsafeFileError, match="model.fid.feature_extractor"):
        load_extractor_file(str(path))
    assert not marker.exists()


def test_image_model_pretrained_checkpoint(crafted, monkeypatch, tmp_path):
    from dyt_bench.models import image

    path, marker = crafted
    monkeypatch.delenv(TRUST_PICKLES_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # the extracted-weights cache stays in the test's folder
    with pytest.raises(UnsafeFileError, match="pretrained_file"):
        image._weights_file(str(path))
    assert not marker.exists()


def test_ssl_eval_init_from(crafted, monkeypatch):
    from dyt_bench.norms import NormSpec
    from dyt_bench.tasks.ssl_eval import load_encoder

    path, marker = crafted
    monkeypatch.delenv(TRUST_PICKLES_ENV, raising=False)
    with pytest.raises(UnsafeFileError, match="model.init_from"):
        load_encoder(torch.nn.Linear(2, 2), str(path), NormSpec(), {})
    assert not marker.exists()
