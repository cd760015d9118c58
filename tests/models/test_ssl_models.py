"""MAE and DINO building blocks against independent references: masking, patch order (timm's PatchEmbed), the
normalized-pixel loss and the DINO loss in float64, the head's unit-norm last layer, schedules, EMA, and where the
norm swap puts DyT."""

import copy
import math

import numpy as np
import pytest
import torch
from scipy.special import log_softmax, softmax

from dyt_bench.models.dino import DINOHead, DINOLoss, MultiCropNet, cosine_schedule, ema_update, teacher_temperature
from dyt_bench.models.mae import (
    MAEDecoderConfig,
    MaskedAutoencoderViT,
    build_vit_encoder,
    masked_patch_loss,
    patchify,
    random_masking,
    unpatchify,
)
from dyt_bench.norms import NormSpec, replace_norms
from dyt_bench.norms.layers import SquashNorm

VIT = {"patch_size": 2, "embed_dim": 16, "depth": 2, "num_heads": 2, "global_pool": "avg", "class_token": False}


def tiny_mae(**vit):
    enc = build_vit_encoder("vit_tiny_patch16_224", 8, 1, {**VIT, **vit})
    return MaskedAutoencoderViT(enc, MAEDecoderConfig(embed_dim=8, depth=1, num_heads=2), in_chans=1)


def test_random_masking_keeps_a_per_sample_subset():
    gen = torch.Generator().manual_seed(0)
    keep, restore, mask = random_masking(16, 5, 0.75, "cpu", gen)
    assert keep.shape == (5, 4) and mask.shape == (5, 16)
    assert torch.equal(mask.sum(1), torch.full((5,), 12.0))
    for b in range(5):  # the kept indices are exactly the unmasked patches, and restore undoes the shuffle
        assert set(keep[b].tolist()) == set(torch.nonzero(mask[b] == 0).flatten().tolist())
        assert sorted(restore[b].tolist()) == list(range(16))
    assert len({tuple(sorted(k.tolist())) for k in keep}) > 1  # different samples, different subsets


def test_patchify_matches_timm_patch_embed_order():
    from timm.layers import PatchEmbed

    p, c = 2, 3
    embed = PatchEmbed(img_size=8, patch_size=p, in_chans=c, embed_dim=p * p * c)
    with torch.no_grad():  # a convolution that copies pixel (row i, col k, channel ch) to channel (i, k, ch)
        embed.proj.weight.zero_()
        embed.proj.bias.zero_()
        for i in range(p):
            for k in range(p):
                for ch in range(c):
                    embed.proj.weight[(i * p + k) * c + ch, ch, i, k] = 1.0
    imgs = torch.randn(2, c, 8, 8)
    assert torch.allclose(patchify(imgs, p), embed(imgs), atol=1e-6)
    assert torch.equal(unpatchify(patchify(imgs, p), p, c, (4, 4)), imgs)


def test_masked_patch_loss_against_float64():
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(3, 6, 4)), rng.normal(size=(3, 6, 4)) * 3 + 1
    mask = (rng.random((3, 6)) < 0.5).astype(float)
    mask[0, 0] = 1
    t = (target - target.mean(-1, keepdims=True)) / np.sqrt(target.var(-1, ddof=1, keepdims=True) + 1e-6)
    expected = (((pred - t) ** 2).mean(-1) * mask).sum() / mask.sum()
    got = masked_patch_loss(torch.tensor(pred), torch.tensor(target), torch.tensor(mask), norm_pix=True)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    raw = (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()
    assert masked_patch_loss(torch.tensor(pred), torch.tensor(target), torch.tensor(mask), False).item() == \
        pytest.approx(raw, rel=1e-6)


def test_mae_encoder_without_mask_is_timms_forward():
    torch.manual_seed(0)
    net = tiny_mae().eval()
    x = torch.randn(2, 1, 8, 8)
    enc = net.encoder
    assert isinstance(enc.norm, torch.nn.Identity)  # global_pool='avg': timm's final norm is fc_norm, after pooling
    assert torch.allclose(net.encode(x, None), enc.fc_norm(enc.forward_features(x)), atol=1e-6)
    cls_net = tiny_mae(global_pool="token", class_token=True).eval()
    assert torch.allclose(cls_net.encode(x, None), cls_net.encoder.forward_features(x), atol=1e-6)
    loss, pred, mask = net(x, mask_ratio=0.75)
    assert pred.shape == (2, 16, 4) and mask.sum().item() == 2 * 12 and torch.isfinite(loss)


def test_mae_visible_patches_alone_determine_the_prediction():
    torch.manual_seed(0)
    net = tiny_mae().eval()
    x = torch.randn(1, 1, 8, 8)
    keep, restore, mask = random_masking(16, 1, 0.75, "cpu", torch.Generator().manual_seed(1))
    hidden = mask[0].bool().nonzero().flatten()
    y = patchify(x.clone(), 2)
    y[0, hidden] = torch.randn(len(hidden), 4) * 10  # change only what the encoder does not see
    with torch.no_grad():
        a = net.decode(net.encode(x, keep), restore)
        b = net.decode(net.encode(unpatchify(y, 2, 1, (4, 4)), keep), restore)
    assert torch.allclose(a, b, atol=1e-6)


def test_norm_swap_reaches_encoder_and_decoder():
    net = tiny_mae()
    report = replace_norms(net, NormSpec(kind="dyt"))
    # encoder: 2 per block + final; decoder: 2 per block + final
    assert report.total == (2 * 2 + 1) + (2 * 1 + 1)
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in net.modules())
    assert isinstance(net.decoder_norm, SquashNorm) and isinstance(net.encoder.fc_norm, SquashNorm)


