"""Training throughput (tokens/s) of HyenaDNA with LayerNorm vs DyT (Triton op, and eager) at sequence 1,024 and 32k.

    python benchmarks/hyena_step.py                       # HyenaDNA small (4 × 256), seq 1024 and 32768, on CUDA
    python benchmarks/hyena_step.py --smoke               # tiny shapes on CPU: checks the script runs

Each step is a full pretraining step (forward, next-token cross-entropy, backward, AdamW) under bf16 autocast on
random DNA tokens; the timed steps follow warm-up steps. Tokens per step are about the same at both lengths (batch
64 × 1,024 and 2 × 32,768 by default). Prints a markdown table with the hardware and versions (and writes it with
--output).
"""

from __future__ import annotations

import argparse
import gc
import platform
import time

import torch
import torch.nn.functional as F

from dyt_bench.datamodules.dna import DNA_VOCAB_SIZE
from dyt_bench.models.hyena import HyenaConfig, HyenaLM
from dyt_bench.norms import NormSpec

VARIANTS = {
    "LayerNorm": NormSpec("layernorm"),
    "DyT (triton)": NormSpec("dyt", impl="triton"),
    "DyT (eager)": NormSpec("dyt", impl="eager"),
}


def measure(size: str, spec: NormSpec, seq_len: int, batch: int, steps: int, warmup: int, device: str,
            compile_model: bool) -> tuple[float, float]:
    """(tokens per second, peak GiB) of training HyenaDNA ``size`` with norm ``spec`` at ``batch × seq_len``."""
    torch.manual_seed(0)
    cfg = HyenaConfig.from_size(size, l_max=seq_len + 2)
    model = HyenaLM(cfg, spec).to(device).train()
    if compile_model:
        model = torch.compile(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
    ids = torch.randint(7, 12, (batch, seq_len + 1), device=device)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")

    def step():
        with autocast:
            logits = model(ids[:, :-1])
            loss = F.cross_entropy(logits.float().reshape(-1, DNA_VOCAB_SIZE), ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    return batch * seq_len * steps / elapsed, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="small", help="HyenaDNA size by name (default small: 4 layers × 256)")
    parser.add_argument("--shapes", nargs="+", default=["1024x64", "32768x2"], help="SEQxBATCH pairs")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--smoke", action="store_true", help="tiny model and shapes, CPU, eager DyT only")
    parser.add_argument("--output", help="also write the markdown table here")
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    variants = args.variants
    if args.smoke:
        args.size, args.shapes, args.steps, args.warmup = "tiny", ["64x2", "256x1"], 2, 1
        variants = ["LayerNorm", "DyT (eager)"]
    elif device != "cuda":
        raise SystemExit("no CUDA device: run on a GPU, or pass --smoke for a CPU check")
    shapes = []
    for s in args.shapes:
        seq, _, batch = s.partition("x")
        shapes.append((int(seq), int(batch)))

    hw = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({platform.processor() or platform.machine()})"
    lines = [
        f"HyenaDNA-{args.size} training step, bf16 autocast{' + torch.compile' if args.compile else ''}, "
        f"{args.steps} timed steps after {args.warmup} warm-up",
        f"hardware: {hw}; torch {torch.__version__}"
        + (f", CUDA {torch.version.cuda}" if device == "cuda" else "") + f"; python {platform.python_version()}",
        "",
        "| seq len | batch | norm | tokens/s | vs LayerNorm | peak GiB |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    for seq, batch in shapes:
        base = None
        for name in variants:
            tps, peak = measure(args.size, VARIANTS[name], seq, batch, args.steps, args.warmup, device, args.compile)
            gc.collect()  # the model of the last measurement goes before the next is built
            if device == "cuda":
                torch.cuda.empty_cache()
            base = tps if name == "LayerNorm" else base
            ratio = f"{tps / base:.3f}×" if base else "–"
            lines.append(f"| {seq} | {batch} | {name} | {tps:,.0f} | {ratio} | {peak:.2f} |")
            print(lines[-1], flush=True)
    table = "\n".join(lines)
    print("\n" + table)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
