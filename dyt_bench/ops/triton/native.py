"""The fused op's autograd node in C++ (``native_node.cpp``): the CUDA eager hot path of ``impl="auto"``.

Why: a Python ``autograd.Function`` costs the engine a Python call, a context object and tuple packing on every
forward and backward, which at the sizes of host-bound models is most of a LayerNorm's whole forward + backward
(docs/benchmarks.md, "Host time"). The C++ node launches the same compiled Triton kernels through the CUDA driver,
with the launch plans ``launch.py`` made, and assembles the parameter gradients in C++.

It is built with ``torch.utils.cpp_extension`` the first time a CUDA call signature has both its plans (its second
call with gradients), once per source and torch build, into torch's extension cache (``TORCH_EXTENSIONS_DIR``,
default ``~/.cache/torch_extensions``); the build takes tens of seconds, and loading it says so on stderr. It needs a C++
compiler, ninja and the CUDA runtime headers (from ``CUDA_HOME``, the ``nvidia`` pip packages torch installs, or
the copy Triton ships).
Where any is missing, or the build fails, the reason is printed once and the op keeps its Python node: results are
the same, only host time differs. ``DYT_BENCH_NATIVE_NODE=off`` turns it off; ``set_enabled`` does so at run time
(the benchmarks compare both).

A signature gets a native variant only where x needs no copy (``launch.matrix_view`` takes it as it is), for an
upstream gradient in x's dtype (the C++ backward copies one of another memory order into x's first), kernels
without scratch memory, one CTA per program, and parameters the launcher knows (pointers, integers, floats).
"""
from __future__ import annotations

import hashlib
import os
import struct
import sys
from pathlib import Path

from dyt_bench.ops import ENVIRONMENT, environment_value

NATIVE_ENV = "DYT_BENCH_NATIVE_NODE"
NATIVE_VALUES = ENVIRONMENT[NATIVE_ENV]
SOURCE = Path(__file__).with_name("native_node.cpp")

# pointer slots of native_node.cpp's ``Slot``, by the kernels' parameter names
SLOTS = {"X": 0, "A": 1, "S": 2, "W": 3, "B": 4, "Y": 5, "DY": 6, "DX": 7, "PART": 8, "SCAL": 9, "OUT": 10}
INT_TYPES = ("i1", "i8", "i16", "i32", "i64", "u1", "u8", "u16", "u32", "u64")

_module = None
_tried = False
_reason: str | None = None
_enabled: bool | None = None


def _env_enabled() -> bool:
    return environment_value(NATIVE_ENV) == "auto"


def enabled() -> bool:
    """Whether the op may take the C++ node (``DYT_BENCH_NATIVE_NODE``, or :func:`set_enabled`)."""
    global _enabled
    if _enabled is None:
        _enabled = _env_enabled()
    return _enabled


def set_enabled(flag: bool) -> None:
    """Turn the C++ node on or off for later calls (calls already planned keep what they have until then)."""
    global _enabled
    _enabled = bool(flag)


def unavailable_reason() -> str | None:
    """Why the C++ node could not be built, once a build was tried; None otherwise."""
    return _reason


def _cuda_include_dir() -> str | None:
    from torch.utils import cpp_extension

    candidates = [Path(home) / "include" for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"),
                                                      cpp_extension.CUDA_HOME, "/usr/local/cuda") if home]
    try:
        import nvidia

        for root in nvidia.__path__:
            candidates += sorted(Path(root).glob("*/include"))
    except ImportError:
        pass
    try:  # Triton ships the CUDA runtime headers its own launchers compile against
        import triton

        candidates.append(Path(triton.__file__).parent / "backends" / "nvidia" / "include")
    except ImportError:
        pass
    for path in candidates:
        if (path / "cuda_runtime_api.h").is_file() and (path / "crt" / "host_defines.h").is_file():
            return str(path)
    return None


