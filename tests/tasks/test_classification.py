"""The image classification task end to end on CPU: training, metrics, outcomes recorded in result.json."""

import math
import os
import signal

import lightning.pytorch as pl
import pytest
import torch
from helpers import PoisonAtStep, tiny_data, tiny_task, tiny_trainer
from lightning.pytorch.utilities.exceptions import SIGTERMException

from dyt_bench.datamodules import ImageDataModule
from dyt_bench.datamodules.image import digits_split_indices
from dyt_bench.norms import SquashNorm
from dyt_bench.results import read_result
from dyt_bench.tasks.base import OptimConfig, lr_lambda


def test_fit_writes_completed_result(tmp_path):
    task = tiny_task("dyt")
    trainer = tiny_trainer(tmp_path, max_steps=8, val_check_interval=4)
    trainer.fit(task, datamodule=tiny_data())
    result = read_result(tmp_path)
    assert result.status == "completed" and result.steps == 8
    assert result.task == "image_classification" and result.dataset == "synthetic"
    assert result.norm["kind"] == "dyt" and result.norm["learnable_alpha"] is True
    assert result.norm_replacement["counts"] == {"LayerNorm": 3}
    assert {"val/acc1", "val/acc5", "val/loss"} <= set(result.metrics_best)
    assert 0 <= result.metrics_best["val/acc1"] <= 1 and result.throughput["train_samples_per_s"] > 0
    assert result.config_hash and result.versions["torch"] == torch.__version__.split("+")[0]


def test_forced_nan_is_recorded_as_diverged(tmp_path):
    trainer = tiny_trainer(tmp_path, callbacks=[PoisonAtStep(3)], max_steps=20)
    trainer.fit(tiny_task("dyt"), datamodule=tiny_data())
    result = read_result(tmp_path)
    assert result.status == "diverged"
    assert "non-finite" in result.divergence
    assert result.steps < 20


def test_exception_is_recorded_as_failed_and_reraised(tmp_path):
    trainer = tiny_trainer(tmp_path, callbacks=[PoisonAtStep(2, RuntimeError("boom in step 2"))])
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(tiny_task("layernorm"), datamodule=tiny_data())
    result = read_result(tmp_path)
    assert result.status == "failed" and "boom in step 2" in result.error


def test_ctrl_c_is_recorded_as_interrupted(tmp_path):
    trainer = tiny_trainer(tmp_path, callbacks=[PoisonAtStep(2, KeyboardInterrupt())])
    with pytest.raises(SystemExit):  # Lightning shuts down gracefully, then exits
        trainer.fit(tiny_task("dyt"), datamodule=tiny_data())
    assert read_result(tmp_path).status == "interrupted"


