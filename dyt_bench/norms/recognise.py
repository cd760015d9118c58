"""The norm classes surgery recognises (a class name -> what it computes table), the ones it keeps or refuses and why,
and ``describe_norm``, which verifies a layer it does not know by running it on a probe input (no library does this).
"""

from __future__ import annotations

import copy
import inspect
import re
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .layers import BatchNorm, ChannelsFirstLayerNorm, ChannelsFirstRMSNorm, NormAct, SquashNorm

# family -> (subtracts the mean, the statistic under the square root); what each family computes per channel vector
FAMILIES: dict[str, tuple[bool, str]] = {
    "layernorm": (True, "variance"),        # (x - mean) / sqrt(var + eps)
    "rmsnorm": (False, "mean square"),      # x / sqrt(mean(x^2) + eps)
    "simplenorm": (False, "variance"),      # x / sqrt(var + eps)   (timm's SimpleNorm)
    "batchnorm": (True, "batch variance"),  # per channel over batch and space
    "groupnorm": (True, "group variance"),  # per group of channels over the group and space
    "squash": (False, "none"),              # this package's point-wise layers
}


@dataclass
class SourceNorm:
    """What a recognised normalization layer computes, and what surgery needs to replace it.

    ``weight_offset``: the layer multiplies by ``weight + weight_offset`` (Gemma's and Nemotron's ``1 + w``: 1.0).
    ``activation``: class name of a fused layer's activation, which surgery keeps. ``how``: ``declared`` (the class
    or its attributes say it) or ``probed`` (checked by running the layer). ``num_features`` 0: a layer without
    weight that works on any width and does not declare one. ``eps_from_dtype``: the layer's epsilon is the machine
    epsilon of its input's dtype (``torch.nn.RMSNorm(eps=None)``); ``eps`` is then None.
    """

    num_features: int
    layout: str
    affine: bool
    bias: bool
    eps: float | None
    family: str = "layernorm"
    weight_offset: float = 0.0
    activation: str | None = None
    how: str = "declared"
    eps_from_dtype: bool = False

    @property
    def centred(self) -> bool:
        return FAMILIES[self.family][0]

    @property
    def statistic(self) -> str:
        return FAMILIES[self.family][1]

    def formula(self) -> str:
        """The layer's function in one line, e.g. ``(x - mean) / sqrt(var + 1e-06) * (1 + w) + b over channels_last``."""
        if self.family == "squash":
            return "w * f(alpha * x) + b"
        top = "(x - mean)" if self.centred else "x"
        stat = {"variance": "var", "mean square": "mean(x^2)"}.get(self.statistic, self.statistic)
        y = f"{top} / sqrt({stat} + {self.eps:g})" if self.eps is not None else f"{top} / sqrt({stat})"
        if self.affine:
            y += " * (1 + w)" if self.weight_offset == 1.0 else " * w"
            y += " + b" if self.bias and self.family != "rmsnorm" else ""
        act = f", then {self.activation}" if self.activation else ""
        return f"{y} over {self.layout}{act}"


class UnsupportedNormError(TypeError):
    """Raised when a model holds a normalization layer that replace_norms does not know how to replace."""


# ---------------------------------------------------------------------------------------------------------------------
# The table: class name -> family, for classes whose code is known. Layout comes from the layer's own declaration
# (``data_format``, or the "2d" of timm's and torchvision's channels-first classes), never from this table.
KNOWN: dict[str, str] = {
    # torch
    "LayerNorm": "layernorm", "RMSNorm": "rmsnorm", "BatchNorm1d": "batchnorm", "BatchNorm2d": "batchnorm",
    "BatchNorm3d": "batchnorm", "SyncBatchNorm": "batchnorm", "GroupNorm": "groupnorm",
    # timm.layers.norm (the module-qualified names below keep timm's LayerNorm apart from torch's)
    "timm.LayerNorm": "layernorm", "timm.LayerNormFp32": "layernorm", "timm.LayerNorm2d": "layernorm",
    "timm.LayerNorm2dFp32": "layernorm", "timm.LayerNormExp2d": "layernorm", "timm.RmsNorm": "rmsnorm",
    "timm.RmsNormFp32": "rmsnorm", "timm.RmsNorm2d": "rmsnorm", "timm.RmsNorm2dFp32": "rmsnorm",
    "timm.SimpleNorm": "simplenorm", "timm.SimpleNormFp32": "simplenorm", "timm.SimpleNorm2d": "simplenorm",
    "timm.SimpleNorm2dFp32": "simplenorm", "timm.GroupNorm": "groupnorm", "timm.GroupNorm1": "groupnorm",
    # timm.layers.norm_act: fused norm + activation; surgery replaces the norm and keeps .drop and .act
    "timm.BatchNormAct2d": "batchnorm", "timm.SyncBatchNormAct": "batchnorm", "timm.GroupNormAct": "groupnorm",
    "timm.GroupNorm1Act": "groupnorm", "timm.LayerNormAct": "layernorm", "timm.LayerNormActFp32": "layernorm",
    "timm.LayerNormAct2d": "layernorm", "timm.LayerNormAct2dFp32": "layernorm", "timm.RmsNormAct": "rmsnorm",
    "timm.RmsNormActFp32": "rmsnorm", "timm.RmsNormAct2d": "rmsnorm", "timm.RmsNormAct2dFp32": "rmsnorm",
    # torchvision
    "torchvision.LayerNorm2d": "layernorm",
}

