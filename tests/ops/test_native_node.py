"""The C++ autograd node's Python side (dyt_bench/ops/triton/native.py): its switch, and how a launch plan becomes
the parameter list cuLaunchKernel takes. The node itself runs only on CUDA: tests/ops/kernel_cases.py checks it
bitwise against the Python node and against float64 math."""

from __future__ import annotations

import struct

import pytest

from dyt_bench.ops.triton import native
from dyt_bench.ops.triton.launch import _Handle


def handle(names, params):
    return _Handle(None, 1234, (), False, False, tuple(names), tuple(params), 4, 0, 1)


def test_parameters_follow_the_kernel_signature_with_constexprs_dropped_and_scratch_appended():
    # a forward kernel's signature as Triton 3.6 reports it: six pointers, three sizes, then constexprs
    names = ["X", "Y", "A", "S", "W", "B", "R", "L", "C", "BLOCK_R", "EVEN"]
    params = ["*bf16", "*bf16", "*fp32", "*fp32", "*fp32", "*fp32", "i32", "i32", "constexpr", "constexpr",
              "constexpr"]
    tail = (4096, 1024, 1, 8, True)  # C == 1 was specialised to a constant by Triton: not a kernel parameter
    slots, cells = native._params(handle(names, params), native.FWD_POINTERS, tail)
    assert slots == [0, 5, 1, 2, 3, 4, -1, -1, -1, -1]
    assert cells == [0, 0, 0, 0, 0, 0, 4096, 1024, 0, 0]


def test_float_parameters_are_passed_as_their_bits_and_unknown_kinds_refused():
    names = ["PART", "SCAL", "OUT", "Q", "EPS"]
    slots, cells = native._params(handle(names, ["*fp32", "*fp32", "*fp32", "i64", "fp32"]),
                                  native.BWD_SECOND_POINTERS, (2**40, 0.5))
    assert slots[:5] == [8, 9, 10, -1, -1] and cells[3] == 2**40
    assert cells[4] == struct.unpack("<I", struct.pack("<f", 0.5))[0]
    # a tensor descriptor, a pointer the node has no slot for, a signature of another length: no variant
    assert native._params(handle(names, ["*fp32", "*fp32", "*fp32", "i64", "nvTmaDesc"]),
                          native.BWD_SECOND_POINTERS, (1, 2)) is None
    assert native._params(handle(["PART", "SCAL", "OUT", "Q"], ["*fp32", "*fp32", "*fp32", "*fp32"]),
                          native.BWD_SECOND_POINTERS, (0,)) is None
    assert native._params(handle(names, ["*fp32"] * 3 + ["i64", "fp32"]), native.BWD_SECOND_POINTERS, (1,)) is None
    assert native._params(_Handle(None, 1, (), False, False), native.BWD_SECOND_POINTERS, ()) is None


def test_the_switch_reads_its_environment_variable_and_names_the_allowed_values(monkeypatch):
    monkeypatch.setattr(native, "_enabled", None)
    monkeypatch.setenv(native.NATIVE_ENV, "off")
    assert native.enabled() is False
    monkeypatch.setattr(native, "_enabled", None)
    monkeypatch.setenv(native.NATIVE_ENV, "yes")
    with pytest.raises(ValueError, match=r"DYT_BENCH_NATIVE_NODE must be one of auto, off; got 'yes'"):
        native.enabled()
    monkeypatch.setattr(native, "_enabled", None)
    monkeypatch.delenv(native.NATIVE_ENV)
    assert native.enabled() is True
    native.set_enabled(False)
    assert native.enabled() is False and native.module() is None  # off: nothing is built


@pytest.mark.slow
def test_the_extension_builds_and_checks_its_launch_descriptions(monkeypatch):
    """Compiles native_node.cpp (about a minute on two cores): the build a CUDA user gets on first use."""
    monkeypatch.setattr(native, "_enabled", True)
    mod = native.module()
    if mod is None:
        pytest.skip(f"no C++ toolchain for the extension here: {native.unavailable_reason()}")
    launch = [0, 1, 1, 128, 0]
    with pytest.raises(RuntimeError, match="bad pointer slot"):
        mod.add_variant(launch, [42], [0], launch, [], [], launch, [], [], 0, 0, 1, True, 0)
    with pytest.raises(RuntimeError, match="one value each"):
        mod.add_variant(launch, [0, 1], [0], launch, [], [], launch, [], [], 0, 0, 1, True, 0)
    assert mod.N_SLOTS == len(native.SLOTS)
