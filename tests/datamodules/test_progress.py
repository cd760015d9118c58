"""Long data steps show progress and stream: FASTA → token file (plain and gzip), GenomicBenchmarks folders, text
tokenisation in batches into a memory-mapped token file (bytes and a Hugging Face tokenizer, checked against
per-document encoding), and the FID sampling bar."""

import gzip

import numpy as np
import pytest

from dyt_bench.datamodules import TextDataModule
from dyt_bench.datamodules.dna.genome import fasta_to_tokens
from dyt_bench.datamodules.dna.genomic_benchmarks import read_benchmark_split
from dyt_bench.datamodules.dna.tokenizer import DNATokenizer
from dyt_bench.datamodules.text import EOS_BYTE
from dyt_bench.evaluation.fid import SamplingProgress


def _fasta_text(rng) -> str:
    parts = []
    for name in ("chr1", "chr2"):
        seq = "".join(rng.choice(list("ACGTN"), 300))
        parts.append(f">{name} test\n" + "\n".join(seq[i:i + 60] for i in range(0, len(seq), 60)))
    return "\n".join(parts) + "\n"


@pytest.mark.parametrize("gz", [False, True])
def test_fasta_conversion_shows_progress_and_reads_gzip_alike(tmp_path, capsys, gz):
    text = _fasta_text(np.random.default_rng(0))
    path = tmp_path / ("g.fa.gz" if gz else "g.fa")
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    index = fasta_to_tokens(path, tmp_path / "t.bin")
    out = capsys.readouterr().out
    assert "[dna] " + path.name + " → tokens" in out and "100%" in out
    seqs = {}
    for block in text.strip().split(">")[1:]:
        head, *lines = block.splitlines()
        seqs[head.split()[0]] = "".join(lines)
    tokens = np.fromfile(tmp_path / "t.bin", dtype=np.uint8)
    assert index == {"chr1": (0, 300), "chr2": (300, 300)}
    for name, (offset, length) in index.items():  # the reference: the tokenizer on each record's text
        np.testing.assert_array_equal(tokens[offset:offset + length],
                                      np.frombuffer(DNATokenizer.encode_bytes(seqs[name].encode()), np.uint8))
    fasta_to_tokens(path, tmp_path / "quiet.bin", progress=False)
    assert capsys.readouterr().out == ""


def test_genomic_benchmark_reading_shows_progress(tmp_path, capsys):
    for cls in ("neg", "pos"):
        (tmp_path / "ds" / "train" / cls).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "ds" / "train" / cls / f"{i}.txt").write_text("ACGT" * (i + 1))
    seqs, labels, classes = read_benchmark_split(tmp_path / "ds" / "train", DNATokenizer())
    assert classes == ["neg", "pos"] and labels.tolist() == [0, 0, 0, 1, 1, 1] and len(seqs[2]) == 12
    out = capsys.readouterr().out
    assert "[dna] reading ds/train" in out and "100%" in out


def _corpus(folder, n=9):
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(n):
        (folder / f"d{i}.txt").write_text(" ".join(f"w{int(w)}" for w in rng.integers(0, 40, 150 + 20 * i)))
    return folder


def test_tokenisation_streams_in_batches_into_a_memory_mapped_file(tmp_path, capsys, monkeypatch):
    folder = _corpus(tmp_path / "c")
    batches = []
    original = TextDataModule.encode_batch

    def spy(self, docs):
        batches.append(len(docs))
        return original(self, docs)

    monkeypatch.setattr(TextDataModule, "encode_batch", spy)
    dm = TextDataModule(source="files", paths=[str(folder)], seq_len=16, val_fraction=0.2, split_seed=0,
                        cache_dir=str(tmp_path / "cache"), tokenize_batch_bytes=1500)
    dm.setup()
    assert len(batches) > 2 and max(batches) < 9  # several batches, never the whole corpus at once
    train, val = dm.split(dm.documents())
    expected = np.concatenate([np.append(np.frombuffer(f.read_bytes(), np.uint8).astype(np.uint16), EOS_BYTE)
                               for f in train])
    tokens = dm.train_set.tokens
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16
    np.testing.assert_array_equal(np.asarray(tokens), expected)
    (token_file,) = (tmp_path / "cache").glob("train-*.tokens")
    assert token_file.stat().st_size == 2 * len(expected)  # two bytes a token, on disk
    out = capsys.readouterr().out
    assert "[text] tokenizing train" in out and "[text] tokenizing val" in out


def test_a_hugging_face_tokenizer_encodes_in_batches_as_per_document(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from transformers import PreTrainedTokenizerFast

    folder = _corpus(tmp_path / "c", n=6)
    vocab = {"[UNK]": 0, "[EOS]": 1, **{f"w{i}": i + 2 for i in range(40)}}
    core = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", eos_token="[EOS]")
    tok.save_pretrained(tmp_path / "tok")
    dm = TextDataModule(source="files", paths=[str(folder)], tokenizer=str(tmp_path / "tok"), seq_len=8,
                        val_fraction=0.2, cache_dir=str(tmp_path / "cache"), tokenize_batch_bytes=2000)
    dm.setup()
    train, _ = dm.split(dm.documents())
    expected = np.concatenate([tok.encode(f.read_text()) + [tok.eos_token_id] for f in train])
    np.testing.assert_array_equal(np.asarray(dm.train_set.tokens), expected)
    assert dm.vocab_size == 42


def test_fid_sampling_progress_counts_images(capsys):
    with SamplingProgress(10, "[val] sampling + FID features") as progress:
        for n in (4, 4, 4):  # the last batch overshoots: the bar stops at the total
            progress.advance(n)
    assert progress.done == 12
    out = capsys.readouterr().out
    assert "[val] sampling + FID features" in out and "10/10" in out
    with SamplingProgress(10, "quiet", enabled=False) as progress:
        progress.advance(10)
    assert capsys.readouterr().out == ""
