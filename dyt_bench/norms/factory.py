"""NormFactory: the table of norm kinds (name → builder, the NormSpec fields it reads, a description) and build_norm.

The statistics-based kinds are registered here; the point-wise kinds come from the squash-function registry
(``ops/functions.py``), so a new function's kinds can be built without editing this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType

from torch import nn

from dyt_bench.ops.functions import KINDS

from .layers import BatchNorm, ChannelsFirstLayerNorm, ChannelsFirstRMSNorm, SquashNorm
from .spec import LAYOUTS, NormSpec, check_choice

DEFAULT_EPS = 1e-6

# builder(spec, num_features, layout, affine, bias, eps, device, dtype) -> the layer; eps is resolved already
Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class NormKindEntry:
    """One norm kind: how to build it, which NormSpec fields it reads (besides ``kind``), what it is."""

    name: str
    build: Builder
    fields: tuple[str, ...]
    description: str


def _layernorm(spec, num_features, layout, *, affine, bias, eps, device, dtype) -> nn.Module:
    if layout == "channels_last":
        return nn.LayerNorm(num_features, eps=eps, elementwise_affine=affine, bias=bias, device=device, dtype=dtype)
    return ChannelsFirstLayerNorm(num_features, eps=eps, affine=affine, bias=bias, device=device, dtype=dtype)


def _batchnorm(spec, num_features, layout, *, affine, bias, eps, device, dtype) -> nn.Module:
    return BatchNorm(num_features, eps=eps, affine=affine, layout=layout, device=device, dtype=dtype)


def _rmsnorm(spec, num_features, layout, *, affine, bias, eps, device, dtype) -> nn.Module:
    if layout == "channels_last":
        return nn.RMSNorm(num_features, eps=eps, elementwise_affine=affine, device=device, dtype=dtype)
    return ChannelsFirstRMSNorm(num_features, eps=eps, affine=affine, device=device, dtype=dtype)


def _squash(spec, num_features, layout, *, affine, bias, eps, device, dtype) -> nn.Module:
    return SquashNorm(
        num_features,
        fn=spec.squash_fn,
        alpha_init=spec.alpha_init_for(num_features),
        learnable_alpha=spec.resolved_learnable_alpha,
        layout=layout,
        affine=affine,
        bias=bias,
        impl=spec.impl,
        shift_init=spec.shift_init if spec.has_shift else None,
        learnable_shift=spec.learnable_shift,
        device=device,
        dtype=dtype,
    )


_STATISTIC_FIELDS = ("eps", "affine")
_SQUASH_FIELDS = ("alpha_init", "learnable_alpha", "impl", "affine")
_SHIFT_FIELDS = ("shift_init", "learnable_shift")

_ENTRIES: tuple[NormKindEntry, ...] = (
    NormKindEntry("layernorm", _layernorm, _STATISTIC_FIELDS, "LayerNorm over the channels (either layout)"),
    NormKindEntry("batchnorm", _batchnorm, _STATISTIC_FIELDS,
                  "BatchNorm: per channel over batch and every other dimension (tokens count as samples)"),
    NormKindEntry("rmsnorm", _rmsnorm, _STATISTIC_FIELDS, "RMSNorm over the channels (either layout)"),
) + tuple(
    NormKindEntry(name, _squash, _SQUASH_FIELDS + (_SHIFT_FIELDS if kind.shift else ()), kind.description)
    for name, (_, kind) in KINDS.items()
)


class NormFactory:
    """The norm kinds ``NormSpec.kind`` may name, and how each one is built.

    ``NormFactory.kinds()`` lists them (statistics-based first, then the point-wise kinds in the order of
    ``ops/functions.py``); ``NormFactory.build(spec, num_features, layout)`` builds one layer; ``NormFactory.entry``
    gives a kind's builder, fields and description.
    """

    _kinds: MappingProxyType[str, NormKindEntry] = MappingProxyType({e.name: e for e in _ENTRIES})

    @classmethod
    def kinds(cls) -> tuple[str, ...]:
        return tuple(cls._kinds)

    @classmethod
    def entry(cls, kind: str) -> NormKindEntry:
        check_choice("norm.kind", kind, cls._kinds)
        return cls._kinds[kind]

    @classmethod
    def describe(cls) -> dict[str, str]:
        """Kind name → one-line description, in :meth:`kinds` order."""
        return {name: e.description for name, e in cls._kinds.items()}

    @classmethod
    def build(
        cls,
        spec: NormSpec | dict | str,
        num_features: int,
        layout: str = "channels_last",
        *,
        affine: bool = True,
        bias: bool = True,
        eps: float | None = None,
        device=None,
        dtype=None,
    ) -> nn.Module:
        """Build the layer ``spec`` describes for ``num_features`` channels.

        ``layout``: ``channels_last`` (channel dim last, e.g. tokens B, N, C) or ``channels_first`` (dim 1, e.g.
        B, C, H, W). ``eps`` is the fallback epsilon when the spec does not set one (surgery passes the replaced
        layer's). ``affine=False`` builds the layer without weight and bias; ``bias=False`` without bias. A spec with
        ``affine`` set overrides both (true: weight and bias; false: neither).
        """
        spec = NormSpec.coerce(spec)
        if spec.affine is not None:
            affine = bias = spec.affine
        check_choice("layout", layout, LAYOUTS)
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features <= 0:
            raise ValueError(f"num_features must be a positive int; got {num_features!r}")
        eps = spec.eps if spec.eps is not None else (eps if eps is not None else DEFAULT_EPS)
        return cls.entry(spec.kind).build(spec, num_features, layout, affine=affine, bias=bias, eps=eps,
                                          device=device, dtype=dtype)


def build_norm(
    spec: NormSpec | dict | str,
    num_features: int,
    layout: str = "channels_last",
    *,
    affine: bool = True,
    bias: bool = True,
    eps: float | None = None,
    device=None,
    dtype=None,
) -> nn.Module:
    """:meth:`NormFactory.build` as a function: the layer ``spec`` describes for ``num_features`` channels."""
    return NormFactory.build(spec, num_features, layout, affine=affine, bias=bias, eps=eps, device=device,
                             dtype=dtype)


__all__ = ["DEFAULT_EPS", "NormFactory", "NormKindEntry", "build_norm"]