# Layers left in place on purpose, and reported as kept: (class-name pattern, reason).
KEPT: tuple[tuple[str, str], ...] = (
    (r"(GlobalResponseNorm|GRN)$", "response normalisation (ConvNeXt V2's GRN: rescales each channel by its global "
                                   "spatial L2 norm over the channel mean, plus a residual), not a per-token norm"),
)

# Classes whose name says "Norm" but that are no norm layer: never replaced, never refused.
NOT_NORMS: tuple[str, ...] = (
    r"NormFree",  # NFNet's normalization-free blocks (timm.models.nfnet.NormFreeBlock)
    r"NormedEmbedding",  # an embedding whose output goes through a child norm, which surgery replaces (transformers)
)

# Layers refused with a reason: (class-name pattern, reason).
REFUSED: tuple[tuple[str, str], ...] = (
    (r"Gated", "a gated norm (multiplies by silu(gate) of a second input, per group of channels): a point-wise "
               "replacement has no gate input, so replacing it would change what the model computes"),
    (r"Frozen\w*BatchNorm", "frozen batch statistics (a fixed affine map from pretraining): convert it to a trainable "
                            "BatchNorm first (timm: unfreeze_batch_norm_2d) or keep it with skip"),
    (r"EvoNorm|FilterResponseNorm|InPlaceABN|InplaceAbn", "a norm and activation in one formula, with no separate "
                                                          "activation module that surgery could keep"),
)


def _library(cls: type) -> str:
    module = cls.__module__
    for lib in ("timm", "torchvision"):
        if module.startswith(lib + "."):
            return lib
    return "torch" if module.startswith("torch.") else ""


def _table_family(m: nn.Module) -> str | None:
    cls = type(m)
    lib = _library(cls)
    if _is_quantized(cls):
        return None
    if lib == "torch":
        return KNOWN.get(cls.__name__)
    if not lib:
        return None
    for base in cls.__mro__:  # a subclass that keeps a known class's forward (timm's GroupNorm1NoBias) is that class
        if base is not cls and cls.forward is not getattr(base, "forward", None) or _library(base) != lib:
            continue
        family = KNOWN.get(f"{lib}.{base.__name__}")
        if family is not None:
            return family
    return None


def declared_layout(m: nn.Module) -> str | None:
    """The layout the layer declares: transformers' ``data_format``, timm's / torchvision's ``*2d`` naming."""
    fmt = getattr(m, "data_format", None)
    if fmt in ("channels_first", "channels_last"):
        return fmt
    cls = type(m)
    runs = next((c for c in cls.__mro__ if "forward" in vars(c)), cls)  # the class whose forward runs
    if any(re.search(r"2d(Fp32)?$", c.__name__) for c in (cls, runs)):
        return "channels_first"
    return None


