"""DINO (Caron et al., 2021) pieces around a timm VisionTransformer backbone: the projection head, the multi-crop
wrapper, the centred and sharpened cross-entropy between teacher and student, and the schedules.

Written by hand because no maintained library ships them in a reusable form: the head (3-layer MLP, L2-normalised
bottleneck, a last linear layer whose rows are unit-normalised — a weight reparametrisation, not an activation norm,
so the norm swap leaves it alone), the loss with its running centre, and the cosine / linear schedules.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class DINOHead(nn.Module):
    """MLP (``nlayers`` Linear + GELU, optional LayerNorm after each hidden Linear) → L2-normalised bottleneck →
    last Linear with row-normalised weight (``norm_last_layer``: DINO's weight norm with its gain fixed at 1)."""

    def __init__(self, in_dim: int, out_dim: int = 65536, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 nlayers: int = 3, use_norm: bool = False, norm_last_layer: bool = True) -> None:
        super().__init__()
        if nlayers < 1:
            raise ValueError(f"model.head.nlayers must be >= 1; got {nlayers}")
        layers: list[nn.Module] = []
        dims = [in_dim] + [hidden_dim] * (nlayers - 1) + [bottleneck_dim]
        for i in range(nlayers):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < nlayers - 1:
                if use_norm:
                    layers.append(nn.LayerNorm(dims[i + 1]))
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_direction = nn.Parameter(torch.empty(out_dim, bottleneck_dim))
        nn.init.trunc_normal_(self.last_direction, std=0.02)
        self.norm_last_layer = norm_last_layer
        # Gain of the weight norm; fixed to 1 (not a parameter) when norm_last_layer, DINO's default for ViTs
        self.last_gain = None if norm_last_layer else nn.Parameter(torch.ones(out_dim, 1))

    def last_weight(self) -> torch.Tensor:
        w = F.normalize(self.last_direction, dim=1)
        return w if self.last_gain is None else w * self.last_gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1)
        return F.linear(x, self.last_weight())


class MultiCropNet(nn.Module):
    """Backbone + head over a list of crops: crops of one resolution go through the backbone as one batch."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, crops: list[torch.Tensor]) -> torch.Tensor:
        sizes = torch.tensor([c.shape[-1] for c in crops])
        ends = torch.cumsum(torch.unique_consecutive(sizes, return_counts=True)[1], 0).tolist()
        feats, start = [], 0
        for end in ends:
            feats.append(self.backbone(torch.cat(crops[start:end])))
            start = end
        return self.head(torch.cat(feats))


def cosine_schedule(start: float, end: float, step: int, total: int) -> float:
    """``start`` at step 0 to ``end`` at ``total`` along a half cosine (DINO's momentum and weight-decay schedules)."""
    if total <= 0:
        return end
    t = min(max(step, 0), total) / total
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * t))


def teacher_temperature(step: int, warmup_steps: int, start: float, end: float) -> float:
    """Teacher temperature: linear from ``start`` to ``end`` over ``warmup_steps``, then ``end``."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return end
    return start + (end - start) * step / warmup_steps


class DINOLoss(nn.Module):
    """Cross-entropy between the sharpened, centred teacher distribution of each global crop and the student's
    distribution of every other crop; the centre is an EMA of the teacher's batch mean (``center_momentum``)."""

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student_out: torch.Tensor, teacher_out: torch.Tensor, n_crops: int, n_global: int,
                teacher_temp: float) -> torch.Tensor:
        student = (student_out.float() / self.student_temp).chunk(n_crops)
        teacher_probs = F.softmax((teacher_out.float() - self.center) / teacher_temp, dim=-1).detach().chunk(n_global)
        total, pairs = 0.0, 0
        for iq, q in enumerate(teacher_probs):
            for v, s in enumerate(student):
                if v == iq:  # the student never predicts the teacher's view of the same crop
                    continue
                total = total + torch.sum(-q * F.log_softmax(s, dim=-1), dim=-1).mean()
                pairs += 1
        self.update_center(teacher_out)
        return total / max(pairs, 1)

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        batch_center = teacher_out.float().mean(dim=0, keepdim=True)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(batch_center)
            batch_center /= torch.distributed.get_world_size()
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher ← m·teacher + (1 − m)·student, parameter by parameter (buffers copied)."""
    t_params = list(teacher.parameters())
    s_params = list(student.parameters())
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, [p.detach() for p in s_params], alpha=1 - momentum)
    for tb, sb in zip(teacher.buffers(), student.buffers(), strict=False):
        tb.copy_(sb)


__all__ = ["DINOHead", "DINOLoss", "MultiCropNet", "cosine_schedule", "ema_update", "teacher_temperature"]
