"""LLaMA α by norm role (attention / MLP / final) and the β of the DyT that replaces RMSNorm: each switch does what it
says, and the defaults follow the supplied text (one α for every DyT layer; DyT = γ · tanh(αx) + β, Eq. 1)."""

import pytest
import torch

from dyt_bench.models.llama import build_llama, llama_norm_group, set_alpha_groups, set_squash_bias
from dyt_bench.norms import NormSpec, SquashNorm, recommend_alpha_init, replace_norms
from dyt_bench.tasks import LanguageModeling

TINY = dict(vocab_size=16, hidden_size=32, num_layers=2, num_heads=4, max_seq_len=32)


def _alphas(task) -> dict[str, float]:
    return {name: m.alpha.item() for name, m in task.net.named_modules() if isinstance(m, SquashNorm)}


def test_every_llama_norm_has_exactly_one_role():
    net = build_llama(16, 32, 3, 4)
    replace_norms(net, NormSpec("dyt"))
    roles = [llama_norm_group(n) for n, m in net.named_modules() if isinstance(m, SquashNorm)]
    assert roles.count("attention") == 3 and roles.count("mlp") == 3 and roles.count("final") == 1
    assert None not in roles and len(roles) == 7


def test_default_is_one_alpha_for_all_dyt_layers():
    alphas = _alphas(LanguageModeling(**TINY, norm=NormSpec("dyt", alpha_init=0.3)))
    assert len(alphas) == 5 and all(a == pytest.approx(0.3) for a in alphas.values())


def test_attention_and_final_alpha_set_only_their_layers():
    task = LanguageModeling(**TINY, norm=NormSpec("dyt", alpha_init=0.2), attn_alpha_init=0.8, final_alpha_init=0.5)
    for name, alpha in _alphas(task).items():
        want = 0.8 if name.endswith("input_layernorm") else 0.5 if name == "model.norm" else 0.2
        assert alpha == pytest.approx(want), name
    auto = LanguageModeling(**{**TINY, "hidden_size": 2048, "num_heads": 16, "num_layers": 1},
                            norm=NormSpec("dyt", alpha_init=0.05), attn_alpha_init="auto")
    assert _alphas(auto)["model.layers.0.input_layernorm"] == pytest.approx(recommend_alpha_init(2048))
    assert _alphas(auto)["model.layers.0.post_attention_layernorm"] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="allowed: attention, mlp, final"):
        set_alpha_groups(task.net, 32, decoder=0.1)


def test_squash_bias_default_on_as_eq1_and_switch_off():
    with_beta = LanguageModeling(**TINY, norm=NormSpec("dyt"))
    norms = [m for m in with_beta.net.modules() if isinstance(m, SquashNorm)]
    assert all(m.bias is not None and torch.equal(m.bias, torch.zeros(32)) for m in norms)
    without = LanguageModeling(**TINY, norm=NormSpec("dyt"), squash_bias=False)
    assert all(m.bias is None and m.weight is not None for m in without.net.modules() if isinstance(m, SquashNorm))
    n_with = sum(p.numel() for p in with_beta.parameters())
    assert n_with - sum(p.numel() for p in without.parameters()) == 5 * 32
    # the switch only adds or removes β: the forward pass at init is the same (β starts at zero)
    without.load_state_dict({k: v for k, v in with_beta.state_dict().items() if not k.endswith("norm.bias")
                             and "layernorm.bias" not in k})
    ids = torch.randint(0, 16, (2, 9))
    torch.testing.assert_close(with_beta(ids), without(ids))
    # norm.affine set: the spec decides, squash_bias is ignored
    no_affine = LanguageModeling(**TINY, norm=NormSpec("dyt", affine=False), squash_bias=True)
    assert all(m.weight is None and m.bias is None for m in no_affine.net.modules() if isinstance(m, SquashNorm))
    assert set_squash_bias(without.net, True) == 5 and set_squash_bias(without.net, True) == 0
