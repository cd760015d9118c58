"""Runs the fused-kernel cases (tests/ops/kernel_cases.py) under Triton's CPU interpreter, in a subprocess (the
interpreter is chosen when Triton first compiles, so it cannot be switched on inside this test process); the
heuristic's function tuning and overrides; the compiled kernels' instruction counts; the op benchmark's command line."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def test_kernels_under_the_triton_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE / "kernel_cases.py")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 30, summary


def test_function_tuning_and_overrides_of_the_heuristic():
    from dyt_bench.ops.triton.blocks import Overrides, choose_blocks

    def blocks(rows, cols, stage, channels_last, fn, overrides=None):
        return tuple(choose_blocks(rows, cols, stage, channels_last, fn, 132, overrides)[:4])

    # tanh follows the shared heuristic; erf's own tuning (docs/benchmarks.md) changes only what it names
    assert blocks(32768, 4096, "fwd", True, "tanh") == (2, 4096, 16, None)
    assert blocks(16384, 8192, "fwd", True, "tanh") == (2, 8192, 16, None)  # whole rows up to 8192 columns
    assert blocks(20480, 5120, "fwd", True, "tanh") == (2, 8192, 16, None)  # masked up to the power of two
    assert blocks(8192, 16384, "fwd", True, "tanh") == (2, 4096, 16, None)  # wider: 4096-column blocks
    assert blocks(32768, 4096, "fwd", True, "erf") == (2, 4096, 16, 40)  # wide tiles: register cap
    assert blocks(16384, 8192, "fwd", True, "erf") == (2, 4096, 16, 40)  # erf: whole rows only to 4096
    assert blocks(50432, 768, "fwd", True, "erf") == blocks(50432, 768, "fwd", True, "tanh")  # not wide
    assert blocks(32768, 4096, "bwd", True, "tanh") == (2, 1024, 4, None)
    assert blocks(50432, 768, "bwd", True, "tanh") == (8, 256, 4, None)
    assert blocks(50432, 768, "bwd", True, "erf") == (8, 256, 4, 128)  # tokens: erf's (name, channels last) entry
    assert blocks(32768, 4096, "bwd", True, "erf") == (2, 1024, 4, 128)
    assert blocks(32768, 3136, "bwd", True, "tanh") == (32, 64, 4, None)
    assert blocks(32768, 3136, "bwd", False, "erf") == blocks(32768, 3136, "bwd", False, "tanh")

    # overrides apply to both layouts and win over the heuristic; they replace a function's own tuning
    knobs = Overrides(bwd_warps=2, bwd_maxnreg=96)
    assert blocks(32768, 4096, "bwd", True, "sigmoid", knobs) == (2, 1024, 2, 96)
    assert blocks(32768, 3136, "bwd", False, "sigmoid", Overrides(bwd_warps=16, bwd_maxnreg=96))[2:] == (16, 96)
    assert blocks(32768, 4096, "bwd", True, "tanh") == (2, 1024, 4, None)
    assert blocks(32768, 4096, "bwd", True, "erf", Overrides()) == (2, 1024, 4, None)  # the shared heuristic alone
    assert blocks(16384, 8192, "fwd", True, "erf", Overrides()) == (2, 8192, 16, None)
    # a wide register cap applies to every function's wide forward token tiles and nothing else
    wide = Overrides(fwd_wide_maxnreg=64)
    assert blocks(32768, 4096, "fwd", True, "tanh", wide)[3] == 64
    assert blocks(32768, 2048, "fwd", True, "tanh", wide)[3] == 64
    assert blocks(32768, 1024, "fwd", True, "tanh", wide)[3] is None
    assert blocks(32768, 4096, "bwd", True, "tanh", wide)[3] is None
    assert blocks(1024, 4096, "fwd", False, "tanh", wide)[3] is None


def test_compiled_kernels_use_one_reciprocal_and_one_exponential_per_element():
    """The kernels' tanh, sigmoid and erf compile (for sm_90, no GPU needed) to two special-function instructions an
    element, rcp and ex2, with no spills: the property behind docs/benchmarks.md's timings."""
    if not (Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump").exists():
        pytest.skip("Triton's NVIDIA backend tools are not installed")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "kernel_sass.py"), "--fn", "tanh",
                           "sigmoid", "erf", "--shift"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in proc.stdout.splitlines() if line.startswith("| ") and "×" in line]
    assert len(rows) == 6  # three functions × forward and backward
    for fn, stage, _tile, _warps, _cap, regs, spill, sass, mufu in (map(str.strip, r) for r in rows):
        assert float(mufu) == 2.0, (fn, stage, mufu)
        assert int(spill) == 0 and int(regs) <= 255, (fn, stage, regs, spill)
        if fn == "tanh" and stage == "fwd":  # 19 with the bare rcp / ex2, 23.5 with Triton's own division and
            assert float(sass) < 23, sass  # exp2 and their range checks (triton 3.6, sm_90)


def test_op_benchmark_command_line():
    """benchmarks/ops.py parses its options (the sweeps' configurations are launched in kernel_cases.py)."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ops.py"), "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert all(flag in proc.stdout for flag in ("--sweep", "--sweep-wide", "--sweep-fn", "--sweep-shapes"))


def test_compiled_forward_is_chosen_by_its_environment_variable(monkeypatch):
    from dyt_bench.ops.triton.op import COMPILED_FORWARD_ENV, COMPILED_FORWARDS, compiled_forward

    monkeypatch.delenv(COMPILED_FORWARD_ENV, raising=False)
    assert compiled_forward() == "decomposed"
    for mode in COMPILED_FORWARDS:
        monkeypatch.setenv(COMPILED_FORWARD_ENV, mode)
        assert compiled_forward() == mode
    monkeypatch.setenv(COMPILED_FORWARD_ENV, "fused")
    with pytest.raises(ValueError, match="DYT_BENCH_COMPILED_FORWARD.*decomposed, inductor, custom_op.*'fused'"):
        compiled_forward()
