"""HyenaDNA's optional learnable embedding scale: off by default (HyenaDNA and the paper's DNA runs have none), a
scalar parameter initialised to √d_model or the configured value when on, applied to the embeddings."""

import math

import pytest
import torch
from torch import nn

from dyt_bench.models.hyena import HyenaBackbone, HyenaConfig
from dyt_bench.tasks import DNAClassification, DNAPretraining

SMALL = dict(size="tiny", d_model=16, n_layer=1, l_max=32)


def test_off_by_default():
    cfg = HyenaConfig(d_model=16, n_layer=1, l_max=32)
    assert cfg.embedding_scale is False
    assert DNAPretraining(**SMALL).net.backbone.embed_scale is None
    assert DNAClassification(**SMALL).net.backbone.embed_scale is None


@pytest.mark.parametrize("init, want", [(None, 4.0), (50.0, 50.0)])
def test_scale_is_a_learnable_scalar_at_sqrt_d_or_its_init(init, want):
    task = DNAPretraining(**SMALL, embedding_scale=True, embedding_scale_init=init)
    scale = task.net.backbone.embed_scale
    assert isinstance(scale, nn.Parameter) and scale.requires_grad and scale.dim() == 0
    assert scale.item() == pytest.approx(want) and (init is not None or want == math.sqrt(16))
    # it multiplies the embedding output: the first block sees scale × embedding (dropout off in eval)
    backbone: HyenaBackbone = task.net.backbone.eval()
    seen = {}
    handle = backbone.layers[0].norm1.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    ids = torch.randint(0, 12, (2, 10))
    backbone(ids)
    handle.remove()
    torch.testing.assert_close(seen["x"], backbone.embedding(ids) * want)
    task.net(ids).sum().backward()
    assert scale.grad is not None and scale.grad.abs().item() > 0


def test_bad_values_name_the_field():
    with pytest.raises(ValueError, match="model.embedding_scale_init"):
        HyenaConfig(embedding_scale=True, embedding_scale_init="big")
    with pytest.raises(ValueError, match="model.embedding_scale must be"):
        HyenaConfig(embedding_scale="yes")
