"""The block-shape heuristic (dyt_bench/ops/triton/blocks.py) returns, for representative shapes, exactly the tiles the
kernels were measured with (docs/benchmarks.md): the tables below were computed from the heuristic before it moved
into its own module, and a change of them is a retune, to be measured, not a refactoring."""

import dataclasses

import pytest

from dyt_bench.ops.functions import ALL_FUNCTIONS
from dyt_bench.ops.triton.blocks import FUNCTION_TUNING, Blocks, Overrides, choose_blocks, finish_blocks

# (rows, cols, channels_last): (forward (BLOCK_R, BLOCK_L, num_warps, maxnreg),
#                               backward (BLOCK_R, BLOCK_L, num_warps, maxnreg),
#                               backward programs on 4 and on 132 SMs)
# Token rows of 64-16384 channels (channels_last) and channels-first maps (rows = batch · channels, cols = H · W).
SHARED = {  # every function without tuning of its own
    (1, 64, True): ((1, 64, 4, None), (1, 64, 4, None), (1, 1)),
    (1, 96, True): ((1, 128, 4, None), (1, 128, 4, None), (1, 1)),
    (1, 100, True): ((1, 128, 4, None), (1, 128, 4, None), (1, 1)),
    (1, 128, True): ((1, 128, 4, None), (1, 128, 4, None), (1, 1)),
    (1, 192, True): ((1, 256, 4, None), (1, 64, 4, None), (1, 1)),
    (1, 256, True): ((1, 256, 4, None), (1, 256, 4, None), (1, 1)),
    (1, 384, True): ((1, 512, 4, None), (1, 128, 4, None), (1, 1)),
    (1, 512, True): ((1, 512, 4, None), (1, 512, 4, None), (1, 1)),
    (1, 640, True): ((1, 1024, 4, None), (1, 128, 4, None), (1, 1)),
    (1, 768, True): ((1, 1024, 4, None), (1, 256, 4, None), (1, 1)),
    (1, 1000, True): ((1, 1024, 4, None), (1, 1024, 4, None), (1, 1)),
    (1, 1024, True): ((1, 1024, 4, None), (1, 1024, 4, None), (1, 1)),
    (1, 1280, True): ((1, 2048, 8, None), (1, 256, 4, None), (1, 1)),
    (1, 1536, True): ((1, 2048, 8, None), (1, 512, 4, None), (1, 1)),
    (1, 2048, True): ((1, 2048, 8, None), (1, 1024, 4, None), (1, 1)),
    (1, 2560, True): ((1, 4096, 16, None), (1, 512, 4, None), (1, 1)),
    (1, 3072, True): ((1, 4096, 16, None), (1, 1024, 4, None), (1, 1)),
    (1, 4096, True): ((1, 4096, 16, None), (1, 1024, 4, None), (1, 1)),
    (1, 5120, True): ((1, 8192, 16, None), (1, 1024, 4, None), (1, 1)),
    (1, 6144, True): ((1, 8192, 16, None), (1, 1024, 4, None), (1, 1)),
    (1, 8192, True): ((1, 8192, 16, None), (1, 1024, 4, None), (1, 1)),
    (1, 12288, True): ((1, 4096, 16, None), (1, 1024, 4, None), (1, 1)),
    (1, 16384, True): ((1, 4096, 16, None), (1, 1024, 4, None), (1, 1)),
    (8, 64, True): ((8, 64, 4, None), (8, 64, 4, None), (1, 1)),
    (8, 96, True): ((8, 128, 4, None), (8, 128, 4, None), (1, 1)),
    (8, 100, True): ((8, 128, 4, None), (8, 128, 4, None), (1, 1)),
    (8, 128, True): ((8, 128, 4, None), (8, 128, 4, None), (1, 1)),
    (8, 192, True): ((8, 256, 4, None), (8, 64, 4, None), (1, 1)),
    (8, 256, True): ((8, 256, 4, None), (8, 256, 4, None), (1, 1)),
    (8, 384, True): ((4, 512, 4, None), (8, 128, 4, None), (1, 1)),
    (8, 512, True): ((4, 512, 4, None), (4, 512, 4, None), (1, 1)),
    (8, 640, True): ((2, 1024, 4, None), (8, 128, 4, None), (1, 1)),
    (8, 768, True): ((2, 1024, 4, None), (8, 256, 4, None), (1, 1)),
    (8, 1000, True): ((2, 1024, 4, None), (2, 1024, 4, None), (1, 1)),
    (8, 1024, True): ((2, 1024, 4, None), (2, 1024, 4, None), (1, 1)),
    (8, 1280, True): ((4, 2048, 8, None), (8, 256, 4, None), (1, 1)),
    (8, 1536, True): ((4, 2048, 8, None), (4, 512, 4, None), (1, 1)),
    (8, 2048, True): ((4, 2048, 8, None), (2, 1024, 4, None), (1, 1)),
    (8, 2560, True): ((2, 4096, 16, None), (4, 512, 4, None), (1, 1)),
    (8, 3072, True): ((2, 4096, 16, None), (2, 1024, 4, None), (1, 1)),
    (8, 4096, True): ((2, 4096, 16, None), (2, 1024, 4, None), (1, 1)),
    (8, 5120, True): ((2, 8192, 16, None), (2, 1024, 4, None), (1, 1)),
    (8, 6144, True): ((2, 8192, 16, None), (2, 1024, 4, None), (1, 1)),
    (8, 8192, True): ((2, 8192, 16, None), (2, 1024, 4, None), (1, 1)),
    (8, 12288, True): ((2, 4096, 16, None), (2, 1024, 4, None), (1, 1)),
    (8, 16384, True): ((2, 4096, 16, None), (2, 1024, 4, None), (1, 1)),
    (4096, 64, True): ((32, 64, 4, None), (32, 64, 4, None), (16, 32)),
    (4096, 96, True): ((16, 128, 4, None), (16, 128, 4, None), (16, 64)),
    (4096, 100, True): ((16, 128, 4, None), (16, 128, 4, None), (16, 64)),
    (4096, 128, True): ((16, 128, 4, None), (16, 128, 4, None), (16, 64)),
    (4096, 192, True): ((8, 256, 4, None), (32, 64, 4, None), (6, 32)),
    (4096, 256, True): ((8, 256, 4, None), (8, 256, 4, None), (16, 128)),
    (4096, 384, True): ((4, 512, 4, None), (16, 128, 4, None), (6, 64)),
    (4096, 512, True): ((4, 512, 4, None), (4, 512, 4, None), (16, 256)),
    (4096, 640, True): ((2, 1024, 4, None), (16, 128, 4, None), (4, 64)),
    (4096, 768, True): ((2, 1024, 4, None), (8, 256, 4, None), (6, 128)),
    (4096, 1000, True): ((2, 1024, 4, None), (2, 1024, 4, None), (16, 512)),
    (4096, 1024, True): ((2, 1024, 4, None), (2, 1024, 4, None), (16, 512)),
    (4096, 1280, True): ((4, 2048, 8, None), (8, 256, 4, None), (4, 106)),
    (4096, 1536, True): ((4, 2048, 8, None), (4, 512, 4, None), (6, 176)),
    (4096, 2048, True): ((4, 2048, 8, None), (2, 1024, 4, None), (8, 264)),
    (4096, 2560, True): ((2, 4096, 16, None), (4, 512, 4, None), (4, 106)),
    (4096, 3072, True): ((2, 4096, 16, None), (2, 1024, 4, None), (6, 176)),
    (4096, 4096, True): ((2, 4096, 16, None), (2, 1024, 4, None), (4, 132)),
    (4096, 5120, True): ((2, 8192, 16, None), (2, 1024, 4, None), (4, 106)),
    (4096, 6144, True): ((2, 8192, 16, None), (2, 1024, 4, None), (3, 88)),
    (4096, 8192, True): ((2, 8192, 16, None), (2, 1024, 4, None), (2, 66)),
    (4096, 12288, True): ((2, 4096, 16, None), (2, 1024, 4, None), (2, 44)),
    (4096, 16384, True): ((2, 4096, 16, None), (2, 1024, 4, None), (1, 33)),
    (65536, 64, True): ((32, 64, 4, None), (32, 64, 4, None), (16, 512)),
    (65536, 96, True): ((16, 128, 4, None), (16, 128, 4, None), (16, 528)),
    (65536, 100, True): ((16, 128, 4, None), (16, 128, 4, None), (16, 528)),
    (65536, 128, True): ((16, 128, 4, None), (16, 128, 4, None), (16, 528)),
    (65536, 192, True): ((8, 256, 4, None), (32, 64, 4, None), (6, 176)),
    (65536, 256, True): ((8, 256, 4, None), (8, 256, 4, None), (16, 528)),
    (65536, 384, True): ((4, 512, 4, None), (16, 128, 4, None), (6, 176)),
    (65536, 512, True): ((4, 512, 4, None), (4, 512, 4, None), (16, 528)),
    (65536, 640, True): ((2, 1024, 4, None), (16, 128, 4, None), (4, 106)),
    (65536, 768, True): ((2, 1024, 4, None), (8, 256, 4, None), (6, 176)),
    (65536, 1000, True): ((2, 1024, 4, None), (2, 1024, 4, None), (16, 528)),
    (65536, 1024, True): ((2, 1024, 4, None), (2, 1024, 4, None), (16, 528)),
    (65536, 1280, True): ((4, 2048, 8, None), (8, 256, 4, None), (4, 106)),
    (65536, 1536, True): ((4, 2048, 8, None), (4, 512, 4, None), (6, 176)),
    (65536, 2048, True): ((4, 2048, 8, None), (2, 1024, 4, None), (8, 264)),
    (65536, 2560, True): ((2, 4096, 16, None), (4, 512, 4, None), (4, 106)),
    (65536, 3072, True): ((2, 4096, 16, None), (2, 1024, 4, None), (6, 176)),
    (65536, 4096, True): ((2, 4096, 16, None), (2, 1024, 4, None), (4, 132)),
    (65536, 5120, True): ((2, 8192, 16, None), (2, 1024, 4, None), (4, 106)),
    (65536, 6144, True): ((2, 8192, 16, None), (2, 1024, 4, None), (3, 88)),
    (65536, 8192, True): ((2, 8192, 16, None), (2, 1024, 4, None), (2, 66)),
    (65536, 12288, True): ((2, 4096, 16, None), (2, 1024, 4, None), (2, 44)),
    (65536, 16384, True): ((2, 4096, 16, None), (2, 1024, 4, None), (1, 33)),
    (24, 35, False): ((32, 64, 4, None), (32, 64, 8, None), (1, 1)),
    (24, 40, False): ((32, 64, 4, None), (32, 64, 8, None), (1, 1)),
    (512, 49, False): ((32, 64, 4, None), (32, 64, 8, None), (1, 1)),
    (65536, 49, False): ((32, 64, 4, None), (32, 64, 8, None), (1, 1)),
    (131072, 196, False): ((8, 256, 4, None), (8, 256, 8, None), (1, 1)),
    (6144, 12544, False): ((1, 2048, 4, None), (8, 256, 8, None), (1, 1)),
    (32768, 3136, False): ((1, 2048, 4, None), (8, 256, 8, None), (1, 1)),
    (256, 65536, False): ((1, 2048, 4, None), (8, 256, 8, None), (1, 17)),
    (3, 1, False): ((4, 1, 4, None), (4, 1, 8, None), (1, 1)),
    (1200, 3, False): ((512, 4, 4, None), (512, 4, 8, None), (1, 1)),
}
ERF = {  # erf, where its own tuning (blocks.FUNCTION_TUNING) differs from SHARED
    (1, 64, True): ((1, 64, 4, None), (1, 64, 4, 128), (1, 1)),
    (1, 96, True): ((1, 128, 4, None), (1, 128, 4, 128), (1, 1)),
    (1, 100, True): ((1, 128, 4, None), (1, 128, 4, 128), (1, 1)),
    (1, 128, True): ((1, 128, 4, None), (1, 128, 4, 128), (1, 1)),
    (1, 192, True): ((1, 256, 4, None), (1, 64, 4, 128), (1, 1)),
    (1, 256, True): ((1, 256, 4, None), (1, 256, 4, 128), (1, 1)),
    (1, 384, True): ((1, 512, 4, None), (1, 128, 4, 128), (1, 1)),
    (1, 512, True): ((1, 512, 4, None), (1, 512, 4, 128), (1, 1)),
    (1, 640, True): ((1, 1024, 4, None), (1, 128, 4, 128), (1, 1)),
    (1, 768, True): ((1, 1024, 4, None), (1, 256, 4, 128), (1, 1)),
    (1, 1000, True): ((1, 1024, 4, None), (1, 1024, 4, 128), (1, 1)),
    (1, 1024, True): ((1, 1024, 4, None), (1, 1024, 4, 128), (1, 1)),
    (1, 1280, True): ((1, 2048, 8, 40), (1, 256, 4, 128), (1, 1)),
    (1, 1536, True): ((1, 2048, 8, 40), (1, 512, 4, 128), (1, 1)),
    (1, 2048, True): ((1, 2048, 8, 40), (1, 1024, 4, 128), (1, 1)),
    (1, 2560, True): ((1, 4096, 16, 40), (1, 512, 4, 128), (1, 1)),
    (1, 3072, True): ((1, 4096, 16, 40), (1, 1024, 4, 128), (1, 1)),
    (1, 4096, True): ((1, 4096, 16, 40), (1, 1024, 4, 128), (1, 1)),
    (1, 5120, True): ((1, 4096, 16, 40), (1, 1024, 4, 128), (1, 1)),
    (1, 6144, True): ((1, 4096, 16, 40), (1, 1024, 4, 128), (1, 1)),
    (1, 8192, True): ((1, 4096, 16, 40), (1, 1024, 4, 128), (1, 1)),
    (1, 12288, True): ((1, 4096, 16, 40), (1, 1024, 4, 128), (1, 1)),
    (1, 16384, True): ((1, 4096, 16, 40), (1, 1024, 4, 128), (1, 1)),
    (8, 64, True): ((8, 64, 4, None), (8, 64, 4, 128), (1, 1)),
    (8, 96, True): ((8, 128, 4, None), (8, 128, 4, 128), (1, 1)),
    (8, 100, True): ((8, 128, 4, None), (8, 128, 4, 128), (1, 1)),
    (8, 128, True): ((8, 128, 4, None), (8, 128, 4, 128), (1, 1)),
    (8, 192, True): ((8, 256, 4, None), (8, 64, 4, 128), (1, 1)),
    (8, 256, True): ((8, 256, 4, None), (8, 256, 4, 128), (1, 1)),
    (8, 384, True): ((4, 512, 4, None), (8, 128, 4, 128), (1, 1)),
    (8, 512, True): ((4, 512, 4, None), (4, 512, 4, 128), (1, 1)),
    (8, 640, True): ((2, 1024, 4, None), (8, 128, 4, 128), (1, 1)),
    (8, 768, True): ((2, 1024, 4, None), (8, 256, 4, 128), (1, 1)),
    (8, 1000, True): ((2, 1024, 4, None), (2, 1024, 4, 128), (1, 1)),
    (8, 1024, True): ((2, 1024, 4, None), (2, 1024, 4, 128), (1, 1)),
    (8, 1280, True): ((4, 2048, 8, 40), (8, 256, 4, 128), (1, 1)),
    (8, 1536, True): ((4, 2048, 8, 40), (4, 512, 4, 128), (1, 1)),
    (8, 2048, True): ((4, 2048, 8, 40), (2, 1024, 4, 128), (1, 1)),
    (8, 2560, True): ((2, 4096, 16, 40), (4, 512, 4, 128), (1, 1)),
    (8, 3072, True): ((2, 4096, 16, 40), (2, 1024, 4, 128), (1, 1)),
    (8, 4096, True): ((2, 4096, 16, 40), (2, 1024, 4, 128), (1, 1)),
    (8, 5120, True): ((2, 4096, 16, 40), (2, 1024, 4, 128), (1, 1)),
    (8, 6144, True): ((2, 4096, 16, 40), (2, 1024, 4, 128), (1, 1)),
    (8, 8192, True): ((2, 4096, 16, 40), (2, 1024, 4, 128), (1, 1)),
    (8, 12288, True): ((2, 4096, 16, 40), (2, 1024, 4, 128), (1, 1)),
    (8, 16384, True): ((2, 4096, 16, 40), (2, 1024, 4, 128), (1, 1)),
    (4096, 64, True): ((32, 64, 4, None), (32, 64, 4, 128), (16, 32)),
    (4096, 96, True): ((16, 128, 4, None), (16, 128, 4, 128), (16, 64)),
    (4096, 100, True): ((16, 128, 4, None), (16, 128, 4, 128), (16, 64)),
    (4096, 128, True): ((16, 128, 4, None), (16, 128, 4, 128), (16, 64)),
    (4096, 192, True): ((8, 256, 4, None), (32, 64, 4, 128), (6, 32)),
    (4096, 256, True): ((8, 256, 4, None), (8, 256, 4, 128), (16, 128)),
    (4096, 384, True): ((4, 512, 4, None), (16, 128, 4, 128), (6, 64)),
    (4096, 512, True): ((4, 512, 4, None), (4, 512, 4, 128), (16, 256)),
    (4096, 640, True): ((2, 1024, 4, None), (16, 128, 4, 128), (4, 64)),
    (4096, 768, True): ((2, 1024, 4, None), (8, 256, 4, 128), (6, 128)),
    (4096, 1000, True): ((2, 1024, 4, None), (2, 1024, 4, 128), (16, 512)),
    (4096, 1024, True): ((2, 1024, 4, None), (2, 1024, 4, 128), (16, 512)),
    (4096, 1280, True): ((4, 2048, 8, 40), (8, 256, 4, 128), (4, 106)),
    (4096, 1536, True): ((4, 2048, 8, 40), (4, 512, 4, 128), (6, 176)),
    (4096, 2048, True): ((4, 2048, 8, 40), (2, 1024, 4, 128), (8, 264)),
    (4096, 2560, True): ((2, 4096, 16, 40), (4, 512, 4, 128), (4, 106)),
    (4096, 3072, True): ((2, 4096, 16, 40), (2, 1024, 4, 128), (6, 176)),
    (4096, 4096, True): ((2, 4096, 16, 40), (2, 1024, 4, 128), (4, 132)),
    (4096, 5120, True): ((2, 4096, 16, 40), (2, 1024, 4, 128), (4, 106)),
    (4096, 6144, True): ((2, 4096, 16, 40), (2, 1024, 4, 128), (3, 88)),
    (4096, 8192, True): ((2, 4096, 16, 40), (2, 1024, 4, 128), (2, 66)),
    (4096, 12288, True): ((2, 4096, 16, 40), (2, 1024, 4, 128), (2, 44)),
    (4096, 16384, True): ((2, 4096, 16, 40), (2, 1024, 4, 128), (1, 33)),
    (65536, 64, True): ((32, 64, 4, None), (32, 64, 4, 128), (16, 512)),
    (65536, 96, True): ((16, 128, 4, None), (16, 128, 4, 128), (16, 528)),
    (65536, 100, True): ((16, 128, 4, None), (16, 128, 4, 128), (16, 528)),
    (65536, 128, True): ((16, 128, 4, None), (16, 128, 4, 128), (16, 528)),
    (65536, 192, True): ((8, 256, 4, None), (32, 64, 4, 128), (6, 176)),
    (65536, 256, True): ((8, 256, 4, None), (8, 256, 4, 128), (16, 528)),
    (65536, 384, True): ((4, 512, 4, None), (16, 128, 4, 128), (6, 176)),
    (65536, 512, True): ((4, 512, 4, None), (4, 512, 4, 128), (16, 528)),
    (65536, 640, True): ((2, 1024, 4, None), (16, 128, 4, 128), (4, 106)),
    (65536, 768, True): ((2, 1024, 4, None), (8, 256, 4, 128), (6, 176)),
    (65536, 1000, True): ((2, 1024, 4, None), (2, 1024, 4, 128), (16, 528)),
    (65536, 1024, True): ((2, 1024, 4, None), (2, 1024, 4, 128), (16, 528)),
    (65536, 1280, True): ((4, 2048, 8, 40), (8, 256, 4, 128), (4, 106)),
    (65536, 1536, True): ((4, 2048, 8, 40), (4, 512, 4, 128), (6, 176)),
    (65536, 2048, True): ((4, 2048, 8, 40), (2, 1024, 4, 128), (8, 264)),
    (65536, 2560, True): ((2, 4096, 16, 40), (4, 512, 4, 128), (4, 106)),
    (65536, 3072, True): ((2, 4096, 16, 40), (2, 1024, 4, 128), (6, 176)),
    (65536, 4096, True): ((2, 4096, 16, 40), (2, 1024, 4, 128), (4, 132)),
    (65536, 5120, True): ((2, 4096, 16, 40), (2, 1024, 4, 128), (4, 106)),
    (65536, 6144, True): ((2, 4096, 16, 40), (2, 1024, 4, 128), (3, 88)),
    (65536, 8192, True): ((2, 4096, 16, 40), (2, 1024, 4, 128), (2, 66)),
    (65536, 12288, True): ((2, 4096, 16, 40), (2, 1024, 4, 128), (2, 44)),
    (65536, 16384, True): ((2, 4096, 16, 40), (2, 1024, 4, 128), (1, 33)),
}
OWN_TUNING = {"erf": ERF}
SMS = (4, 132)