class _KillAtStep(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # what SLURM or `timeout` sends


def test_sigterm_is_recorded_as_interrupted_with_the_metrics_so_far(tmp_path):
    trainer = tiny_trainer(tmp_path, callbacks=[_KillAtStep()], max_steps=20)
    with pytest.raises(SIGTERMException):
        trainer.fit(tiny_task("dyt"), datamodule=tiny_data())
    result = read_result(tmp_path)
    assert result.status == "interrupted" and result.error == "SIGTERM"
    assert 2 <= result.steps < 20


def test_datamodule_mismatch_fails_before_training(tmp_path):
    trainer = tiny_trainer(tmp_path)
    with pytest.raises(ValueError, match="num_classes"):
        trainer.fit(tiny_task("dyt", num_classes=5), datamodule=tiny_data())


def test_loss_falls_on_digits(tmp_path):
    torch.manual_seed(0)
    task = tiny_task("dyt", optim=OptimConfig(lr=3e-3, warmup_steps=5))
    data = tiny_data("digits", batch_size=32)
    data.setup("fit")
    x, y = next(iter(data.val_dataloader()))
    with torch.no_grad():
        before = torch.nn.functional.cross_entropy(task(x), y).item()
    tiny_trainer(tmp_path, max_steps=80, limit_val_batches=0).fit(task, datamodule=data)
    with torch.no_grad():
        after = torch.nn.functional.cross_entropy(task(x), y).item()
    assert after < before - 0.2, (before, after)


def test_fused_adamw_is_chosen_on_cuda_and_computes_the_foreach_update():
    """``optim.fused: null`` takes torch's fused AdamW only on CUDA; forced, it gives torch's foreach update (the
    reference) to rounding after a few steps with both weight-decay groups."""
    auto = tiny_task("dyt")
    assert auto.fused_optimizer_fits(auto.parameter_groups()) is False  # CPU parameters

    def steps(fused: bool):
        torch.manual_seed(0)
        task = tiny_task("dyt", optim=OptimConfig(lr=1e-2, fused=fused, warmup_steps=0, schedule="constant"))
        opt = task.configure_optimizers()["optimizer"]
        assert bool(opt.defaults["fused"]) is fused
        x, y = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.arange(8) % 10
        for _ in range(3):
            torch.nn.functional.cross_entropy(task(x), y).backward()
            opt.step()
            opt.zero_grad()
        return [p.detach().clone() for p in task.parameters()]

    for fused_p, ref_p in zip(steps(True), steps(False), strict=True):
        torch.testing.assert_close(fused_p, ref_p, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="optim.fused must be true, false or null"):
        OptimConfig(fused="yes")


def test_fused_adamw_is_left_out_where_parameters_are_sharded_or_not_on_cuda():
    from types import SimpleNamespace

    from dyt_bench.tasks.optim import fused_adamw_fits

    class DTensor:  # stands for torch.distributed.tensor.DTensor: only its class name is read
        pass

    def param(cuda=True, floating=True, data=None):
        return SimpleNamespace(is_cuda=cuda, is_floating_point=lambda: floating, data=data if data is not None else 0)

    assert fused_adamw_fits([param(), param()], "SingleDeviceStrategy")
    assert fused_adamw_fits([param()], "DDPStrategy")
    for strategy in ("FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy"):
        assert not fused_adamw_fits([param()], strategy)
    assert not fused_adamw_fits([param(), param(cuda=False)], "DDPStrategy")
    assert not fused_adamw_fits([param(floating=False)], "")
    assert not fused_adamw_fits([param(data=DTensor())], "")
    assert not fused_adamw_fits([], "")


@pytest.mark.gpu
def test_fused_adamw_is_the_default_for_a_task_on_cuda():
    task = tiny_task("dyt").cuda()
    assert task.fused_optimizer_fits(task.parameter_groups()) is True


def test_optimizer_groups_keep_norms_and_biases_out_of_weight_decay():
    task = tiny_task("dyt")
    decay, no_decay = task.parameter_groups()
    assert decay["weight_decay"] == task.optim_config.weight_decay and no_decay["weight_decay"] == 0.0
    no_decay_ids = {id(p) for p in no_decay["params"]}
    for m in task.modules():
        if isinstance(m, SquashNorm):
            assert {id(m.alpha), id(m.weight), id(m.bias)} <= no_decay_ids
    assert all(p.ndim >= 2 for p in decay["params"])


def test_lr_schedule_formula():
    total, warm = 100, 10
    assert lr_lambda(0, total, warm, "cosine", 0.0) == pytest.approx(0.1)
    assert lr_lambda(9, total, warm, "cosine", 0.0) == pytest.approx(1.0)
    assert lr_lambda(55, total, warm, "cosine", 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_lambda(100, total, warm, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_lambda(70, total, warm, "constant", 0.0) == 1.0
    # linear: fairseq's polynomial decay of power 1, from 1 after the warmup to the floor at the last step
    assert [lr_lambda(s, 110, 10, "linear", 0.0) for s in (0, 9, 10, 60, 110, 200)] == pytest.approx(
        [0.1, 1.0, 1.0, 0.5, 0.0, 0.0])
    assert lr_lambda(110, 110, 10, "linear", 0.2) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="optim.schedule"):
        OptimConfig(schedule="step")


def test_digits_split_is_stratified_deterministic_and_disjoint():
    a, b = ImageDataModule(source="digits", img_size=16), ImageDataModule(source="digits", img_size=16)
    a.setup(), b.setup()
    assert len(a.train_set) + len(a.val_set) == 1797
    assert torch.equal(a.val_set.labels, b.val_set.labels) and torch.equal(a.val_set.images, b.val_set.images)
    counts = torch.bincount(a.val_set.labels, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38  # 20% of ~180 per class
    img, label = a.train_set[0]
    assert img.shape == (1, 16, 16) and 0 <= label < 10
    idx_train, idx_val = digits_split_indices(torch.arange(1797) % 10, 0.2, 0)
    assert len(set(idx_train.tolist()) & set(idx_val.tolist())) == 0
    assert sorted(idx_train.tolist() + idx_val.tolist()) == list(range(1797))


def test_datamodule_rejects_bad_fields():
    with pytest.raises(ValueError, match="data.source.*digits, synthetic"):
        ImageDataModule(source="mnist")
    with pytest.raises(ValueError, match="num_classes must be 10"):
        ImageDataModule(source="digits", num_classes=5)


def test_fit_vs_harness_benchmark_reports_the_fits_steady_throughput(tmp_path):
    """benchmarks/fit_vs_harness.py --smoke runs a bare loop and a real `dyt-bench fit`; its table gives the fit's
    ``steady_samples_per_s`` from result.json and the ratio to the harness's mean."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "fit_vs_harness.py"
    done = subprocess.run([sys.executable, str(script), "--smoke", "--out", str(tmp_path / "run"), "--output",
                           str(tmp_path / "table.md")], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    (result_path,) = (tmp_path / "run").rglob("result.json")
    steady = json.loads(result_path.read_text())["throughput"]["steady_samples_per_s"]
    row = next(line for line in (tmp_path / "table.md").read_text().splitlines() if line.startswith("| vit_tiny"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    harness = float(cells[3].split(" ")[0].replace(",", ""))
    assert float(cells[4].replace(",", "")) == pytest.approx(steady, abs=0.5)
    assert float(cells[5]) == pytest.approx(steady / harness, rel=0.01, abs=0.002)
