"""`dyt-bench fit` against a bare training loop: how much of the loop's images/s a real run keeps.

    python benchmarks/fit_vs_harness.py                                   # ViT-S/16, batch 64, DyT impl=auto
    python benchmarks/fit_vs_harness.py --model vit_base_patch16_224 --batch 128
    python benchmarks/fit_vs_harness.py --workers 0                       # the config's loader without workers
    python benchmarks/fit_vs_harness.py --smoke                           # tiny shapes on CPU: checks the script runs

The harness is a bare loop on one fixed on-device batch (forward, backward, AdamW; bf16 autocast and channels-last
memory on CUDA), as ``image_throughput.py`` times it. It runs before and after the fit, and the table gives the mean
of the two, so that drift on the machine falls on both alike. The fit is ``dyt-bench fit`` on
``configs/image/synthetic_vit_s.yaml`` (synthetic images through the real data module, Lightning's loop, the task's
logging and callbacks), in its own process. Its figure is ``result.json``'s ``steady_samples_per_s``: the first
warm-up batches are left out, data loading and queued GPU work are counted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dyt_bench.models.image import build_image_model  # noqa: E402
from dyt_bench.norms import NormSpec, replace_norms  # noqa: E402

SMOKE = {"model": "vit_tiny_patch16_224", "batch": 4, "img_size": 32, "fit_steps": 14, "steps": 2, "rounds": 2,
         "warmup": 1, "model_kwargs": {"depth": 1}}


def harness_images_per_s(model_name: str, norm: str, batch: int, img_size: int, steps: int, rounds: int, warmup: int,
                         model_kwargs: dict) -> float:
    """Median images/s over ``rounds`` of ``steps`` bare training steps on one fixed batch."""
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    torch.manual_seed(0)
    model = build_image_model(model_name, num_classes=1000, img_size=img_size, in_chans=3, **model_kwargs)
    replace_norms(model, NormSpec(norm, impl="auto") if norm == "dyt" else NormSpec(norm))
    model = model.to(device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda or None)
    x = torch.randn(batch, 3, img_size, img_size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step():
        with torch.autocast(device, dtype=torch.bfloat16, enabled=cuda):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    rates = []
    for _ in range(rounds):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize()
        rates.append(batch * steps / (time.perf_counter() - start))
    return statistics.median(rates)


def fit_images_per_s(args, model_kwargs: dict, out: Path) -> tuple[float, dict]:
    """``dyt-bench fit`` in its own process; (steady samples/s, its result.json)."""
    cuda = torch.cuda.is_available()
    cmd = [sys.executable, "-m", "dyt_bench.cli", "fit", "--config", str(ROOT / args.config),
           "--model.init_args.model", args.model, "--model.init_args.img_size", str(args.img_size),
           "--model.init_args.norm.kind", args.norm,
           "--data.init_args.img_size", str(args.img_size), "--data.init_args.batch_size", str(args.batch),
           "--trainer.max_steps", str(args.fit_steps), "--trainer.precision", "bf16-mixed" if cuda else "32",
           "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(out),
           "--trainer.logger.init_args.save_dir", str(out)]
    if model_kwargs:
        cmd += ["--model.init_args.model_kwargs", json.dumps(model_kwargs)]
    if args.workers is not None:
        cmd += ["--data.init_args.num_workers", str(args.workers)]
    if args.smoke:
        cmd += ["--data.init_args.synthetic_samples", str(4 * args.batch), "--trainer.limit_val_batches", "1"]
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    log = out / "fit.log"
    with open(log, "w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    results = sorted((p for p in out.rglob("result.json") if p.stat().st_mtime >= started),
                     key=lambda p: p.stat().st_mtime)  # this fit's, not an earlier one left in --out
    if done.returncode != 0 or not results:
        raise SystemExit(f"dyt-bench fit failed (exit {done.returncode}); its output: {log}\n{log.read_text()[-2000:]}")
    result = json.loads(results[-1].read_text())
    rate = result.get("throughput", {}).get("steady_samples_per_s")
    if rate is None:
        raise SystemExit(f"{results[-1]} has no steady_samples_per_s: raise --fit-steps above the warm-up batches")
    return rate, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_small_patch16_224")
    parser.add_argument("--norm", default="dyt", help="norm kind for both (dyt goes through impl='auto')")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--config", default="configs/image/synthetic_vit_s.yaml")
    parser.add_argument("--workers", type=int, default=None, help="override the config's data.num_workers")
    parser.add_argument("--fit-steps", type=int, default=300, help="the fit's optimizer steps")
    parser.add_argument("--steps", type=int, default=10, help="harness steps per round")
    parser.add_argument("--rounds", type=int, default=5, help="harness rounds (median)")
    parser.add_argument("--warmup", type=int, default=10, help="harness warm-up steps")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, CPU is fine: checks that the script runs")
    parser.add_argument("--out", help="keep the fit's run here (default: a temporary folder)")
    parser.add_argument("--output", help="also write the markdown table here")
    args = parser.parse_args()
    model_kwargs = {}
    if args.smoke:
        for key in ("model", "batch", "img_size", "fit_steps", "steps", "rounds", "warmup"):
            setattr(args, key, SMOKE[key])
        model_kwargs = SMOKE["model_kwargs"]
    elif not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU (use --smoke to check the script on CPU)")
    harness = [harness_images_per_s(args.model, args.norm, args.batch, args.img_size, args.steps, args.rounds,
                                    args.warmup, model_kwargs)]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        fit, result = fit_images_per_s(args, model_kwargs, out)
    harness.append(harness_images_per_s(args.model, args.norm, args.batch, args.img_size, args.steps, args.rounds,
                                        args.warmup, model_kwargs))
    mean = statistics.fmean(harness)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    data = result.get("config", {}).get("data", {}).get("init_args", {})
    lines = [
        f"`dyt-bench fit` ({args.config}, {args.fit_steps} steps, data.num_workers {data.get('num_workers')}, "
        f"pin_memory {data.get('pin_memory')}) against a bare loop (median of {args.rounds} rounds of {args.steps} "
        f"steps, before and after the fit); {device}; torch {torch.__version__}; python {platform.python_version()}"
        + (" — SMOKE (tiny shapes, not a measurement)" if args.smoke else ""), "",
        "| model | norm | batch | harness images/s (before / after) | fit steady images/s | fit / harness |",
        "|---|---|---|---|---|---|",
        f"| {args.model} | {args.norm} | {args.batch} | {mean:,.0f} ({harness[0]:,.0f} / {harness[1]:,.0f}) | "
        f"{fit:,.0f} | {fit / mean:.3f} |"]
    table = "\n".join(lines)
    print(table)
    if args.output:
        Path(args.output).write_text(table + "\n")


if __name__ == "__main__":
    main()
