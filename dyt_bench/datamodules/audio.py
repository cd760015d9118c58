"""Audio datamodule for speech pretraining: LibriSpeech read from its standard folder layout (decoded with soundfile),
or a synthetic LibriSpeech-shaped corpus made on the fly; random crops, length-bucketed batches of a fixed amount of
audio, crop-to-shortest or padding with attention masks."""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, Sampler

from dyt_bench.datamodules.base import SplitDataModule
from dyt_bench.norms.spec import check_choice

LIBRISPEECH_SPLITS = ("train-clean-100", "train-clean-360", "train-other-500", "dev-clean", "dev-other", "test-clean",
                      "test-other")
LIBRISPEECH_LAYOUT = (
    "  <root>/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utterance>.flac\n"
    "  e.g. <root>/train-clean-100/103/1240/103-1240-0000.flac and <root>/dev-clean/84/121123/84-121123-0000.flac\n"
    f"  (splits: {', '.join(LIBRISPEECH_SPLITS)})"
)


# --- decoding -----------------------------------------------------------------------------------------------------
def read_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Mono float32 waveform of an audio file at ``sample_rate`` (soundfile decodes; torchaudio resamples if needed)."""
    import soundfile as sf

    wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    wav = wav.mean(axis=1) if wav.shape[1] > 1 else wav[:, 0]
    if sr != sample_rate:
        import torchaudio.functional as AF

        wav = AF.resample(torch.from_numpy(np.ascontiguousarray(wav)), sr, sample_rate).numpy()
    return np.ascontiguousarray(wav, dtype=np.float32)


def normalize_waveform(wav: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the whole utterance (fairseq's ``normalize: true``)."""
    return ((wav - wav.mean()) / math.sqrt(float(wav.var()) + 1e-5)).astype(np.float32)


# --- synthetic speech-like audio ----------------------------------------------------------------------------------
def synthetic_lengths(count: int, sample_rate: int, min_seconds: float, max_seconds: float, seed: int) -> np.ndarray:
    """Utterance lengths (samples) shaped like LibriSpeech's training set: most between 60 % and 100 % of the
    maximum (LibriSpeech: 10–17 s of at most ~35 s, segmented at ≤ 35 s), a tail of short ones down to the minimum."""
    rng = np.random.default_rng(seed)
    long = rng.uniform(min_seconds + 0.6 * (max_seconds - min_seconds), max_seconds, count)
    short = rng.uniform(min_seconds, max_seconds, count)
    seconds = np.where(rng.random(count) < 0.8, long, short)
    return np.maximum(1, np.round(seconds * sample_rate)).astype(np.int64)


def synthetic_utterance(num_samples: int, sample_rate: int, seed: int, num_units: int = 24) -> np.ndarray:
    """A deterministic speech-like waveform: a sequence of 50–200 ms "phones" from a fixed inventory of ``num_units``
    harmonic sounds (three formant-like partials, modulated at a per-utterance pitch) and pauses, with smooth
    envelopes, a little noise and speech-like amplitude. Phones follow a fixed first-order "phonotactics" (each has a
    preferred successor, taken 70 % of the time), so masked stretches are partly predictable from their context
    and the quantizer has discrete units to find: the wav2vec 2.0 task is learnable, as on speech."""
    fixed = np.random.default_rng(12345)
    formants = fixed.uniform(200.0, 3200.0, size=(num_units, 3))
    weights = fixed.uniform(0.3, 1.0, size=(num_units, 3))
    successor = fixed.permutation(num_units)
    rng = np.random.default_rng(seed)
    out = np.zeros(num_samples, dtype=np.float64)
    pitch = rng.uniform(90.0, 220.0)
    unit = int(rng.integers(num_units))
    pos = 0
    while pos < num_samples:
        seg = max(1, min(int(rng.uniform(0.05, 0.2) * sample_rate), num_samples - pos))
        draw = rng.random()
        unit = int(successor[unit]) if draw < 0.7 else (-1 if draw < 0.8 else int(rng.integers(num_units)))
        if unit >= 0:
            t = np.arange(seg) / sample_rate
            wave = np.zeros(seg)
            for k in range(3):
                wave += weights[unit, k] * np.sin(2 * np.pi * formants[unit, k] * t + rng.uniform(0, 2 * np.pi))
            wave *= 0.6 + 0.4 * np.sin(2 * np.pi * pitch * t)  # glottal-like modulation at the speaker's pitch
            envelope = np.sin(np.pi * (np.arange(seg) + 0.5) / seg) ** 0.5
            out[pos:pos + seg] = rng.uniform(0.05, 0.15) * envelope * wave
        else:
            unit = int(rng.integers(num_units))  # after a pause, any phone
        pos += seg
    out += 0.003 * rng.standard_normal(num_samples)
    return out.astype(np.float32)


