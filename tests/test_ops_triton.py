"""Runs the fused-kernel cases (tests/kernel_cases.py) under Triton's CPU interpreter, in a subprocess: the
interpreter is chosen when Triton first compiles, so it cannot be switched on inside this test process."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")

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
    assert ts._blocks(16384, 8192, "fwd", True, "tanh") == (2, 8192, 16, None)  # whole rows up to 8192 columns
    assert ts._blocks(20480, 5120, "fwd", True, "tanh") == (2, 8192, 16, None)  # masked up to the power of two
    assert ts._blocks(8192, 16384, "fwd", True, "tanh") == (2, 4096, 16, None)  # wider: 4096-column blocks
    assert ts._blocks(32768, 4096, "fwd", True, "erf") == (2, 4096, 16, 40)  # wide tiles: register cap
    assert ts._blocks(16384, 8192, "fwd", True, "erf") == (2, 4096, 16, 40)  # erf: whole rows only to 4096
    assert ts._blocks(50432, 768, "fwd", True, "erf") == ts._blocks(50432, 768, "fwd", True, "tanh")  # not wide
    assert ts._blocks(32768, 4096, "bwd", True, "tanh") == (2, 1024, 4, None)
    assert ts._blocks(50432, 768, "bwd", True, "tanh") == (8, 256, 4, None)
    assert ts._blocks(50432, 768, "bwd", True, "erf") == (8, 256, 4, 128)  # tokens: a (name, True) key
    assert ts._blocks(32768, 4096, "bwd", True, "erf") == (2, 1024, 4, 128)
    assert ts._blocks(32768, 3136, "bwd", True, "tanh") == (32, 64, 4, None)
    assert ts._blocks(32768, 3136, "bwd", False, "erf") == ts._blocks(32768, 3136, "bwd", False, "tanh")

    # a plain name applies to both layouts and wins over a shared knob; a layout key wins over a plain name
    monkeypatch.setitem(ts.TUNING, "per_function", {"sigmoid": {"bwd_warps": 2, ("bwd_warps", False): 16,
                                                                 "bwd_maxnreg": 96}})
    assert ts._blocks(32768, 4096, "bwd", True, "sigmoid") == (2, 1024, 2, 96)
    assert ts._blocks(32768, 3136, "bwd", False, "sigmoid")[2:] == (16, 96)
    assert ts._blocks(32768, 4096, "bwd", True, "tanh") == (2, 1024, 4, None)
    # a shared wide knob applies to every function's wide forward token tiles and nothing else
    monkeypatch.setitem(ts.TUNING, "fwd_wide_maxnreg", 64)
    assert ts._blocks(32768, 4096, "fwd", True, "tanh")[3] == 64
    assert ts._blocks(32768, 2048, "fwd", True, "tanh")[3] == 64
    assert ts._blocks(32768, 1024, "fwd", True, "tanh")[3] is None
    assert ts._blocks(32768, 4096, "bwd", True, "tanh")[3] is None
    assert ts._blocks(1024, 4096, "fwd", False, "tanh")[3] is None


def test_compiled_kernels_use_one_reciprocal_and_one_exponential_per_element():
    """The kernels' tanh, sigmoid and erf compile (for sm_90, no GPU needed) to two special-function instructions an
    element, rcp and ex2, with no spills: the property behind docs/benchmarks.md's timings."""
    if not (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump").exists():
        pytest.skip("Triton's NVIDIA backend tools are not installed")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, str(TESTS.parent / "benchmarks" / "kernel_sass.py"), "--fn", "tanh",
                           "sigmoid", "erf", "--shift"], cwd=TESTS.parent, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in proc.stdout.splitlines() if line.startswith("| ") and "×" in line]
    assert len(rows) == 6  # three functions × forward and backward
    for fn, stage, _tile, _warps, _cap, regs, spill, sass, mufu in (map(str.strip, r) for r in rows):
        assert float(mufu) == 2.0, (fn, stage, mufu)
        assert int(spill) == 0 and int(regs) <= 255, (fn, stage, regs, spill)
        if fn == "tanh" and stage == "fwd":  # 19 with the bare rcp / ex2, 23.5 with Triton's own division and
            assert float(sass) < 23, sass  # exp2 and their range checks (triton 3.6, sm_90)


def test_programs_that_fit_follows_cudas_occupancy_rules():
    """Resident blocks per SM by CUDA's occupancy arithmetic (sm_90: 64K registers allocated per warp in units of
    256, 2048 threads, 32 blocks, 228 KiB shared memory with 1 KiB reserved per block), worked by hand."""
    from dyt_bench.ops.triton_squash import programs_that_fit

    assert programs_that_fit(150, 4, 0) == 3  # 152 regs × 32 = 4864 a warp → 13 warps → 3 blocks of 4
    assert programs_that_fit(159, 4, 0) == 3  # 160 × 32 = 5120 → 12 warps → 3
    assert programs_that_fit(128, 4, 0) == 4  # 4096 a warp → 16 warps → 4
    assert programs_that_fit(55, 8, 0) == 4  # 56 × 32 = 1792 → 36 warps → 4 blocks of 8
    assert programs_that_fit(32, 8, 0) == 8  # registers allow 64 warps; 2048 threads → 8 blocks of 256
    assert programs_that_fit(16, 1, 0) == 32  # the 32-blocks-per-SM limit
    assert programs_that_fit(40, 4, 48 * 1024) == 4  # shared memory: 233472 // (49152 + 1024) = 4
    assert programs_that_fit(255, 16, 0) == 1  # 16 warps need 131072 registers: still one (the launch would fail)
