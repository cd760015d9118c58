"""wav2vec 2.0 pretraining: training throughput (seconds of audio per second) of Base pre-norm and post-norm with
LayerNorm and DyT (Triton op), then a short fixed-step run of each with its loss curve, on synthetic speech-like audio.

    python benchmarks/speech_step.py                          # H100: Base, 4 variants, throughput + 300-step curves
    python benchmarks/speech_step.py --with-eager             # also DyT through the eager op
    python benchmarks/speech_step.py --root /data/LibriSpeech # curves on LibriSpeech dev-clean instead
    python benchmarks/speech_step.py --smoke                  # CPU check: tiny model, 2 timed steps, 6-step curves

A step is a full training step of the wav2vec 2.0 objective (masks and 100 distractors drawn by transformers'
helpers, forward, backward, AdamW) under bf16 autocast, on one GPU's share of the Base recipe's batch (87.5 s of
audio, crops of at most 250k samples, crop-to-shortest batches). Prints markdown tables (and writes them, with the
curves as CSV, under --output).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import time

import torch

from dyt_bench.datamodules import AudioDataModule
from dyt_bench.tasks import OptimConfig, SpeechPretraining
from dyt_bench.tasks.optim import lr_lambda
from dyt_bench.tasks.speech import LN2, gumbel_temperature

VARIANTS = {  # name → (pre_norm, norm spec)
    "post-LN": (False, {"kind": "layernorm"}),
    "post-DyT": (False, {"kind": "dyt", "impl": "auto"}),
    "pre-LN": (True, {"kind": "layernorm"}),
    "pre-DyT": (True, {"kind": "dyt", "impl": "auto"}),
}


def make_task(size: str, pre_norm: bool, norm: dict, smoke: bool) -> SpeechPretraining:
    torch.manual_seed(0)
    extra = dict(mask_time_length=5, feature_penalty_weight=0.0, feature_grad_scale=1.0) if smoke else {}
    return SpeechPretraining(size=size, pre_norm=pre_norm, norm=norm, optim=OptimConfig(lr=5e-4, weight_decay=0.01),
                             **extra)


def batches(args, split: str, count: int) -> list[dict[str, torch.Tensor]]:
    """The first ``count`` batches of the synthetic corpus (or LibriSpeech with --root), as the Base recipe batches."""
    if args.root:
        dm = AudioDataModule(source="librispeech", root=args.root, train_splits=["dev-clean"], val_splits=["dev-clean"],
                             max_sample_size=args.max_sample_size, min_sample_size=args.min_sample_size,
                             max_batch_seconds=args.batch_seconds)
    else:
        dm = AudioDataModule(source="synthetic", synthetic_samples=max(64, 8 * count),
                             synthetic_val_samples=max(16, 4 * count), synthetic_min_seconds=args.min_seconds,
                             synthetic_max_seconds=args.max_seconds, max_sample_size=args.max_sample_size,
                             min_sample_size=args.min_sample_size, max_batch_seconds=args.batch_seconds)
    dm.setup()
    loader = dm.train_dataloader() if split == "train" else dm.val_dataloader()
    return list(itertools.islice(itertools.cycle(loader), count))


def train_step(task, optimizer, scheduler, batch, device, step: int) -> dict[str, float]:
    task.net.set_gumbel_temperature(gumbel_temperature(step, *task.gumbel))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        parts = task.compute_losses(batch)
    parts["loss"].backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()
    return parts


def throughput(args, name: str, device, data) -> dict:
    pre_norm, norm = VARIANTS[name]
    task = make_task(args.size, pre_norm, norm, args.smoke).to(device).train()
    optimizer = torch.optim.AdamW(task.parameter_groups(), lr=5e-4, betas=(0.9, 0.98), eps=1e-6)
    data = [{k: v.to(device) for k, v in b.items()} for b in data]
    for i in range(args.warmup):
        train_step(task, optimizer, None, data[i % len(data)], device, i)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    audio = 0.0
    start = time.perf_counter()
    for i in range(args.steps):
        batch = data[i % len(data)]
        train_step(task, optimizer, None, batch, device, i)
        audio += float(batch["lengths"].sum()) / 16000
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"variant": name, "norm": task.norm_spec.label(), "step_ms": 1000 * elapsed / args.steps,
            "audio_s_per_s": audio / elapsed, "peak_gib": peak,
            "params_m": sum(p.numel() for p in task.parameters()) / 1e6}


def curve(args, name: str, device, train, val) -> list[tuple[int, float, float, float]]:
    """(step, train contrastive bits, val loss bits, val contrastive bits) every --eval-every steps."""
    pre_norm, norm = VARIANTS[name]
    task = make_task(args.size, pre_norm, norm, args.smoke).to(device).train()
    optimizer = torch.optim.AdamW(task.parameter_groups(), lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    warmup = max(1, args.curve_steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_lambda(s, args.curve_steps, warmup, "linear", 0.0))
    train = [{k: v.to(device) for k, v in b.items()} for b in train]
    val = [{k: v.to(device) for k, v in b.items()} for b in val]

    def evaluate() -> tuple[float, float]:
        task.eval()
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            parts = [task.compute_losses(b, seed=i) for i, b in enumerate(val)]
        task.train()
        n = sum(float(p["n_masked"]) for p in parts)
        loss = sum(float(p["loss"]) * float(p["n_masked"]) for p in parts) / n / LN2
        contrastive = sum(float(p["contrastive"]) * float(p["n_masked"]) for p in parts) / n / LN2
        return loss, contrastive

    rows, recent = [], []
    for step in range(args.curve_steps + 1):
        if step % args.eval_every == 0 or step == args.curve_steps:
            val_loss, val_contrastive = evaluate()
            train_c = sum(recent) / len(recent) if recent else float("nan")
            rows.append((step, train_c, val_loss, val_contrastive))
            print(f"  {name} step {step}: train contrastive {train_c:.3f}, val loss {val_loss:.3f}, "
                  f"val contrastive {val_contrastive:.3f} (bits)", flush=True)
            recent = []
        if step == args.curve_steps:
            break
        parts = train_step(task, optimizer, scheduler, train[step % len(train)], device, step)
        value = float(parts["contrastive"]) / LN2
        if not math.isfinite(value):
            rows.append((step, value, float("nan"), float("nan")))
            print(f"  {name} diverged at step {step}")
            break
        recent.append(value)
    return rows


def environment(device) -> str:
    import transformers

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    return (f"device: {gpu}; torch {torch.__version__}, transformers {transformers.__version__}, "
            f"triton {triton_version}, CUDA {torch.version.cuda}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="base", choices=["base", "large", "tiny"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--with-eager", action="store_true", help="also time DyT through the eager op")
    parser.add_argument("--batch-seconds", type=float, default=87.5, help="audio per batch (Base: 1.4M samples)")
    parser.add_argument("--max-sample-size", type=int, default=250000)
    parser.add_argument("--min-sample-size", type=int, default=32000)
    parser.add_argument("--min-seconds", type=float, default=1.5, help="synthetic utterance lengths")
    parser.add_argument("--max-seconds", type=float, default=17.0)
    parser.add_argument("--steps", type=int, default=20, help="timed steps (0: no throughput table)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--curve-steps", type=int, default=300, help="steps of each fixed-step run (0: none)")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--lr", type=float, default=5e-4, help="peak lr of the fixed-step runs (10%% warmup)")
    parser.add_argument("--root", help="a LibriSpeech folder: run the curves on its dev-clean instead")
    parser.add_argument("--output", help="write the tables (speech_step.md) and curves (speech_curves.csv) here")
    parser.add_argument("--smoke", action="store_true", help="tiny model, short audio, a few steps; runs on CPU")
    args = parser.parse_args()
    if args.smoke:
        args.size, args.batch_seconds, args.max_sample_size, args.min_sample_size = "tiny", 4.0, 16000, 8000
        args.min_seconds, args.max_seconds, args.steps, args.warmup = 0.75, 1.0, 2, 1
        args.curve_steps, args.eval_every = min(args.curve_steps, 6), 3
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.smoke:
        raise SystemExit("this benchmark needs a CUDA GPU (or --smoke)")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    if args.with_eager:
        VARIANTS["post-DyT-eager"] = (False, {"kind": "dyt", "impl": "eager"})
        VARIANTS["pre-DyT-eager"] = (True, {"kind": "dyt", "impl": "eager"})
        args.variants += ["post-DyT-eager", "pre-DyT-eager"]
    env = environment(device)
    print(env, flush=True)

    data = batches(args, "train", 4)
    shapes = ", ".join(f"{tuple(b['input_values'].shape)}" for b in data)
    lines = [f"# wav2vec 2.0 {args.size} pretraining step", "", env, "",
             f"batches (utterances × samples at 16 kHz, cycled): {shapes}; {args.steps} timed steps after "
             f"{args.warmup} warm-up; bf16 autocast; AdamW", "",
             "| variant | norm | params (M) | step (ms) | audio s / s | peak (GiB) |", "|---|---|---|---|---|---|"]
    for name in args.variants if args.steps > 0 else []:
        r = throughput(args, name, device, data)
        lines.append(f"| {r['variant']} | {r['norm']} | {r['params_m']:.2f} | {r['step_ms']:.1f} | "
                     f"{r['audio_s_per_s']:.0f} | {r['peak_gib']:.1f} |")
        print(lines[-1], flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()

    curves = {}
    if args.curve_steps > 0:
        train = batches(args, "train", min(args.curve_steps, 64))
        val = batches(args, "val", 4)
        for name in [v for v in args.variants if not v.endswith("eager")]:
            curves[name] = curve(args, name, device, train, val)
        steps = [row[0] for row in next(iter(curves.values()))]
        lines += ["", f"## Fixed-step runs: val loss / val contrastive (bits per masked frame), {args.curve_steps} "
                  f"steps, peak lr {args.lr:g} (linear warmup {max(1, args.curve_steps // 10)} steps, linear decay), "
                  f"{'LibriSpeech dev-clean' if args.root else 'synthetic audio'}", "",
                  "| step | " + " | ".join(curves) + " |", "|---|" + "---|" * len(curves)]
        for i, step in enumerate(steps):
            cells = [f"{c[i][2]:.3f} / {c[i][3]:.3f}" if i < len(c) else "—" for c in curves.values()]
            lines.append(f"| {step} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print("\n" + table)
    if args.output:
        os.makedirs(args.output, exist_ok=True)
        with open(os.path.join(args.output, "speech_step.md"), "w") as f:
            f.write(table + "\n")
        with open(os.path.join(args.output, "speech_curves.csv"), "w") as f:
            f.write("variant,step,train_contrastive_bits,val_loss_bits,val_contrastive_bits\n")
            for name, rows in curves.items():
                f.writelines(f"{name},{s},{a:.5f},{b:.5f},{c:.5f}\n" for s, a, b, c in rows)


if __name__ == "__main__":
    main()