# --- datasets -----------------------------------------------------------------------------------------------------
class AudioDataset(Dataset):
    """Utterances with known lengths; an item is one waveform (normalised if asked), cropped to ``max_sample_size``:
    at a random offset when ``random_crop``, else at a fixed offset per utterance (reproducible validation)."""

    def __init__(self, lengths: np.ndarray, max_sample_size: int, normalize: bool, random_crop: bool,
                 seed: int = 0) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.max_sample_size = max_sample_size
        self.normalize = normalize
        self.random_crop = random_crop
        self.seed = seed

    @property
    def cropped_lengths(self) -> np.ndarray:
        return np.minimum(self.lengths, self.max_sample_size)

    def load(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> torch.Tensor:
        wav = self.load(index)
        if self.normalize:
            wav = normalize_waveform(wav)
        excess = len(wav) - self.max_sample_size
        if excess > 0:
            if self.random_crop:
                start = int(torch.randint(0, excess + 1, ()).item())
            else:
                start = int(np.random.default_rng((self.seed, index)).integers(0, excess + 1))
            wav = wav[start:start + self.max_sample_size]
        return torch.from_numpy(np.ascontiguousarray(wav))


class FileAudioDataset(AudioDataset):
    """Audio files with their lengths (from a manifest)."""

    def __init__(self, files: list[str], lengths: np.ndarray, sample_rate: int, **kwargs) -> None:
        super().__init__(lengths, **kwargs)
        self.files, self.sample_rate = files, sample_rate

    def load(self, index: int) -> np.ndarray:
        return read_audio(self.files[index], self.sample_rate)


class SyntheticAudioDataset(AudioDataset):
    """``synthetic_utterance`` number ``index`` of a corpus, generated when read."""

    def __init__(self, lengths: np.ndarray, ids: np.ndarray, sample_rate: int, corpus_seed: int, **kwargs) -> None:
        super().__init__(lengths, **kwargs)
        self.ids, self.sample_rate, self.corpus_seed = np.asarray(ids), sample_rate, corpus_seed

    def load(self, index: int) -> np.ndarray:
        return synthetic_utterance(int(self.lengths[index]), self.sample_rate,
                                   seed=self.corpus_seed * 1_000_003 + int(self.ids[index]))


# --- LibriSpeech ----------------------------------------------------------------------------------------------------
def find_librispeech_split(root: str | Path, split: str) -> list[Path]:
    """The ``*.flac`` files of one LibriSpeech split, sorted; a clear error with the expected layout otherwise."""
    root = Path(os.path.expanduser(str(root)))
    if not root.is_dir():
        raise FileNotFoundError(f"data.root={root} is not a directory. Expected the LibriSpeech layout:\n{LIBRISPEECH_LAYOUT}")
    split_dir = root / split
    if not split_dir.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir())[:20]
        hint = ""
        if (root / "LibriSpeech" / split).is_dir():
            hint = f"\n  Hint: the splits are under {root / 'LibriSpeech'}; set data.root to that folder."
        raise FileNotFoundError(
            f"data.root={root} has no split folder {split!r} (folders found: {found or 'none'}). Expected the "
            f"LibriSpeech layout:\n{LIBRISPEECH_LAYOUT}{hint}")
    files = sorted(split_dir.glob("*/*/*.flac"))
    if not files:
        misplaced = sorted(split_dir.rglob("*.flac"))[:3]
        where = f" (.flac files found elsewhere, e.g. {[str(p.relative_to(root)) for p in misplaced]})" if misplaced else ""
        raise FileNotFoundError(
            f"{split_dir} holds no <speaker>/<chapter>/*.flac files{where}. Expected the LibriSpeech layout:\n"
            f"{LIBRISPEECH_LAYOUT}")
    return files


