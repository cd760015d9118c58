"""What each point-wise norm of the quickstart ViT passes on at initialisation: the part of its output that depends on
the input against the constant part, the spread of the logits over images, and the gradient norm, for sigmoid with
α0 = 0.5 / 1 / 4 against tanh, identity and LayerNorm (one batch of 256 training digits, seeds 0-2, train mode).

    python results/table8_sigmoid_alpha0/init_signal.py      # from the repository root; writes init_signal.json

The input-dependent part of a norm's output is the standard deviation over images and tokens of each channel, averaged
over channels (``varying``); the constant part is the mean absolute value of each channel's mean (``offset``).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

CASES = {  # label: command-line overrides of configs/quickstart.yaml
    "layernorm": ["--model.norm.kind=layernorm"],
    "identity, α fixed 1": ["--model.norm.kind=identity"],
    "tanh, α fixed 1": ["--model.norm.kind=tanh"],
    "tanh, α0 1 (DyT)": ["--model.norm.kind=dyt", "--model.norm.alpha_init=1.0"],
    "tanh, α0 0.5 (DyT, v1)": ["--model.norm.kind=dyt", "--model.norm.alpha_init=0.5"],
    "sigmoid, α fixed 1": ["--model.norm.kind=sigmoid"],
    "sigmoid, α0 0.5": ["--model.norm.kind=sigmoid", "--model.norm.learnable_alpha=true", "--model.norm.alpha_init=0.5"],
    "sigmoid, α0 1": ["--model.norm.kind=sigmoid", "--model.norm.learnable_alpha=true", "--model.norm.alpha_init=1.0"],
    "sigmoid, α0 4": ["--model.norm.kind=sigmoid", "--model.norm.learnable_alpha=true", "--model.norm.alpha_init=4.0"],
}
SEEDS = (0, 1, 2)
BATCH = 256


def measure(overrides: list[str], seed: int) -> dict[str, float]:
    import torch
    import torch.nn.functional as F

    from dyt_bench.lightning_cli import build_from_config
    from dyt_bench.norms.layers import SquashNorm

    torch.manual_seed(seed)
    task, data = build_from_config("configs/quickstart.yaml", [*overrides, f"--seed_everything={seed}",
                                                               f"--data.batch_size={BATCH}"])
    data.prepare_data()
    data.setup("fit")
    x, y = next(iter(data.train_dataloader()))
    net = task.net.train()
    outputs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o.detach()))
             for name, m in net.named_modules() if isinstance(m, (SquashNorm, torch.nn.LayerNorm))]
    logits = net(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    for h in hooks:
        h.remove()
    varying, offset = [], []
    for out in outputs.values():
        flat = out.reshape(-1, out.shape[-1]).double()
        varying.append(flat.std(0).mean().item())
        offset.append(flat.mean(0).abs().mean().item())
    grads = [p.grad.double().norm() for p in net.parameters() if p.grad is not None]
    return {
        "norm_varying": statistics.fmean(varying),
        "norm_offset": statistics.fmean(offset),
        "last_norm_varying": varying[-1],
        "last_norm_offset": offset[-1],
        "logit_std_over_images": logits.detach().double().std(0).mean().item(),
        "grad_norm": torch.stack(grads).norm().item(),
        "loss": loss.item(),
    }


def main() -> int:
    rows = {}
    for label, overrides in CASES.items():
        runs = [measure(overrides, s) for s in SEEDS]
        rows[label] = {k: statistics.fmean(r[k] for r in runs) for k in runs[0]}
        print(label, {k: f"{v:.3g}" for k, v in rows[label].items()}, flush=True)
    import torch

    out = {"what": __doc__.split("\n\n")[0], "config": "configs/quickstart.yaml", "seeds": list(SEEDS),
           "batch": BATCH, "torch": torch.__version__, "mean_over_seeds": rows}
    path = Path(__file__).with_name("init_signal.json")
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
