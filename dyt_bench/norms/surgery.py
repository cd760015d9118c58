"""replace_norms: swap every normalization layer of a model (timm, torchvision, transformers, plain torch) in place,
keep fused activations, optionally carry γ/β over, and report what was replaced, kept and why."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn

from .factory import build_norm
from .layers import BatchNorm, ChannelsFirstLayerNorm, ChannelsFirstRMSNorm, NormAct, SquashNorm
from .recognise import (
    SourceNorm,
    UnsupportedNormError,
    describe_norm,
    is_not_norm,
    kept_reason,
    probe_failure,
    refused_reason,
)
from .spec import NormSpec

__all__ = ["NormReplacementReport", "SourceNorm", "UnsupportedNormError", "count_norms", "describe_norm",
           "replace_norms"]


@dataclass
class NormReplacementReport:
    """What replace_norms did: the target layer and, per replaced class, how many layers and where; the fused
    activations kept; the layers kept in place on purpose (with the reason) or skipped on request."""

    target: str
    counts: dict[str, int] = field(default_factory=dict)
    layouts: dict[str, int] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    activations: dict[str, dict[str, int]] = field(default_factory=dict)  # fused class -> activation class -> n
    kept: dict[str, str] = field(default_factory=dict)  # path -> why it was left in place
    inherited: int = 0  # layers whose γ/β (and running statistics) were carried over
    already: list[str] = field(default_factory=list)  # layers already the spec's layer, kept with their values
    functions: dict[str, str] = field(default_factory=dict)  # replaced class -> what it computed

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        return {"target": self.target, "total": self.total, "counts": dict(self.counts), "layouts": dict(self.layouts),
                "skipped": list(self.skipped), "activations": {k: dict(v) for k, v in self.activations.items()},
                "kept": dict(self.kept), "inherited": self.inherited, "functions": dict(self.functions),
                "already": list(self.already)}

    def _class_summary(self, name: str, n: int) -> str:
        acts = self.activations.get(name)
        if not acts:
            return f"{name} ×{n}"
        names = {("none" if a == "Identity" else a): k for a, k in sorted(acts.items(), key=lambda ak: (-ak[1], ak[0]))}
        kept = next(iter(names)) if len(names) == 1 else ", ".join(f"{a} ×{k}" for a, k in names.items())
        return f"{name} ×{n} (activation kept: {kept})"

    def __str__(self) -> str:
        kept = ""
        if self.kept:
            by_class = Counter(why.split(":", 1)[0] for why in self.kept.values())
            kept = "; kept in place: " + ", ".join(f"{c} ×{k}" for c, k in sorted(by_class.items()))
        skipped = f"; left untouched: {len(self.skipped)}" if self.skipped else ""
        skipped += f"; already {self.target}: {len(self.already)}" if self.already else ""
        if not self.counts:
            found = "nothing left to replace" if self.already else "no normalization layers found"
            return f"replace_norms: {found} (target {self.target}){kept}{skipped}"
        parts = ", ".join(self._class_summary(name, n) for name, n in sorted(self.counts.items()))
        lay = ", ".join(f"{k} ×{v}" for k, v in sorted(self.layouts.items()))
        inherited = f"; γ/β inherited by {self.inherited}" if self.inherited else ""
        return f"replace_norms: {self.total} layers → {self.target}: {parts} ({lay}){inherited}{kept}{skipped}"


def _device_dtype(m: nn.Module) -> tuple[torch.device | None, torch.dtype | None]:
    for t in list(m.parameters(recurse=False)) + list(m.buffers(recurse=False)):
        if t.is_floating_point():
            return t.device, t.dtype
    for t in m.buffers(recurse=False):
        return t.device, None
    return None, None


NOT_LEAF_REASON = ("it holds tensors of its own and sub-modules: surgery replaces only a norm it can describe as "
                   "one layer, and cannot tell what this one's own tensors do")


def _refusal(module: nn.Module, path: str, reason: str | None) -> UnsupportedNormError:
    cls = type(module)
    why = f" ({reason})" if reason else ""
    return UnsupportedNormError(
        f"replace_norms does not know how to replace {cls.__module__}.{cls.__name__} at '{path}'{why}. Supported: "
        f"LayerNorm (and LayerNorm2d), BatchNorm1d/2d/3d, SyncBatchNorm, GroupNorm, RMSNorm (torch, timm, "
        f"transformers; also with 1 + w weights), timm's fused norm + activation layers, and any layer that computes "
        f"one of these. Pass skip=['{path}'] or skip=['{cls.__name__}'] to leave it in place."
    )


# the attributes that say what one of this package's layers computes (its tensors aside)
_CONFIG_ATTRS = ("num_features", "fn", "layout", "learnable_alpha", "alpha_init", "shift_init", "impl", "eps",
                 "affine", "momentum", "track_running_stats")


def _is_spec_layer(module: nn.Module, info: SourceNorm, spec: NormSpec) -> bool:
    """Whether ``module`` is already the layer ``spec`` builds in its place (a second replace_norms keeps it, with
    its trained values): one of this package's layers, of the same class, configuration and parameter shapes."""
    if not isinstance(module, (SquashNorm, ChannelsFirstLayerNorm, ChannelsFirstRMSNorm, BatchNorm)):
        return False
    if spec.is_squash and spec.alpha_init == "calibrate":
        return False  # its α0 is a placeholder until calibrated: never the same as a layer's
    if info.num_features == 0 and _width_free_reason(spec):
        return False
    fresh = _build_for(info, spec, device="meta")
    if type(fresh) is not type(module):
        return False
    if any(getattr(fresh, a, None) != getattr(module, a, None) for a in _CONFIG_ATTRS):
        return False
    shapes = {k: (tuple(v.shape), isinstance(v, nn.Parameter)) for k, v in fresh.named_parameters()}
    shapes.update({k: (tuple(v.shape), False) for k, v in fresh.named_buffers()})
    mine = {k: (tuple(v.shape), isinstance(v, nn.Parameter)) for k, v in module.named_parameters()}
    mine.update({k: (tuple(v.shape), False) for k, v in module.named_buffers()})
    return shapes == mine


