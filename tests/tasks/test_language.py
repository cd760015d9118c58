"""Language task: RMSNorm → DyT surgery on LLaMA, the embedding scale, the α width rule, the text datamodule, and
loss falling on the standard-library corpus."""

import math

import numpy as np
import pytest
import torch
from helpers import tiny_trainer
from torch import nn

from dyt_bench.datamodules import TextDataModule
from dyt_bench.datamodules.text import BYTE_VOCAB, EOS_BYTE
from dyt_bench.models.llama import EmbeddingScale
from dyt_bench.norms import NormSpec, SquashNorm, recommend_alpha_init
from dyt_bench.norms.alpha_init import main as alpha_init_main
from dyt_bench.tasks import LanguageModeling, OptimConfig

TINY = dict(vocab_size=BYTE_VOCAB, hidden_size=32, num_layers=2, num_heads=4, max_seq_len=64)


def test_rmsnorm_to_dyt_surgery_leaves_attention_untouched():
    baseline = LanguageModeling(**TINY, norm=NormSpec("rmsnorm"))
    dyt = LanguageModeling(**TINY, norm=NormSpec("dyt"))
    assert dyt.norm_report.counts == {"LlamaRMSNorm": 2 * 2 + 1}
    assert sum(isinstance(m, SquashNorm) for m in dyt.modules()) == 5
    for (name_a, mod_a), (name_b, mod_b) in zip(baseline.net.model.layers[0].self_attn.named_modules(),
                                                 dyt.net.model.layers[0].self_attn.named_modules(), strict=True):
        assert name_a == name_b and type(mod_a) is type(mod_b)  # attention: same modules, no norm inside
    n_base = sum(p.numel() for p in baseline.parameters())
    # DyT adds one α per norm and a bias per norm (RMSNorm has none), plus the embedding scale
    assert sum(p.numel() for p in dyt.parameters()) == n_base + 5 * (1 + 32) + 1


def test_embedding_scale_is_a_parameter_initialised_to_sqrt_d():
    task = LanguageModeling(**TINY, norm=NormSpec("dyt"))
    assert isinstance(task.net.model.embed_tokens, EmbeddingScale)
    scale = task.embedding_scale.scale
    assert isinstance(scale, nn.Parameter) and scale.requires_grad and scale.item() == pytest.approx(math.sqrt(32))
    ids = torch.randint(0, BYTE_VOCAB, (2, 5))
    torch.testing.assert_close(task.net.model.embed_tokens(ids), task.net.model.embed_tokens.embedding(ids) * math.sqrt(32))
    assert LanguageModeling(**TINY, norm=NormSpec("rmsnorm")).embedding_scale is None  # off for the baseline
    assert LanguageModeling(**TINY, norm=NormSpec("dyt"), embedding_scale=False).embedding_scale is None


def test_alpha_width_rule_reproduces_table7():
    # Table 7 of the paper: best α0 by width (1.0, 0.5, 0.2, 0.1–0.2, 0.1)
    assert [recommend_alpha_init(w) for w in (1024, 2048, 3072, 5120)] == [1.0, 0.5, 0.2, 0.1]
    assert 0.1 <= recommend_alpha_init(4096) <= 0.2
    assert recommend_alpha_init(256) == 1.0 and recommend_alpha_init(8192) == 0.1
    assert 0.5 < recommend_alpha_init(1536) < 1.0  # in between: monotone
    with pytest.raises(ValueError, match="width"):
        recommend_alpha_init(0)


def test_alpha_auto_and_separate_attention_init(capsys):
    task = LanguageModeling(**{**TINY, "hidden_size": 2048, "num_heads": 16, "num_layers": 1, "vocab_size": 16},
                            norm=NormSpec("dyt", alpha_init="auto"), attn_alpha_init=0.8)
    alphas = {name: m.alpha.item() for name, m in task.net.named_modules() if isinstance(m, SquashNorm)}
    assert alphas["model.layers.0.input_layernorm"] == pytest.approx(0.8)
    assert alphas["model.layers.0.post_attention_layernorm"] == pytest.approx(0.5)
    assert alphas["model.norm"] == pytest.approx(0.5)
    assert alpha_init_main(["--width", "3072"]) == 0
    assert "0.2" in capsys.readouterr().out


def _corpus(tmp_path, n=12):
    folder = tmp_path / "corpus"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        (folder / f"doc{i:02d}.txt").write_text(" ".join(f"word{int(w)}" for w in rng.integers(0, 50, 200 + 10 * i)))
    return folder


def test_text_datamodule_packs_splits_and_caches(tmp_path, monkeypatch):
    folder = _corpus(tmp_path)
    kw = dict(source="files", paths=[str(folder)], seq_len=32, batch_size=4, val_fraction=0.25,
              cache_dir=str(tmp_path / "cache"))
    a = TextDataModule(**kw)
    a.setup()
    train_files, val_files = a.split(a.documents())
    assert len(val_files) == 3 and not set(train_files) & set(val_files)
    # packing: the train tokens are the train documents' bytes in order, each followed by the end token
    expected = np.concatenate([np.append(np.frombuffer(f.read_bytes(), np.uint8).astype(np.uint16), EOS_BYTE)
                               for f in train_files])
    np.testing.assert_array_equal(np.asarray(a.train_set.tokens), expected)
    x = a.train_set[1]
    assert x.shape == (33,) and x.dtype == torch.int64
    np.testing.assert_array_equal(x.numpy(), expected[32:65])
    # a second datamodule reads the cache instead of the files, and gets the same split and tokens
    b = TextDataModule(**kw)
    monkeypatch.setattr(TextDataModule, "encode", lambda self, data: pytest.fail("re-tokenised despite the cache"))
    b.setup()
    assert b.cache_hits == 2
    np.testing.assert_array_equal(np.asarray(b.val_set.tokens), np.asarray(a.val_set.tokens))


def test_text_datamodule_errors(tmp_path):
    with pytest.raises(ValueError, match="data.paths is required"):
        TextDataModule(source="files")
    with pytest.raises(FileNotFoundError, match="neither a file nor a directory"):
        TextDataModule(source="files", paths=[str(tmp_path / "missing")], cache_dir=str(tmp_path)).setup()
    with pytest.raises(ValueError, match="data.source"):
        TextDataModule(source="wikipedia")


@pytest.mark.parametrize("kind", ["rmsnorm", "dyt"])
def test_loss_falls_on_the_stdlib_corpus(tmp_path, kind):
    torch.manual_seed(0)
    data = TextDataModule(source="stdlib", seq_len=32, batch_size=8, max_files=8, cache_dir=str(tmp_path / "cache"))
    task = LanguageModeling(**TINY, norm=NormSpec(kind), optim=OptimConfig(lr=3e-3, warmup_steps=5))
    data.setup()
    batch = next(iter(data.val_dataloader()))
    with torch.no_grad():
        before = task._loss(batch).item()
    assert before == pytest.approx(math.log(BYTE_VOCAB), abs=0.5)  # untrained: about uniform over 257 tokens
    tiny_trainer(tmp_path, max_steps=40, limit_val_batches=0).fit(task, datamodule=data)
    with torch.no_grad():
        after = task._loss(batch).item()
    assert after < before - 1.5, (before, after)
