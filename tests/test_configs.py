"""Every shipped run config parses and trains one step (on tiny inputs where the config is large)."""

import glob
import os

import pytest

from dyt_bench.cli import main
from dyt_bench.results import read_result

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_CONFIGS = sorted(
    p for p in glob.glob(os.path.join(ROOT, "configs", "**", "*.yaml"), recursive=True)
    if os.sep + "grids" + os.sep not in p
)
# Large configs are shrunk for a CPU smoke run; the shrinking keys are the same for every image config.
SHRINK = {"synthetic_vit_s.yaml": ["--model.img_size", "32", "--data.img_size", "32", "--data.batch_size", "4",
                                   "--data.synthetic_samples", "8", "--model.model_kwargs", '{"depth": 1}']}


@pytest.mark.parametrize("config", RUN_CONFIGS, ids=lambda p: os.path.relpath(p, ROOT))
def test_config_runs_one_step(config, tmp_path):
    main(["fit", "--config", config, "--trainer.fast_dev_run", "1", "--trainer.default_root_dir", str(tmp_path),
          "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
          *SHRINK.get(os.path.basename(config), [])])
    (path,) = glob.glob(os.path.join(tmp_path, "**", "result.json"), recursive=True)
    assert read_result(path).status == "completed"


def test_there_are_configs():
    assert len(RUN_CONFIGS) >= 3
