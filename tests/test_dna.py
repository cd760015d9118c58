"""DNA task: HyenaDNA's FFT long convolution against a direct causal convolution (float64), causality, the FASTA
stream (windows, N handling, chromosome split), the GenomicBenchmarks layout, learning a planted-motif fixture with
LayerNorm and DyT, pretraining loss on a generated genome, and init_from loading every backbone weight."""

import gzip
import math

import numpy as np
import pytest
import torch
from helpers import tiny_trainer

from dyt_bench.datamodules import GenomeDataModule, GenomicBenchmarksDataModule
from dyt_bench.datamodules.dna import (
    DNA_VOCAB_SIZE,
    N_ID,
    PAD_ID,
    DNATokenizer,
    reverse_complement,
    write_synthetic_benchmark,
)
from dyt_bench.models.hyena import HYENA_SIZES, HyenaClassifier, HyenaConfig, HyenaLM, fft_causal_conv
from dyt_bench.norms import SquashNorm, count_norms
from dyt_bench.tasks import DNAClassification, DNAPretraining, OptimConfig


@pytest.fixture(autouse=True)
def one_thread():
    # two threads per process on a shared two-core machine slow these small models down several-fold
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- the operator -------------------------------------------------------------------------------------------------
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
    assert count_norms(dyt) == {"SquashNorm": 5} and all(m.alpha.item() == 0.5 for m in dyt.modules()
                                                          if isinstance(m, SquashNorm))
    with pytest.raises(ValueError, match="model.size"):
        HyenaConfig.from_size("huge")
    with pytest.raises(ValueError, match="model.pooling"):
        HyenaClassifier(HyenaConfig(), 2, pooling="max")
    with pytest.raises(ValueError, match="l_max"):
        HyenaLM(HyenaConfig(d_model=8, n_layer=1, l_max=16))(torch.zeros(1, 17, dtype=torch.long))


def test_filters_take_no_weight_decay():
    task = DNAPretraining(size="tiny", d_model=16, l_max=32, optim=OptimConfig(weight_decay=0.2))
    groups = task.parameter_groups()
    decayed = {id(p) for p in groups[0]["params"]}
    filt = task.net.backbone.layers[0].mixer.filter
    assert groups[0]["weight_decay"] == 0.2 and all(id(p) not in decayed for p in filt.parameters())
    assert id(task.net.backbone.layers[0].mixer.in_proj.weight) in decayed


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


# --- tokenizer and data -------------------------------------------------------------------------------------------
def test_tokenizer_and_reverse_complement():
    tok = DNATokenizer()
    ids = tok.encode("ACGTNacgtnRy-")
    assert tok.vocab_size == DNA_VOCAB_SIZE == 12
    assert tok.decode(ids[:10]) == "ACGTNACGTN" and list(ids[10:12]) == [N_ID, N_ID] and ids[12] == 6  # [UNK]
    seq = tok.encode("AACGTTN")
    assert tok.decode(reverse_complement(seq)) == "NAACGTT"
    t = torch.from_numpy(tok.encode("GATTACA"))
    assert tok.decode(reverse_complement(t)) == "TGTAATC"
    torch.testing.assert_close(reverse_complement(reverse_complement(t)), t)


def _write_fasta(path, records, width=7, gz=False):
    text = "".join(f">{name} description\n" + "".join(seq[i:i + width] + "\n" for i in range(0, len(seq), width))
                   for name, seq in records.items())
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)


