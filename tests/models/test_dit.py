"""DiT builder: the paper's sizes and parameter counts, name errors, adaLN-Zero identity blocks, embeddings."""

import math

import numpy as np
import pytest
import torch

from dyt_bench.models.dit import DIT_NAMES, build_dit, parse_dit_name, sincos_2d


@pytest.fixture(autouse=True)
def _one_thread():
    # small matrices: one thread is faster than two on a shared two-core machine
    torch.set_num_threads(1)
    yield


# Parameter counts of the DiT paper (Table 4, 256×256 images = 32×32×4 latents): S 33M, B 130M, L 458M, XL 675M.
PAPER_PARAMS_M = {"S": 33.0, "B": 130.0, "L": 458.0, "XL": 675.0}


@pytest.mark.parametrize("name", DIT_NAMES)
def test_dit_size_names_parameter_counts_and_shapes(name):
    size = name.split("-")[1].split("/")[0]
    with torch.device("meta"):
        full = build_dit(name, input_size=32, in_channels=4, num_classes=1000)
    millions = sum(p.numel() for p in full.parameters()) / 1e6
    assert millions == pytest.approx(PAPER_PARAMS_M[size], rel=0.01)
    depth, hidden, heads, patch = parse_dit_name(name)
    assert (len(full.blocks), full.blocks[0].attn.num_heads, full.patch_size) == (depth, heads, patch)
    # forward / backward on a one-block model of the same width and patch
    net = build_dit(name, input_size=16, in_channels=4, num_classes=10, depth=1, zero_init=False)
    x = torch.randn(2, 4, 16, 16, requires_grad=True)
    out = net(x, torch.tensor([0, 999]), torch.tensor([1, 10]))  # label 10: the "no class" label
    assert out.shape == (2, 8, 16, 16)
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_dit_name_errors():
    for bad in ("DiT-M/2", "DiT-B/3", "dit-b/4", "ViT-B/16"):
        with pytest.raises(ValueError, match="model.model must be one of"):
            parse_dit_name(bad)


def test_adaln_zero_blocks_are_identity_at_init():
    net = build_dit("DiT-S/2", input_size=8, in_channels=3, num_classes=5, depth=3, hidden_size=48, num_heads=3)
    tokens = torch.randn(2, 16, 48)
    c = net.condition(torch.tensor([3, 700]), torch.tensor([0, 4]))
    for block in net.blocks:
        torch.testing.assert_close(block(tokens, c), tokens, rtol=0, atol=0)
    assert torch.count_nonzero(net(torch.randn(2, 3, 8, 8), torch.tensor([3, 700]), torch.tensor([0, 4]))) == 0
    # without the zero initialisation the same block changes its input
    net2 = build_dit("DiT-S/2", input_size=8, in_channels=3, num_classes=5, depth=1, hidden_size=48, num_heads=3,
                     zero_init=False)
    assert (net2.blocks[0](tokens, net2.condition(torch.tensor([3, 700]), torch.tensor([0, 4]))) - tokens).abs().max() > 1e-3


def test_sincos_position_embedding_matches_numpy():
    dim, grid = 16, 4
    omega = 1.0 / 10000 ** (np.arange(dim // 4) / (dim / 4))

    def emb1d(pos):
        ang = np.outer(pos, omega)
        return np.concatenate([np.sin(ang), np.cos(ang)], axis=1)

    rows, cols = np.divmod(np.arange(grid * grid), grid)  # tokens in row-major order
    expected = np.concatenate([emb1d(cols), emb1d(rows)], axis=1)
    np.testing.assert_allclose(sincos_2d(dim, grid).numpy(), expected, atol=1e-12)


def test_timestep_embedding_is_cos_then_sin():
    from dyt_bench.models.dit import TimestepEmbedder

    t = torch.tensor([0.0, 17.0, 999.0])
    emb = TimestepEmbedder.sinusoidal(t, 8).double()
    freqs = np.exp(-math.log(10000) * np.arange(4) / 4)
    ang = np.outer(t.numpy(), freqs)
    np.testing.assert_allclose(emb.numpy(), np.concatenate([np.cos(ang), np.sin(ang)], axis=1), rtol=1e-5, atol=1e-5)