@pytest.mark.parametrize("fn", ALL_FUNCTIONS)
def test_heuristic_returns_the_measured_tiles(fn):
    expected_table = {**SHARED, **OWN_TUNING.get(fn, {})}
    for (rows, cols, channels_last), (fwd, bwd, programs) in expected_table.items():
        for sms, bwd_programs in zip(SMS, programs, strict=True):
            got_fwd = choose_blocks(rows, cols, "fwd", channels_last, fn, sms)
            got_bwd = choose_blocks(rows, cols, "bwd", channels_last, fn, sms)
            assert got_fwd == Blocks(*fwd, None), (fn, rows, cols, channels_last)
            assert got_bwd == Blocks(*bwd, bwd_programs), (fn, rows, cols, channels_last, sms)


def test_every_function_with_its_own_tuning_has_its_table():
    assert {fn for fn, _ in FUNCTION_TUNING} <= set(OWN_TUNING)


def test_heuristic_is_pure_and_memoised():
    with pytest.raises(TypeError):
        FUNCTION_TUNING[("tanh", True)] = Overrides()  # read-only: the heuristic has no knobs to change
    with pytest.raises(dataclasses.FrozenInstanceError):
        Overrides().fwd_tile = 1
    choose_blocks.cache_clear()
    first = choose_blocks(4096, 768, "bwd", True, "tanh", 132)
    assert choose_blocks(4096, 768, "bwd", True, "tanh", 132) is first
    assert choose_blocks.cache_info().hits == 1
    with pytest.raises(ValueError, match="stage"):
        choose_blocks(4096, 768, "both", True, "tanh", 132)