def _eps(m: nn.Module) -> float | None:
    for name in ("eps", "variance_epsilon", "epsilon", "variance_eps"):
        value = getattr(m, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def _features(m: nn.Module) -> int | None:
    weight = getattr(m, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 1:
        return int(weight.shape[0])
    shape = getattr(m, "normalized_shape", None)
    if shape is None:
        shape = getattr(m, "hidden_size", None) or getattr(m, "dim", None)
    if isinstance(shape, int):
        return shape
    if isinstance(shape, (tuple, list, torch.Size)):
        if len(shape) != 1:
            raise UnsupportedNormError(f"{type(m).__name__} normalises over {len(shape)} trailing dims "
                                       f"{tuple(shape)}; only per-channel norms (one dim) can be replaced")
        return int(shape[0])
    return None


def _activation(m: nn.Module) -> str | None:
    act = getattr(m, "act", None)
    return type(act).__name__ if isinstance(act, nn.Module) else None


def _own_layer(m: nn.Module) -> SourceNorm | None:
    if isinstance(m, SquashNorm):
        return SourceNorm(m.num_features, m.layout, m.weight is not None, m.bias is not None, None, "squash")
    if isinstance(m, ChannelsFirstLayerNorm):
        return SourceNorm(m.num_features, "channels_first", m.weight is not None, m.bias is not None, m.eps)
    if isinstance(m, ChannelsFirstRMSNorm):
        return SourceNorm(m.num_features, "channels_first", m.weight is not None, m.weight is not None, m.eps,
                          "rmsnorm")
    if isinstance(m, BatchNorm):
        return SourceNorm(m.num_features, m.layout, m.affine, m.affine, m.eps, "batchnorm")
    return None


def _from_table(m: nn.Module, family: str) -> SourceNorm:
    weight = getattr(m, "weight", None)
    affine = isinstance(weight, torch.Tensor)
    has_bias = isinstance(getattr(m, "bias", None), torch.Tensor)
    if family == "batchnorm":
        return SourceNorm(m.num_features, "channels_first", affine, has_bias, m.eps, family,
                          activation=_activation(m))
    if family == "groupnorm":
        return SourceNorm(m.num_channels, "channels_first", affine, has_bias, m.eps, family,
                          activation=_activation(m))
    n = _features(m)
    layout = declared_layout(m) or "channels_last"
    # RMSNorm has no β by definition, not by the model's choice: a replacement keeps its own β (DyT: γ·tanh(αx) + β)
    bias = affine if family == "rmsnorm" else has_bias
    from_dtype = isinstance(m, nn.RMSNorm) and m.eps is None  # torch's RMSNorm: eps None = finfo(x.dtype).eps
    return SourceNorm(n, layout, affine, bias, _eps(m), family, activation=_activation(m), eps_from_dtype=from_dtype)


def _match(patterns, m: nn.Module) -> str | None:
    name = type(m).__name__
    for pattern, reason in patterns:
        if re.search(pattern, name):
            return reason
    return None


def is_not_norm(m: nn.Module) -> bool:
    """Whether ``m``'s class name says Norm although it is no norm layer (:data:`NOT_NORMS`)."""
    return any(re.search(p, type(m).__name__) for p in NOT_NORMS)


def kept_reason(m: nn.Module) -> str | None:
    """Why surgery leaves ``m`` in place (and reports it), or None."""
    return _match(KEPT, m) if next(m.children(), None) is None else None


QUANTIZED_REASON = ("a quantized layer (it takes and returns quantized tensors): a float replacement would change "
                    "what the model computes; dequantize the model first or keep it with skip")


def _is_quantized(cls: type) -> bool:
    return cls.__module__.startswith("torch.") and "quantized" in cls.__module__.split(".")


def refused_reason(m: nn.Module) -> str | None:
    """Why surgery refuses ``m`` with an error, or None when that is not decided by its class alone."""
    if "norm" not in type(m).__name__.lower():
        return None
    if _is_quantized(type(m)):
        return QUANTIZED_REASON
    return _match(REFUSED, m)


# ---------------------------------------------------------------------------------------------------------------------
# Probe: a layer whose code is not in the table is run on random input and must equal exactly one LN / RMS / simple
# norm formula (either layout, weight w or 1 + w) in float64; else it is refused.

_PROBE_CACHE: dict[tuple, SourceNorm | str] = {}


def _reference(x: torch.Tensor, family: str, eps: float, w, b, channel_dim: int) -> torch.Tensor:
    centred, stat = FAMILIES[family]
    mean = x.mean(channel_dim, keepdim=True)
    var = (x - mean).pow(2).mean(channel_dim, keepdim=True) if stat == "variance" else x.pow(2).mean(
        channel_dim, keepdim=True)
    y = (x - mean if centred else x) / torch.sqrt(var + eps)
    if w is not None:
        y = y * _per_channel(w, channel_dim, x.dim())
    if b is not None:
        y = y + _per_channel(b, channel_dim, x.dim())
    return y


def _probe_input(n: int, layout: str, scale: float, gen: torch.Generator) -> tuple[torch.Tensor, int]:
    if layout == "channels_last":
        shape, dim = (2, 3, n), -1
    else:
        shape, dim = (2, n, 3, 2 if n != 2 else 3), 1  # W != C, so a layer reading the wrong axis cannot match
    offset_shape = [1] * len(shape)
    offset_shape[dim] = n
    # + 1: a mean far from 0 at any width, so x / sqrt(var) and x / sqrt(mean(x^2)) differ (1536 channels of
    # per-channel offsets alone average to ~0, and the two matched alike)
    x = torch.randn(shape, generator=gen, dtype=torch.float64) + 0.7 * torch.randn(
        offset_shape, generator=gen, dtype=torch.float64) + 1.0
    return x * scale, dim


def _per_channel(t: torch.Tensor, dim: int, ndim: int) -> torch.Tensor:
    shape = [1] * ndim
    shape[dim] = -1
    return t.view(shape)


def _estimate_eps(layer, n, layout, family, w, b, gen) -> float:
    """eps from a low-variance input, where it shows: (top / y)^2 = stat + eps, with y the un-affined output."""
    x, dim = _probe_input(n, layout, 1e-3, gen)
    with torch.no_grad():
        y = layer(x).double()
    if b is not None:
        y = y - _per_channel(b, dim, x.dim())
    if w is not None:
        y = y / _per_channel(w, dim, x.dim())
    top_over_root_stat = _reference(x, family, 0.0, None, None, dim)
    ratio = (top_over_root_stat / y).pow(2).mean(dim, keepdim=True)  # (stat + eps) / stat
    kind = FAMILIES[family][1]
    mean = x.mean(dim, keepdim=True)
    stat = (x - mean).pow(2).mean(dim, keepdim=True) if kind == "variance" else x.pow(2).mean(dim, keepdim=True)
    eps = float(((ratio - 1) * stat).median())
    return float(f"{eps:.1g}") if eps > 0 else 0.0


def _probe(m: nn.Module) -> SourceNorm | str:
    """Describe ``m`` by running it, or return why it cannot be described."""
    params = dict(m.named_parameters(recurse=False))
    if set(params) - {"weight", "bias"} or any(p.dim() != 1 for p in params.values()):
        return "its parameters are not a per-channel weight / bias"
    float_buffers = {k for k, t in m.named_buffers(recurse=False) if t.is_floating_point()}
    # a weight / bias buffer beside no parameters may be a placeholder the forward ignores (FalconMamba's
    # WeightlessRMSNorm): it is randomised below, so the layer matches a weightless formula only if it is unused
    unused_affine = bool(float_buffers) and not params and float_buffers <= {"weight", "bias"}
    if float_buffers and not unused_affine:
        return "it holds floating-point buffers (running statistics?) that no LN / RMS formula uses"
    sig = [p for p in inspect.signature(m.forward).parameters.values()
           if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if len(sig) != 1:
        return f"its forward takes more than one input ({', '.join(p.name for p in sig)})"
    n = _features(m)
    declared = declared_layout(m)
    width_free = n is None and not params and not float_buffers
    if n is None and not width_free:
        return "its channel count is not declared (no 1-D weight, normalized_shape or hidden_size)"
    if width_free:  # no weight, no declared width (Gemma 4's v_norm, DeepSeek V4's unweighted RMSNorm)
        n, declared = 8, declared or "channels_last"
    layouts = (declared,) if declared else ("channels_last", "channels_first")
    layer = copy.deepcopy(m).to("cpu", torch.float64).eval()  # probe on CPU whatever the model's device
    gen = torch.Generator().manual_seed(0)
    w = b = None
    with torch.no_grad():
        for name in float_buffers:
            getattr(layer, name).uniform_(0.5, 1.5, generator=gen)
        if "weight" in params:
            w = layer.weight.uniform_(0.5, 1.5, generator=gen).detach().clone()
        if "bias" in params:
            b = layer.bias.normal_(0.0, 0.5, generator=gen).detach().clone()
    eps = _eps(m)
    matches = []
    for layout in layouts:
        x, dim = _probe_input(n, layout, 1.0, gen)
        try:
            with torch.no_grad():
                y = layer(x)
        except Exception:  # noqa: BLE001 - a layer that rejects this layout simply does not match it
            continue
        if not isinstance(y, torch.Tensor) or y.shape != x.shape:
            continue
        y = y.double()
        for family in ("layernorm", "rmsnorm", "simplenorm"):
            for offset in ((0.0, 1.0) if w is not None else (0.0,)):
                ref = _reference(x, family, eps if eps is not None else 1e-5, None if w is None else w + offset,
                                 b, dim)
                if (y - ref).abs().max() <= 1e-3 * max(1.0, float(ref.abs().max())):
                    matches.append((layout, family, offset))
    if len(matches) != 1:
        return ("its output matches no LayerNorm / RMSNorm formula (either layout, weight w or 1 + w)" if not matches
                else f"its output matches several formulas {matches}")
    layout, family, offset = matches[0]
    if eps is None:
        eps = _estimate_eps(layer, n, layout, family, None if w is None else w + offset, b, gen)
    affine = w is not None
    bias = affine if family == "rmsnorm" else b is not None
    how = "probed, layout declared" if declared else "probed"
    width_free = width_free or unused_affine  # an unused placeholder's shape says nothing of the input's width
    return SourceNorm(0 if width_free else n, layout, affine, bias, eps, family, offset,
                      how=how + (", any width" if width_free else ""))


def probe_failure(m: nn.Module) -> str | None:
    """Why a ``*Norm*`` layer outside the table could not be described by probing, or None when it could."""
    result = _probe_cached(m)
    return result if isinstance(result, str) else None


def _probe_cached(m: nn.Module) -> SourceNorm | str:
    weight, bias = getattr(m, "weight", None), getattr(m, "bias", None)
    key = (type(m), _eps(m), getattr(m, "data_format", None), getattr(m, "normalized_shape", None),
           tuple(weight.shape) if isinstance(weight, torch.Tensor) else None, isinstance(bias, torch.Tensor))
    if key not in _PROBE_CACHE:
        try:
            _PROBE_CACHE[key] = _probe(m)
        except UnsupportedNormError as err:
            _PROBE_CACHE[key] = str(err)
    result = _PROBE_CACHE[key]
    return copy.copy(result) if isinstance(result, SourceNorm) else result


def _is_norm_candidate(m: nn.Module) -> bool:
    """A leaf whose class name says it normalises, outside torch's weight / spectral-norm parametrizations."""
    cls = type(m)
    if "norm" not in cls.__name__.lower() or next(m.children(), None) is not None or is_not_norm(m):
        return False
    return not cls.__module__.startswith("torch.nn.utils")


_TORCH_BASES = ((nn.LayerNorm, "layernorm"), (nn.RMSNorm, "rmsnorm"), (_BatchNorm, "batchnorm"),
                (nn.GroupNorm, "groupnorm"))


def describe_norm(m: nn.Module) -> SourceNorm | None:
    """What a normalization layer computes, or None when ``m`` is no norm surgery can replace.

    Classes in :data:`KNOWN` (and this package's own layers) are described from their declaration; any other leaf
    ``*Norm*`` layer is run on a probe input and described only when it equals exactly one LN / RMS / simple-norm
    formula. Layers that :data:`KEPT` or :data:`REFUSED` name return None (surgery reports or refuses them).
    """
    if isinstance(m, NormAct):
        return None
    own = _own_layer(m)
    if own is not None:
        return own
    family = _table_family(m)
    if family is not None:
        return _from_table(m, family)
    for base, base_family in _TORCH_BASES:  # a subclass that keeps torch's forward computes what torch's does
        if not isinstance(m, base) or type(m).forward is not base.forward:
            continue
        if base_family in ("layernorm", "rmsnorm") and declared_layout(m) == "channels_first":
            break  # torch's forward is channels-last: a contradiction the probe below settles
        return _from_table(m, base_family)
    if not _is_norm_candidate(m) or kept_reason(m) or refused_reason(m):
        return None
    result = _probe_cached(m)
    return result if isinstance(result, SourceNorm) else None


__all__ = ["FAMILIES", "KEPT", "KNOWN", "REFUSED", "SourceNorm", "UnsupportedNormError", "declared_layout",
           "describe_norm", "is_not_norm", "kept_reason", "probe_failure", "refused_reason"]
