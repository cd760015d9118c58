"""Where a callback writes its files (the run directory) and the one CSV writer they share."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import lightning.pytorch as pl


def run_dir(trainer: pl.Trainer) -> Path:
    """The run directory: the logger's folder (``trainer.log_dir``), else the trainer's ``default_root_dir``."""
    return Path(trainer.log_dir or trainer.default_root_dir)


def write_csv(path: str | os.PathLike, rows: Iterable[Mapping], fieldnames: Sequence[str]) -> Path:
    """Write ``rows`` (one dict per row) under a header of ``fieldnames``, replacing the file; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fieldnames))
        writer.writeheader()
        writer.writerows(rows)
    return path


__all__ = ["run_dir", "write_csv"]