def test_fasta_streams_windows_with_n_filter_and_chromosome_split(tmp_path):
    rng = np.random.default_rng(0)

    def random_seq(n):
        return "".join(rng.choice(list("ACGTacgt"), n))

    chr1 = random_seq(40) + "N" * 20 + random_seq(45)       # windows of 16: [0:16) [16:32) ok, [32:48) has 8 N
    records = {"chr1": chr1, "chrUn_random": random_seq(64), "chr2": random_seq(50), "chrM": random_seq(33)}
    plain, packed = tmp_path / "g.fa", tmp_path / "g.fa.gz"
    _write_fasta(plain, records)
    _write_fasta(packed, records, gz=True)
    tok = DNATokenizer()
    windows = {}
    for path in (plain, packed):
        dm = GenomeDataModule(source="fasta", fasta=str(path), seq_len=15, batch_size=2, val_chromosomes=["chr2"],
                              max_n_fraction=0.25, jitter=False, cache_dir=str(tmp_path / "cache"))
        dm.setup()
        assert isinstance(dm.tokens, np.memmap)  # read from the token file, not held in memory
        assert set(dm.index) == set(records) and dm.index["chr1"][1] == len(chr1)
        # primary chromosomes only (chrUn_random and chrM are left out), chr2 held out for validation
        expected_starts = [s for s in range(0, len(chr1) - 15, 16) if chr1[s:s + 16].upper().count("N") <= 4]
        assert expected_starts == [0, 16, 64, 80]  # [32:48) (8 N) and [48:64) (12 N) are skipped
        got = [tok.decode(dm.train_set[i].numpy()) for i in range(len(dm.train_set))]
        assert got == [chr1[s:s + 16].upper() for s in expected_starts]
        assert [tok.decode(dm.val_set[i].numpy()) for i in range(len(dm.val_set))] == [
            records["chr2"][s:s + 16].upper() for s in (0, 16, 32)]
        windows[path.name] = got
    assert windows["g.fa"] == windows["g.fa.gz"]
    # N bases inside a kept window stay N; the second datamodule reads the cache; RC augmentation flips windows
    dm = GenomeDataModule(source="fasta", fasta=str(plain), seq_len=15, val_chromosomes=["chr2"], max_n_fraction=1.0,
                          jitter=False, cache_dir=str(tmp_path / "cache"))
    dm.setup()
    assert dm.cache_hits == 1 and len(dm.train_set) == 6 and (dm.train_set[2] == N_ID).sum() == 8
    with pytest.raises(ValueError, match="data.val_chromosomes"):
        GenomeDataModule(source="fasta", fasta=str(plain), val_chromosomes=["chr9"], seq_len=15,
                         cache_dir=str(tmp_path / "cache")).setup()
    with pytest.raises(FileNotFoundError, match="hg38"):
        GenomeDataModule(source="fasta", fasta=str(tmp_path / "missing.fa"), cache_dir=str(tmp_path)).setup()
    with pytest.raises(ValueError, match="data.source"):
        GenomeDataModule(source="bam")


def test_genomic_benchmarks_layout_split_and_padding(tmp_path):
    folder = write_synthetic_benchmark(tmp_path, "toy", num_classes=3, train_per_class=20, test_per_class=5,
                                       length=(10, 30), seed=1)
    kw = dict(source="files", dataset="toy", root=str(tmp_path), max_length=24, batch_size=4, val_fraction=0.25,
              split_seed=3, download=False)
    dm = GenomicBenchmarksDataModule(**kw)
    dm.setup()
    assert dm.class_names == ["class0", "class1", "class2"] and dm.num_classes == 3
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (45, 15, 15)
    again = GenomicBenchmarksDataModule(**kw)
    again.setup()
    assert [s.tobytes() for s in again.val_set.seqs] == [s.tobytes() for s in dm.val_set.seqs]  # fixed seed
    train_keys = {s.tobytes() for s in dm.train_set.seqs}
    assert not train_keys & {s.tobytes() for s in dm.val_set.seqs}
    # left padding, cut to max_length keeping the start
    text = (folder / "test" / "class2" / "0.txt").read_text()
    ids, mask, label = dm.test_set[10]
    assert label == 2 and ids.shape == (24,) and mask.sum() == min(len(text), 24)
    assert DNATokenizer().decode(ids[mask].numpy()) == text[:24] and torch.all(ids[~mask] == PAD_ID)
    assert not mask[0] or len(text) >= 24
    with pytest.raises(FileNotFoundError, match="pip install genomic-benchmarks"):
        GenomicBenchmarksDataModule(source="files", dataset="human_ocr_ensembl", root=str(tmp_path), download=True).setup()


