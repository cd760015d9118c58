"""Offline DNA data generators: a FASTA genome from an order-3 Markov chain, and a GenomicBenchmarks-layout
classification set with planted class motifs."""

from __future__ import annotations

import bisect
import json
from pathlib import Path

import numpy as np


def write_synthetic_genome(path: Path, chromosomes: dict[str, int], seed: int = 0, line_width: int = 60,
                           n_run: int = 500) -> None:
    """Write a FASTA genome whose bases follow a fixed random order-3 Markov chain (learnable: its entropy is well
    below 2 bits per base), with runs of N at each chromosome's ends and middle, and soft-masked (lower-case)
    stretches."""
    rng = np.random.default_rng(seed)
    # transition table of an order-3 chain: each 3-mer context strongly prefers one or two next bases
    probs = rng.dirichlet(np.full(4, 0.3), size=64)
    letters = np.frombuffer(b"ACGT", dtype=np.uint8)
    with open(path, "w", encoding="ascii") as f:
        for name, length in chromosomes.items():
            seq = np.empty(length, dtype=np.uint8)
            ctx = 0
            u = rng.random(length).tolist()
            cum = np.cumsum(probs, axis=1).tolist()
            for i in range(length):
                b = min(bisect.bisect_right(cum[ctx], u[i]), 3)
                seq[i] = b
                ctx = ((ctx << 2) | b) & 63
            chars = letters[seq].copy()
            for lo in (0, length // 2 - n_run // 2, length - n_run):
                chars[max(0, lo):max(0, lo) + n_run] = ord("N")
            lower = slice(length // 4, length // 4 + 200)
            chars[lower] = np.frombuffer(bytes(chars[lower]).lower(), dtype=np.uint8)
            f.write(f">{name} synthetic\n")
            text = bytes(chars).decode("ascii")
            for j in range(0, length, line_width):
                f.write(text[j:j + line_width] + "\n")


def write_synthetic_benchmark(root: Path, name: str = "synthetic_motifs", num_classes: int = 2,
                              train_per_class: int = 200, test_per_class: int = 100,
                              length: tuple[int, int] = (80, 160), motif_length: int = 6, copies: int = 2,
                              seed: int = 0) -> Path:
    """Write a GenomicBenchmarks-layout dataset ``root/name/{train,test}/<class>/<i>.txt``: uniform random
    sequences, each carrying ``copies`` copies of its class's motif (a fixed random ``motif_length``-mer) at random
    positions.

    The motifs are orderings of one multiset of bases, so base composition is the same in every class and only the
    order of bases in the motif tells the classes apart. Returns the dataset folder.
    """
    rng = np.random.default_rng(seed)
    letters = np.array(list("ACGT"))
    # every class's motif is a different ordering of the same bases, so that no class differs in base composition
    first = rng.choice(letters, motif_length)
    motifs = ["".join(first)]
    for _ in range(1000 * num_classes):
        if len(motifs) == num_classes:
            break
        m = "".join(rng.permutation(first))
        if m not in motifs:
            motifs.append(m)
    if len(motifs) < num_classes:
        raise ValueError(f"cannot make {num_classes} distinct motifs of length {motif_length}; use a longer motif")
    folder = Path(root) / name
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        for c in range(num_classes):
            out = folder / split / f"class{c}"
            out.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                n = int(rng.integers(length[0], length[1] + 1))
                seq = "".join(rng.choice(letters, n))
                for _ in range(copies):
                    pos = int(rng.integers(0, n - motif_length + 1))
                    seq = seq[:pos] + motifs[c] + seq[pos + motif_length:]
                (out / f"{i}.txt").write_text(seq)
    (folder / "motifs.json").write_text(json.dumps({f"class{c}": m for c, m in enumerate(motifs)}))
    return folder


__all__ = ["write_synthetic_benchmark", "write_synthetic_genome"]