def audio_manifest(files: list[Path], sample_rate: int, cache_dir: Path | None) -> np.ndarray:
    """Length in samples (at ``sample_rate``) of each file, read from the file headers once and cached."""
    import soundfile as sf

    stats = [(str(f), f.stat().st_size) for f in files]
    key = hashlib.sha256(repr((sample_rate, stats)).encode()).hexdigest()[:16]
    path = cache_dir / f"manifest-{key}.npy" if cache_dir is not None else None
    if path is not None and path.exists():
        return np.load(path)
    lengths = np.zeros(len(files), dtype=np.int64)
    for i, f in enumerate(files):
        info = sf.info(str(f))
        lengths[i] = info.frames if info.samplerate == sample_rate else math.ceil(info.frames * sample_rate / info.samplerate)
        if (i + 1) % 10000 == 0:
            rank_zero_info(f"audio manifest: read {i + 1}/{len(files)} file headers")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, lengths)
        os.replace(tmp, path)
    return lengths


# --- batching -----------------------------------------------------------------------------------------------------
class LengthBucketBatchSampler(Sampler[list[int]]):
    """Batches of similar-length utterances holding at most ``max_batch_samples`` audio samples each, counted as
    batch size × longest (cropped) utterance, i.e. the padded size (fairseq's ``max_tokens``).

    Utterances are split into ``num_buckets`` length quantiles; each epoch shuffles within buckets (when ``shuffle``),
    fills batches greedily in length order, then shuffles the batch order. Under data parallelism every rank builds
    the same batches and keeps every ``world_size``-th, the same number on each rank.
    """

    def __init__(self, lengths: np.ndarray, max_batch_samples: int, max_batch_size: int | None = None,
                 num_buckets: int = 16, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if len(self.lengths) and self.lengths.max() > max_batch_samples:
            raise ValueError(f"data.max_batch_seconds holds {max_batch_samples} samples, less than the longest cropped "
                             f"utterance ({self.lengths.max()}); raise it or lower data.max_sample_size")
        self.max_batch_samples, self.max_batch_size = max_batch_samples, max_batch_size
        self.num_buckets, self.shuffle, self.seed = max(1, num_buckets), shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> list[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        order = np.argsort(self.lengths, kind="stable")
        buckets = np.array_split(order, min(self.num_buckets, max(1, len(order))))
        batches: list[list[int]] = []
        for bucket in buckets:
            if self.shuffle:
                bucket = bucket[rng.permutation(len(bucket))]
            bucket = bucket[np.argsort(self.lengths[bucket], kind="stable")]  # shuffled ties, then length order
            batch: list[int] = []
            longest = 0
            for i in bucket.tolist():
                new_longest = max(longest, int(self.lengths[i]))
                full = (len(batch) + 1) * new_longest > self.max_batch_samples
                full = full or (self.max_batch_size is not None and len(batch) >= self.max_batch_size)
                if batch and full:
                    batches.append(batch)
                    batch, new_longest = [], int(self.lengths[i])
                batch.append(i)
                longest = new_longest
            if batch:
                batches.append(batch)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self):
        batches = self._all_batches()
        per_rank = len(batches) // self.world_size if self.world_size > 1 else len(batches)
        yield from batches[self.rank::self.world_size][:per_rank]

    def __len__(self) -> int:
        n = len(self._all_batches())
        return n // self.world_size if self.world_size > 1 else n


class AudioCollator:
    """Stack waveforms into ``input_values`` (B, L) with ``lengths`` (B,).

    ``crop``: every waveform is cut to the batch's shortest (at a random offset when ``random``), no padding
    (fairseq's pretraining batches). ``pad``: zeros after each waveform up to the longest, with an ``attention_mask``
    (1 = audio, 0 = padding).
    """

    def __init__(self, mode: str, random: bool) -> None:
        self.mode, self.random = mode, random

    def __call__(self, waves: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.mode == "crop":
            size = min(len(w) for w in waves)
            out = []
            for w in waves:
                start = int(torch.randint(0, len(w) - size + 1, ()).item()) if self.random and len(w) > size else 0
                out.append(w[start:start + size])
            return {"input_values": torch.stack(out), "lengths": torch.full((len(out),), size, dtype=torch.long)}
        size = max(len(w) for w in waves)
        values = torch.zeros(len(waves), size, dtype=torch.float32)
        mask = torch.zeros(len(waves), size, dtype=torch.long)
        for i, w in enumerate(waves):
            values[i, :len(w)] = w
            mask[i, :len(w)] = 1
        return {"input_values": values, "attention_mask": mask,
                "lengths": torch.tensor([len(w) for w in waves], dtype=torch.long)}


class AudioDataModule(SplitDataModule):
    """Raw-audio data for wav2vec 2.0 pretraining.

    Args:
        source: ``librispeech`` (``root`` holds the split folders, ``<split>/<speaker>/<chapter>/*.flac``) or
            ``synthetic`` (a speech-like corpus generated on the fly with LibriSpeech's lengths and dtype).
        root: the LibriSpeech folder (the one holding ``train-clean-100`` …).
        train_splits, val_splits: split folder names, e.g. the 960 h ``[train-clean-100, train-clean-360,
            train-other-500]`` and ``[dev-clean]``.
        sample_rate: audio is resampled to it when a file differs (LibriSpeech is 16 kHz).
        max_sample_size: longer utterances are cropped to this many samples (random offset in training).
        min_sample_size: shorter utterances are dropped (fairseq's pretraining filter), 0 keeps all.
        max_batch_seconds: audio per batch and device, counted as batch size × longest utterance (fairseq's
            ``max_tokens`` / sample rate: 1.4M samples = 87.5 s for Base).
        max_batch_size: at most this many utterances per batch (null: no limit).
        batch_mode: ``crop`` (cut each batch to its shortest utterance, no padding, as fairseq pretrains) or ``pad``
            (zero padding and an attention mask).
        normalize: zero-mean unit-variance waveforms (false for wav2vec 2.0 Base/Large on LibriSpeech).
        num_buckets: length buckets of the batch sampler.
        synthetic_samples, synthetic_val_samples, synthetic_min_seconds, synthetic_max_seconds: the synthetic corpus.
        cache_dir: where the manifest of file lengths is cached (default ``~/.cache/dyt-bench/audio``).
        max_files: use only the first N files of each split list (sorted), for quick runs.
    """

    def __init__(
        self,
        source: Literal["librispeech", "synthetic"] = "librispeech",
        root: str | None = None,
        train_splits: list[str] | None = None,
        val_splits: list[str] | None = None,
        sample_rate: int = 16000,
        max_sample_size: int = 250000,
        min_sample_size: int = 32000,
        max_batch_seconds: float = 87.5,
        max_batch_size: int | None = None,
        batch_mode: Literal["crop", "pad"] = "crop",
        normalize: bool = False,
        num_buckets: int = 16,
        synthetic_samples: int = 2048,
        synthetic_val_samples: int = 64,
        synthetic_min_seconds: float = 1.5,
        synthetic_max_seconds: float = 17.0,
        cache_dir: str | None = None,
        max_files: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_choice("data.source", source, ("librispeech", "synthetic"))
        check_choice("data.batch_mode", batch_mode, ("crop", "pad"))
        if source == "librispeech" and not root:
            raise ValueError("data.root is required for source 'librispeech' (the folder holding train-clean-100 …)")
        if sample_rate <= 0:
            raise ValueError(f"data.sample_rate must be > 0; got {sample_rate}")
        if max_sample_size <= 0 or min_sample_size < 0 or min_sample_size > max_sample_size:
            raise ValueError(f"need 0 <= data.min_sample_size <= data.max_sample_size and max > 0; got "
                             f"{min_sample_size} and {max_sample_size}")
        if max_batch_seconds * sample_rate < max_sample_size:
            raise ValueError(f"data.max_batch_seconds={max_batch_seconds} holds fewer samples than one cropped "
                             f"utterance (data.max_sample_size={max_sample_size}); raise it")
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"data.max_batch_size must be >= 1 or null; got {max_batch_size}")
        if source == "synthetic":
            if synthetic_samples < 1 or synthetic_val_samples < 1:
                raise ValueError("data.synthetic_samples and data.synthetic_val_samples must be >= 1")
            if not 0 < synthetic_min_seconds <= synthetic_max_seconds:
                raise ValueError(f"need 0 < data.synthetic_min_seconds <= data.synthetic_max_seconds; got "
                                 f"{synthetic_min_seconds} and {synthetic_max_seconds}")
        self.save_hyperparameters()
        self.train_splits = list(train_splits) if train_splits is not None else ["train-clean-100", "train-clean-360",
                                                                                  "train-other-500"]
        self.val_splits = list(val_splits) if val_splits is not None else ["dev-clean"]
        self.sample_rate = sample_rate
        self.cache_dir = Path(os.path.expanduser(cache_dir or os.path.join("~", ".cache", "dyt-bench", "audio")))
        self.train_set: AudioDataset | None = None
        self.val_set: AudioDataset | None = None
        self.dropped_short = 0

    @property
    def dataset_name(self) -> str:
        if self.hparams.source == "synthetic":
            return "synthetic-speech"
        return "librispeech:" + "+".join(self.train_splits)

    @property
    def max_batch_samples(self) -> int:
        return int(self.hparams.max_batch_seconds * self.sample_rate)

    def _files(self, splits: list[str]) -> list[Path]:
        files = [f for s in splits for f in find_librispeech_split(self.hparams.root, s)]
        return files[: self.hparams.max_files] if self.hparams.max_files else files

    def _keep(self, lengths: np.ndarray) -> np.ndarray:
        return lengths >= self.hparams.min_sample_size

    def _make(self, split: str) -> AudioDataset:
        hp = self.hparams
        common = dict(max_sample_size=hp.max_sample_size, normalize=hp.normalize, random_crop=split == "train",
                      seed=hp.seed)
        if hp.source == "synthetic":
            count = hp.synthetic_samples if split == "train" else hp.synthetic_val_samples
            corpus_seed = hp.seed * 2 + (0 if split == "train" else 1)
            lengths = synthetic_lengths(count, self.sample_rate, hp.synthetic_min_seconds, hp.synthetic_max_seconds,
                                        seed=corpus_seed)
            keep = self._keep(lengths)
            self.dropped_short += int((~keep).sum())
            if not keep.any():
                raise ValueError(f"every synthetic {split} utterance is shorter than data.min_sample_size="
                                 f"{hp.min_sample_size} samples; lower it or raise data.synthetic_min_seconds")
            return SyntheticAudioDataset(lengths[keep], np.flatnonzero(keep), self.sample_rate, corpus_seed, **common)
        files = self._files(self.train_splits if split == "train" else self.val_splits)
        lengths = audio_manifest(files, self.sample_rate, self.cache_dir)
        keep = self._keep(lengths)
        self.dropped_short += int((~keep).sum())
        if not keep.any():
            raise ValueError(f"every {split} utterance is shorter than data.min_sample_size={hp.min_sample_size} "
                             f"samples; lower it")
        return FileAudioDataset([str(f) for f, k in zip(files, keep, strict=True) if k], lengths[keep],
                                self.sample_rate, **common)

    def prepare_data(self) -> None:
        """Read the LibriSpeech file headers into the manifest cache, once per node (Lightning calls this on one
        process before ``setup``, which then reads the cached manifests on every rank)."""
        if self.hparams.source == "synthetic" or self.cache_dir is None:
            return
        for splits in (self.train_splits, self.val_splits):
            audio_manifest(self._files(splits), self.sample_rate, self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.train_set = self._make("train")
        self.val_set = self._make("val")
        seconds = self.train_set.lengths.sum() / self.sample_rate / 3600
        rank_zero_info(f"audio data ({self.dataset_name}): {len(self.train_set)} train utterances ({seconds:.1f} h), "
                       f"{len(self.val_set)} val; {self.dropped_short} dropped as shorter than "
                       f"{self.hparams.min_sample_size} samples")

    def loader(self, dataset: AudioDataset, train: bool) -> DataLoader:
        rank, world = 0, 1
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            rank, world = trainer.global_rank, trainer.world_size
        sampler = LengthBucketBatchSampler(
            dataset.cropped_lengths, self.max_batch_samples, self.hparams.max_batch_size, self.hparams.num_buckets,
            shuffle=train, seed=self.hparams.seed, rank=rank, world_size=world)
        return DataLoader(dataset, batch_sampler=sampler, num_workers=self.hparams.num_workers,
                          collate_fn=AudioCollator(self.hparams.batch_mode, random=train),
                          persistent_workers=self.hparams.num_workers > 0)
