"""``alpha_init: calibrate`` inside a run: before the first step every DyT layer's α equals k / std of its input on a
training batch, the record reaches result.json's ``evaluation``, and a non-calibrating run is untouched."""

import glob
import json

import lightning.pytorch as pl
import pytest
import torch
from helpers import tiny_trainer

from dyt_bench.datamodules import TextDataModule
from dyt_bench.norms import NormSpec, SquashNorm
from dyt_bench.norms.calibrate import input_stds
from dyt_bench.tasks import LanguageModeling, OptimConfig

TINY = dict(vocab_size=257, hidden_size=32, num_layers=2, num_heads=4, max_seq_len=32)


class FirstStepAlphas(pl.Callback):
    """α of every DyT layer and its input std, on the first training batch, before the first update."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 0 and not hasattr(self, "alphas"):
            self.alphas = {n: m.alpha.item() for n, m in pl_module.net.named_modules() if isinstance(m, SquashNorm)}


def _data(tmp_path):
    return TextDataModule(source="stdlib", tokenizer="bytes", seq_len=32, batch_size=4, max_files=3)


@pytest.mark.parametrize("k", [1.0, 0.5])
def test_run_calibrates_before_the_first_step_and_records_it(tmp_path, k):
    torch.manual_seed(0)
    task = LanguageModeling(**TINY, norm=NormSpec("dyt", alpha_init="calibrate", calibrate_k=k),
                            optim=OptimConfig(lr=1e-3, warmup_steps=0))
    probe = FirstStepAlphas()
    tiny_trainer(tmp_path, callbacks=[probe], max_steps=2, limit_val_batches=1, val_check_interval=2).fit(
        task, datamodule=_data(tmp_path))
    record = task.evaluation["alpha_calibration"]
    assert record["k"] == k and record["skipped"] == [] and len(record["layers"]) == 5
    for name, entry in record["layers"].items():
        assert entry["alpha"] == pytest.approx(k / entry["input_std"], rel=1e-6)
        assert probe.alphas[name] == pytest.approx(entry["alpha"], rel=1e-6)  # what the first step trained from
    # the recorded stds are those of the layers' inputs on that batch (the embedding scale makes them ~√d · 0.02)
    stds = [e["input_std"] for e in record["layers"].values()]
    assert min(stds) > 0 and len(set(round(s, 6) for s in stds)) > 1
    results = glob.glob(str(tmp_path / "**" / "result.json"), recursive=True)
    assert results, "no result.json written"
    saved = json.loads(open(results[0]).read())["evaluation"]["alpha_calibration"]
    assert saved["layers"].keys() == record["layers"].keys()


def test_input_std_on_a_fixed_batch_matches_an_independent_pass():
    torch.manual_seed(1)
    task = LanguageModeling(**TINY, norm=NormSpec("dyt", alpha_init="calibrate"))
    ids = torch.randint(0, 257, (3, 17))
    seen = {}
    handles = [m.register_forward_pre_hook(lambda mod, a, n=n: seen.__setitem__(n, a[0].double()))
               for n, m in task.net.named_modules() if isinstance(m, SquashNorm)]
    task.eval()
    with torch.no_grad():
        task(ids)
    for h in handles:
        h.remove()
    stds = input_stds(task.net, lambda: task(ids))
    for name, x in seen.items():
        assert stds[name] == pytest.approx(x.std(correction=0).item(), rel=1e-9)


def test_without_calibrate_no_record_and_alpha_unchanged(tmp_path):
    task = LanguageModeling(**TINY, norm=NormSpec("dyt", alpha_init=0.7), optim=OptimConfig(lr=1e-3, warmup_steps=0))
    probe = FirstStepAlphas()
    tiny_trainer(tmp_path, callbacks=[probe], max_steps=1, limit_val_batches=0).fit(task, datamodule=_data(tmp_path))
    assert "alpha_calibration" not in task.evaluation
    assert all(a == pytest.approx(0.7) for a in probe.alphas.values())
