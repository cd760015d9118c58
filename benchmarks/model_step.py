"""Model-level cost of the norm: a transformers LLaMA stack trained and run forward with RMSNorm, DyT (eager PyTorch,
Liger-Kernel, the fused Triton op) and Identity (no norm at all: the floor any norm can reach), same run, same weights.

    python benchmarks/model_step.py                                  # 8 layers, hidden 2048, 16 heads, 4 × 2048 tokens
    python benchmarks/model_step.py --layers 4 --hidden 1024 --seq 1024 --steps 10
    python benchmarks/model_step.py --branch-scale 1 --gemm-probe    # transformers' init; GEMM speed by data
    python benchmarks/model_step.py --compile --variants rmsnorm auto eager   # compiled models

Train step = forward + backward + fused AdamW step on bf16 weights, from input embeddings (no vocabulary, so the
norm's share is not diluted by the embedding / LM head); forward = the same forward under ``torch.no_grad``.
Without norms, transformers' initialisation lets the residual stream grow layer over layer (the MLP is quadratic in
it) until it overflows bf16; so by default (``--branch-scale 0.1``) the residual branches' output projections of
every variant are scaled down at initialisation, which keeps the Identity stack finite, and the "finite" column says
which variants stayed finite.
Times are medians of CUDA-event timings after warm-up; each variant is a fresh copy of the same initial model.
"""

from __future__ import annotations

import argparse
import copy
import re
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


def measure(model: nn.Module, embeds: torch.Tensor, steps: int, warmup: int):
    """(train step ms, forward ms, (Triton norm kernels ms, GEMM ms) of one profiled step, whether the output and the
    weights are all finite after the steps) of ``model``."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)

    def train_step():
        out = model(inputs_embeds=embeds).last_hidden_state
        out.float().square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def forward():
        with torch.no_grad():
            model(inputs_embeds=embeds)

    times = time_cuda(train_step, steps, warmup), time_cuda(forward, steps, warmup), profile_step(train_step)
    with torch.no_grad():  # a stack without norms can overflow: its times are then those of inf / NaN arithmetic
        finite = bool(torch.isfinite(model(inputs_embeds=embeds).last_hidden_state).all()) and all(
            bool(torch.isfinite(p).all()) for p in model.parameters())
    return (*times, finite)


NORM_KERNELS = re.compile(r"_fwd_kernel|_bwd_channels_(last|first)_kernel|_finish_kernel|_dyt_(fwd|bwd)_kernel")
GEMM_KERNELS = re.compile(r"nvjet|gemm|cutlass", re.IGNORECASE)


def profile_step(train_step) -> tuple[float | None, float]:
    """GPU ms of one train step spent in the Triton norm kernels (ours, Liger's; None when there are none, as for the
    eager variants whose element-wise kernels cannot be told apart) and in matrix multiplications."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        train_step()
        torch.cuda.synchronize()
    events = prof.key_averages()
    if PROFILE:
        print(events.table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60))

    def total(pattern):
        return sum(e.device_time_total for e in events if pattern.search(e.key)) / 1e3

    norm = total(NORM_KERNELS)
    return (norm if norm > 0 else None), total(GEMM_KERNELS)


PROFILE = False
VARIANT_KEYS = ("rmsnorm", "eager", "liger", "auto", "identity")


def mlp_inputs(model: nn.Module, embeds: torch.Tensor) -> list[torch.Tensor]:
    """The inputs that the model's MLP gate projections receive in one forward (one per layer)."""
    inputs = []
    hooks = [m.register_forward_hook(lambda _m, args, _out: inputs.append(args[0].detach().clone()))
             for name, m in model.named_modules() if name.endswith("mlp.gate_proj")]
    with torch.no_grad():
        model(inputs_embeds=embeds)
    for h in hooks:
        h.remove()
    return inputs


