"""What the surgery sweep checks on one model: classes found, replaced and kept, activations before and after, a
finite DyT forward and backward, and a same-kind round trip with inherited affine parameters."""

from __future__ import annotations

import time

from .sweep_models import NORM_CLASS, ROUND_TRIP_KINDS, ROUND_TRIP_TOL, ModelResult, _build, _forward, _one_line

# ---------------------------------------------------------------------------------------------------------------------
# One model


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
        if not NORM_CLASS.search(name) or isinstance(m, NormAct) or describe_norm(m) is not None:
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
    float64 (float32 for a model that does not run in float64); return the output's max relative change and how many
    layers took part."""
    import copy

    import torch

    from .recognise import describe_norm
    from .surgery import replace_norms

    for dtype in (torch.float64, torch.float32):
        trial = copy.deepcopy(model).to(dtype).eval()
        _randomise_norms(trial)
        cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
        try:
            with torch.no_grad():
                torch.manual_seed(0)  # a model that draws in its forward (ViTMAE's masking) draws the same both times
                reference = _forward(trial, cast)
        except Exception:  # noqa: BLE001 - some models hard-code float32 somewhere
            if dtype == torch.float32:
                raise
            continue
        if bool(torch.isfinite(reference).all()):
            break
        if dtype == torch.float32:  # canine's float64 masks overflow to NaN; if float32 does too, nothing to compare
            return None, "reference output not finite"
    # a weightless layer of undeclared width (num_features 0) has no same-kind factory layer
    families = {path: info.family if info.num_features else "any width" for path, m in trial.named_modules()
                if (info := describe_norm(m)) is not None}
    done = 0
    for kind in ROUND_TRIP_KINDS:
        paths = [p for p, f in families.items() if f == kind]
        if paths:
            others = [p for p, f in families.items() if f != kind]
            done += replace_norms(trial, kind, inherit_affine=True, skip=others).total
    if not done:
        return None, f"0/{len(families)}"
    with torch.no_grad():
        torch.manual_seed(0)
        out = _forward(trial, cast)
    err = float((out.double() - reference.double()).abs().max() / reference.double().abs().max().clamp_min(1e-12))
    suffix = "" if dtype == torch.float64 else " (float32)"
    return err, f"{done}/{len(families)}{suffix}"


def _found_classes(model) -> dict[str, int]:
    from collections import Counter

    from .recognise import describe_norm, kept_reason, refused_reason

    return dict(Counter(type(m).__name__ for m in model.modules()
                        if describe_norm(m) is not None or kept_reason(m) or refused_reason(m)
                        or (NORM_CLASS.search(type(m).__name__) and next(m.children(), None) is None
                            and not type(m).__module__.startswith("torch.nn.utils"))))


def sweep_model(source: str, name: str) -> ModelResult:
    import copy
    from collections import Counter

    import torch

    from .recognise import UnsupportedNormError
    from .surgery import replace_norms

    t0 = time.time()
    result = ModelResult(name, source)
    try:
        torch.manual_seed(0)
        model, inputs = _build(source, name)
    except Exception as err:  # noqa: BLE001 - a model the library cannot build here is reported, not a sweep failure
        result.status, result.note = "not built", _one_line(err, 160)
        result.seconds = round(time.time() - t0, 2)
        return result
    try:
        result.found = _found_classes(model)
        before = _activation_count(model)
        dyt = copy.deepcopy(model)
        try:
            report = replace_norms(dyt, "dyt")
        except UnsupportedNormError as err:
            result.status, result.note = "refused", str(err).split(". Supported")[0]
            if "(" not in result.note:
                result.status, result.note = "crash", "refusal without a reason: " + result.note
            return result
        result.replaced = report.total
        result.kept = dict(Counter(why.split(":", 1)[0] for why in report.kept.values()))
        result.activations = (before, _activation_count(dyt))
        leftovers = _norm_like_leftovers(dyt, report)
        dyt.train()
        out = _forward(dyt, inputs)
        out.float().square().mean().backward()
        grads = [p.grad for p in dyt.parameters() if p.grad is not None]
        result.finite = bool(torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads))
        del dyt, out, grads
        result.round_trip, result.round_trip_layers = _round_trip(model, inputs)
    except Exception as err:  # noqa: BLE001 - a crash is what the sweep is looking for
        result.status, result.note = "crash", _one_line(err, 200)
        return result
    finally:
        result.seconds = round(time.time() - t0, 2)
    changed = []
    if result.activations[0] != result.activations[1]:
        changed.append(f"activations {result.activations[0]} → {result.activations[1]}")
    if leftovers:
        changed.append("left in place unreported: " + ", ".join(leftovers[:3]))
    if result.round_trip is not None and not result.round_trip <= ROUND_TRIP_TOL:
        changed.append(f"round trip off by {result.round_trip:.1e}")
    if changed:
        result.status, result.note = "silently changed", "; ".join(changed)
    elif not result.finite:
        result.status, result.note = "crash", "non-finite forward / backward"
    return result
