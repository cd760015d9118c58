"""The α tracker's 1/std and α against direct computation, its files, and its one config line."""

import csv

import lightning.pytorch as pl
import pytest
import torch
from helpers import tiny_data, tiny_task, tiny_trainer

from dyt_bench.callbacks.alpha_tracker import CSV_NAME, AlphaTracker, InputStats, pearson
from dyt_bench.norms import SquashNorm


def test_alpha_tracker_inv_std_equals_direct_computation(tmp_path):
    task = tiny_task("dyt")
    captured: dict[str, list[torch.Tensor]] = {}
    counter = {"val_batches": 0}

    class Capture(pl.Callback):  # a plain Callback that keeps the inputs of the first 2 val batches
        def on_validation_epoch_start(self, trainer, pl_module):
            counter["val_batches"] = 0
            captured.clear()
            self.handles = [m.register_forward_hook(
                lambda mod, inp, out, n=n: captured.setdefault(n, []).append(inp[0].detach().clone())
                if counter["val_batches"] < 2 else None) for n, m in pl_module.named_modules() if isinstance(m, SquashNorm)]

        def on_validation_batch_end(self, *args, **kwargs):
            counter["val_batches"] += 1

        def on_validation_epoch_end(self, trainer, pl_module):
            for h in self.handles:
                h.remove()

    tracker = AlphaTracker(num_batches=2)
    trainer = tiny_trainer(tmp_path, callbacks=[Capture(), tracker], max_steps=4, val_check_interval=2,
                           limit_val_batches=3)
    trainer.fit(task, datamodule=tiny_data())
    last_epoch_rows = {r["layer"]: r for r in tracker.rows}  # the last validation's values win
    assert set(last_epoch_rows) == set(captured) and len(captured) == 3
    for name, tensors in captured.items():
        direct = torch.cat([t.flatten() for t in tensors]).double().std()
        assert last_epoch_rows[name]["inv_std"] == pytest.approx(1 / direct.item(), rel=1e-9)
        alpha = dict(task.named_modules())[name].alpha.item()
        assert last_epoch_rows[name]["alpha"] == pytest.approx(alpha)
    with open(tmp_path / CSV_NAME) as f:
        assert len(list(csv.DictReader(f))) == len(tracker.rows) == 3 * 2  # 3 layers × 2 validations
    assert (tmp_path / "alpha_vs_inv_std.png").stat().st_size > 1000
    assert (tmp_path / "alpha_over_training.png").stat().st_size > 1000
    assert not any(m._forward_hooks for m in task.modules())  # the tracker's hooks are gone after validation


def test_track_alpha_is_one_config_line():
    assert any(isinstance(cb, AlphaTracker) for cb in tiny_task("dyt", track_alpha=True).configure_callbacks())
    assert not any(isinstance(cb, AlphaTracker) for cb in tiny_task("dyt").configure_callbacks())


def test_pearson_matches_torch():
    a, b = [1.0, 2.0, 3.5, 4.0], [2.0, 2.5, 5.0, 4.5]
    assert pearson(a, b) == pytest.approx(torch.corrcoef(torch.tensor([a, b]))[0, 1].item(), rel=1e-6)


def test_input_stats_add_up_like_one_pass():
    gen = torch.Generator().manual_seed(0)
    parts = [torch.randn(5, 7, generator=gen) * 2 + 1 for _ in range(3)]
    combined = sum((InputStats.of(p) for p in parts), InputStats())
    running = InputStats()
    for p in parts:
        running.update(p)
    assert combined.n == running.n == 105 and combined.std == running.std
    assert combined.std == pytest.approx(torch.cat([p.flatten() for p in parts]).double().std().item(), rel=1e-12)
