"""The registry of squash functions ``f`` of the op ``weight * f(alpha * x + shift) + bias``, and the norm kinds built on them.

One entry per function holds everything the rest of the package needs to know about it: the eager formula (the
specification the kernels are tested against), its derivative, the largest value of that derivative (for the
saturation measure f'(z) / max f'), the code that selects its branch in the Triton kernels, and the norm kinds that
apply it (a name, whether α is learnable by default, whether the kind has a learnable shift). Adding a function is
one entry here plus its branch in the kernels (``ops/triton/kernels.py``); norms, surgery, the saturation monitor
and the probe read from this table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

# The supplied text, §4.2: "setting it to 1 works well in most cases" (LLMs excepted: norms.alpha_init's width rule);
# arXiv 2503.10622v1 and the authors' released code use 0.5.
DEFAULT_ALPHA_INIT_LEARNABLE = 1.0
DEFAULT_ALPHA_INIT_FIXED = 1.0  # the Table 8 squashes without α: f(x) itself


@dataclass(frozen=True)
class PointwiseKind:
    """A norm kind (``model.norm.kind``) that applies one squash function.

    ``learnable_alpha``: α is a trained parameter by default (else a fixed buffer); ``shift``: the kind has a scalar
    shift inside the function (Derf's ``erf(αx + s)``).
    """

    name: str
    learnable_alpha: bool = False
    shift: bool = False
    description: str = ""
    alpha_init: float | None = None  # the kind's own α0 where its source paper states one

    @property
    def default_alpha_init(self) -> float:
        if self.alpha_init is not None:
            return self.alpha_init
        return DEFAULT_ALPHA_INIT_LEARNABLE if self.learnable_alpha else DEFAULT_ALPHA_INIT_FIXED


@dataclass(frozen=True)
class SquashFunction:
    """One squash function ``f``.

    ``formula``: the eager ``f(z)`` on a float tensor; ``derivative``: ``f'(z)``; ``max_slope``: ``max_z f'(z)``;
    ``kernel_code``: the value of the kernels' ``FN`` constexpr that selects this function's branch; ``kinds``: the
    norm kinds that apply it; ``ablation``: one of the paper's Table 8 functions (the set every implementation and
    benchmark covers first).
    """

    name: str
    formula: Callable[[torch.Tensor], torch.Tensor]
    derivative: Callable[[torch.Tensor], torch.Tensor]
    max_slope: float
    kernel_code: int
    kinds: tuple[PointwiseKind, ...] = field(default_factory=tuple)
    ablation: bool = True

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.formula(z)

    def relative_slope(self, z: torch.Tensor) -> torch.Tensor:
        """``f'(z) / max f'``: 1 on the linear part of the curve, towards 0 where it is flat (saturated)."""
        return self.derivative(z) / self.max_slope


def _sigmoid_slope(z: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(z)
    return s * (1 - s)


FUNCTIONS: dict[str, SquashFunction] = {
    f.name: f
    for f in (
        SquashFunction(
            "tanh", torch.tanh, lambda z: 1 - torch.tanh(z) ** 2, 1.0, kernel_code=0,
            kinds=(PointwiseKind("dyt", learnable_alpha=True, description="Dynamic Tanh: γ · tanh(αx) + β, α learnable"),
                   PointwiseKind("tanh", description="γ · tanh(αx) + β, α fixed unless learnable_alpha (Table 8)"))),
        SquashFunction(
            "hardtanh", F.hardtanh, lambda z: ((z > -1) & (z < 1)).to(z.dtype), 1.0, kernel_code=1,
            kinds=(PointwiseKind("hardtanh", description="γ · clamp(αx, -1, 1) + β (Table 8)"),)),
        SquashFunction(
            "sigmoid", torch.sigmoid, _sigmoid_slope, 0.25, kernel_code=2,
            kinds=(PointwiseKind("sigmoid", description="γ · sigmoid(αx) + β (Table 8)"),)),
        SquashFunction(
            "identity", lambda z: z, torch.ones_like, 1.0, kernel_code=3,
            kinds=(PointwiseKind("identity", description="γ · αx + β: no squashing (Table 8)"),)),
        SquashFunction(
            "erf", torch.erf, lambda z: (2 / math.sqrt(math.pi)) * torch.exp(-z * z), 2 / math.sqrt(math.pi),
            kernel_code=4, ablation=False,
            kinds=(PointwiseKind("derf", learnable_alpha=True, shift=True, alpha_init=0.5,  # Derf's paper
                                 description="Derf: γ · erf(αx + s) + β, α and the shift s learnable"),)),
        SquashFunction(
            "softsign", F.softsign, lambda z: 1 / (1 + z.abs()) ** 2, 1.0, kernel_code=5, ablation=False,
            kinds=(PointwiseKind("softsign", description="γ · αx / (1 + |αx|) + β, α fixed unless learnable_alpha"),)),
    )
}

# Norm kind name -> (the function it applies, the kind).
KINDS: dict[str, tuple[SquashFunction, PointwiseKind]] = {k.name: (f, k) for f in FUNCTIONS.values() for k in f.kinds}

ALL_FUNCTIONS: tuple[str, ...] = tuple(FUNCTIONS)
SQUASH_FUNCTIONS: tuple[str, ...] = tuple(n for n, f in FUNCTIONS.items() if f.ablation)  # the paper's Table 8 set
EXTRA_FUNCTIONS: tuple[str, ...] = tuple(n for n, f in FUNCTIONS.items() if not f.ablation)
POINTWISE_KINDS: tuple[str, ...] = tuple(KINDS)


def get_function(name: str) -> SquashFunction:
    """The registry entry of ``name``; a ValueError naming the allowed functions otherwise."""
    try:
        return FUNCTIONS[name]
    except KeyError:
        raise ValueError(f"fn must be one of {', '.join(ALL_FUNCTIONS)}; got {name!r}") from None


def get_kind(name: str) -> tuple[SquashFunction, PointwiseKind]:
    """The function and kind entry of the point-wise norm kind ``name``."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"point-wise norm kind must be one of {', '.join(POINTWISE_KINDS)}; got {name!r}") from None


__all__ = [
    "ALL_FUNCTIONS", "DEFAULT_ALPHA_INIT_FIXED", "DEFAULT_ALPHA_INIT_LEARNABLE", "EXTRA_FUNCTIONS", "FUNCTIONS",
    "KINDS", "POINTWISE_KINDS", "PointwiseKind", "SQUASH_FUNCTIONS", "SquashFunction", "get_function", "get_kind",
]
