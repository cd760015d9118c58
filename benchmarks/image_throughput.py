"""Training throughput (images/s) of image classifiers with their baseline norm, DyT through the fused Triton op, and
DyT eager, in the same run, on synthetic data.

    python benchmarks/image_throughput.py --models vit_base_patch16_224 convnext_base resnet50 --batch 256
    python benchmarks/image_throughput.py --models vit_base_patch16_224 --compile
    python benchmarks/image_throughput.py --compile --variants baseline dyt-auto-decomposed dyt-auto-inductor

Each step is a full training step (forward, backward, AdamW) under bf16 autocast, channels-last memory, on random
224×224 images. Every variant's model is built first; after warm-up, each round times every variant in turn (the order
reversed every other round) and the table gives the median images/s over rounds, so a drift in clocks or in host load
falls on all variants alike. Prints a markdown table (and writes it with --output); ``--profile`` adds one profiled
step per variant (GPU busy against wall time, kernel count, the top GPU and host entries).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from dyt_bench.models.image import build_image_model
from dyt_bench.norms import NormSpec, replace_norms

BASELINE = {"resnet": "batchnorm", "vgg": "batchnorm"}
COMPILED_FORWARD_ENV = "DYT_BENCH_COMPILED_FORWARD"  # dyt_bench.ops.triton.op.compiled_forward
# variants that pin how the op enters a compiled graph (the others take the environment's choice)
COMPILED_MODES = {"dyt-auto-inductor": "inductor", "dyt-auto-custom-op": "custom_op", "dyt-auto-decomposed": "decomposed"}
PYTHON_NODE = "dyt-auto-pynode"  # impl="auto" with the op's C++ autograd node off (dyt_bench.ops.triton.native)


def select_node(label: str) -> None:
    """The op's C++ autograd node on for every variant but ``dyt-auto-pynode`` (set before each of its steps)."""
    from dyt_bench.ops.triton import native

    native.set_enabled(label != PYTHON_NODE)


def baseline_kind(name: str) -> str:
    return next((kind for prefix, kind in BASELINE.items() if name.startswith(prefix)), "layernorm")


class Trainer:
    """One model with one norm, ready to take training steps on a fixed synthetic batch."""

    def __init__(self, model_name: str, spec: NormSpec | None, batch: int, img_size: int, compile_model: bool):
        torch.manual_seed(0)
        model = build_image_model(model_name, num_classes=1000, img_size=img_size, in_chans=3)
        if spec is not None:
            replace_norms(model, spec)
        model = model.cuda().to(memory_format=torch.channels_last).train()
        self.model = torch.compile(model) if compile_model else model
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        self.x = torch.randn(batch, 3, img_size, img_size, device="cuda").contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(0, 1000, (batch,), device="cuda")
        self.batch = batch

    def step(self) -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def images_per_s(self, steps: int) -> tuple[float, float]:
        """(images per second over ``steps`` steps, the steps' peak memory above what was resident before, GiB)."""
        torch.cuda.synchronize()
        resident = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        return self.batch * steps / elapsed, (torch.cuda.max_memory_allocated() - resident) / 2**30


