"""NormSpec: a validated description of which normalization layer to place, shared by configs, surgery and results."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal, get_args

from dyt_bench.coerce import check_fields
from dyt_bench.ops.functions import DEFAULT_ALPHA_INIT_FIXED, DEFAULT_ALPHA_INIT_LEARNABLE, KINDS, POINTWISE_KINDS

STATISTIC_KINDS = ("layernorm", "batchnorm", "rmsnorm")
# The point-wise kinds come from the squash-function registry (ops/functions.py): a new function's kinds appear here.
SQUASH_KINDS: tuple[str, ...] = POINTWISE_KINDS
NORM_KINDS: tuple[str, ...] = STATISTIC_KINDS + SQUASH_KINDS
# the kinds whose α is learnable by default, and those with a learnable scalar shift inside f (Derf)
LEARNABLE_ALPHA_KINDS = tuple(name for name, (_, kind) in KINDS.items() if kind.learnable_alpha)
SHIFT_KINDS = tuple(name for name, (_, kind) in KINDS.items() if kind.shift)
# The squash function each point-wise kind applies; `dyt` is tanh with a learnable alpha.
SQUASH_FN: dict[str, str] = {name: fn.name for name, (fn, _) in KINDS.items()}

NormKind = Literal[NORM_KINDS]  # the same names, as a type (jsonargparse validates configs with it)
NormImpl = Literal["auto", "triton", "eager"]
Layout = Literal["channels_last", "channels_first"]

IMPLS: tuple[str, ...] = get_args(NormImpl)
LAYOUTS: tuple[str, ...] = get_args(Layout)

__all__ = [
    "DEFAULT_ALPHA_INIT_FIXED", "DEFAULT_ALPHA_INIT_LEARNABLE", "IMPLS", "LAYOUTS", "LEARNABLE_ALPHA_KINDS",
    "NORM_KINDS", "SHIFT_KINDS", "SQUASH_FN", "SQUASH_KINDS", "STATISTIC_KINDS", "NormSpec", "check_choice",
]


def check_choice(field: str, value, allowed) -> None:
    """Raise a ValueError naming the field and the allowed values when ``value`` is not one of them."""
    if value not in allowed:
        raise ValueError(f"{field} must be one of {', '.join(map(str, allowed))}; got {value!r}")


@dataclass
class NormSpec:
    """Which normalization layer to place.

    Args:
        kind: layernorm, batchnorm, rmsnorm (statistics-based) or a point-wise kind of the squash-function
            registry (ops/functions.py): dyt, tanh, hardtanh, sigmoid, identity, derf, ... (``weight * f(alpha * x)
            + bias``; ``dyt`` is tanh with a learnable alpha; ``derf`` is ``weight * erf(alpha * x + shift) + bias``
            with a learnable scalar shift, Chen et al. 2025). ``NormFactory.kinds()`` lists them all.
        alpha_init: initial alpha of the point-wise kinds. Default: 1.0 (the supplied text, §4.2), learnable or fixed;
            Derf's own 0.5 for ``derf``.
            ``auto``: the paper's LLM width rule (``recommend_alpha_init``) applied to each layer's channel count.
            ``calibrate``: one forward pass on a training batch before the first step sets each layer's
            α0 = ``calibrate_k`` / std(its input) (``norms/calibrate.py``; until then a layer holds the default α0).
            Ignored by the statistics-based kinds, so one config can switch ``kind`` alone.
        learnable_alpha: whether alpha is a trained parameter (else a fixed buffer). Default: the kind's (true for
            ``dyt`` and ``derf``, false for tanh / hardtanh / sigmoid / identity).
        shift_init, learnable_shift: Derf's scalar shift ``s`` (init 0, learnable by default); other kinds have none.
        impl: implementation of the point-wise op: auto (Triton on CUDA, eager elsewhere), triton, eager.
        eps: epsilon of the statistics-based kinds. Default: keep the replaced layer's epsilon (1e-6 for new layers).
        calibrate_k: the k of ``alpha_init: calibrate`` (default 1: the learned α tracks 1/std of the input, the
            paper's Figures 3–4); ignored otherwise.
        affine: per-channel γ/β. Default (null): keep the replaced layer's (DiT's adaLN norms have none, a ViT's
            LayerNorms have both); true gives every new layer γ and β, false neither.
        inherit_affine: carry each replaced layer's γ/β over to its new layer (``replace_norms(...,
            inherit_affine=True)``: a pretrained LayerNorm's γ/β start the DyT that replaces it). Default false: fresh
            γ = 1, β = 0, as in the paper.
    """

    kind: NormKind = "dyt"
    alpha_init: float | Literal["auto", "calibrate"] | None = None
    learnable_alpha: bool | None = None
    impl: NormImpl = "auto"
    eps: float | None = None
    shift_init: float = 0.0
    learnable_shift: bool = True
    affine: bool | None = None
    calibrate_k: float = 1.0
    inherit_affine: bool = False

    def __post_init__(self) -> None:
        # NORM_KINDS are the names NormFactory builds (its table is checked against them), read without importing it
        check_choice("norm.kind", self.kind, NORM_KINDS)
        if self.affine is not None and not isinstance(self.affine, bool):
            raise ValueError("norm.affine must be true, false or null (keep the replaced layer's); "
                             f"got {self.affine!r}")
        check_choice("norm.impl", self.impl, IMPLS)
        for name in ("learnable_alpha", "learnable_shift", "inherit_affine"):  # "no" or 0 must not read as a truth value
            value = getattr(self, name)
            if not isinstance(value, bool) and not (value is None and name == "learnable_alpha"):
                allowed = "true, false or null (the kind's default)" if name == "learnable_alpha" else "true or false"
                raise ValueError(f"norm.{name} must be {allowed}; got {value!r}")
        if self.alpha_init is not None and self.alpha_init not in ("auto", "calibrate"):
            if isinstance(self.alpha_init, bool) or not isinstance(self.alpha_init, (int, float)):
                raise ValueError(f"norm.alpha_init must be a number, 'auto' or 'calibrate'; got {self.alpha_init!r}")
            if not math.isfinite(self.alpha_init):  # NaN and ±inf
                raise ValueError(f"norm.alpha_init must be a finite number; got {self.alpha_init!r}")
            # a fixed α = 0 makes the output independent of the input; a learnable one moves off 0 (∂y/∂α = γ·x)
            if self.alpha_init == 0 and self.is_squash and not self.resolved_learnable_alpha:
                raise ValueError("norm.alpha_init must be non-zero when alpha is fixed (learnable_alpha false); got 0")
        shift = self.shift_init
        if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not math.isfinite(shift):  # NaN, inf
            raise ValueError(f"norm.shift_init must be a finite number; got {self.shift_init!r}")
        k = self.calibrate_k
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0 < k < float("inf"):
            raise ValueError(f"norm.calibrate_k must be a positive finite number; got {self.calibrate_k!r}")
        if self.eps is not None and not (isinstance(self.eps, (int, float)) and self.eps > 0):
            raise ValueError(f"norm.eps must be a positive number; got {self.eps!r}")

    @property
    def is_squash(self) -> bool:
        return self.kind in SQUASH_KINDS

    @property
    def squash_fn(self) -> str:
        return SQUASH_FN[self.kind]

    @property
    def resolved_learnable_alpha(self) -> bool:
        if self.learnable_alpha is not None:
            return bool(self.learnable_alpha)
        return self.kind in LEARNABLE_ALPHA_KINDS

    @property
    def resolved_alpha_init(self) -> float | str:
        """The initial α, or ``"auto"`` / ``"calibrate"`` when it depends on each layer's width (see
        :meth:`alpha_init_for`) or input."""
        if self.alpha_init in ("auto", "calibrate"):
            return self.alpha_init
        if self.alpha_init is not None:
            return float(self.alpha_init)
        return self._default_alpha_init()

    def _default_alpha_init(self) -> float:
        """The kind's own α0 where its source states one (Derf: 0.5), else 1 (the supplied text, §4.2)."""
        own = KINDS[self.kind][1] if self.kind in KINDS else None
        if own is not None and own.alpha_init is not None and self.resolved_learnable_alpha == own.learnable_alpha:
            return own.alpha_init
        return DEFAULT_ALPHA_INIT_LEARNABLE if self.resolved_learnable_alpha else DEFAULT_ALPHA_INIT_FIXED

    def alpha_init_for(self, width: int) -> float:
        """The initial α of a layer with ``width`` channels (``calibrate``: the kind's default, until calibrated)."""
        if self.alpha_init == "auto":
            from .alpha_init import recommend_alpha_init

            return recommend_alpha_init(width)
        if self.alpha_init == "calibrate":
            return self._default_alpha_init()
        return float(self.resolved_alpha_init)

    @property
    def calibrates(self) -> bool:
        """Whether α0 is set from the input std of each layer (``alpha_init: calibrate`` on a point-wise kind)."""
        return self.is_squash and self.alpha_init == "calibrate"

    def label(self) -> str:
        """Short human-readable name, e.g. ``dyt(α0=0.5)`` or ``tanh(α=1 fixed)``."""
        suffix = "" if self.affine is None else (" +γβ" if self.affine else " -γβ")
        if not self.is_squash:
            return self.kind + suffix
        a = {"auto": "auto", "calibrate": f"{self.calibrate_k:g}/std"}.get(self.alpha_init, None)
        a = a or f"{self.resolved_alpha_init:g}"
        base = f"{self.kind}(α0={a})" if self.resolved_learnable_alpha else f"{self.kind}(α={a} fixed)"
        return base + suffix

    @property
    def has_shift(self) -> bool:
        return self.kind in SHIFT_KINDS

    def to_dict(self) -> dict:
        d = asdict(self)
        if not self.has_shift:
            d.pop("shift_init"), d.pop("learnable_shift")
        if self.affine is None:
            d.pop("affine")
        if not self.inherit_affine:  # recorded only when set: configs without it keep their hashes
            d.pop("inherit_affine")
        if self.alpha_init != "calibrate":
            d.pop("calibrate_k")
        if self.is_squash:
            d["alpha_init"] = self.resolved_alpha_init
            d["learnable_alpha"] = self.resolved_learnable_alpha
        return d

    @classmethod
    def coerce(cls, value: NormSpec | dict | str) -> NormSpec:
        """Accept a NormSpec, a dict of its fields, or a bare kind name."""
        if isinstance(value, NormSpec):
            return value
        if isinstance(value, str):
            return cls(kind=value)
        if isinstance(value, dict):
            check_fields(cls, value, "norm")
            return cls(**value)
        raise TypeError(f"norm must be a NormSpec, a dict or a kind name; got {type(value).__name__}")
