"""The README's main job: the quickstart config reaches ≥ 0.90 validation accuracy on digits with DyT (slow, ~1 min)."""

import glob
import os

import pytest

from dyt_bench.cli import main
from dyt_bench.results import read_result

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_quickstart_reaches_90_percent(tmp_path):
    main(["fit", "--config", os.path.join(ROOT, "configs", "quickstart.yaml"),
          "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir", str(tmp_path),
          "--trainer.enable_progress_bar", "false", "--trainer.enable_checkpointing", "false"])
    (path,) = glob.glob(os.path.join(tmp_path, "**", "result.json"), recursive=True)
    result = read_result(path)
    assert result.status == "completed" and result.norm["kind"] == "dyt"
    assert result.metrics_final["val/acc1"] >= 0.90
