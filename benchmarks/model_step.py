"""Model-level cost of the norm: a transformers LLaMA stack trained and run forward with RMSNorm, DyT (eager PyTorch,
Liger-Kernel, the fused Triton op) and Identity (no norm at all: the floor any norm can reach), same run, same weights.

    python benchmarks/model_step.py                                  # 8 layers, hidden 2048, 16 heads, 4 × 2048 tokens
    python benchmarks/model_step.py --layers 4 --hidden 1024 --seq 1024 --steps 10

Train step = forward + backward + fused AdamW step on bf16 weights, from input embeddings (no vocabulary, so the
norm's share is not diluted by the embedding / LM head); forward = the same forward under ``torch.no_grad``.
Times are medians of CUDA-event timings after warm-up; each variant is a fresh copy of the same initial model.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys

import torch
from torch import nn

sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__file__), ".."))

from dyt_bench.norms import NormSpec, build_norm  # noqa: E402


class EagerDyT(nn.Module):
    """DyT as the paper's code writes it: three element-wise PyTorch kernels in the input dtype."""

    def __init__(self, width: int, alpha: float = 0.5) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full((1,), alpha))
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x):
        return self.weight * torch.tanh(self.alpha * x) + self.bias


def liger_dyt(width: int):
    from liger_kernel.transformers.dyt import LigerDyT

    return LigerDyT(width, beta=True, init_alpha=0.5)


def swap_norms(model: nn.Module, make) -> int:
    """Replace every LlamaRMSNorm (attention, MLP and final norm) by ``make(width)``; returns how many."""
    count = 0
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if type(child).__name__ == "LlamaRMSNorm":
                setattr(module, child_name, make(child.weight.shape[0]))
                count += 1
    return count


def build_llama(layers: int, hidden: int, heads: int, seq: int, intermediate: int | None = None):
    from transformers import LlamaConfig, LlamaModel

    intermediate = intermediate or int(hidden * 2.75)  # 5632 at hidden 2048, as TinyLlama-1.1B
    cfg = LlamaConfig(vocab_size=256, hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=seq, attn_implementation="sdpa")
    torch.manual_seed(0)
    return LlamaModel(cfg)


def time_cuda(fn, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def measure(model: nn.Module, embeds: torch.Tensor, steps: int, warmup: int) -> tuple[float, float]:
    """(train step ms, forward ms) of ``model`` on ``embeds``."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)

    def train_step():
        out = model(inputs_embeds=embeds).last_hidden_state
        out.float().square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def forward():
        with torch.no_grad():
            model(inputs_embeds=embeds)

    result = time_cuda(train_step, steps, warmup), time_cuda(forward, steps, warmup)
    if PROFILE:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            train_step()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60))
    return result


PROFILE = False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--intermediate", type=int, default=None, help="MLP width (default 2.75 × hidden)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--markdown", help="also write the table here")
    parser.add_argument("--profile", action="store_true", help="print the top CUDA kernels of one train step")
    args = parser.parse_args(argv)
    global PROFILE
    PROFILE = args.profile
    if not torch.cuda.is_available():
        print("benchmarks/model_step.py needs a CUDA device", file=sys.stderr)
        return 2
    base = build_llama(args.layers, args.hidden, args.heads, args.seq, args.intermediate)
    variants = {
        "RMSNorm (transformers)": None,
        "DyT eager": lambda c: EagerDyT(c),
        "DyT Liger-Kernel": liger_dyt,
        "DyT ours (Triton)": lambda c: build_norm(NormSpec("dyt", alpha_init=0.5, impl="triton"), c),
        "Identity (no norm)": lambda c: nn.Identity(),
    }
    gen = torch.Generator(device="cuda").manual_seed(0)
    embeds = torch.randn(args.batch, args.seq, args.hidden, device="cuda", generator=gen).to(torch.bfloat16)
    rows = []
    for name, make in variants.items():
        model = copy.deepcopy(base)
        try:
            replaced = swap_norms(model, make) if make is not None else 0
        except ImportError as exc:
            print(f"{name}: skipped ({exc})")
            continue
        model = model.cuda().to(torch.bfloat16).train()
        train_ms, fwd_ms = measure(model, embeds, args.steps, args.warmup)
        peak = torch.cuda.max_memory_allocated() / 2**30
        rows.append((name, replaced, train_ms, fwd_ms, peak))
        print(f"{name:<24} norms replaced {replaced:3d}  train step {train_ms:8.2f} ms  forward {fwd_ms:7.2f} ms  "
              f"peak {peak:5.1f} GiB", flush=True)
        del model
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    floor = next((r for r in rows if r[0].startswith("Identity")), None)
    lines = [f"LLaMA stack: {args.layers} layers, hidden {args.hidden}, {args.heads} heads, batch {args.batch} × "
             f"{args.seq} tokens, bf16, {torch.cuda.get_device_name(0)}, torch {torch.__version__}", "",
             "| norm | train step ms | vs Identity | forward ms | vs Identity |", "|---|---|---|---|---|"]
    for name, _, train_ms, fwd_ms, _ in rows:
        rel_t = f"{100 * (train_ms / floor[2] - 1):+.1f}%" if floor else "—"
        rel_f = f"{100 * (fwd_ms / floor[3] - 1):+.1f}%" if floor else "—"
        lines.append(f"| {name} | {train_ms:.2f} | {rel_t} | {fwd_ms:.2f} | {rel_f} |")
    table = "\n".join(lines)
    print("\n" + table)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
