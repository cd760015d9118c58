"""replace_norms: swap every normalization layer of a model (timm, torchvision, transformers, plain torch) in place."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .factory import build_norm
from .layers import BatchNorm, ChannelsFirstLayerNorm, ChannelsFirstRMSNorm, SquashNorm
from .spec import NormSpec


class UnsupportedNormError(TypeError):
    """Raised when a model holds a normalization layer that replace_norms does not know how to replace."""


@dataclass
class SourceNorm:
    """What surgery needs to know about a layer it replaces."""

    num_features: int
    layout: str
    affine: bool
    bias: bool
    eps: float | None
    family: str = "layernorm"  # layernorm | rmsnorm | batchnorm | groupnorm | squash: what the layer computes


@dataclass
class NormReplacementReport:
    """What replace_norms did: the target layer and, per replaced class, how many layers and where."""

    target: str
    counts: dict[str, int] = field(default_factory=dict)
    layouts: dict[str, int] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        return {"target": self.target, "total": self.total, "counts": dict(self.counts), "layouts": dict(self.layouts),
                "skipped": list(self.skipped)}

    def __str__(self) -> str:
        if not self.counts:
            return f"replace_norms: no normalization layers found (target {self.target})"
        parts = ", ".join(f"{name} ×{n}" for name, n in sorted(self.counts.items()))
        lay = ", ".join(f"{k} ×{v}" for k, v in sorted(self.layouts.items()))
        skipped = f"; left untouched: {len(self.skipped)}" if self.skipped else ""
        return f"replace_norms: {self.total} layers → {self.target}: {parts} ({lay}){skipped}"


def _one_dim(shape, cls_name: str) -> int:
    shape = tuple(shape) if not isinstance(shape, int) else (shape,)
    if len(shape) != 1:
        raise UnsupportedNormError(
            f"{cls_name} normalises over {len(shape)} trailing dims {shape}; only per-channel norms (one dim) can be replaced"
        )
    return int(shape[0])


def _layernorm_like(m: nn.Module, layout: str) -> SourceNorm:
    n = _one_dim(m.normalized_shape, type(m).__name__)
    affine = bool(getattr(m, "elementwise_affine", m.weight is not None)) and m.weight is not None
    return SourceNorm(n, layout, affine, getattr(m, "bias", None) is not None, m.eps, "layernorm")


def _rms_like(m: nn.Module, layout: str) -> SourceNorm:
    weight = getattr(m, "weight", None)
    if weight is not None:
        n = weight.shape[0]
    else:
        n = _one_dim(getattr(m, "normalized_shape", None) or m.hidden_size, type(m).__name__)
    eps = getattr(m, "eps", None)
    if eps is None:
        eps = getattr(m, "variance_epsilon", None)
    # RMSNorm has no β by definition, not by the model's choice: a replacement keeps its own β (DyT: γ·tanh(αx) + β)
    return SourceNorm(int(n), layout, weight is not None, weight is not None, eps, "rmsnorm")


def _timm_classes(*names: str) -> tuple[type, ...]:
    try:
        import timm.layers.norm as timm_norm
    except ImportError:  # timm is a dependency, but surgery itself does not need it
        return ()
    return tuple(getattr(timm_norm, n) for n in names if hasattr(timm_norm, n))


def _torchvision_classes() -> tuple[type, ...]:
    try:
        from torchvision.models.convnext import LayerNorm2d
    except ImportError:
        return ()
    return (LayerNorm2d,)


_TRANSFORMERS_RMS = re.compile(r"RMSNorm$|RmsNorm$")


def describe_norm(m: nn.Module) -> SourceNorm | None:
    """Return what a recognised normalization layer looks like, or None when ``m`` is no norm surgery knows."""
    # Layers this package builds (so a model can be re-wired more than once).
    if isinstance(m, SquashNorm):
        return SourceNorm(m.num_features, m.layout, m.weight is not None, m.bias is not None, None, "squash")
    if isinstance(m, ChannelsFirstLayerNorm):
        return SourceNorm(m.num_features, "channels_first", m.weight is not None, m.bias is not None, m.eps, "layernorm")
    if isinstance(m, ChannelsFirstRMSNorm):
        return SourceNorm(m.num_features, "channels_first", m.weight is not None, m.weight is not None, m.eps, "rmsnorm")
    if isinstance(m, BatchNorm):
        return SourceNorm(m.num_features, m.layout, m.affine, m.affine, m.eps, "batchnorm")
    # LayerNorm subclasses that normalise over dim 1 of (B, C, H, W): timm's LayerNorm2d family, torchvision's
    # ConvNeXt LayerNorm2d, and any LayerNorm that declares data_format="channels_first" (transformers' ConvNeXt).
    if isinstance(m, nn.LayerNorm) or hasattr(m, "normalized_shape"):
        channels_first = isinstance(m, _timm_classes("LayerNorm2d", "LayerNorm2dFp32", "LayerNormExp2d") + _torchvision_classes())
        channels_first = channels_first or getattr(m, "data_format", None) == "channels_first"
        if isinstance(m, nn.LayerNorm) or getattr(m, "data_format", None) in ("channels_first", "channels_last"):
            return _layernorm_like(m, "channels_first" if channels_first else "channels_last")
    if isinstance(m, _BatchNorm):
        return SourceNorm(m.num_features, "channels_first", m.affine, m.affine, m.eps, "batchnorm")
    if isinstance(m, nn.GroupNorm):
        return SourceNorm(m.num_channels, "channels_first", m.affine, m.affine, m.eps, "groupnorm")
    if isinstance(m, nn.RMSNorm):
        n = _one_dim(m.normalized_shape, "RMSNorm")
        return SourceNorm(n, "channels_last", m.weight is not None, m.weight is not None, m.eps, "rmsnorm")
    if isinstance(m, _timm_classes("RmsNorm", "RmsNormFp32", "SimpleNorm", "SimpleNormFp32")):
        return _rms_like(m, "channels_last")
    if isinstance(m, _timm_classes("RmsNorm2d", "RmsNorm2dFp32", "SimpleNorm2d", "SimpleNorm2dFp32")):
        return _rms_like(m, "channels_first")
    cls = type(m)
    if cls.__module__.startswith("transformers.") and _TRANSFORMERS_RMS.search(cls.__name__):
        weight = getattr(m, "weight", None)
        if weight is not None and weight.dim() == 1:
            return _rms_like(m, "channels_last")
    return None


def _weight_parametrizations() -> tuple[type, ...]:
    """torch's weight / spectral norm parametrizations: they reparametrise weights, they do not normalise activations."""
    from torch.nn.utils import parametrizations

    return tuple(c for c in (getattr(parametrizations, "_WeightNorm", None),
                             getattr(parametrizations, "_SpectralNorm", None)) if c is not None)