def profile_step(trainer: Trainer, label: str) -> str:
    """One profiled step: GPU busy time against wall time, kernel count, and the top host and GPU entries."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        trainer.step()
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    events = prof.key_averages()
    on_gpu = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]  # kernels and copies only (an
    # operator's row repeats the device time of the kernels it launched)
    gpu_ms = sum(e.self_device_time_total for e in on_gpu) / 1e3
    kernels = sum(e.count for e in on_gpu)
    return "\n".join([
        f"### profile, {label}: wall {1e3 * wall:.1f} ms (profiler on), GPU busy {gpu_ms:.1f} ms, {kernels} GPU "
        "kernels and copies", "",
        events.table(sort_by="self_device_time_total", row_limit=10, max_name_column_width=60),
        events.table(sort_by="self_cpu_time_total", row_limit=10, max_name_column_width=60)])


def measure_interleaved(trainers: dict, steps: int, warmup: int, rounds: int) -> dict[str, tuple[float, float]]:
    """{label: (median images/s over rounds, step peak GiB above resident memory)}: every round times each variant for
    ``steps`` steps, in turn, so a drift of clocks or of the host (another process) falls on all variants alike."""
    for label, trainer in trainers.items():
        mode = COMPILED_MODES.get(label)  # read by the op when the graph is traced: in the first warm-up step
        saved = os.environ.get(COMPILED_FORWARD_ENV)
        if mode:
            os.environ[COMPILED_FORWARD_ENV] = mode
        try:
            select_node(label)
            for _ in range(warmup):
                trainer.step()
        finally:
            if mode and saved is None:
                del os.environ[COMPILED_FORWARD_ENV]
            elif mode:
                os.environ[COMPILED_FORWARD_ENV] = saved
    runs: dict[str, list[tuple[float, float]]] = {label: [] for label in trainers}
    for r in range(rounds):
        order = list(trainers) if r % 2 == 0 else list(reversed(trainers))  # ABC CBA ...: no variant always first
        for label in order:
            select_node(label)
            runs[label].append(trainers[label].images_per_s(steps))
    return {label: (statistics.median(ips for ips, _ in v), max(peak for _, peak in v)) for label, v in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["vit_base_patch16_224", "convnext_base", "resnet50"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; each times every variant in turn (median)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--compile", action="store_true", help="torch.compile each model")
    parser.add_argument("--variants", nargs="+", default=["baseline", "dyt-auto", "dyt-eager"],
                        choices=["baseline", "dyt-auto", "dyt-triton", "dyt-eager", PYTHON_NODE, *COMPILED_MODES],
                        help="norms to time (baseline: the model's own; dyt-auto: the op's impl='auto'; "
                             "dyt-auto-pynode: the same with its Python autograd node, not the C++ one; "
                             "dyt-auto-MODE: the same, entering a compiled graph as MODE says)")
    parser.add_argument("--profile", action="store_true", help="also profile one step of each variant")
    parser.add_argument("--output", help="also write the markdown table here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    specs = {"baseline": None, "dyt-auto": NormSpec("dyt", impl="auto"), "dyt-triton": NormSpec("dyt", impl="triton"),
             "dyt-eager": NormSpec("dyt", impl="eager")} | {label: NormSpec("dyt", impl="auto")
                                                           for label in (*COMPILED_MODES, PYTHON_NODE)}
    variants = [(label, specs[label]) for label in args.variants]
    lines = [
        f"GPU: {torch.cuda.get_device_name()}; torch {torch.__version__}; python {platform.python_version()}; "
        f"batch {args.batch}, {args.img_size}×{args.img_size}, bf16 autocast, channels-last, "
        f"{'torch.compile, ' if args.compile else ''}median of {args.rounds} rounds of {args.steps} steps per variant, "
        f"variants interleaved, after {args.warmup} warm-up steps"
        + (f", compiled forward {os.environ.get('DYT_BENCH_COMPILED_FORWARD', 'decomposed')}" if args.compile else ""),
        "",
        "| model | norm | images/s | vs baseline | step peak GiB above resident |",
        "|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    profiles = []
    for name in args.models:
        trainers, failed = {}, {}
        for label, spec in variants:
            try:
                trainers[label] = Trainer(name, spec, args.batch, args.img_size, args.compile)
            except Exception as err:  # one variant failing (e.g. out of memory) must not hide the others
                failed[label] = f"{type(err).__name__}: {str(err)[:80]}"
        try:
            results = measure_interleaved(trainers, args.steps, args.warmup, args.rounds)
        except Exception as err:
            results, failed = {}, {label: f"{type(err).__name__}: {str(err)[:80]}" for label in trainers} | failed
        base = results.get("baseline", (None,))[0]
        for label, spec in variants:
            norm = baseline_kind(name) if spec is None else label
            if label in results:
                ips, peak = results[label]
                rel = f"{ips / base:.3f}×" if base else ""
                line = f"| {name} | {norm} | {ips:,.0f} | {rel} | {peak:.1f} |"
            else:
                line = f"| {name} | {norm} | failed: {failed.get(label, '')} | | |"
            lines.append(line)
            print(line, flush=True)
        if args.profile:
            for label, trainer in trainers.items():
                select_node(label)
                profiles.append(profile_step(trainer, f"{name} {label}"))
                print(profiles[-1], flush=True)
        del trainers
        gc.collect()
        torch.cuda.empty_cache()
    if args.output:
        with open(args.output, "w") as f:
            f.write("\n".join(lines + [""] + profiles) + "\n")


if __name__ == "__main__":
    main()
