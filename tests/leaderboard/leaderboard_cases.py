"""Hand-made result files for the leaderboard tests, and functions that read the leaderboard's JSON output."""

import json
import math
import statistics

from scipy import stats as scipy_stats

from dyt_bench.leaderboard import main
from dyt_bench.results import RunResult

# best val/acc1 of three seeds per norm kind (the final value is 0.01 lower); dyt seed 2 diverged
ACC = {"layernorm": [0.912, 0.905, 0.921], "dyt": [0.931, 0.918], "rmsnorm": [0.90, 0.91, 0.93]}
MODES = {"val/acc1": "max", "val/loss": "min"}  # what ImageClassification declares


def make_result(kind, seed, acc, status="completed", depth=2, task="image_classification", modes=MODES, chance=None):
    config = {"seed_everything": seed, "trainer": {"max_steps": 10, "default_root_dir": "x"},
              "model": {"class_path": "dyt_bench.tasks.ImageClassification",
                        "init_args": {"model": "vit", "model_kwargs": {"depth": depth}, "norm": {"kind": kind}}}}
    metrics = {"val/acc1": acc, "val/loss": 1 - acc} if acc is not None else {}
    return RunResult(task=task, model="vit", dataset="digits", norm={"kind": kind}, status=status, seed=seed,
                     metrics_best=dict(metrics), metrics_final={k: v - 0.01 for k, v in metrics.items()},
                     config=config, finished_at=f"2025-01-01T00:00:0{seed}", metric_modes=dict(modes or {}),
                     chance=dict(chance or {}))


def leaderboard_json(capsys, *args):
    """The leaderboard's JSON output for ``args`` (it must succeed)."""
    assert main([*map(str, args), "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def cell_of(data, **axes):
    """The one JSON cell whose axis labels include ``axes``."""
    (cell,) = [c for c in data["cells"] if all(c["axes"].get(k) == v for k, v in axes.items())]
    return cell


def final(accs):
    """The final values of runs whose best values are ``accs`` (make_result's convention)."""
    return [a - 0.01 for a in accs]


def welch_reference(a, b):
    """Welch's t-test written out: t statistic, Welch–Satterthwaite degrees of freedom, two-sided p."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    t = (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return 2 * scipy_stats.t.sf(abs(t), df)
