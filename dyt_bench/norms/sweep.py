"""Sweep replace_norms over timm / torchvision / transformers models and write what it did to docs/surgery.md.

Per model: the norm classes found, replaced and kept; a DyT forward and backward (finite?); activation modules before
and after (a fused activation must survive); and a same-kind round trip with ``inherit_affine=True`` in float64, whose
output must equal the original's. Models are built without downloads (timm ``pretrained=False``, transformers from
small configs). Not part of the test suite: a model zoo is slow on CPU.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

TIMM_MODELS = (
    "efficientnet_b0", "mobilenetv2_050", "mobilenetv3_small_050", "regnetx_002", "cs3darknet_s", "densenet121",
    "ghostnet_050", "resnetv2_50x1_bit", "convnext_atto", "convnextv2_atto", "maxvit_nano_rw_256",
    "coatnext_nano_rw_224", "maxxvitv2_nano_rw_256", "vit_tiny_patch16_224", "levit_128s", "fastvit_t8",
    "mobilevit_xxs", "poolformer_s12", "edgenext_xx_small", "efficientformerv2_s0",
)
TV_MODELS = ("resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny", "regnet_y_400mf",
             "shufflenet_v2_x0_5", "densenet121", "swin_t", "mnasnet0_5")
_TEXT = {"vocab_size": 99, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "max_position_embeddings": 64}
HF_CONFIGS: dict[str, dict] = {
    "llama": _TEXT, "gemma": _TEXT, "nemotron": _TEXT, "cohere": _TEXT, "olmo": _TEXT, "qwen2": _TEXT,
    "t5": {"vocab_size": 99, "d_model": 32, "d_ff": 64, "d_kv": 8, "num_layers": 2, "num_heads": 4},
    "deberta": {"vocab_size": 99, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 4},
    "convnext": {"hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1]},
    "convnextv2": {"hidden_sizes": [8, 16, 32, 64], "depths": [1, 1, 1, 1]},
    "mamba2": {"vocab_size": 99, "hidden_size": 32, "num_hidden_layers": 2, "num_heads": 4, "head_dim": 16,
               "expand": 2, "n_groups": 1, "state_size": 8},
}
SOURCES = {"timm": TIMM_MODELS, "tv": TV_MODELS, "hf": tuple(HF_CONFIGS)}
ROUND_TRIP_KINDS = ("layernorm", "rmsnorm", "batchnorm")  # families with a like-for-like factory kind
ROUND_TRIP_TOL = 1e-5
IMAGE = 64


@dataclass
class ModelResult:
    name: str
    status: str = "OK"  # OK | silently changed | refused | crash
    found: dict[str, int] = field(default_factory=dict)
    replaced: int = 0
    kept: dict[str, int] = field(default_factory=dict)
    activations: tuple[int, int] = (0, 0)
    finite: bool | None = None
    round_trip: float | None = None  # max relative error; None when no layer has a same-kind factory equivalent
    round_trip_layers: str = ""
    note: str = ""


def _build(source: str, name: str):
    import torch

    if source == "timm":
        import timm

        try:
            model = timm.create_model(name, pretrained=False, num_classes=10, img_size=IMAGE)
        except TypeError:
            model = timm.create_model(name, pretrained=False, num_classes=10)
        return model, {"x": torch.randn(2, 3, IMAGE, IMAGE)}
    if source == "tv":
        import torchvision

        return torchvision.models.get_model(name, num_classes=10), {"x": torch.randn(2, 3, IMAGE, IMAGE)}
    import transformers

    config = transformers.AutoConfig.for_model(name, **HF_CONFIGS[name])
    if name == "t5":
        return transformers.T5EncoderModel(config), {"input_ids": torch.randint(0, 99, (2, 7))}
    model = transformers.AutoModel.from_config(config)
    if "convnext" in name:
        return model, {"pixel_values": torch.randn(2, 3, IMAGE, IMAGE)}
    return model, {"input_ids": torch.randint(0, 99, (2, 7))}


def _forward(model, inputs):
    import torch

    out = model(inputs["x"]) if "x" in inputs else model(**inputs)
    if isinstance(out, torch.Tensor):
        return out
    for key in ("logits", "last_hidden_state", "pooler_output"):
        value = getattr(out, key, None)
        if isinstance(value, torch.Tensor):
            return value
    return out[0]


def _activation_count(model) -> int:
    from torch import nn

    act_modules = ("torch.nn.modules.activation", "timm.layers.activations")
    return sum(type(m).__module__.startswith(act_modules) and not isinstance(m, nn.MultiheadAttention)
               for m in model.modules())


def _norm_like_leftovers(model, report) -> list[str]:
    """Norm-named layers still in the model that the report neither replaced, kept nor skipped."""
    from .layers import NormAct
    from .recognise import describe_norm

    left = []
    for path, m in model.named_modules():
        name = type(m).__name__
        if not re.search(r"norm|GRN", name, re.I) or isinstance(m, NormAct) or describe_norm(m) is not None:
            continue
        if path in report.kept or any(path == s or path.startswith(s + ".") for s in report.skipped):
            continue
        if type(m).__module__.startswith("torch.nn.utils") or next(m.children(), None) is not None:
            continue
        left.append(f"{path} ({name})")
    return left


def _randomise_norms(model) -> None:
    import torch

    from .recognise import describe_norm

    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if describe_norm(m) is None:
                continue
            for name, p in m.named_parameters(recurse=False):
                if p.ndim == 1:
                    p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.2 + (name == "weight") * 1.0)


def _round_trip(model, inputs) -> tuple[float | None, str]:
    """Replace each LN / RMS / BN layer by the factory's layer of the same kind with inherited parameters, in
    float64; return the output's max relative change and how many layers took part."""
    import copy

    import torch

    from .recognise import describe_norm
    from .surgery import replace_norms

    model = copy.deepcopy(model).double().eval()
    _randomise_norms(model)
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
    families = {path: info.family for path, m in model.named_modules() if (info := describe_norm(m)) is not None}
    with torch.no_grad():
        reference = _forward(model, inputs)
        done = 0
        for kind in ROUND_TRIP_KINDS:
            paths = [p for p, f in families.items() if f == kind]
            if paths:
                others = [p for p, f in families.items() if f != kind]
                done += replace_norms(model, kind, inherit_affine=True, skip=others).total
        if not done:
            return None, f"0/{len(families)}"
        out = _forward(model, inputs)
    err = float((out - reference).abs().max() / reference.abs().max().clamp_min(1e-12))
    return err, f"{done}/{len(families)}"


