"""DNA data: the character tokenizer, a ``genome`` datamodule of FASTA windows split by chromosome, a
``genomic_benchmarks`` classification datamodule, and offline generators for both (their ``synthetic`` source)."""

from .genome import (
    PRIMARY_CHROMOSOMES,
    GenomeDataModule,
    GenomeWindows,
    fasta_to_tokens,
    open_fasta,
    valid_window_starts,
)
from .genomic_benchmarks import GENOMIC_BENCHMARKS, GenomicBenchmarksDataModule, PaddedSequences, read_benchmark_split
from .synthetic import write_synthetic_benchmark, write_synthetic_genome
from .tokenizer import (
    A_ID,
    BASE_IDS,
    BASES,
    BOS_ID,
    C_ID,
    CLS_ID,
    DNA_VOCAB_SIZE,
    EOS_ID,
    G_ID,
    IUPAC_AMBIGUOUS,
    MASK_ID,
    N_ID,
    PAD_ID,
    SEP_ID,
    SPECIAL_TOKENS,
    T_ID,
    UNK_ID,
    DNATokenizer,
    reverse_complement,
)

__all__ = ["A_ID", "BASES", "BASE_IDS", "BOS_ID", "CLS_ID", "C_ID", "DNA_VOCAB_SIZE", "DNATokenizer", "EOS_ID",
           "GENOMIC_BENCHMARKS", "G_ID", "GenomeDataModule", "GenomeWindows", "GenomicBenchmarksDataModule",
           "IUPAC_AMBIGUOUS", "MASK_ID", "N_ID", "PAD_ID", "PRIMARY_CHROMOSOMES", "PaddedSequences", "SEP_ID",
           "SPECIAL_TOKENS", "T_ID", "UNK_ID", "fasta_to_tokens", "open_fasta", "read_benchmark_split",
           "reverse_complement", "valid_window_starts", "write_synthetic_benchmark", "write_synthetic_genome"]