def _check_skip(model: nn.Module, skip) -> tuple[str, ...]:
    """``skip`` as a tuple, each entry checked to match a module path (or path prefix) or class name of ``model``."""
    if isinstance(skip, str):
        raise TypeError(f"skip must be a list of module paths or class names; got the string {skip!r}")
    skip = tuple(skip)
    paths = [p for p, _ in model.named_modules() if p]
    classes = {type(m).__name__ for m in model.modules()}
    unmatched = [s for s in skip if s not in classes and not any(p == s or p.startswith(s + ".") for p in paths)]
    if unmatched:
        raise ValueError(f"skip entries {unmatched} match no module path or class name of the model; allowed: module "
                         f"paths (e.g. {paths[:3]}) or class names (e.g. {sorted(classes)[:5]})")
    return skip


def _looks_like_norm(m: nn.Module) -> bool:
    """A module whose class name says it normalises and that holds its own tensors (or is a leaf)."""
    if "norm" not in type(m).__name__.lower() or type(m).__module__.startswith("torch.nn.utils") or is_not_norm(m):
        return False
    # tensors of its own: parameters or float buffers (an int buffer such as position_ids says nothing)
    own = next(iter(m.parameters(recurse=False)), None) is not None or any(
        b.is_floating_point() for b in m.buffers(recurse=False))
    return own or next(m.children(), None) is None


def _copy_(dst: torch.Tensor | None, src: torch.Tensor | None, offset: float = 0.0) -> bool:
    if dst is None or src is None or dst.shape != src.shape:
        return False
    with torch.no_grad():
        dst.copy_(src.detach().to(dst.dtype) + offset)
    return True


def _inherit(new: nn.Module, old: nn.Module, info: SourceNorm) -> bool:
    """Carry γ (as ``weight + offset``: Gemma's 1 + w becomes a plain γ), β and, BN to BN, running statistics."""
    carried = False
    if info.affine:
        carried |= _copy_(getattr(new, "weight", None), getattr(old, "weight", None), info.weight_offset)
        if info.family != "rmsnorm":
            carried |= _copy_(getattr(new, "bias", None), getattr(old, "bias", None))
    if info.family == "batchnorm" and isinstance(new, nn.modules.batchnorm._BatchNorm):
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            carried |= _copy_(getattr(new, name, None), getattr(old, name, None))
        new.momentum = old.momentum
    return carried


def _width_free_reason(spec: NormSpec) -> str | None:
    """Why ``spec`` cannot replace a weightless layer of undeclared width (SourceNorm.num_features 0), or None."""
    if spec.is_squash and spec.affine is not True and spec.alpha_init != "auto":
        return None
    return (f"it has no weight and does not declare its width; a {spec.label()} layer needs the channel count "
            "(only a point-wise kind without γ/β and with a numeric or calibrated alpha_init can replace it)")


def _build_for(info: SourceNorm, spec: NormSpec, device=None, dtype=None) -> nn.Module:
    eps = info.eps
    if info.eps_from_dtype and spec.eps is None:
        # torch.nn.RMSNorm(eps=None): a new torch RMSNorm keeps that rule; any other layer takes float32's epsilon
        eps = torch.finfo(torch.float32).eps
    if info.num_features == 0:  # weightless, any width: a point-wise layer without γ/β needs no width
        return build_norm(spec, 1, info.layout, affine=False, bias=False, eps=eps, device=device, dtype=dtype)
    layer = build_norm(spec, info.num_features, info.layout, affine=info.affine, bias=info.bias, eps=eps,
                       device=device, dtype=dtype)
    if info.eps_from_dtype and spec.eps is None and type(layer) is nn.RMSNorm:
        layer.eps = None
    return layer


