"""build_norm: one normalization layer from a NormSpec, for a given channel count and layout."""

from __future__ import annotations

from torch import nn

from .layers import BatchNorm, ChannelsFirstLayerNorm, ChannelsFirstRMSNorm, SquashNorm
from .spec import LAYOUTS, NormSpec, check_choice

DEFAULT_EPS = 1e-6


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
    if not isinstance(num_features, int) or num_features <= 0:
        raise ValueError(f"num_features must be a positive int; got {num_features!r}")
    eps = spec.eps if spec.eps is not None else (eps if eps is not None else DEFAULT_EPS)
    factory = {"device": device, "dtype": dtype}
    if spec.is_squash:
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
            **factory,
        )
    if spec.kind == "layernorm":
        if layout == "channels_last":
            return nn.LayerNorm(num_features, eps=eps, elementwise_affine=affine, bias=bias, **factory)
        return ChannelsFirstLayerNorm(num_features, eps=eps, affine=affine, bias=bias, **factory)
    if spec.kind == "rmsnorm":
        if layout == "channels_last":
            return nn.RMSNorm(num_features, eps=eps, elementwise_affine=affine, **factory)
        return ChannelsFirstRMSNorm(num_features, eps=eps, affine=affine, **factory)
    if spec.kind == "batchnorm":
        return BatchNorm(num_features, eps=eps, affine=affine, layout=layout, **factory)
    raise AssertionError(f"unhandled norm kind {spec.kind!r}")  # NormSpec validation makes this unreachable
