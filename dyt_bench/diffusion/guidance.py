"""Classifier-free guidance: a class-conditional model as a function of (x_t, t), mixing its conditional and
unconditional predictions."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .process import ModelFn


def guided_model_fn(model: Callable, labels: torch.Tensor, cfg_scale: float = 1.0, null_label: int | None = None
                    ) -> ModelFn:
    """A class-conditional model as a function of (x_t, t). With ``cfg_scale`` ≠ 1, classifier-free guidance:
    ``ε = ε(x, ∅) + s · (ε(x, y) − ε(x, ∅))`` on every input channel (conditional and unconditional halves run as
    one batch); a learned variance is taken from the conditional half."""
    if cfg_scale == 1.0:
        return lambda x, t: model(x, t, labels)
    if null_label is None:
        raise ValueError("classifier-free guidance (sampling.cfg_scale != 1) needs a model trained with class dropout "
                         "(model.class_dropout_prob > 0)")

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, torch.full_like(labels, null_label)]))
        cond, uncond = out.chunk(2)
        c = x.shape[1]
        eps = uncond[:, :c] + cfg_scale * (cond[:, :c] - uncond[:, :c])
        return torch.cat([eps, cond[:, c:]], dim=1)

    return fn


__all__ = ["guided_model_fn"]
