"""GPU time of one norm forward + backward on a token stream stored channels-first, as a ViT / DiT patch embedding
leaves it (``flatten(2).transpose(1, 2)``: shape (B, N, C), strides (N·C, 1, N)).

    python benchmarks/token_layout.py

Per shape, with and without γ/β, bf16: DyT ``impl="auto"`` on the stream as it is (the op's channels-first view, no
copy), the same after ``.contiguous()`` (what the op did before it took that view), DyT on a contiguous stream (the
layout's cost), and ``nn.LayerNorm`` on the stream as it is. Time is the sum of the GPU kernels' own time from
``torch.profiler`` over 50 calls (after 10 warm-up calls), per call, so the host side does not enter it.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dyt_bench.norms import NormSpec, build_norm  # noqa: E402


def gpu_us(fn, calls: int = 50) -> float:
    from torch.profiler import ProfilerActivity, profile

    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    return sum(e.self_device_time_total for e in prof.key_averages()) / calls


def fwd_bwd(module, x, dy, pre=None):
    def step():
        module(x if pre is None else pre(x)).backward(dy)
        x.grad = None
        for p in module.parameters():
            p.grad = None
    return step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["128x256x384", "256x64x768"],
                        help="B x N x C (defaults: DiT-S/2 at batch 128, DiT-B/4 at batch 256)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("token_layout.py needs CUDA", file=sys.stderr)
        return 2
    for shape in args.shapes:
        b, n, c = (int(v) for v in shape.split("x"))
        for affine in (False, True):
            dyt = build_norm(NormSpec("dyt", impl="auto", affine=affine), c).cuda()
            ln = torch.nn.LayerNorm(c, elementwise_affine=affine, dtype=torch.bfloat16).cuda()
            stream = torch.randn(b, c, n, device="cuda").to(torch.bfloat16).transpose(1, 2).requires_grad_()
            dense = stream.detach().contiguous().requires_grad_()
            dy = torch.randn(b, n, c, device="cuda").to(torch.bfloat16)
            r = dict(view=gpu_us(fwd_bwd(dyt, stream, dy)),
                     copy_first=gpu_us(fwd_bwd(dyt, stream, dy, lambda t: t.contiguous())),
                     contiguous_input=gpu_us(fwd_bwd(dyt, dense, dy)),
                     layernorm=gpu_us(fwd_bwd(ln, stream, dy)))
            print(f"B,N,C={b},{n},{c} affine={affine}: GPU kernel time per fwd+bwd, us (profiler, 50 calls): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in r.items()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