# --- training ----------------------------------------------------------------------------------------------------
FIXTURE = dict(source="synthetic", synthetic_classes=2, synthetic_train_per_class=300, synthetic_test_per_class=100,
               synthetic_length=(40, 60), synthetic_motif_length=5, synthetic_copies=2, max_length=60, batch_size=32)
SMALL = dict(size="tiny", d_model=32, l_max=64)
# DyT's α0: HyenaDNA embeddings start at std 0.02, and the Hyena operator is a product of three projections of its
# input (cubic near zero), so with the paper's α0 = 0.5 the DyT outputs (~0.01) leave the mixer without gradient and a
# model trained from scratch stays at chance (measured: 0.49 test accuracy here, unigram loss in pretraining). α0 ≈
# 1/std of the embeddings (the paper's α ≈ 1/std relation) brings the block inputs to unit scale, as LayerNorm does.
NORMS = {"layernorm": {"kind": "layernorm"}, "dyt": {"kind": "dyt", "alpha_init": 50.0}}


@pytest.mark.parametrize("kind", ["layernorm", "dyt"])
def test_planted_motifs_are_learned(tmp_path, kind):
    torch.manual_seed(0)
    data = GenomicBenchmarksDataModule(**FIXTURE, split_seed=0, cache_dir=str(tmp_path / "cache"))
    task = DNAClassification(num_classes=2, **SMALL, norm=NORMS[kind], optim=OptimConfig(lr=5e-3, warmup_steps=10))
    trainer = tiny_trainer(tmp_path, max_steps=300, val_check_interval=100, check_val_every_n_epoch=None)
    trainer.fit(task, datamodule=data)
    at_best_val = float(trainer.callback_metrics["test/acc_at_best_val"])
    assert len(data.test_set) == 200
    result = trainer.test(task, datamodule=data, verbose=False)[0]
    assert result["test/acc"] >= 0.9, result
    assert at_best_val >= 0.85


