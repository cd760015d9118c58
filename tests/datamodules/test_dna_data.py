"""DNA data: the tokenizer and reverse complement, the FASTA stream (windows, N handling, chromosome split, cache),
the GenomicBenchmarks layout (split, padding), and genome windows pickled as a file reference."""

import gzip

import numpy as np
import pytest
import torch

from dyt_bench.datamodules import GenomeDataModule, GenomicBenchmarksDataModule
from dyt_bench.datamodules.dna import (
    DNA_VOCAB_SIZE,
    N_ID,
    PAD_ID,
    DNATokenizer,
    reverse_complement,
    write_synthetic_benchmark,
)


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