def test_overrides_set_the_tiles_they_name():
    knobs = Overrides(bwd_tile=4096, bwd_max_cols_block=512, bwd_cols_mode="cover", bwd_warps=8, programs_per_sm=2)
    assert choose_blocks(50432, 768, "bwd", True, "tanh", 132, knobs) == Blocks(8, 512, 8, None, 132)
    assert choose_blocks(50432, 768, "fwd", True, "tanh", 132, Overrides(fwd_block_r=3, fwd_block_l=256)) == \
        Blocks(3, 256, 4, None)
    assert choose_blocks(4096, 1024, "bwd", True, "tanh", 132, Overrides(min_iters_per_program=64)).programs == 32


def test_second_stage_blocks():
    assert finish_blocks(768, 528) == (32, 256, 8192)
    assert finish_blocks(6, 3) == (8, 4, 8192)


def test_device_tuning_by_device_name_and_its_merge_under_a_functions_own():
    from dyt_bench.ops.triton.blocks import DEFAULT_DEVICE, DEVICE_TUNING, NO_OVERRIDES, kind_of_device, merge, tuning

    assert kind_of_device("NVIDIA H200") == "h200" and kind_of_device("NVIDIA H100 80GB HBM3") == "h100"
    assert kind_of_device("NVIDIA A100-SXM4-80GB") == DEFAULT_DEVICE == kind_of_device("")
    # an unknown device takes the shared constants: the same tiles as with no device named
    for shape in ((50432, 768), (32768, 4096), (32768, 3136)):
        for stage in ("fwd", "bwd"):
            assert choose_blocks(*shape, stage, True, "tanh", 132, None, "some-gpu") == \
                choose_blocks(*shape, stage, True, "tanh", 132)
    # merge: the top's values where set, the base's elsewhere; a function's own tuning wins over the device's
    base, top = Overrides(bwd_tile=4096, bwd_warps=8), Overrides(bwd_warps=4, bwd_maxnreg=128)
    assert merge(base, top) == Overrides(bwd_tile=4096, bwd_warps=4, bwd_maxnreg=128)
    assert merge(NO_OVERRIDES, top) == top and merge(base, NO_OVERRIDES) == base
    for kind, knobs in DEVICE_TUNING.items():
        erf = tuning("erf", True, kind)
        assert erf.bwd_maxnreg == FUNCTION_TUNING[("erf", True)].bwd_maxnreg
        assert tuning("tanh", True, kind) == knobs or knobs is NO_OVERRIDES
        if knobs.bwd_tile is not None:  # a device's knob reaches the heuristic
            assert choose_blocks(50432, 768, "bwd", True, "tanh", 132, None, kind).block_r * \
                choose_blocks(50432, 768, "bwd", True, "tanh", 132, None, kind).block_l == knobs.bwd_tile


