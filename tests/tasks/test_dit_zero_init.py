"""DiT arms differ in one variable: adaLN-Zero is on for every norm by default (the supplied text changes only the
norm); ``zero_init: null`` gives the DyT authors' code (off for the point-wise norms), ``false`` turns it off."""

import pytest
import torch

from dyt_bench.tasks.diffusion import DiffusionTask

TINY = dict(model="DiT-S/4", depth=2, hidden_size=32, num_heads=2, img_size=16, in_chans=1, num_classes=10,
            fid={"feature_extractor": "random_cnn", "num_samples": 32}, sampling={"steps": 10})


def _zeroed(task) -> bool:
    net = task.net
    weights = [b.adaLN_modulation[-1].weight for b in net.blocks] + [net.final_layer.linear.weight]
    return all(torch.count_nonzero(w) == 0 for w in weights)


@pytest.mark.parametrize("kind", ["layernorm", "dyt"])
def test_zero_init_is_on_for_both_arms_by_default(kind):
    task = DiffusionTask(**TINY, norm={"kind": kind})
    assert task.zero_init is True and _zeroed(task)


def test_null_follows_the_authors_code_and_false_turns_it_off():
    assert DiffusionTask(**TINY, norm={"kind": "dyt"}, zero_init=None).zero_init is False
    assert DiffusionTask(**TINY, norm={"kind": "layernorm"}, zero_init=None).zero_init is True
    off = DiffusionTask(**TINY, norm={"kind": "layernorm"}, zero_init=False)
    assert off.zero_init is False and not _zeroed(off)
