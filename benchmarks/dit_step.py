"""DiT with LayerNorm vs DyT: training-step throughput on synthetic latents, and a short LN-vs-DyT training on digits.

    python benchmarks/dit_step.py throughput                       # DiT-B/4, 32×32×4 synthetic latents, batch 256
    python benchmarks/dit_step.py throughput --model DiT-L/2 --batch 64 --precision fp32
    python benchmarks/dit_step.py digits                           # DiT-S/2 on 32×32 digits, LN then DyT, with FID
    python benchmarks/dit_step.py throughput --smoke               # tiny shapes on CPU: checks the script runs
    python benchmarks/dit_step.py digits --smoke

``throughput``: each step is a full DiT training step — noise, hybrid loss (L_simple + L_vlb), backward, AdamW —
on random latents with random labels and timesteps, for LayerNorm, DyT through the op's ``impl='auto'``
(``--variants`` adds ``dyt-triton``) and DyT eager, in one process: every variant is built first and, after warm-up,
each round times every variant in turn (the median over rounds is reported). ``digits``: runs ``configs/diffusion/dit_s2_digits.yaml`` once with LayerNorm and
once with DyT (each in its own process, same seed and budget), then tabulates loss, FID (the same offline extractor
for both), steps/s and the sample grids, and plots the training-loss curves. Prints markdown tables (``--output``
also writes them to a file).
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dyt_bench.diffusion import GaussianDiffusion  # noqa: E402
from dyt_bench.models.dit import build_dit  # noqa: E402
from dyt_bench.norms import NormSpec, replace_norms  # noqa: E402
from dyt_bench.ops import triton_available  # noqa: E402


def environment() -> str:
    import lightning
    import timm

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    return (f"device: {device}; torch {torch.__version__}, CUDA {torch.version.cuda}, lightning {lightning.__version__}, "
            f"timm {timm.__version__}, triton available: {triton_available()}; python {platform.python_version()}")


# --- throughput ------------------------------------------------------------------------------------------------------
class DiTTrainer:
    """One DiT with one norm, ready to take training steps on fixed synthetic latents."""

    def __init__(self, model_name: str, spec: NormSpec, batch: int, latent: int, channels: int, precision: str,
                 device: str, overrides: dict, channel_major_stream: bool = False):
        torch.manual_seed(0)
        net = build_dit(model_name, input_size=latent, in_channels=channels, num_classes=1000,
                        contiguous_tokens=not channel_major_stream, **overrides)
        replace_norms(net, spec)
        self.net = net.to(device).train()
        self.opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0, fused=device == "cuda")
        self.diffusion = GaussianDiffusion.linear(1000)
        self.x = torch.randn(batch, channels, latent, latent, device=device)
        self.y = torch.randint(0, 1000, (batch,), device=device)
        self.batch, self.precision, self.device = batch, precision, device

    def loss(self) -> torch.Tensor:
        t = torch.randint(0, 1000, (self.batch,), device=self.device)
        with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return self.diffusion.training_losses(lambda xt, tt: self.net(xt, tt, self.y), self.x, t)["loss"].mean()

    def update(self) -> None:
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        self.loss().backward()
        self.update()

    def host_phases(self, repeats: int = 5, hold_s: float = 0.3) -> dict[str, float] | None:
        """Host time (ms, median over ``repeats``) to issue each phase of a step while the GPU is held busy by a
        sleep kernel queued just before it, so that no launch waits for the GPU: what the host alone costs. A phase
        that took longer than half the hold filled the launch queue and is reported as NaN."""
        if self.device != "cuda":
            return None
        try:
            mhz = torch.cuda.clock_rate()  # NVML's SM clock
        except Exception:  # no NVML bindings: assume 2 GHz (a longer or shorter hold only moves the NaN threshold)
            mhz = 2000
        cycles = int(hold_s * mhz * 1e6)
        times: dict[str, list[float]] = {"forward + loss": [], "backward": [], "optimizer": []}

        def timed(name, fn):
            torch.cuda.synchronize()
            torch.cuda._sleep(cycles)
            start = time.perf_counter()
            out = fn()
            elapsed = time.perf_counter() - start
            times[name].append(1e3 * elapsed if elapsed < hold_s / 2 else float("nan"))
            return out

        for _ in range(repeats):
            loss = timed("forward + loss", self.loss)
            timed("backward", loss.backward)
            timed("optimizer", self.update)
        torch.cuda.synchronize()
        return {name: statistics.median(v) for name, v in times.items()}

    def steps_per_s(self, steps: int) -> tuple[float, float]:
        """(steps per second, the steps' peak memory above what was resident before, GiB; NaN off CUDA)."""
        cuda = self.device == "cuda"
        if cuda:
            torch.cuda.synchronize()
            resident = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        peak = (torch.cuda.max_memory_allocated() - resident) / 2**30 if cuda else float("nan")
        return steps / elapsed, peak

    def host_syncs(self) -> list[str] | None:
        """Where one training step makes the host wait for the GPU (CUDA's sync debug mode, one entry per
        synchronizing call, as ``file:line``). Every such wait drains the launch queue: the GPU then idles while
        the host issues the next kernels, so host time shows in steps/s."""
        import warnings

        if self.device != "cuda":
            return None
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                self.step()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
        return [f"{Path(w.filename).name}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)]

    def profile(self, label: str) -> None:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        torch.cuda.synchronize()
        with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            start = time.perf_counter()
            self.step()
            torch.cuda.synchronize()
            wall = time.perf_counter() - start
        events = prof.key_averages()
        on_gpu = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]  # kernels and copies only
        cuda_ms = sum(e.self_device_time_total for e in on_gpu) / 1e3
        host_ms = sum(e.self_cpu_time_total for e in events) / 1e3
        print(f"### profile, {label}: wall {1e3 * wall:.1f} ms (profiler on), GPU busy {cuda_ms:.1f} ms, "
              f"{sum(e.count for e in on_gpu)} GPU kernels and copies, host {host_ms:.1f} ms")
        print(events.table(sort_by="self_device_time_total", row_limit=16, max_name_column_width=50))
        print(events.table(sort_by="self_cpu_time_total", row_limit=10, max_name_column_width=50), flush=True)


    def gpu_timeline(self, label: str, steps: int = 3) -> None:
        """GPU idle time across ``steps`` back-to-back steps (no sync between them), from the kernels' own start and
        end times: the profiler records GPU activity only, so the host runs at close to its usual speed."""
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        torch.cuda.synchronize()
        with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                self.step()
            torch.cuda.synchronize()
        kernels = [(e.name, e.time_range.start, e.time_range.end) for e in prof.events()
                   if e.device_type == torch.autograd.DeviceType.CUDA]
        print(format_gaps(f"{self.batch}-batch {label}", gpu_gaps(kernels), steps), flush=True)


def gpu_gaps(kernels: list[tuple[str, float, float]]) -> dict:
    """Busy and idle time of a GPU timeline of (name, start, end) intervals (µs; overlapping ones merged), and its
    gaps as (idle µs, the kernel before, the kernel after), largest first."""
    if not kernels:
        return {"span": 0.0, "busy": 0.0, "gaps": [], "kernels": 0}
    ordered = sorted(kernels, key=lambda k: k[1])
    busy, gaps = 0.0, []
    name, start, end = ordered[0]
    for next_name, next_start, next_end in ordered[1:]:
        if next_start > end:
            busy += end - start
            gaps.append((next_start - end, name, next_name))
            start = next_start
        if next_end >= end:
            end, name = next_end, next_name
    busy += end - start
    return {"span": end - ordered[0][1], "busy": busy, "gaps": sorted(gaps, reverse=True), "kernels": len(kernels)}


def format_gaps(label: str, timeline: dict, steps: int, top: int = 8) -> str:
    span, busy, gaps = timeline["span"], timeline["busy"], timeline["gaps"]
    idle = span - busy
    lines = [f"### GPU timeline, {label}: {steps} steps, {timeline['kernels']} kernels, span {span / 1e3:.1f} ms, "
             f"busy {busy / 1e3:.1f} ms, idle {idle / 1e3:.1f} ms ({100 * idle / span if span else 0:.1f} %); gaps "
             f"over 10 µs: {sum(1 for g in gaps if g[0] > 10)} holding {sum(g[0] for g in gaps if g[0] > 10) / 1e3:.1f} ms"]
    lines += [f"  {g:9.1f} µs  after {before[:60]}  before {after[:60]}" for g, before, after in gaps[:top]]
    return "\n".join(lines)


PYTHON_NODE = "dyt-auto-pynode"  # impl="auto" with the op's C++ autograd node off (dyt_bench.ops.triton.native)


def select_node(label: str) -> None:
    """The op's C++ autograd node on for every variant but ``dyt-auto-pynode`` (set before each of its steps)."""
    try:
        from dyt_bench.ops.triton import native
    except ImportError:  # no Triton: no C++ node either
        return
    native.set_enabled(label != PYTHON_NODE)


def run_throughput(args) -> str:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    overrides = {}
    if args.smoke:
        args.model, args.batch, args.latent, args.steps, args.warmup, args.rounds = "DiT-S/4", 4, 8, 2, 1, 2
        overrides = {"depth": 1, "hidden_size": 64, "num_heads": 2}
        args.precision = "fp32"
    elif device != "cuda":
        raise SystemExit("the throughput benchmark needs a CUDA GPU (use --smoke to check the script on CPU)")
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    specs = {"layernorm": NormSpec("layernorm"), "dyt-auto": NormSpec("dyt", impl="auto"),
             "dyt-triton": NormSpec("dyt", impl="triton"), "dyt-eager": NormSpec("dyt", impl="eager"),
             PYTHON_NODE: NormSpec("dyt", impl="auto")}
    variants = [(label, specs[label]) for label in args.variants
                if label != "dyt-triton" or (device == "cuda" and triton_available())]
    trainers = {label: DiTTrainer(args.model, spec, args.batch, args.latent, args.channels, args.precision, device,
                                  overrides, args.channel_major_stream) for label, spec in variants}
    for label, trainer in trainers.items():
        print(f"{args.model} {label}: warm-up ...", flush=True)
        select_node(label)
        for _ in range(args.warmup):
            trainer.step()
    # every round times each variant in turn (the order reversed every other round): a drift of clocks or of host
    # load falls on all variants alike; the table gives the median over rounds
    syncs = {}
    for label, trainer in trainers.items():
        select_node(label)
        syncs[label] = trainer.host_syncs()
    runs: dict[str, list[tuple[float, float]]] = {label: [] for label in trainers}
    for r in range(args.rounds):
        for label in (list(trainers) if r % 2 == 0 else list(reversed(trainers))):
            select_node(label)
            runs[label].append(trainers[label].steps_per_s(args.steps))
    if args.profile and device == "cuda":
        for label, trainer in trainers.items():
            select_node(label)
            trainer.profile(f"{args.model} {label}")
    if args.timeline and device == "cuda":
        for label, trainer in trainers.items():
            select_node(label)
            trainer.gpu_timeline(f"{args.model} {label}")
    host = {}
    if args.host_time:
        for label, trainer in trainers.items():
            select_node(label)
            host[label] = trainer.host_phases()
    rows, base = [], None
    for label, _ in variants:
        steps_s = statistics.median(v for v, _ in runs[label])
        peak = max(p for _, p in runs[label])
        base = base or steps_s
        found = syncs[label]
        where = "n/a (CPU)" if found is None else f"{len(found)} ({', '.join(sorted(set(found))) or '—'})"
        rows.append(f"| {args.model} | {label} | {steps_s:.2f} | {steps_s * args.batch:.0f} | {steps_s / base:.3f} | "
                    f"{peak:.1f} | {where} |")
    return "\n".join([
        f"DiT training step (hybrid loss, AdamW), synthetic {args.latent}×{args.latent}×{args.channels} latents, "
        f"batch {args.batch}, {args.precision}, median of {args.rounds} rounds of {args.steps} steps per variant "
        f"(variants interleaved) after {args.warmup} warm-up steps"
        + (", token stream left channel-major (the reference DiT code's layout)" if args.channel_major_stream else "")
        + (" — SMOKE (tiny shapes, not a measurement)" if args.smoke else ""),
        environment(), "",
        "| model | norm | steps/s | images/s | vs LayerNorm | step peak GiB above resident | host syncs per step |",
        "|---|---|---|---|---|---|---|", *rows, *host_table(host)])


def host_table(host: dict) -> list[str]:
    """The ``--host-time`` table: host ms per phase while the GPU is held busy, and the total against the first."""
    host = {label: phases for label, phases in host.items() if phases}
    if not host:
        return []
    names = list(next(iter(host.values())))
    lines = ["", "Host time to issue each phase with the GPU held busy (ms, median of 5; no launch waits for the GPU)",
             "", "| norm | " + " | ".join(names) + " | total | vs first |", "|---" * (len(names) + 3) + "|"]
    base = None
    for label, phases in host.items():
        total = sum(phases.values())
        base = base or total
        lines.append(f"| {label} | " + " | ".join(f"{v:.2f}" for v in phases.values()) + f" | {total:.2f} | "
                     f"{total / base:.3f} |")
    return lines


# --- digits LN vs DyT ------------------------------------------------------------------------------------------------
SMOKE_DIGITS = ["--trainer.max_steps", "12", "--trainer.val_check_interval", "12", "--model.depth", "1",
                "--model.hidden_size", "32", "--model.num_heads", "2", "--model.sampling.steps", "5",
                "--model.sampling.batch_size", "32", "--model.fid.num_samples", "32", "--model.grid.num_images", "16",
                "--model.grid.nrow", "4", "--data.batch_size", "32", "--data.eval_batch_size", "64",
                "--trainer.limit_val_batches", "1", "--trainer.log_every_n_steps", "2"]


def read_curve(run_dir: Path, key: str) -> list[tuple[int, float]]:
    """(step, value) pairs of a logged metric from a CSVLogger metrics.csv."""
    out = []
    for path in glob.glob(str(run_dir / "**" / "metrics.csv"), recursive=True):
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row.get(key):
                    out.append((int(row["step"]), float(row[key])))
    return sorted(out)


def _show(path: str | Path) -> str:
    """A path relative to the repository when it is inside it, else absolute."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _earlier_result(run_dir: Path) -> dict | None:
    """The newest result.json under ``run_dir``, whatever its status (the table shows it), or None."""
    paths = sorted(glob.glob(str(run_dir / "**" / "result.json"), recursive=True), key=os.path.getmtime)
    return json.loads(Path(paths[-1]).read_text()) if paths else None


def run_digits(args) -> str:
    out = Path(args.out)
    kinds = args.kinds
    results, procs = {}, {}
    for kind in kinds:
        run_dir = out / kind
        done = _earlier_result(run_dir) if args.reuse else None
        if done is not None:
            print(f"{kind}: reusing the {done['status']} run in {_show(run_dir)} ({done['steps']} steps)", flush=True)
            results[kind] = (run_dir, done, None)
            continue
        cmd = [sys.executable, "-c", "from dyt_bench.cli import main; main()", "fit", "--config", args.config,
               "--model.norm.kind", kind, "--trainer.default_root_dir", str(run_dir),
               "--trainer.logger.init_args.save_dir", str(run_dir), "--trainer.enable_progress_bar", "false",
               "--seed_everything", str(args.seed)]
        if args.max_steps:
            cmd += ["--trainer.max_steps", str(args.max_steps)]
        if args.precision:
            cmd += ["--trainer.precision", args.precision]
        if args.smoke:
            cmd += SMOKE_DIGITS
        print("$ " + " ".join(cmd[3:]), flush=True)
        procs[kind] = (run_dir, subprocess.Popen(cmd, cwd=ROOT), time.perf_counter())
        if not args.parallel:
            procs[kind][1].wait()
    for kind, (run_dir, proc, start) in procs.items():
        if proc.wait() != 0:
            raise SystemExit(f"the {kind} run failed (exit {proc.returncode}); its log is above")
        result = _earlier_result(run_dir)  # the run just made: the newest result.json
        if result is None:
            raise SystemExit(f"the {kind} run wrote no result.json under {run_dir}")
        results[kind] = (run_dir, result, time.perf_counter() - start)
    lines = [f"DiT on digits 32×32 (pixel space), LN vs DyT, config {args.config}"
             + (" — SMOKE (tiny model, a few steps: not a measurement)" if args.smoke else "")
             + (f", precision {args.precision}" if args.precision else "")
             + (" — the runs shared one GPU (--parallel): steps/s are not single-run speeds" if args.parallel else ""),
             environment(), "",
             "| norm | status | steps | final train loss | val loss (by step) | val FID (by step) | FID extractor | "
             "steps/s | fit wall s | process wall s | sample grids |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for kind, (run_dir, result, wall) in results.items():
        fids = read_curve(run_dir, "val/fid")
        train = read_curve(run_dir, "train/loss")
        extractor = (result.get("evaluation") or {}).get("fid_extractor") or result["config"].get("fid_extractor") or {}
        grids = sorted(glob.glob(str(run_dir / "**" / "samples" / "*.png"), recursive=True))
        fid_text = ", ".join(f"{v:.4g}@{s}" for s, v in fids) or "–"
        lines.append(
            f"| {kind} | {result['status']} | {result['steps']} | {train[-1][1] if train else float('nan'):.4f} | "
            f"{', '.join(f'{v:.4f}@{s}' for s, v in read_curve(run_dir, 'val/loss')) or '–'} | {fid_text} | "
            f"{extractor.get('id', '?')} | "
            f"{result['throughput'].get('train_steps_per_s', float('nan')):.2f} | {result.get('wall_time_s', 0):.0f} | "
            f"{'earlier run' if wall is None else f'{wall:.0f}'} | "
            f"{_show(grids[-1]) if grids else '–'} |")
    plot = out / "digits_loss_curves.png"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for kind, (run_dir, _, _) in results.items():
            curve = read_curve(run_dir, "train/loss")
            if curve:
                ax.plot([s for s, _ in curve], [v for _, v in curve], label=kind)
        ax.set_xlabel("step")
        ax.set_ylabel("train loss (L_simple + L_vlb)")
        ax.set_yscale("log")
        ax.legend()
        fig.tight_layout()
        fig.savefig(plot, dpi=120)
        lines += ["", f"loss curves: {_show(plot)}"]
    except ImportError:
        lines += ["", "(matplotlib missing: no loss-curve plot)"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    tp = sub.add_parser("throughput", help="train-step throughput, LN vs DyT (Triton, eager)")
    tp.add_argument("--model", default="DiT-B/4")
    tp.add_argument("--batch", type=int, default=256)
    tp.add_argument("--latent", type=int, default=32, help="latent side (256×256 images → 32)")
    tp.add_argument("--channels", type=int, default=4)
    tp.add_argument("--steps", type=int, default=10, help="timed steps per variant and round")
    tp.add_argument("--rounds", type=int, default=5, help="rounds; each times every variant in turn (median)")
    tp.add_argument("--warmup", type=int, default=10)
    tp.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    tp.add_argument("--profile", action="store_true", help="print the top kernels of one profiled step per norm")
    tp.add_argument("--timeline", action="store_true",
                    help="also print each variant's GPU idle time and largest gaps over 3 back-to-back steps")
    tp.add_argument("--host-time", action="store_true",
                    help="also time the host alone: each phase of a step issued while the GPU is held busy")
    tp.add_argument("--channel-major-stream", action="store_true",
                    help="leave the token stream channel-major as the patch embedding makes it (the reference DiT "
                         "code's layout; the default copies it token-major once, DiT(contiguous_tokens=True))")
    tp.add_argument("--variants", nargs="+", default=["layernorm", "dyt-auto", "dyt-eager"],
                    choices=["layernorm", "dyt-auto", "dyt-triton", "dyt-eager", PYTHON_NODE],
                    help="norms to time (dyt-auto: the op's impl='auto'; dyt-auto-pynode: the same with its Python "
                         "autograd node, not the C++ one)")
    dg = sub.add_parser("digits", help="DiT-S/2 on digits: LN vs DyT training with FID")
    dg.add_argument("--config", default="configs/diffusion/dit_s2_digits.yaml")
    dg.add_argument("--kinds", nargs="+", default=["layernorm", "dyt"])
    dg.add_argument("--max-steps", type=int, default=None, help="override the config's budget")
    dg.add_argument("--seed", type=int, default=0)
    dg.add_argument("--out", default="runs/dit_digits_bench")
    dg.add_argument("--precision", help="override trainer.precision (e.g. bf16-mixed on a GPU)")
    dg.add_argument("--reuse", action="store_true",
                    help="take a norm's earlier run from --out instead of training it again (its status is shown: "
                         "an interrupted run is compared at the steps both reached)")
    dg.add_argument("--parallel", action="store_true",
                    help="run the norms at once on the same device (quicker; their steps/s then share it)")
    for p in (tp, dg):
        p.add_argument("--smoke", action="store_true", help="tiny shapes, CPU is fine: checks that the script runs")
        p.add_argument("--output", help="also write the markdown table here")
    args = parser.parse_args()
    table = run_throughput(args) if args.mode == "throughput" else run_digits(args)
    print("\n" + table)
    if args.output:
        Path(args.output).write_text(table + "\n")


if __name__ == "__main__":
    main()