def _markov_conditional_entropy(tokens: np.ndarray, order: int = 3) -> float:
    """Empirical entropy (nats) of the next base given the previous ``order`` bases: the best loss a model of the
    generating chain can reach (up to estimation error)."""
    bases = tokens[tokens != N_ID].astype(np.int64) - 7
    ctx = sum(bases[i:len(bases) - order + i] * 4 ** (order - 1 - i) for i in range(order))
    nxt = bases[order:]
    counts = np.zeros((4 ** order, 4))
    np.add.at(counts, (ctx, nxt), 1)
    p = counts / counts.sum(1, keepdims=True).clip(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.nansum(p * np.log(p), axis=1)
    return float((h * counts.sum(1)).sum() / counts.sum())


@pytest.mark.parametrize("kind", ["layernorm", "dyt"])
def test_pretraining_loss_falls_on_generated_genome(tmp_path, kind):
    torch.manual_seed(0)
    data = GenomeDataModule(source="synthetic", seq_len=63, batch_size=16, synthetic_chromosomes=3,
                            synthetic_length=20_000, cache_dir=str(tmp_path / "cache"))
    task = DNAPretraining(**SMALL, norm=NORMS[kind], optim=OptimConfig(lr=5e-3, warmup_steps=5))
    data.setup()
    batch = next(iter(data.val_dataloader()))
    with torch.no_grad():
        before = task._loss(batch)[0].item()
    assert before == pytest.approx(math.log(DNA_VOCAB_SIZE), abs=0.2)  # untrained: about uniform over 12 tokens
    tiny_trainer(tmp_path, max_steps=200, limit_val_batches=0).fit(task, datamodule=data)
    task.eval()
    with torch.no_grad():
        after = task._loss(batch)[0].item()
    floor = _markov_conditional_entropy(np.asarray(batch).ravel())
    assert after < math.log(4) - 0.1, (before, after)  # better than any model that knows only the four letters
    assert after < before - 1.0 and after > floor - 0.1, (before, after, floor)


def test_init_from_loads_every_backbone_weight(tmp_path):
    torch.manual_seed(0)
    data = GenomeDataModule(source="synthetic", seq_len=31, batch_size=8, synthetic_chromosomes=2,
                            synthetic_length=5_000, cache_dir=str(tmp_path / "cache"))
    pre = DNAPretraining(**SMALL, norm={"kind": "dyt"}, optim=OptimConfig(lr=5e-3, warmup_steps=0))
    trainer = tiny_trainer(tmp_path, max_steps=3, limit_val_batches=0)
    trainer.fit(pre, datamodule=data)
    ckpt = tmp_path / "pre.ckpt"
    trainer.save_checkpoint(ckpt)
    fine = DNAClassification(num_classes=3, **SMALL, norm={"kind": "dyt"}, init_from=str(ckpt))
    source, target = pre.net.backbone.state_dict(), fine.net.backbone.state_dict()
    assert fine.init_report["loaded"] == fine.init_report["total"] == len(source) == len(target)
    for name, value in source.items():
        torch.testing.assert_close(target[name], value, rtol=0, atol=0, msg=name)
    fresh = DNAClassification(num_classes=3, **SMALL, norm={"kind": "dyt"})
    assert not torch.equal(fresh.net.backbone.embedding.weight, fine.net.backbone.embedding.weight)
    # a run directory with checkpoints/last.ckpt works too
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.ckpt").write_bytes(ckpt.read_bytes())
    assert DNAClassification(num_classes=2, **SMALL, norm={"kind": "dyt"},
                             init_from=str(tmp_path / "run")).init_report["loaded"] == len(source)
    with pytest.raises(ValueError, match="norm 'dyt'.*'layernorm'"):
        DNAClassification(num_classes=2, **SMALL, norm={"kind": "layernorm"}, init_from=str(ckpt))
    with pytest.raises(ValueError, match="d_model: checkpoint 32 vs model 48"):
        DNAClassification(num_classes=2, size="tiny", d_model=48, l_max=64, norm={"kind": "dyt"}, init_from=str(ckpt))
    with pytest.raises(FileNotFoundError, match="model.init_from"):
        DNAClassification(num_classes=2, **SMALL, init_from=str(tmp_path / "nothing"))


def test_table6_grid_covers_eight_datasets_two_norms_five_seeds():
    from pathlib import Path

    import yaml

    from dyt_bench.grid import parse_grid

    path = Path(__file__).resolve().parents[1] / "configs" / "grids" / "table6_genomic.yaml"
    spec = parse_grid(yaml.safe_load(path.read_text()), path)
    datasets = spec.axis("dataset").values
    assert len(spec.cells()) == 8 * 2 * 5 and len(datasets) == 8
    from dyt_bench.datamodules.dna import GENOMIC_BENCHMARKS

    assert {v.assignments["data.dataset"] for v in datasets} == set(GENOMIC_BENCHMARKS)
    assert all(v.assignments["model.num_classes"] == GENOMIC_BENCHMARKS[v.assignments["data.dataset"]]["num_classes"]
               for v in datasets)
    assert len(spec.paper["values"]) == 16


def test_genome_windows_pickle_as_a_file_reference(tmp_path):
    import pickle

    dm = GenomeDataModule(source="synthetic", seq_len=31, synthetic_chromosomes=2, synthetic_length=30_000,
                          jitter=False, cache_dir=str(tmp_path))
    dm.setup()
    blob = pickle.dumps(dm.train_set)
    assert len(blob) < 20_000 < dm.tokens.size == 60_000  # the window starts and the file name, not the genome
    copy = pickle.loads(blob)
    assert isinstance(copy.tokens, np.memmap)
    torch.testing.assert_close(copy[3], dm.train_set[3])
