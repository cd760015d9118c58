"""Speech task: the LibriSpeech datamodule on a generated FLAC fixture (discovery, crops, padding, batching, errors),
the synthetic corpus, wav2vec 2.0 masks and distractors, the objective against a float64 reference, feature
penalty and gradient scaling, the Gumbel schedule, norm surgery counts, and 50 steps lowering the contrastive loss."""

import math

import numpy as np
import pytest
import soundfile as sf
import torch
from helpers import tiny_trainer

from dyt_bench.datamodules import AudioDataModule
from dyt_bench.datamodules.audio import LengthBucketBatchSampler, read_audio, synthetic_utterance
from dyt_bench.models.wav2vec2 import build_wav2vec2, wav2vec2_config
from dyt_bench.norms import SquashNorm
from dyt_bench.tasks import OptimConfig, SpeechPretraining
from dyt_bench.tasks.optim import lr_lambda
from dyt_bench.tasks.speech import gumbel_temperature

SR = 16000
# the tiny model's utterances are short: spans of 5 frames (100 ms), and no penalty / encoder gradient scaling
TINY = dict(size="tiny", mask_time_length=5, feature_penalty_weight=0.0, feature_grad_scale=1.0)


@pytest.fixture(scope="module")
def librispeech(tmp_path_factory):
    """A LibriSpeech-layout folder of short FLAC files: 2 speakers × 2 chapters × 3 utterances of train-clean-100,
    one speaker of dev-clean, and one 8 kHz file (to be resampled)."""
    root = tmp_path_factory.mktemp("LibriSpeech")
    rng = np.random.default_rng(0)
    expected = {}
    for split, speakers in (("train-clean-100", (19, 26)), ("dev-clean", (84,))):
        for speaker in speakers:
            for chapter in (198, 227)[: 2 if split.startswith("train") else 1]:
                folder = root / split / str(speaker) / str(chapter)
                folder.mkdir(parents=True)
                for utt in range(3):
                    n = int(rng.integers(int(0.6 * SR), int(1.6 * SR)))
                    wav = synthetic_utterance(n, SR, seed=speaker * 100 + chapter + utt)
                    path = folder / f"{speaker}-{chapter}-{utt:04d}.flac"
                    sf.write(str(path), wav, SR, subtype="PCM_16")
                    expected[str(path)] = sf.read(str(path), dtype="float32")[0]
                (folder / f"{speaker}-{chapter}.trans.txt").write_text("TRANSCRIPT\n")
    low = root / "train-clean-100" / "26" / "227" / "26-227-0003.flac"
    sf.write(str(low), synthetic_utterance(8000, 8000, seed=7), 8000, subtype="PCM_16")
    return root, expected


def _data(root, tmp_path, **kw):
    defaults = dict(source="librispeech", root=str(root), train_splits=["train-clean-100"], val_splits=["dev-clean"],
                    max_sample_size=16000, min_sample_size=0, max_batch_seconds=4.0, num_buckets=2,
                    cache_dir=str(tmp_path / "cache"))
    defaults.update(kw)
    return AudioDataModule(**defaults)


def _window_of(window: np.ndarray, full: np.ndarray) -> bool:
    """Whether ``window`` is a contiguous piece of ``full``."""
    for start in range(len(full) - len(window) + 1):
        if full[start] == window[0] and np.array_equal(full[start:start + len(window)], window):
            return True
    return False