def module():
    """The built extension, or None (disabled, or it cannot be built here: :func:`unavailable_reason` says why)."""
    global _module, _tried, _reason
    if _module is not None or _tried or not enabled():
        return _module
    _tried = True
    include = _cuda_include_dir()
    if include is None:
        _reason = "no CUDA runtime headers (cuda_runtime_api.h) under CUDA_HOME, the nvidia pip packages or Triton"
    else:
        import torch
        from torch.utils import cpp_extension

        digest = hashlib.sha1(SOURCE.read_bytes() + torch.__version__.encode()).hexdigest()[:12]
        cache = os.environ.get("TORCH_EXTENSIONS_DIR", "torch's extension cache (~/.cache/torch_extensions)")
        print(f"dyt-bench: loading the fused op's C++ autograd node (compiled on first use, tens of seconds, then "
              f"cached in {cache}) ...", file=sys.stderr, flush=True)
        try:
            _module = cpp_extension.load(
                name=f"dyt_bench_native_{digest}", sources=[str(SOURCE)], extra_include_paths=[include],
                extra_cflags=["-O2"], extra_ldflags=[f"-L{Path(torch.__file__).parent / 'lib'}", "-lc10_cuda"],
                with_cuda=False, verbose=False)
        except Exception as err:  # no compiler, no ninja, a failed build: the Python node stays
            _reason = f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
    if _module is None:
        print(f"dyt-bench: the fused op keeps its Python autograd node ({_reason}); set {NATIVE_ENV}=off to skip "
              "the build", file=sys.stderr, flush=True)
    return _module


def _params(handle, pointers: tuple[str, ...], tail: tuple) -> tuple[list[int], list[int]] | None:
    """(slots, values) of one launch's kernel parameters in order, with the two scratch pointers Triton appends; None
    where a parameter is of a kind the C++ launcher does not fill in."""
    names = handle.names
    if handle.params is None or len(names) != len(pointers) + len(tail) or names[:len(pointers)] != pointers:
        return None
    values = dict(zip(names, [None] * len(pointers) + list(tail), strict=True))
    slots, cells = [], []
    for name, kind in zip(names, handle.params, strict=True):
        if kind == "constexpr":
            continue
        if kind.startswith("*"):
            if name not in pointers:
                return None
            slots.append(SLOTS[name])
            cells.append(0)
        elif kind in INT_TYPES:
            slots.append(-1)
            cells.append(int(values[name]))
        elif kind == "fp32":
            slots.append(-1)
            cells.append(struct.unpack("<I", struct.pack("<f", float(values[name])))[0])
        else:
            return None
    slots += [-1, -1]  # global and profile scratch: none (kernels that need scratch get no plan)
    cells += [0, 0]
    return slots, cells


def _launch(handle, grid) -> list[int]:
    return [handle.function, grid[0], grid[1], 32 * handle.warps, handle.shared]


FWD_POINTERS = ("X", "Y", "A", "S", "W", "B")
BWD_FIRST_POINTERS = ("DY", "X", "A", "S", "W", "DX", "PART", "SCAL")
BWD_SECOND_POINTERS = ("PART", "SCAL", "OUT")


def make_variant(fwd, bwd, device_index: int) -> int | None:
    """The C++ node's handle for a forward plan and a backward plan of one signature (``launch._ForwardPlan`` /
    ``_BackwardPlan``), or None where the C++ node cannot take it (see the module docstring)."""
    mod = module()
    if mod is None or fwd.copy or bwd.copy:
        return None
    handles = (fwd.handle, bwd.first, bwd.second)
    if any(h.cooperative or h.pdl or h.ctas != 1 for h in handles):
        return None
    parts = [_params(fwd.handle, FWD_POINTERS, fwd.tail), _params(bwd.first, BWD_FIRST_POINTERS, bwd.first_tail),
             _params(bwd.second, BWD_SECOND_POINTERS, bwd.second_tail)]
    if None in parts:
        return None
    (fs, fv), (s1, v1), (s2, v2) = parts
    return mod.add_variant(_launch(fwd.handle, fwd.grid), fs, fv, _launch(bwd.first, bwd.first_grid), s1, v1,
                           _launch(bwd.second, bwd.second_grid), s2, v2, bwd.n_part, bwd.n_buffer, bwd.channels,
                           bwd.need_dx, device_index)