def _looks_like_norm(m: nn.Module) -> bool:
    """A leaf module whose class name says it normalises activations: refused rather than silently left in place."""
    if isinstance(m, _weight_parametrizations()):
        return False
    return "norm" in type(m).__name__.lower() and next(m.children(), None) is None


def _device_dtype(m: nn.Module) -> tuple[torch.device | None, torch.dtype | None]:
    for t in list(m.parameters(recurse=False)) + list(m.buffers(recurse=False)):
        if t.is_floating_point():
            return t.device, t.dtype
    for t in m.buffers(recurse=False):
        return t.device, None
    return None, None


def replace_norms(model: nn.Module, spec: NormSpec | dict | str, *, skip: tuple[str, ...] | list[str] = ()) -> NormReplacementReport:
    """Replace every normalization layer of ``model`` in place with the layer ``spec`` describes.

    Recognised: ``nn.LayerNorm`` (and channels-first subclasses: timm/torchvision ``LayerNorm2d``), ``nn.BatchNorm1d/2d/3d``
    and ``SyncBatchNorm``, ``nn.GroupNorm``, ``nn.RMSNorm``, timm's ``RmsNorm``/``RmsNorm2d``/``SimpleNorm`` families,
    transformers' ``*RMSNorm`` classes, and this package's own layers. Each new layer keeps the old one's channel
    count, layout, affine-ness, device and dtype (and epsilon unless the spec sets one).

    ``skip``: module paths (e.g. ``"head.norm"``, prefixes match sub-trees) or class names to leave untouched.
    Any other leaf module whose class name contains "Norm" raises :class:`UnsupportedNormError`.
    """
    spec = NormSpec.coerce(spec)
    if describe_norm(model) is not None:
        raise ValueError("replace_norms works in place on a model that contains norms; the model itself is a norm layer")
    skip = tuple(skip)
    report = NormReplacementReport(target=spec.label())
    todo: list[tuple[str, nn.Module, SourceNorm]] = []
    skipped_prefixes: list[str] = []
    for path, module in model.named_modules():
        if not path:
            continue
        if any(path == p or path.startswith(p + ".") for p in skipped_prefixes):
            continue
        if type(module).__name__ in skip or any(path == s or path.startswith(s + ".") for s in skip):
            report.skipped.append(path)
            skipped_prefixes.append(path)
            continue
        info = describe_norm(module)
        if info is not None:
            todo.append((path, module, info))
            skipped_prefixes.append(path)  # never descend into a layer that is replaced as a whole
        elif _looks_like_norm(module):
            raise UnsupportedNormError(
                f"replace_norms does not know how to replace {type(module).__module__}.{type(module).__name__} at "
                f"'{path}'. Supported: LayerNorm (and LayerNorm2d), BatchNorm1d/2d/3d, SyncBatchNorm, GroupNorm, RMSNorm "
                f"(torch, timm, transformers) and dyt-bench's own layers. Pass skip=['{path}'] or "
                f"skip=['{type(module).__name__}'] to leave it in place."
            )
    for path, module, info in todo:
        device, dtype = _device_dtype(module)
        new = build_norm(spec, info.num_features, info.layout, affine=info.affine, bias=info.bias, eps=info.eps,
                         device=device, dtype=dtype)
        new.train(module.training)
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        setattr(parent, name, new)
        report.paths.append(path)
        cls_name = type(module).__name__
        report.counts[cls_name] = report.counts.get(cls_name, 0) + 1
        report.layouts[info.layout] = report.layouts.get(info.layout, 0) + 1
    return report


def count_norms(model: nn.Module) -> Counter:
    """Count modules by class name among the layers ``describe_norm`` recognises (handy in tests and reports)."""
    return Counter(type(m).__name__ for _, m in model.named_modules() if describe_norm(m) is not None)