def test_datamodule_finds_crops_and_pads(librispeech, tmp_path):
    root, expected = librispeech
    dm = _data(root, tmp_path, batch_mode="pad")
    dm.setup()
    files = dm.train_set.files
    assert len(files) == 13 and len(dm.val_set) == 3
    assert files == sorted(files) and all("/train-clean-100/" in f for f in files)
    # lengths come from the file headers; the 8 kHz file is resampled to twice its samples
    low = files.index(str(root / "train-clean-100" / "26" / "227" / "26-227-0003.flac"))
    assert dm.train_set.lengths[low] == 16000 and read_audio(files[low], SR).shape == (16000,)
    for i, f in enumerate(files):
        if i != low:
            assert dm.train_set.lengths[i] == len(expected[f])
    # random crops: at most max_sample_size, a contiguous window of the decoded file
    torch.manual_seed(0)
    long_ones = [i for i, f in enumerate(files) if i != low and len(expected[f]) > 16000]
    assert long_ones
    for i in long_ones[:3]:
        item = dm.train_set[i].numpy()
        assert item.dtype == np.float32 and len(item) == 16000 and _window_of(item, expected[files[i]])
    # padded batches: zeros after each utterance, attention mask = its length
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_values", "attention_mask", "lengths"}
    x, mask, lengths = batch["input_values"], batch["attention_mask"], batch["lengths"]
    assert x.shape == mask.shape and x.shape[1] == lengths.max()
    assert torch.equal(mask.sum(1), lengths)
    for row, n in zip(x, lengths.tolist(), strict=True):
        assert torch.all(row[n:] == 0)
    # validation crops are the same every time
    assert torch.equal(dm.val_set[0], dm.val_set[0])


def test_crop_mode_cuts_each_batch_to_its_shortest(librispeech, tmp_path):
    root, expected = librispeech
    dm = _data(root, tmp_path, batch_mode="crop", num_buckets=1)
    dm.setup()
    seen = 0
    for batch in dm.train_dataloader():
        x = batch["input_values"]
        assert "attention_mask" not in batch and torch.all(batch["lengths"] == x.shape[1])
        seen += x.shape[0]
    assert seen == 13


def test_normalisation_option(librispeech, tmp_path):
    root, _ = librispeech
    dm = _data(root, tmp_path, normalize=True, max_sample_size=10**6, max_batch_seconds=100.0)
    dm.setup()
    raw = torch.from_numpy(sf.read(dm.val_set.files[0], dtype="float64")[0])
    # fairseq's normalize: layer norm over the whole waveform (eps 1e-5)
    torch.testing.assert_close(dm.val_set[0].double(), torch.nn.functional.layer_norm(raw, raw.shape, eps=1e-5),
                               rtol=1e-4, atol=1e-5)


def test_min_sample_size_drops_short_utterances(librispeech, tmp_path):
    root, expected = librispeech
    dm = _data(root, tmp_path, min_sample_size=int(1.2 * SR), max_sample_size=10**6, max_batch_seconds=100.0)
    dm.setup()
    assert all(n >= 1.2 * SR for n in dm.train_set.lengths)
    assert len(dm.train_set) + dm.dropped_short - sum(len(v) < 1.2 * SR for k, v in expected.items()
                                                       if "dev-clean" in k) == 13


def test_wrong_path_lists_the_expected_layout(librispeech, tmp_path):
    root, _ = librispeech
    with pytest.raises(FileNotFoundError, match=r"(?s)no split folder 'train-clean-360'.*<speaker>/<chapter>"):
        _data(root, tmp_path, train_splits=["train-clean-100", "train-clean-360"]).setup()
    downloads = tmp_path / "downloads"  # data.root one level too high: the error says where the splits are
    (downloads / "LibriSpeech").mkdir(parents=True)
    (downloads / "LibriSpeech" / "train-clean-100").symlink_to(root / "train-clean-100")
    with pytest.raises(FileNotFoundError, match=r"(?s)Hint: the splits are under .*LibriSpeech"):
        _data(downloads, tmp_path).setup()
    flat = tmp_path / "flat" / "train-clean-100"  # files not in <speaker>/<chapter> folders
    flat.mkdir(parents=True)
    sf.write(str(flat / "1-2-0000.flac"), np.zeros(1600, np.float32), SR)
    with pytest.raises(FileNotFoundError, match=r"(?s)no <speaker>/<chapter>/\*.flac files.*1-2-0000.flac"):
        _data(flat.parent, tmp_path).setup()
    with pytest.raises(FileNotFoundError, match="not a directory"):
        _data(tmp_path / "missing", tmp_path).setup()
    with pytest.raises(ValueError, match="data.batch_mode must be one of crop, pad"):
        _data(root, tmp_path, batch_mode="bucket")
    with pytest.raises(ValueError, match="data.root is required"):
        AudioDataModule(source="librispeech")


