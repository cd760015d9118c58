"""Chance levels: the classification tasks declare one per accuracy metric, the result writer records it in
result.json, and a result file without it (written before) reads as "none declared"."""

import pytest

from dyt_bench.callbacks.result_writer import _chance_levels
from dyt_bench.results import RunResult, read_result, write_result
from dyt_bench.tasks import DNAClassification, ImageClassification


def test_classification_tasks_declare_their_chance_levels():
    image = ImageClassification(model="vit_tiny_patch16_224", num_classes=10, img_size=8, in_chans=1,
                                model_kwargs={"patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2})
    assert _chance_levels(image) == pytest.approx({"val/acc1": 0.1, "val/acc5": 0.5, "test/acc1": 0.1,
                                                   "test/acc5": 0.5})
    three = ImageClassification(model="vit_tiny_patch16_224", num_classes=3, img_size=8, in_chans=1,
                                model_kwargs={"patch_size": 4, "embed_dim": 16, "depth": 1, "num_heads": 2})
    assert three.chance_levels()["val/acc5"] == 1.0  # top-3 of 3 classes: always right
    dna = DNAClassification(num_classes=4, size=None, d_model=16, n_layer=1, d_inner=32, l_max=32)
    assert _chance_levels(dna) == pytest.approx({"val/acc": 0.25, "test/acc": 0.25, "test/acc_at_best_val": 0.25})
    assert all(image.metric_modes[m] == "max" for m in _chance_levels(image) if m in image.metric_modes)


def test_chance_is_recorded_and_old_files_read_without_it(tmp_path):
    r = RunResult(task="t", model="m", dataset="d", norm={}, status="completed", chance={"val/acc1": 0.1})
    assert read_result(write_result(tmp_path / "new", r)).chance == {"val/acc1": 0.1}
    old = r.to_dict()
    del old["chance"]
    assert RunResult.from_dict(old).chance == {}
