"""Fixtures of the leaderboard tests: a directory of result files with completed, diverged and failed runs."""

import pytest
from leaderboard_cases import ACC, make_result

from dyt_bench.results import write_result


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    for kind, accs in ACC.items():
        for seed, acc in enumerate(accs):
            write_result(root / f"{kind}_s{seed}", make_result(kind, seed, acc))
    write_result(root / "dyt_s2", make_result("dyt", 2, 0.5, status="diverged"))
    for seed in range(3):  # every seed of identity diverged
        write_result(root / f"identity_s{seed}", make_result("identity", seed, None, status="diverged"))
    write_result(root / "batchnorm_s0", make_result("batchnorm", 0, None, status="failed"))
    return root