def test_dino_head_last_layer_has_unit_rows_and_no_activation_norm():
    torch.manual_seed(0)
    head = DINOHead(16, out_dim=32, hidden_dim=24, bottleneck_dim=8)
    assert torch.allclose(head.last_weight().norm(dim=1), torch.ones(32), atol=1e-6)
    assert replace_norms(copy.deepcopy(head), NormSpec(kind="dyt")).total == 0  # nothing to swap by default
    normed = DINOHead(16, out_dim=32, hidden_dim=24, bottleneck_dim=8, use_norm=True)
    assert replace_norms(normed, NormSpec(kind="dyt")).total == 2
    x = torch.randn(4, 16)
    z = torch.nn.functional.normalize(head.mlp(x), dim=-1).double()
    w = head.last_direction.double()
    assert torch.allclose(head(x).double(), z @ (w / w.norm(dim=1, keepdim=True)).T, atol=1e-5)


def _dino_loss_reference(student, teacher, center, n_crops, n_global, t_s, t_t):
    s = np.split(student / t_s, n_crops)
    q = np.split(softmax((teacher - center) / t_t, axis=-1), n_global)
    terms = [(-q[i] * log_softmax(s[v], axis=-1)).sum(-1).mean() for i in range(n_global) for v in range(n_crops)
             if v != i]
    return float(np.mean(terms))


def test_dino_loss_and_center_against_float64():
    rng = np.random.default_rng(0)
    b, k, n_crops, n_global = 3, 10, 4, 2
    student, teacher = rng.normal(size=(b * n_crops, k)), rng.normal(size=(b * n_global, k))
    loss_fn = DINOLoss(k, student_temp=0.1, center_momentum=0.9)
    loss_fn.center.copy_(torch.tensor(rng.normal(size=(1, k))))
    center = loss_fn.center.double().numpy().copy()
    got = loss_fn(torch.tensor(student), torch.tensor(teacher), n_crops, n_global, teacher_temp=0.04)
    assert got.item() == pytest.approx(_dino_loss_reference(student, teacher, center, n_crops, n_global, 0.1, 0.04),
                                       rel=1e-5)
    assert np.allclose(loss_fn.center.numpy(), 0.9 * center + 0.1 * teacher.mean(0, keepdims=True), atol=1e-6)


def test_schedules_and_ema():
    assert cosine_schedule(0.996, 1.0, 0, 100) == pytest.approx(0.996)
    assert cosine_schedule(0.996, 1.0, 100, 100) == pytest.approx(1.0)
    assert cosine_schedule(0.996, 1.0, 50, 100) == pytest.approx(0.998)
    assert cosine_schedule(0.0, 1.0, 25, 100) == pytest.approx(0.5 * (1 - math.cos(math.pi / 4)))
    assert teacher_temperature(0, 10, 0.04, 0.07) == pytest.approx(0.04)
    assert teacher_temperature(5, 10, 0.04, 0.07) == pytest.approx(0.055)
    assert teacher_temperature(20, 10, 0.04, 0.07) == pytest.approx(0.07)
    s, t = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = t.weight.detach().clone()
    ema_update(t, s, 0.9)
    assert torch.allclose(t.weight, 0.9 * before + 0.1 * s.weight.detach())


def test_multicrop_net_batches_by_resolution():
    torch.manual_seed(0)
    backbone = build_vit_encoder("vit_tiny_patch16_224", 8, 1, {**VIT, "dynamic_img_size": True}).eval()
    net = MultiCropNet(backbone, DINOHead(16, 12, 16, 8)).eval()
    crops = [torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8), torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)]
    expected = torch.cat([net.head(backbone(c)) for c in crops])
    assert torch.allclose(net(crops), expected, atol=1e-5)
