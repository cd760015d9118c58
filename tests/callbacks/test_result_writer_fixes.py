"""ResultWriter: a metric a task logs in its own on_validation_epoch_end reaches the best metrics in the same
validation; a result that cannot be written (a full disk) is one line on stderr and is not retried."""

import errno

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from dyt_bench.callbacks import ResultWriter

pytestmark = pytest.mark.usefixtures("one_thread")

# the value the task logs at the end of validation epoch i (0-based): its best is in epoch 1
EPOCH_VALUES = [0.2, 0.9, 0.5]


class _EpochEndMetric(pl.LightningModule):
    """Logs ``val/acc`` only in its own on_validation_epoch_end (as the DNA task does)."""

    task_name = "toy"
    metric_modes = {"val/acc": "max"}

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.seen: list[dict[str, float]] = []
        self.writer: ResultWriter | None = None
        self.evaluation = {}

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        return None

    def on_validation_epoch_end(self):
        if not self.trainer.sanity_checking:
            self.log("val/acc", EPOCH_VALUES[self.current_epoch])

    def on_validation_end(self):  # the module's hook runs after every callback's: what the writer holds by now
        if not self.trainer.sanity_checking:
            self.seen.append(dict(self.writer.best))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(tmp_path, writer: ResultWriter, module: pl.LightningModule, epochs: int = 3) -> pl.Trainer:
    data = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[writer],
                         default_root_dir=str(tmp_path), num_sanity_val_steps=1)
    trainer.fit(module, data, data)
    return trainer


def test_a_metric_logged_at_the_tasks_epoch_end_counts_in_the_same_validation(tmp_path):
    writer = ResultWriter(run_dir=str(tmp_path / "run"), config={"model": {}})
    module = _EpochEndMetric()
    module.writer = writer
    _fit(tmp_path, writer, module)
    # after validation i the best is the max of the values of epochs 0..i: not one validation late
    assert module.seen == [{"val/acc": pytest.approx(max(EPOCH_VALUES[: i + 1]))} for i in range(3)]
    from dyt_bench.results import read_result

    assert read_result(tmp_path / "run").metrics_best == {"val/acc": pytest.approx(0.9)}


def test_a_full_disk_is_one_line_and_no_second_attempt(tmp_path, monkeypatch, capsys):
    import dyt_bench.callbacks.result_writer as rw

    calls = []

    def full(run_dir, result):
        calls.append(result.status)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rw, "write_result", full)
    writer = ResultWriter(run_dir=str(tmp_path / "run"), config={"model": {}})
    module = _EpochEndMetric()
    module.writer = writer
    _fit(tmp_path, writer, module, epochs=1)  # fit ends normally: the failed write does not raise
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "could not write" in ln]
    assert lines == [f"[dyt-bench] error: could not write {tmp_path / 'run' / 'result.json'} (run completed): "
                     "No space left on device"], err
    assert "Traceback" not in err and calls == ["completed"]
    # the failure path (on_exception) finds the record settled and does not try again
    writer.on_exception(None, module, RuntimeError("later"))
    assert calls == ["completed"] and writer.path is None
