"""Runs the fused-kernel cases (tests/kernel_cases.py) under Triton's CPU interpreter, in a subprocess: the
interpreter is chosen when Triton first compiles, so it cannot be switched on inside this test process."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

TESTS = Path(__file__).resolve().parent


def test_kernels_under_the_triton_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TESTS / "kernel_cases.py")],
        cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=900,
    )
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 30, summary


def test_per_function_knobs_override_the_heuristic_by_name_and_by_layout(monkeypatch):
    from dyt_bench.ops import triton_squash as ts

    # tanh follows the shared heuristic; erf's own entries (docs/benchmarks.md) change only what they name
    assert ts._blocks(32768, 4096, "fwd", True, "tanh") == (2, 4096, 16, None)
    assert ts._blocks(32768, 4096, "fwd", True, "erf") == (2, 4096, 16, 40)  # wide tiles: register cap
    assert ts._blocks(50432, 768, "fwd", True, "erf") == ts._blocks(50432, 768, "fwd", True, "tanh")  # not wide
    assert ts._blocks(32768, 4096, "bwd", True, "tanh") == (2, 1024, 4, None)
    assert ts._blocks(32768, 4096, "bwd", True, "erf") == (1, 1024, 8, None)  # tokens: (name, True) keys
    assert ts._blocks(32768, 3136, "bwd", False, "erf") == ts._blocks(32768, 3136, "bwd", False, "tanh")

    # a plain name applies to both layouts and wins over a shared knob; a layout key wins over a plain name
    monkeypatch.setitem(ts.TUNING, "per_function", {"sigmoid": {"bwd_warps": 2, ("bwd_warps", False): 16,
                                                                 "bwd_maxnreg": 96}})
    assert ts._blocks(32768, 4096, "bwd", True, "sigmoid") == (2, 1024, 2, 96)
    assert ts._blocks(32768, 3136, "bwd", False, "sigmoid")[2:] == (16, 96)
    assert ts._blocks(32768, 4096, "bwd", True, "tanh") == (2, 1024, 4, None)