def test_length_buckets_respect_the_audio_budget_and_shard():
    lengths = np.random.default_rng(0).integers(1000, 16000, 500)
    sampler = LengthBucketBatchSampler(lengths, max_batch_samples=64000, num_buckets=8, seed=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(500))  # every utterance once
    assert all(len(b) * lengths[b].max() <= 64000 for b in batches)
    # bucketing keeps batches length-homogeneous: far less padding than random batches of the same sizes
    padded = sum(len(b) * lengths[b].max() - lengths[b].sum() for b in batches)
    rng = np.random.default_rng(0)
    perm = rng.permutation(500)
    random_batches = np.split(perm, np.cumsum([len(b) for b in batches])[:-1])
    padded_random = sum(len(b) * lengths[b].max() - lengths[b].sum() for b in random_batches)
    assert padded < 0.3 * padded_random
    sampler.set_epoch(1)
    assert list(sampler) != batches  # a new order each epoch
    ranks = [list(LengthBucketBatchSampler(lengths, 64000, num_buckets=8, seed=1, rank=r, world_size=2))
             for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(batches) // 2
    assert not {i for b in ranks[0] for i in b} & {i for b in ranks[1] for i in b}
    with pytest.raises(ValueError, match="max_batch_seconds"):
        LengthBucketBatchSampler(lengths, max_batch_samples=5000)


def test_synthetic_source_is_librispeech_shaped_and_deterministic(librispeech, tmp_path):
    dm = AudioDataModule(source="synthetic", synthetic_samples=16, synthetic_val_samples=4, synthetic_min_seconds=0.5,
                         synthetic_max_seconds=1.0, max_sample_size=12000, min_sample_size=0, max_batch_seconds=4.0,
                         batch_mode="pad")
    dm.setup()
    assert all(0.5 * SR <= n <= 1.0 * SR for n in dm.train_set.lengths)
    a, b = dm.val_set[1], dm.val_set[1]
    assert a.dtype == torch.float32 and torch.equal(a, b) and 0.01 < a.abs().max() < 1.0
    batch = next(iter(dm.train_dataloader()))
    files = _data(librispeech[0], tmp_path, batch_mode="pad")
    files.setup()
    real = next(iter(files.train_dataloader()))
    assert set(batch) == set(real) and all(batch[k].dtype == real[k].dtype for k in batch)


def _padded_batch():
    lengths = [16000, 11000, 6500]
    x = torch.zeros(3, 16000)
    mask = torch.zeros(3, 16000, dtype=torch.long)
    for i, n in enumerate(lengths):
        x[i, :n] = torch.from_numpy(synthetic_utterance(n, SR, seed=i))
        mask[i, :n] = 1
    return {"input_values": x, "attention_mask": mask, "lengths": torch.tensor(lengths)}


def test_masks_and_negatives_never_select_padding():
    task = SpeechPretraining(**TINY, norm={"kind": "dyt"})
    batch = _padded_batch()
    T = task.net._get_feat_extract_output_lengths(16000).item()
    frames = task.frame_mask(batch, T)
    assert frames.sum(1).tolist() == [task.net._get_feat_extract_output_lengths(n).item() for n in (16000, 11000, 6500)]
    for seed in range(20):
        mask, neg = task.sample_masks(3, T, frames, seed=seed)
        assert mask.shape == (3, T) and neg.shape == (3, T, 100)
        assert not (mask & ~frames).any()  # masks stay on audio
        for b in range(3):
            masked = torch.nonzero(mask[b]).flatten()
            assert len(masked) >= 2
            drawn = neg[b, masked]  # (masked frames, 100) flat indices into the batch
            assert torch.all((drawn >= b * T) & (drawn < (b + 1) * T))  # from the same utterance
            local = drawn - b * T
            assert mask[b][local].all()  # only masked frames, never padding
            assert not (local == masked[:, None]).any()  # never the positive itself
    # a fixed seed gives the same draw and leaves numpy's generator alone
    np.random.seed(3)
    before = np.random.rand()
    np.random.seed(3)
    m1, n1 = task.sample_masks(3, T, frames, seed=5)
    assert np.random.rand() == before
    m2, n2 = task.sample_masks(3, T, frames, seed=5)
    assert torch.equal(m1, m2) and torch.equal(n1, n2)


def test_objective_matches_a_float64_reference():
    torch.manual_seed(0)
    task = SpeechPretraining(**{**TINY, "feature_penalty_weight": 10.0}, num_negatives=20, norm={"kind": "layernorm"})
    task.train()
    batch = _padded_batch()
    parts = task.compute_losses(batch, seed=0)
    out, mask, neg = parts["output"], parts["mask"], parts["negatives"]
    assert all(math.isfinite(parts[k].item()) for k in ("loss", "contrastive", "diversity", "feature_penalty"))
    # contrastive loss: -log softmax over [positive, 20 distractors] of cosine similarity / 0.1, in float64
    pred = out.projected_states.detach().double()
    quant = out.projected_quantized_states.detach().double()
    B, T, D = quant.shape
    flat = quant.reshape(B * T, D)
    total = 0.0
    for b, t in torch.nonzero(mask).tolist():
        candidates = torch.cat([quant[b, t][None], flat[neg[b, t]]])
        logits = torch.nn.functional.cosine_similarity(pred[b, t][None], candidates, dim=-1) / 0.1
        same = (flat[neg[b, t]] == quant[b, t]).all(-1)
        logits[1:][same] = -math.inf  # a distractor equal to the positive is no distractor
        total += -torch.log_softmax(logits, 0)[0].item()
    assert parts["contrastive"].item() == pytest.approx(total / mask.sum().item(), rel=1e-4)
    # diversity: perplexity of the mean soft code distribution over masked frames, as transformers computes it
    assert parts["prob_perplexity"].item() == pytest.approx(out.codevector_perplexity.item(), rel=1e-5)
    G, V = 2, 16
    assert parts["diversity"].item() == pytest.approx((G * V - parts["prob_perplexity"].item()) / (G * V), rel=1e-6)
    assert 1 <= parts["code_perplexity"].item() <= G * V
    # feature penalty: mean square of the feature encoder's output over frames of audio
    with torch.no_grad():
        feats = task.net.wav2vec2.feature_extractor(batch["input_values"]).double()
    frames = task.frame_mask(batch, T)
    reference = sum(feats[b, :, : int(frames[b].sum())].pow(2).sum().item() for b in range(B))
    reference /= frames.sum().item() * feats.shape[1]
    assert parts["feature_penalty"].item() == pytest.approx(reference, rel=1e-4)
    total_loss = parts["contrastive"] + 0.1 * parts["diversity"] + 10.0 * parts["feature_penalty"]
    assert parts["loss"].item() == pytest.approx(total_loss.item(), rel=1e-6)


def test_feature_encoder_gradient_is_scaled():
    grads = {}
    for scale in (1.0, 0.1):
        torch.manual_seed(0)
        task = SpeechPretraining(**{**TINY, "feature_grad_scale": scale, "feature_penalty_weight": 10.0},
                                 norm={"kind": "dyt"})
        task.train()
        torch.manual_seed(1)
        task.compute_losses(_padded_batch(), seed=0)["loss"].backward()
        grads[scale] = ({n: p.grad.clone() for n, p in task.net.wav2vec2.feature_extractor.named_parameters()},
                        task.net.project_hid.weight.grad.clone())
    for name, g in grads[1.0][0].items():  # equal up to float32 rounding
        assert (grads[0.1][0][name] - 0.1 * g).norm() <= 1e-4 * (0.1 * g).norm(), name
    torch.testing.assert_close(grads[0.1][1], grads[1.0][1])  # the rest of the model is unaffected


def test_gumbel_temperature_schedule(tmp_path):
    assert gumbel_temperature(0, 2.0, 0.5, 0.999995) == 2.0
    assert gumbel_temperature(100_000, 2.0, 0.5, 0.999995) == pytest.approx(2.0 * math.exp(100_000 * math.log(0.999995)))
    assert gumbel_temperature(10**6, 2.0, 0.5, 0.999995) == 0.5  # floored at the end value
    with pytest.raises(ValueError, match="gumbel_temperature"):
        SpeechPretraining(**TINY, gumbel_temperature=(0.5, 2.0, 0.99))
    # fairseq's polynomial_decay (power 1): linear warmup, then linear to the floor at the last step
    assert [lr_lambda(s, 110, 10, "linear", 0.0) for s in (0, 9, 10, 60, 110, 200)] == [0.1, 1.0, 1.0, 0.5, 0.0, 0.0]
    assert lr_lambda(110, 110, 10, "linear", 0.2) == pytest.approx(0.2)


def test_shortest_maskable_utterance_agrees_with_transformers():
    task = SpeechPretraining(**TINY, norm={"kind": "layernorm"})
    need = task.min_samples_for_masking()
    frames = task.net._get_feat_extract_output_lengths
    assert frames(need) == 5 and frames(need - 1) == 4


@pytest.mark.parametrize("pre_norm", [False, True])
@pytest.mark.parametrize("fe_norm", ["group", "layer"])
def test_norm_swap_counts_match_the_config(pre_norm, fe_norm):
    config = wav2vec2_config("tiny", pre_norm=pre_norm, feature_extractor_norm=fe_norm)
    plain = build_wav2vec2(config)
    layer_norms = {n for n, m in plain.named_modules() if isinstance(m, torch.nn.LayerNorm)}
    group_norms = {n for n, m in plain.named_modules() if isinstance(m, torch.nn.GroupNorm)}
    in_encoder = {n for n in layer_norms | group_norms if n.startswith("wav2vec2.feature_extractor")}
    assert len(layer_norms - in_encoder) == 2 * config.num_hidden_layers + 2
    for swap in (False, True):
        task = SpeechPretraining(**{**TINY, "pre_norm": pre_norm}, feature_extractor_norm=fe_norm,
                                 swap_feature_extractor_norm=swap, norm={"kind": "dyt"})
        replaced = set(task.norm_report.paths)
        assert replaced == (layer_norms | group_norms if swap else (layer_norms | group_norms) - in_encoder)
        assert sum(isinstance(m, SquashNorm) for m in task.modules()) == len(replaced)
        assert not any(isinstance(m, (torch.nn.LayerNorm, torch.nn.GroupNorm)) for n, m in task.net.named_modules()
                       if n in replaced)
        if swap and fe_norm == "group":
            assert task.net.wav2vec2.feature_extractor.conv_layers[0].layer_norm.layout == "channels_first"
        if not swap:
            assert all(type(m).__name__ in ("LayerNorm", "GroupNorm") for n, m in task.net.named_modules()
                       if n in in_encoder)
    assert isinstance(plain.wav2vec2.encoder.layers[0], torch.nn.Module)
    assert (type(plain.wav2vec2.encoder).__name__ == "Wav2Vec2EncoderStableLayerNorm") == pre_norm


def test_bad_model_config_is_refused_by_name():
    with pytest.raises(ValueError, match="model.size must be one of base, large, tiny"):
        SpeechPretraining(size="huge")
    with pytest.raises(ValueError, match="model.feature_extractor_norm must be one of group, layer"):
        SpeechPretraining(size="tiny", feature_extractor_norm="batch")
    with pytest.raises(ValueError, match="config_overrides"):
        SpeechPretraining(size="tiny", config_overrides={"hidden_sizes": 8})


def _val_contrastive(task, batches):
    task.eval()
    with torch.no_grad():
        values = [task.compute_losses(b, seed=i)["contrastive"].item() for i, b in enumerate(batches)]
    task.train()
    return float(np.mean(values))


@pytest.mark.parametrize("kind,pre_norm", [
    ("layernorm", False), ("dyt", True),
    pytest.param("layernorm", True, marks=pytest.mark.slow), pytest.param("dyt", False, marks=pytest.mark.slow),
])
def test_fifty_steps_lower_the_contrastive_loss(tmp_path, kind, pre_norm):
    torch.set_num_threads(1)  # tiny matrices: one thread is faster than two busy ones
    torch.manual_seed(0)
    data = AudioDataModule(source="synthetic", synthetic_samples=256, synthetic_val_samples=8,
                           synthetic_min_seconds=0.75, synthetic_max_seconds=1.5, max_sample_size=24000,
                           min_sample_size=8000, max_batch_seconds=8.0)
    data.setup()
    val = list(data.val_dataloader())
    task = SpeechPretraining(**{**TINY, "pre_norm": pre_norm}, norm={"kind": kind},
                             optim=OptimConfig(lr=3e-3, weight_decay=0.01, warmup_steps=5))
    before = _val_contrastive(task, val)
    tiny_trainer(tmp_path, max_steps=50, limit_val_batches=0).fit(task, datamodule=data)
    after = _val_contrastive(task, val)
    assert math.isfinite(after) and after < before - 0.1, (before, after)


@pytest.mark.slow
def test_layernorm_model_learns_below_chance(tmp_path):
    """Past the initial plateau at chance (ln 101 nats), the tiny post-norm LayerNorm model predicts held-out targets
    (measured: 4.61 at step 100, 4.46 at 200, 4.38 at 300, 3.92 at 600)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = AudioDataModule(source="synthetic", synthetic_samples=1024, synthetic_val_samples=8,
                           synthetic_min_seconds=0.75, synthetic_max_seconds=1.5, max_sample_size=24000,
                           min_sample_size=8000, max_batch_seconds=8.0)
    data.setup()
    val = list(data.val_dataloader())
    task = SpeechPretraining(**TINY, norm={"kind": "layernorm"},
                             optim=OptimConfig(lr=3e-3, weight_decay=0.01, warmup_steps=5, schedule="constant"))
    tiny_trainer(tmp_path, max_steps=300, limit_val_batches=0).fit(task, datamodule=data)
    after = _val_contrastive(task, val)
    assert after < math.log(101) - 0.1, after


def test_throughput_unit_is_seconds_of_unpadded_audio(librispeech, tmp_path):
    root, _ = librispeech
    dm = _data(root, tmp_path, batch_mode="pad")
    dm.setup()
    task = SpeechPretraining(**TINY, norm={"kind": "layernorm"})
    padded = 0
    for batch in dm.train_dataloader():
        seconds = task.throughput_units(batch)["audio_seconds"]
        assert seconds == pytest.approx(float(batch["attention_mask"].sum()) / SR)  # padding left out
        padded += seconds < batch["input_values"].numel() / SR
    assert padded  # at least one batch held padding, so the two measures differed


def test_pretrained_weights_start_the_task_before_its_norms_are_replaced(tmp_path):
    torch.manual_seed(0)
    src = build_wav2vec2(wav2vec2_config("tiny", False, "group", 100, 0.1, 0.1, 0.65, 5, None))
    src.save_pretrained(tmp_path / "w2v")
    task = SpeechPretraining(**TINY, pretrained=str(tmp_path / "w2v"), norm={"kind": "dyt"})
    fresh = SpeechPretraining(**TINY, norm={"kind": "dyt"})
    own, other, reference = task.net.state_dict(), fresh.net.state_dict(), src.state_dict()
    weights = [k for k in reference if k in own and "layer_norm" not in k and k.endswith(".weight")]
    assert len(weights) >= 10
    for name in weights:  # every non-norm weight is the folder's, not a fresh initialisation
        torch.testing.assert_close(own[name], reference[name], rtol=0, atol=0)
    assert any(not torch.equal(other[k], reference[k]) for k in weights)
    assert sum(isinstance(m, SquashNorm) for m in task.net.modules()) == task.norm_report.total
    with pytest.raises(FileNotFoundError, match="model.pretrained"):
        SpeechPretraining(**TINY, pretrained=str(tmp_path / "none"))


def test_sample_masks_without_transformers_names_the_speech_extra(monkeypatch):
    import sys

    from dyt_bench.versions import MissingExtraError

    task = SpeechPretraining(**TINY)
    monkeypatch.setitem(sys.modules, "transformers.models.wav2vec2.modeling_wav2vec2", None)
    with pytest.raises(MissingExtraError, match=r"dyt-bench\[speech\]"):
        task.sample_masks(2, 40, None, seed=0)
