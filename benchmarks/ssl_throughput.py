"""Training throughput of the self-supervised tasks, LayerNorm vs DyT: MAE ViT-B/16 (224 px, 75 % masked, 8-block
512-wide decoder) and DINO ViT-S/16 (2 × 224 px global + 10 × 96 px local crops, 65,536-prototype head, teacher EMA).

One optimizer step = the task's own forward and loss (the modules the tasks build, norms placed by the same surgery),
backward, AdamW step and, for DINO, the teacher's EMA update; bf16 autocast on CUDA. Prints a markdown table;
``--json`` / ``--markdown`` save it. ``--tiny`` runs small shapes on CPU (a check of the script, not a benchmark).

    python benchmarks/ssl_throughput.py --json results/table2_self_supervised/throughput_h200.json \
        --markdown results/table2_self_supervised/throughput_h200.md
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path


def build(method: str, kind: str, tiny: bool):
    from dyt_bench.tasks import DINOPretraining, MAEPretraining

    norm = {"kind": kind, "impl": "auto"} if kind == "dyt" else {"kind": kind}
    if method == "mae":
        if tiny:
            return MAEPretraining(model="vit_tiny_patch16_224", img_size=32, model_kwargs={"patch_size": 8},
                                  decoder={"embed_dim": 32, "depth": 1, "num_heads": 2}, norm=norm)
        return MAEPretraining(model="vit_base_patch16_224", img_size=224, norm=norm)
    if tiny:
        return DINOPretraining(model="vit_tiny_patch16_224", img_size=32, model_kwargs={"patch_size": 8},
                               head={"out_dim": 512, "hidden_dim": 64, "bottleneck_dim": 32}, norm=norm)
    return DINOPretraining(model="vit_small_patch16_224", img_size=224, norm=norm)


def step_fn(task, method: str, batch: int, tiny: bool, device):
    """A closure running one training step on random images, and the images it processes per step."""
    import torch

    from dyt_bench.models.dino import ema_update

    opt = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=1e-4, fused=device.type == "cuda")
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    size = 32 if tiny else 224
    if method == "mae":
        x = torch.randn(batch, 3, size, size, device=device)

        def step():
            with amp:
                loss = task.net(x, 0.75, True)[0]
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss
        return step, batch
    local = 16 if tiny else 96
    crops = [torch.randn(batch, 3, size, size, device=device) for _ in range(2)]
    crops += [torch.randn(batch, 3, local, local, device=device) for _ in range(10)]

    def step():
        with amp:
            with torch.no_grad():
                teacher_out = task.teacher(crops[:2])
            loss = task.loss_fn(task.student(crops), teacher_out, len(crops), 2, 0.04)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema_update(task.teacher, task.student, 0.996)
        return loss
    return step, batch


def measure(method: str, kind: str, batch: int, steps: int, warmup: int, tiny: bool) -> dict:
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() and not tiny else "cpu")
    torch.manual_seed(0)
    task = build(method, kind, tiny).to(device).train()
    step, images = step_fn(task, method, batch, tiny, device)
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    float(loss.detach())  # waits for the device
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"method": method, "norm": kind, "batch": batch, "step_ms": dt * 1e3, "images_per_s": images / dt,
            "peak_gib": peak, "norm_layers": task.norm_report.total}


def environment() -> dict:
    import timm
    import torch

    env = {"torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        env["device"] = torch.cuda.get_device_name()
        try:
            import triton

            env["triton"] = triton.__version__
        except ImportError:
            pass
    else:
        env["device"] = f"cpu ({platform.processor() or platform.machine()})"
    return env


def to_markdown(rows: list[dict], env: dict) -> str:
    lines = [f"Device: {env['device']}; torch {env['torch']}, timm {env['timm']}"
             + (f", triton {env['triton']}" if "triton" in env else ""), "",
             "| model | norm | batch | step (ms) | images/s | DyT / LN | peak memory (GiB) |",
             "|---|---|---|---|---|---|---|"]
    names = {"mae": "MAE ViT-B/16 (224, mask 0.75)", "dino": "DINO ViT-S/16 (2×224 + 10×96)"}
    for r in rows:
        base = next((b for b in rows if b["method"] == r["method"] and b["norm"] == "layernorm"), None)
        ratio = f"{r['images_per_s'] / base['images_per_s']:.3f}" if base and r["norm"] != "layernorm" else "—"
        lines.append(f"| {names[r['method']]} | {r['norm']} | {r['batch']} | {r['step_ms']:.1f} | "
                     f"{r['images_per_s']:.0f} | {ratio} | {r['peak_gib']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", nargs="+", default=["mae", "dino"], choices=["mae", "dino"])
    p.add_argument("--norms", nargs="+", default=["layernorm", "dyt"])
    p.add_argument("--mae-batch", type=int, default=256, help="images per step, MAE")
    p.add_argument("--dino-batch", type=int, default=128, help="images per step (each 12 crops), DINO")
    p.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (Triton compilation, cuDNN choice)")
    p.add_argument("--tiny", action="store_true", help="small shapes on CPU: checks the script runs")
    p.add_argument("--json", help="write the rows and the environment here")
    p.add_argument("--markdown", help="write the table here")
    args = p.parse_args(argv)
    rows = []
    for method in args.methods:
        for kind in args.norms:
            batch = args.mae_batch if method == "mae" else args.dino_batch
            rows.append(measure(method, kind, 4 if args.tiny else batch, args.steps, args.warmup, args.tiny))
            print(json.dumps(rows[-1]), flush=True)
    env = environment()
    table = to_markdown(rows, env)
    print(table)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"environment": env, "rows": rows, "args": vars(args)}, indent=2))
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
