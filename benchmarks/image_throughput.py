"""Training throughput (images/s) of image classifiers with their baseline norm, DyT through the fused Triton op, and
DyT eager, in the same run, on synthetic data.

    python benchmarks/image_throughput.py --models vit_base_patch16_224 convnext_base resnet50 --batch 256
    python benchmarks/image_throughput.py --models vit_base_patch16_224 --compile
    DYT_BENCH_COMPILED_FORWARD=custom_op python benchmarks/image_throughput.py --compile --variants dyt-auto

Each step is a full training step (forward, backward, AdamW) under bf16 autocast, channels-last memory, on random
224×224 images; the timed steps follow warm-up steps. Prints a markdown table (and writes it with --output).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import time

import torch
import torch.nn.functional as F

from dyt_bench.models.image import build_image_model
from dyt_bench.norms import NormSpec, replace_norms

BASELINE = {"resnet": "batchnorm", "vgg": "batchnorm"}


def baseline_kind(name: str) -> str:
    return next((kind for prefix, kind in BASELINE.items() if name.startswith(prefix)), "layernorm")


def measure(model_name: str, spec: NormSpec | None, batch: int, steps: int, warmup: int, img_size: int,
            compile_model: bool) -> tuple[float, float]:
    """(images per second, peak GiB) of training ``model_name`` with the norm ``spec`` (None: as built)."""
    torch.manual_seed(0)
    model = build_image_model(model_name, num_classes=1000, img_size=img_size, in_chans=3)
    if spec is not None:
        replace_norms(model, spec)
    model = model.cuda().to(memory_format=torch.channels_last).train()
    if compile_model:
        model = torch.compile(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x = torch.randn(batch, 3, img_size, img_size, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device="cuda")

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30
    return batch * steps / elapsed, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["vit_base_patch16_224", "convnext_base", "resnet50"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--compile", action="store_true", help="torch.compile each model")
    parser.add_argument("--variants", nargs="+", default=["baseline", "dyt-auto", "dyt-eager"],
                        choices=["baseline", "dyt-auto", "dyt-triton", "dyt-eager"],
                        help="norms to time (baseline: the model's own; dyt-auto: the op's impl='auto')")
    parser.add_argument("--output", help="also write the markdown table here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    specs = {"baseline": None, "dyt-auto": NormSpec("dyt", impl="auto"), "dyt-triton": NormSpec("dyt", impl="triton"),
             "dyt-eager": NormSpec("dyt", impl="eager")}
    variants = [(label, specs[label]) for label in args.variants]
    lines = [
        f"GPU: {torch.cuda.get_device_name()}; torch {torch.__version__}; python {platform.python_version()}; "
        f"batch {args.batch}, {args.img_size}×{args.img_size}, bf16 autocast, channels-last, "
        f"{'torch.compile, ' if args.compile else ''}{args.steps} timed steps after {args.warmup} warm-up"
        + (f", compiled forward {os.environ.get('DYT_BENCH_COMPILED_FORWARD', 'decomposed')}" if args.compile else ""),
        "",
        "| model | norm | images/s | vs baseline | peak GiB |",
        "|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for name in args.models:
        base = None
        for label, spec in variants:
            try:
                ips, peak = measure(name, spec, args.batch, args.steps, args.warmup, args.img_size, args.compile)
            except Exception as err:  # one variant failing (e.g. out of memory) must not hide the others
                line = f"| {name} | {label} | failed: {type(err).__name__}: {str(err)[:80]} | | |"
            else:
                base = ips if spec is None else base
                norm = baseline_kind(name) if spec is None else label
                rel = f"{ips / base:.3f}×" if base else ""
                line = f"| {name} | {norm} | {ips:,.0f} | {rel} | {peak:.1f} |"
            lines.append(line)
            print(line, flush=True)
            gc.collect()
            torch.cuda.empty_cache()
    if args.output:
        with open(args.output, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