def sweep_model(source: str, name: str) -> ModelResult:
    import copy
    from collections import Counter

    import torch

    from .recognise import UnsupportedNormError, describe_norm, kept_reason, refused_reason
    from .surgery import replace_norms

    result = ModelResult(name)
    try:
        torch.manual_seed(0)
        model, inputs = _build(source, name)
    except Exception as err:  # noqa: BLE001 - a model the library cannot build here is reported, not a sweep failure
        result.status, result.note = "not built", f"{type(err).__name__}: {err}"[:160]
        return result
    result.found = dict(Counter(type(m).__name__ for m in model.modules()
                                if describe_norm(m) is not None or kept_reason(m) or refused_reason(m)))
    before = _activation_count(model)
    dyt = copy.deepcopy(model)
    try:
        report = replace_norms(dyt, "dyt")
    except UnsupportedNormError as err:
        result.status, result.note = "refused", str(err).split(". Supported")[0]
        return result
    except Exception as err:  # noqa: BLE001 - a crash is what the sweep is looking for
        result.status, result.note = "crash", f"{type(err).__name__}: {err}"[:200]
        return result
    result.replaced = report.total
    result.kept = dict(Counter(why.split(":", 1)[0] for why in report.kept.values()))
    result.activations = (before, _activation_count(dyt))
    leftovers = _norm_like_leftovers(dyt, report)
    try:
        dyt.train()
        out = _forward(dyt, inputs)
        out.float().square().mean().backward()
        grads = [p.grad for p in dyt.parameters() if p.grad is not None]
        result.finite = bool(torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads))
        result.round_trip, result.round_trip_layers = _round_trip(model, inputs)
    except Exception as err:  # noqa: BLE001
        result.status, result.note = "crash", f"{type(err).__name__}: {err}"[:200]
        return result
    changed = []
    if result.activations[0] != result.activations[1]:
        changed.append(f"activations {result.activations[0]} → {result.activations[1]}")
    if leftovers:
        changed.append("left in place unreported: " + ", ".join(leftovers[:3]))
    if result.round_trip is not None and result.round_trip > ROUND_TRIP_TOL:
        changed.append(f"round trip off by {result.round_trip:.1e}")
    if changed:
        result.status, result.note = "silently changed", "; ".join(changed)
    elif not result.finite:
        result.status, result.note = "crash", "non-finite forward / backward"
    return result


