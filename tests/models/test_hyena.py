"""HyenaDNA: the FFT long convolution against a direct causal convolution (float64), causality, the named sizes and
norm placement, and last-token pooling."""

import numpy as np
import pytest
import torch

from dyt_bench.datamodules.dna import PAD_ID
from dyt_bench.models.hyena import HYENA_SIZES, HyenaClassifier, HyenaConfig, HyenaLM, fft_causal_conv
from dyt_bench.norms import SquashNorm, count_norms

pytestmark = pytest.mark.usefixtures("one_thread")


def test_fft_long_conv_equals_direct_causal_conv_float64():
    rng = np.random.default_rng(0)
    for length, k_len in ((37, 37), (64, 20), (1, 1)):
        u = rng.standard_normal((2, 5, length))
        k = rng.standard_normal((5, k_len))
        skip = rng.standard_normal(5)
        y = fft_causal_conv(torch.from_numpy(u), torch.from_numpy(k), torch.from_numpy(skip)).numpy()
        # reference: numpy's direct (full) convolution, cut to the first L outputs, i.e. y[t] = Σ_{s<=t} k[s] u[t-s]
        ref = np.stack([np.stack([np.convolve(u[b, c], k[c])[:length] for c in range(5)]) for b in range(2)])
        ref += u * skip[None, :, None]
        np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-10)
    # float32 inputs (the training dtype) agree to float32 precision
    u32 = torch.randn(3, 4, 50)
    k32 = torch.randn(4, 50)
    ref = fft_causal_conv(u32.double(), k32.double())
    torch.testing.assert_close(fft_causal_conv(u32, k32), ref.float(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["layernorm", "dyt"])
def test_model_is_causal(kind):
    torch.manual_seed(0)
    cfg = HyenaConfig(d_model=16, n_layer=2, l_max=64)
    model = HyenaLM(cfg, kind).double().eval()
    ids = torch.randint(7, 12, (2, 40))
    t0 = 17
    changed = ids.clone()
    changed[:, t0 + 1:] = torch.randint(7, 12, (2, 40 - t0 - 1))
    changed[:, t0 + 1] = (ids[:, t0 + 1] - 7 + 1) % 5 + 7  # certainly different at t0+1
    with torch.no_grad():
        a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :t0 + 1], b[:, :t0 + 1], rtol=0, atol=1e-12)  # the past does not see the future
    assert (a[:, t0 + 1:] - b[:, t0 + 1:]).abs().max() > 1e-6  # and the future does see the change
    # the same by gradients: output at t depends on embeddings at positions <= t only
    emb = model.backbone.embedding(ids).detach().requires_grad_(True)
    x = emb
    for layer in model.backbone.layers:
        x = layer(x)
    x[:, 10].sum().backward()
    grad = emb.grad.abs().sum(dim=(0, 2))
    # FFT round-off leaves ~1e-18 where exact arithmetic gives 0
    assert grad[:11].min() > 1e-6 and grad[11:].max() < 1e-12 * grad[:11].max()


def test_sizes_by_name_and_norm_placement():
    assert {n: (s["d_model"], s["n_layer"]) for n, s in HYENA_SIZES.items()}["tiny"] == (128, 2)
    assert (HYENA_SIZES["small"]["d_model"], HYENA_SIZES["small"]["n_layer"]) == (256, 4)
    assert (HYENA_SIZES["large"]["d_model"], HYENA_SIZES["large"]["n_layer"]) == (256, 8)
    tiny = HyenaLM(HyenaConfig.from_size("tiny"))
    # the published parameter count of hyenadna-tiny-1k is 0.44M
    assert sum(p.numel() for p in tiny.parameters()) == pytest.approx(0.44e6, rel=0.01)
    assert count_norms(tiny) == {"LayerNorm": 2 * 2 + 1}  # norm1, norm2 per block and the final norm
    dyt = HyenaClassifier(HyenaConfig.from_size("tiny", l_max=128), 3, "dyt")
    assert count_norms(dyt) == {"SquashNorm": 5} and all(m.alpha.item() == 1.0 for m in dyt.modules()
                                                          if isinstance(m, SquashNorm))
    with pytest.raises(ValueError, match="model.size"):
        HyenaConfig.from_size("huge")
    with pytest.raises(ValueError, match="model.pooling"):
        HyenaClassifier(HyenaConfig(), 2, pooling="max")
    with pytest.raises(ValueError, match="l_max"):
        HyenaLM(HyenaConfig(d_model=8, n_layer=1, l_max=16))(torch.zeros(1, 17, dtype=torch.long))



def test_last_pooling_reads_the_last_real_token():
    torch.manual_seed(0)
    model = HyenaClassifier(HyenaConfig(d_model=8, n_layer=1, l_max=16), 2, pooling="last").eval()
    ids = torch.randint(7, 12, (1, 10))
    padded = torch.cat([torch.full((1, 4), PAD_ID), ids], dim=1)
    mask = padded != PAD_ID
    with torch.no_grad():
        h = model.backbone(padded)
        torch.testing.assert_close(model(padded, mask), model.head(h[:, -1]))
        mean = model.head((h * mask[..., None]).sum(1) / 10)
        model.pooling = "mean"
        torch.testing.assert_close(model(padded, mask), mean)