def _replacement(module: nn.Module, info: SourceNorm, spec: NormSpec, inherit_affine: bool) -> tuple[nn.Module, bool]:
    device, dtype = _device_dtype(module)
    new = _build_for(info, spec, device, dtype)
    new.train(module.training)
    carried = _inherit(new, module, info) if inherit_affine else False
    if info.activation is not None:  # a fused norm + activation: keep its drop and act modules, in place
        new = NormAct(new, getattr(module, "drop", None), module.act, source=type(module).__name__)
        new.train(module.training)
    return new, carried


def replace_norms(model: nn.Module, spec: NormSpec | dict | str, *, skip: tuple[str, ...] | list[str] = (),
                  inherit_affine: bool = False) -> NormReplacementReport:
    """Replace every normalization layer of ``model`` in place with the layer ``spec`` describes.

    Recognised: the classes of :data:`dyt_bench.norms.recognise.KNOWN` (torch's LayerNorm, RMSNorm, BatchNorm*,
    GroupNorm; timm's norm and fused norm + activation layers; torchvision's LayerNorm2d) and any other ``*Norm*`` leaf
    that computes LayerNorm, RMSNorm or x/√var with weight ``w`` or ``1 + w`` in either layout (checked by running
    it: transformers' T5LayerNorm, GemmaRMSNorm, NemotronLayerNorm1P, ...). Each new layer keeps the old one's
    channel count, layout, affine-ness, device and dtype (and epsilon unless the spec sets one). A fused layer keeps
    its activation and drop modules (the new layer is a :class:`~dyt_bench.norms.layers.NormAct`).

    ``inherit_affine``: carry γ/β over (γ = 1 + w for the 1 + w layers) and, BatchNorm to BatchNorm, the running
    statistics; default: the new layer's fresh γ = 1, β = 0, as in the paper.
    ``skip``: module paths (prefixes match sub-trees) or class names to leave untouched; an entry that matches
    nothing in the model raises ValueError (a typo would otherwise leave a layer replaced).
    Run twice, it is idempotent: a layer that is already what ``spec`` builds (this package's layer, same class and
    configuration) is kept with its trained α/γ/β and listed in ``report.already``; to another spec it is replaced
    like any norm (γ/β carried over only with ``inherit_affine``; α starts at the new spec's α0).
    Response normalisation (GRN) is kept and reported in ``report.kept``; any other ``*Norm*`` layer surgery cannot
    describe raises :class:`UnsupportedNormError` naming the class, the path and the reason, before anything changes.
    """
    spec = NormSpec.coerce(spec)
    if describe_norm(model) is not None:
        raise ValueError("replace_norms works in place on a model that contains norms; the model itself is a norm layer")
    skip = _check_skip(model, skip)
    report = NormReplacementReport(target=spec.label())
    todo: list[tuple[str, nn.Module, SourceNorm]] = []
    closed: list[str] = []  # sub-trees not to descend into
    for path, module in model.named_modules():
        if not path or any(path.startswith(p + ".") for p in closed):
            continue
        if type(module).__name__ in skip or any(path == s or path.startswith(s + ".") for s in skip):
            report.skipped.append(path)
            closed.append(path)
            continue
        reason = refused_reason(module)
        if reason:
            raise _refusal(module, path, reason)
        reason = kept_reason(module)
        if reason:
            report.kept[path] = f"{type(module).__name__}: {reason}"
            continue
        info = describe_norm(module)
        if info is not None and _is_spec_layer(module, info, spec):
            report.already.append(path)
            closed.append(path)
        elif info is not None:
            if info.num_features == 0 and _width_free_reason(spec):
                raise _refusal(module, path, _width_free_reason(spec))
            todo.append((path, module, info))
            closed.append(path)  # never descend into a layer that is replaced as a whole
        elif _looks_like_norm(module):
            leaf = next(module.children(), None) is None
            raise _refusal(module, path, probe_failure(module) if leaf else NOT_LEAF_REASON)
    for path, module, info in todo:
        new, carried = _replacement(module, info, spec, inherit_affine)
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        setattr(parent, name, new)
        cls_name = type(module).__name__
        report.paths.append(path)
        report.counts[cls_name] = report.counts.get(cls_name, 0) + 1
        report.layouts[info.layout] = report.layouts.get(info.layout, 0) + 1
        report.functions.setdefault(cls_name, info.formula())
        report.inherited += int(carried)
        if info.activation is not None:
            acts = report.activations.setdefault(cls_name, {})
            acts[info.activation] = acts.get(info.activation, 0) + 1
    return report


def count_norms(model: nn.Module) -> Counter:
    """Count modules by class name among the layers ``describe_norm`` recognises (handy in tests and reports)."""
    return Counter(type(m).__name__ for _, m in model.named_modules() if describe_norm(m) is not None)
