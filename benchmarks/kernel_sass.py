"""Registers and machine instructions of the squash-affine kernels, compiled for a GPU architecture without a GPU.

    python benchmarks/kernel_sass.py                      # every function, forward and token backward, sm_90
    python benchmarks/kernel_sass.py --fn erf --shift     # erf with the learnable shift (Derf)
    python benchmarks/kernel_sass.py --arch 80            # another architecture (A100)

Compiles ``fwd_kernel`` and ``bwd_channels_last_kernel`` (dyt_bench/ops/triton/kernels.py) with Triton's compiler
for the chosen ``sm_<arch>`` (bf16 input, float32 parameters, the block shapes the heuristic picks for a 32768×4096
token matrix, or ``--tile-rows`` / ``--tile-cols`` / ``--warps`` / ``--maxnreg``) and reads the cubin with the ``cuobjdump`` that Triton ships: registers
per thread, spilled bytes, SASS instructions per element, and the count of special-function (MUFU) instructions.
These are static counts, not times: they explain a timing of ``benchmarks/ops.py`` (e.g. a kernel that became
issue-bound), they do not replace it. Needs Triton's NVIDIA backend, not a GPU.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.pop("TRITON_INTERPRET", None)  # the compiled kernels, not the interpreter's

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from dyt_bench.ops.functions import ALL_FUNCTIONS, FUNCTIONS  # noqa: E402
from dyt_bench.ops.triton import kernels  # noqa: E402
from dyt_bench.ops.triton.blocks import choose_blocks  # noqa: E402


def compile_kernel(kernel, signature: dict[str, str], constexprs: dict[str, object], arch: int, warps: int,
                   maxnreg: int | None):
    sig = dict(signature)
    sig.update({name: "constexpr" for name in constexprs})
    src = ASTSource(fn=kernel, signature=sig,
                    constexprs={(kernel.arg_names.index(n),): v for n, v in constexprs.items()})
    options = {"num_warps": warps, **({"maxnreg": maxnreg} if maxnreg else {})}
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)


def inspect(compiled) -> dict[str, int]:
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(compiled.asm["cubin"])
        path = f.name
    try:
        usage = subprocess.run([str(tool), "-res-usage", path], capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([str(tool), "-sass", path], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(path)
    instructions = [line.split("*/", 1)[1].strip() for line in sass.splitlines()
                    if re.match(r"\s+/\*[0-9a-f]{4}\*/", line)]
    return {"regs": int(re.search(r"REG:(\d+)", usage).group(1)),
            "local": int(re.search(r"LOCAL:(\d+)", usage).group(1)),
            "instructions": len(instructions),
            "mufu": sum(" MUFU." in f" {i}" or i.startswith("MUFU") for i in instructions)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fn", nargs="*", default=list(ALL_FUNCTIONS), choices=ALL_FUNCTIONS)
    parser.add_argument("--shift", action="store_true", help="with erf: the learnable shift (Derf)")
    parser.add_argument("--arch", type=int, default=90, help="compute capability × 10 (90: H100)")
    parser.add_argument("--rows", type=int, default=32768)
    parser.add_argument("--cols", type=int, default=4096)
    parser.add_argument("--tile-rows", type=int, help="override BLOCK_R")
    parser.add_argument("--tile-cols", type=int, help="override BLOCK_L")
    parser.add_argument("--warps", type=int, help="override num_warps")
    parser.add_argument("--maxnreg", type=int, help="override the register cap")
    parser.add_argument("--sms", type=int, default=132, help="SMs of the target device (132: H100)")
    args = parser.parse_args(argv)

    print(f"sm_{args.arch}, bf16 tokens {args.rows}×{args.cols}, float32 γ/β/α, triton {triton.__version__}")
    print("| fn | stage | tile | warps | maxnreg | regs/thread | spill bytes | SASS / element | MUFU / element |")
    print("|---|---|---|---|---|---|---|---|---|")
    for fn in args.fn:
        has_s = args.shift and fn == "erf"
        for stage in ("fwd", "bwd"):
            block_r, block_l, warps, maxnreg, _ = choose_blocks(args.rows, args.cols, stage, True, fn, args.sms)
            block_r, block_l = args.tile_rows or block_r, args.tile_cols or block_l
            warps, maxnreg = args.warps or warps, args.maxnreg or maxnreg
            if stage == "fwd":
                signature = {"X": "*bf16", "Y": "*bf16", "A": "*fp32", "S": "*fp32", "W": "*fp32", "B": "*fp32",
                             "R": "i32", "L": "i32", "C": "i32"}
                flags = {"BLOCK_R": block_r, "BLOCK_L": block_l, "INDEX": 0, "FN": FUNCTIONS[fn].kernel_code,
                         "HAS_W": True, "HAS_B": True, "HAS_S": has_s, "INT64": False, "EVEN": True}
                kernel = kernels.fwd_kernel
            else:
                signature = {"DY": "*bf16", "X": "*bf16", "A": "*fp32", "S": "*fp32", "W": "*fp32", "DX": "*bf16",
                             "PART": "*fp32", "SCAL": "*fp32", "R": "i32", "L": "i32", "ROW_PROGRAMS": "i32",
                             "ITERS": "i32"}
                flags = {"BLOCK_R": block_r, "BLOCK_L": block_l, "FN": FUNCTIONS[fn].kernel_code, "HAS_W": True,
                         "HAS_S": has_s, "NEED_DX": True, "NEED_DW": True, "NEED_DB": True, "NEED_DA": True,
                         "NEED_DS": has_s, "INT64": False}
                kernel = kernels.bwd_channels_last_kernel
            info = inspect(compile_kernel(kernel, signature, flags, args.arch, warps, maxnreg))
            per_thread = block_r * block_l / (warps * 32)  # elements a thread handles per tile
            print(f"| {fn}{' + shift' if has_s else ''} | {stage} | {block_r}×{block_l} | {warps} | {maxnreg or '—'} "
                  f"| {info['regs']} | {info['local']} | {info['instructions'] / per_thread:.1f} "
                  f"| {info['mufu'] / per_thread:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