def render(source: str, results: list[ModelResult], command: str, seconds: float) -> str:
    statuses = ("OK", "silently changed", "refused", "crash", "not built")
    counts = {s: sum(r.status == s for r in results) for s in statuses}
    lines = [f"<!-- sweep:{source} -->", f"Command: `{command}` ({len(results)} models, {seconds:.0f} s on CPU).", "",
             "| source | models | " + " | ".join(statuses) + " |", "|---|---|" + "---|" * len(statuses),
             f"| {source} | {len(results)} | " + " | ".join(str(counts[s]) for s in statuses) + " |", "",
             "| model | status | norm classes found | replaced | kept | activations before → after | finite | "
             "round trip (layers, max rel. err) | note |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        found = ", ".join(f"{k} ×{v}" for k, v in sorted(r.found.items())) or "—"
        kept = ", ".join(f"{k} ×{v}" for k, v in sorted(r.kept.items())) or "—"
        trip = "—" if r.round_trip is None else f"{r.round_trip_layers}, {r.round_trip:.1e}"
        if r.round_trip is None and r.round_trip_layers:
            trip = f"{r.round_trip_layers} (no same-kind factory layer)"
        finite = "—" if r.finite is None else ("yes" if r.finite else "no")
        acts = f"{r.activations[0]} → {r.activations[1]}" if r.status not in ("refused", "not built") else "—"
        note = r.note.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r.name} | {r.status} | {found} | {r.replaced} | {kept} | {acts} | {finite} | {trip} | "
                     f"{note} |")
    lines.append(f"<!-- /sweep:{source} -->")
    return "\n".join(lines)


def write_section(path: str, source: str, section: str) -> None:
    """Replace this source's marked section of ``path`` (or append it)."""
    import os

    text = open(path).read() if os.path.exists(path) else ""
    pattern = re.compile(rf"<!-- sweep:{source} -->.*?<!-- /sweep:{source} -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    with open(path, "w") as f:
        f.write(text)


def build_parser():
    import jsonargparse

    parser = jsonargparse.ArgumentParser(prog="python -m dyt_bench.norms.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--config", action=jsonargparse.ActionConfigFile)
    parser.add_argument("--source", choices=tuple(SOURCES), required=True, help="timm, tv (torchvision) or hf")
    parser.add_argument("--models", type=str, default="", help="comma-separated names (default: the built-in list)")
    parser.add_argument("--out", type=str, default="docs/surgery.md", help="markdown file whose section is rewritten")
    return parser


def main(argv: list[str] | None = None) -> int:
    import sys

    args = build_parser().parse_args(argv)
    names = [n for n in args.models.split(",") if n] or list(SOURCES[args.source])
    start = time.time()
    results = []
    for name in names:
        t0 = time.time()
        results.append(sweep_model(args.source, name))
        r = results[-1]
        print(f"{name}: {r.status} ({time.time() - t0:.1f} s) {r.note}", file=sys.stderr, flush=True)
    command = "python -m dyt_bench.norms.sweep --source " + args.source + (f" --models {args.models}"
                                                                            if args.models else "")
    write_section(args.out, args.source, render(args.source, results, command, time.time() - start))
    bad = sum(r.status in ("silently changed", "crash") for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