def gemm_probe(captured: dict[str, list[torch.Tensor]], weight: torch.Tensor, rounds: int = 5,
               reps: int = 20) -> dict[str, tuple[float, float, float]]:
    """One fixed GEMM, ``x @ weight.T``, on each variant's MLP inputs (``captured``), summed over the layers: the same
    multiplication for every variant, only the data differ, so a difference in time is the data's. Variants are
    interleaved over ``rounds`` (median). Returns {variant: (ms, std of the finite inputs, % non-finite)}."""
    times: dict[str, list[float]] = {name: [] for name in captured}
    for _ in range(rounds):
        for name, inputs in captured.items():
            times[name].append(sum(time_cuda(lambda x=x: torch.matmul(x, weight.t()), reps, 3) for x in inputs))
    out = {}
    for name, inputs in captured.items():
        flat = torch.cat([x.flatten().float() for x in inputs])
        finite = torch.isfinite(flat)
        out[name] = (statistics.median(times[name]), flat[finite].std().item() if finite.any() else float("nan"),
                     100 * (1 - finite.float().mean().item()))
    return out


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
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of every variant (median)")
    parser.add_argument("--markdown", help="also write the table here")
    parser.add_argument("--profile", action="store_true", help="print the top CUDA kernels of one train step")
    parser.add_argument("--branch-scale", type=float, default=0.1,
                        help="multiply the attention and MLP output projections (o_proj, down_proj) by this at init, "
                             "for every variant; the default 0.1 keeps the stack without norms finite, so that "
                             "Identity is a floor (1: transformers' own init, under which the Identity stack "
                             "overflows bf16 from hidden 2048 on)")
    parser.add_argument("--compile", action="store_true", help="torch.compile each variant's model")
    parser.add_argument("--variants", nargs="+", choices=VARIANT_KEYS, default=list(VARIANT_KEYS),
                        help="variants to time (auto: DyT through the op's impl='auto')")
    parser.add_argument("--gemm-probe", action="store_true",
                        help="also time one fixed GEMM on each variant's MLP inputs (data-dependent GEMM speed)")
    args = parser.parse_args(argv)
    global PROFILE
    PROFILE = args.profile
    if not torch.cuda.is_available():
        print("benchmarks/model_step.py needs a CUDA device", file=sys.stderr)
        return 2
    base = build_llama(args.layers, args.hidden, args.heads, args.seq, args.intermediate)
    if args.branch_scale != 1.0:
        with torch.no_grad():
            for name, param in base.named_parameters():
                if name.endswith(("o_proj.weight", "down_proj.weight")):
                    param.mul_(args.branch_scale)
    variants = {
        "RMSNorm (transformers)": None,
        "DyT eager": lambda c: EagerDyT(c),
        "DyT Liger-Kernel": liger_dyt,
        "DyT ours (impl=auto)": lambda c: build_norm(NormSpec("dyt", alpha_init=0.5, impl="auto"), c),
        "Identity (no norm)": lambda c: nn.Identity(),
    }
    keys = dict(zip(VARIANT_KEYS, variants, strict=True))
    variants = {keys[k]: variants[keys[k]] for k in args.variants}
    gen = torch.Generator(device="cuda").manual_seed(0)
    embeds = torch.randn(args.batch, args.seq, args.hidden, device="cuda", generator=gen).to(torch.bfloat16)
    results: dict[str, list] = {name: [] for name in variants}
    captured: dict[str, list[torch.Tensor]] = {}
    probe_weight = (torch.randn(base.config.intermediate_size, args.hidden, device="cuda", generator=gen)
                    * args.hidden ** -0.5).to(torch.bfloat16)
    for rep in range(args.repeats):  # variants interleaved, so slow drifts of the card hit all of them alike
        for name, make in variants.items():
            model = copy.deepcopy(base)
            try:
                replaced = swap_norms(model, make) if make is not None else 0
            except ImportError as exc:
                print(f"{name}: skipped ({exc})")
                continue
            model = model.cuda().to(torch.bfloat16).train()
            if args.compile:
                model = torch.compile(model)
            train_ms, fwd_ms, (norm_ms, gemm_ms), finite = measure(model, embeds, args.steps, args.warmup)
            peak = torch.cuda.max_memory_allocated() / 2**30
            results[name].append((replaced, train_ms, fwd_ms, norm_ms, gemm_ms, peak, finite))
            if args.gemm_probe and rep == 0:
                captured[name] = mlp_inputs(model, embeds)
            print(f"[{rep + 1}/{args.repeats}] {name:<24} norms {replaced:3d}  train step {train_ms:8.2f} ms  forward "
                  f"{fwd_ms:7.2f} ms  Triton norm kernels {norm_ms if norm_ms is not None else float('nan'):6.2f} ms"
                  f"  GEMMs {gemm_ms:6.2f} ms  peak {peak:5.1f} GiB{'' if finite else '  NON-FINITE'}", flush=True)
            del model
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def med(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    rows = [(name, r[0][0], med([x[1] for x in r]), med([x[2] for x in r]), med([x[3] for x in r]),
             med([x[4] for x in r]), all(x[6] for x in r),
             (max(x[1] for x in r) - min(x[1] for x in r)) / med([x[1] for x in r])) for name, r in results.items() if r]
    floor = next((r for r in rows if r[0].startswith("Identity")), None)
    lines = [f"LLaMA stack: {args.layers} layers, hidden {args.hidden}, {args.heads} heads, batch {args.batch} × "
             f"{args.seq} tokens, bf16, {'torch.compile, ' if args.compile else ''}{torch.cuda.get_device_name(0)}, "
             f"torch {torch.__version__}; residual "
             f"branch output projections × {args.branch_scale:g}; median of {args.repeats} interleaved repeats of "
             f"{args.steps} steps", "",
             "| norm | train step ms | vs Identity | forward ms | vs Identity | Triton norm kernels ms / step "
             "| GEMMs ms / step | finite | train step spread over repeats |", "|---|---|---|---|---|---|---|---|---|"]
    for name, _, train_ms, fwd_ms, norm_ms, gemm_ms, finite, spread in rows:
        rel_t = f"{100 * (train_ms / floor[2] - 1):+.1f}%" if floor else "—"
        rel_f = f"{100 * (fwd_ms / floor[3] - 1):+.1f}%" if floor else "—"
        norm = f"{norm_ms:.2f}" if norm_ms is not None else "—"
        lines.append(f"| {name} | {train_ms:.2f} | {rel_t} | {fwd_ms:.2f} | {rel_f} | {norm} | {gemm_ms:.2f} "
                     f"| {'yes' if finite else '**no**'} | {100 * spread:.1f}% |")
    if captured:
        probes = gemm_probe(captured, probe_weight)
        ref = probes.get(floor[0]) if floor else None
        lines += ["", f"Fixed GEMM (x @ W.T, W {base.config.intermediate_size}×{args.hidden} random bf16, the same for "
                  f"all) on each variant's MLP inputs, summed over the {args.layers} layers; median of 5 interleaved "
                  "rounds:", "",
                  "| norm | GEMM ms | vs Identity's inputs | std of finite inputs | non-finite inputs |",
                  "|---|---|---|---|---|"]
        for name, (ms, std, bad) in probes.items():
            rel = f"{100 * (ms / ref[0] - 1):+.1f}%" if ref else "—"
            lines.append(f"| {name} | {ms:.3f} | {rel} | {std:.3g} | {bad:.1f}% |")
    table = "\n".join(lines)
    print("\n" + table)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