def test_h200_tuning_reaches_the_tiles_it_names_and_no_others():
    """The H200 entry (benchmarks/ops.py --sweep-device): 4096-element forward tiles where the tile is not a wide token
    tile, 512-column backward blocks on feature maps of 8192+ positions; wide token tiles, token backward tiles and
    short maps keep the shared constants."""
    from dyt_bench.ops.triton.blocks import BWD_LONG_MAP_COLS

    def both(*args):
        return choose_blocks(*args, 132, None, "h200"), choose_blocks(*args, 132, None, "default")

    h200, default = both(50432, 768, "fwd", True, "tanh")  # tokens, one 1024-column masked block: narrow
    assert h200.block_r * h200.block_l == 4096 and default.block_r * default.block_l == 2048
    assert h200.block_l == default.block_l and h200.num_warps == default.num_warps
    h200, default = both(128 * 256, 56 * 56, "fwd", False, "tanh")  # feature maps: 2048-column blocks, 2 rows
    assert (h200.block_r, h200.block_l) == (2, 2048) and (default.block_r, default.block_l) == (1, 2048)
    assert both(32768, 4096, "fwd", True, "tanh")[0] == both(32768, 4096, "fwd", True, "tanh")[1]  # wide: unchanged
    assert both(50432, 768, "bwd", True, "tanh")[0] == both(50432, 768, "bwd", True, "tanh")[1]
    h200, default = both(64 * 96, 112 * 112, "bwd", False, "tanh")
    assert 112 * 112 >= BWD_LONG_MAP_COLS and (h200.block_l, default.block_l) == (512, 256)
    assert h200.block_r * h200.block_l == default.block_r * default.block_l == 2048  # the same tile, reshaped
    assert both(128 * 256, 56 * 56, "bwd", False, "tanh")[0] == both(128 * 256, 56 * 56, "bwd", False, "tanh")[1]
    # a sweep's Overrides still see exactly what they set (the device's tuning is left out)
    knobs = Overrides(fwd_tile=2048)
    assert choose_blocks(50432, 768, "fwd", True, "tanh", 132, knobs, "h200") == \
        choose_blocks(50432, 768, "fwd", True, "tanh", 132, knobs, "default")
