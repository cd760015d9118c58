"""Documented leaderboard tables kept re-derivable: find the tables a Markdown file embeds, regenerate each from the
committed result files, report (``check``) or rewrite (``update``) those that differ, and copy a grid's result files
into ``results/`` (``export``).

A documented table sits between two HTML comments that name the leaderboard arguments producing it, run from the
repository root with ``--format md``::

    <!-- leaderboard: configs/grids/table8_squash.yaml results/table8_squash -->
    …the table…
    <!-- /leaderboard -->
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from dyt_bench.grid.spec import ATTEMPTS_DIR, GRID_SUMMARY_FILE
from dyt_bench.leaderboard.curves import METRICS_FILE
from dyt_bench.results import RESULT_FILE, atomic_write_text

# A block's comments stand alone on their lines (so a comment quoted inside prose is not a block).
BLOCK = re.compile(r"^<!-- leaderboard: (?P<args>[^\n]*?) -->\n(?P<body>.*?)^<!-- /leaderboard -->$",
                   re.DOTALL | re.MULTILINE)
DROPPED_FIELDS = ("norm_replacement",)  # per-module replacement lists: bulky, and no table reads them
ERROR_CHARS = 2000  # a failed run's traceback is cut to its last characters


@dataclass(frozen=True)
class DocTable:
    """One embedded table: the file, the line of its opening comment, the leaderboard arguments and the text."""

    doc: Path
    line: int
    args: tuple[str, ...]
    text: str
    span: tuple[int, int]  # character span of the body in the file


def find_tables(doc: Path) -> list[DocTable]:
    text = doc.read_text(encoding="utf-8")
    return [DocTable(doc, text.count("\n", 0, m.start()) + 1, tuple(shlex.split(m.group("args"))), m.group("body"),
                     m.span("body")) for m in BLOCK.finditer(text)]


def regenerate(args: tuple[str, ...] | list[str], root: Path) -> tuple[str | None, str]:
    """The Markdown the leaderboard prints for ``args`` run in ``root``: (text, "") or (None, its error message)."""
    from dyt_bench.leaderboard.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv = [*args, *([] if "--format" in args else ["--format", "md"])]
    with contextlib.chdir(root), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # the parser refused the arguments
            code = e.code
    return (out.getvalue(), "") if code == 0 else (None, err.getvalue().strip() or f"exit status {code}")


def _block_text(text: str) -> str:
    return text.rstrip("\n") + "\n"


def check(docs: list[Path], root: Path) -> tuple[list[DocTable], list[str]]:
    """Every documented table of ``docs`` and, for each that its results no longer produce, what went wrong."""
    tables, problems = [], []
    for doc in docs:
        for t in find_tables(doc):
            tables.append(t)
            where = f"{doc}:{t.line} (dyt-bench leaderboard {shlex.join(t.args)})"
            new, error = regenerate(t.args, root)
            if new is None:
                problems.append(f"{where}: the leaderboard failed: {error}")
            elif _block_text(new) != _block_text(t.text):
                import difflib

                diff = difflib.unified_diff(t.text.splitlines(), new.splitlines(), "documented", "regenerated",
                                            lineterm="", n=1)
                problems.append(f"{where}: differs from its results:\n" + "\n".join(diff))
    return tables, problems


def update(doc: Path, root: Path) -> int:
    """Rewrite every documented table of ``doc`` from its results; returns how many changed. A table whose
    leaderboard fails is an error (LookupError), and the file is left as it was."""
    text = doc.read_text(encoding="utf-8")
    changed = 0
    for t in reversed(find_tables(doc)):
        new, error = regenerate(t.args, root)
        if new is None:
            raise LookupError(f"{doc}:{t.line}: the leaderboard failed: {error}")
        if _block_text(new) != _block_text(t.text):
            text = text[:t.span[0]] + _block_text(new) + text[t.span[1]:]
            changed += 1
    if changed:
        atomic_write_text(doc, text)
    return changed


def _relocated(value, moves: list[tuple[str, str]]):
    """``value`` with every string's absolute prefixes rewritten by ``moves`` (old prefix → new; an empty new prefix
    leaves the path relative), in nested data."""
    if isinstance(value, str):
        for old, new in moves:
            if value == old or value.startswith(old + "/"):
                rest = value[len(old):]
                return new + rest if new else (rest.lstrip("/") or ".")
        return value
    if isinstance(value, dict):
        return {k: _relocated(v, moves) for k, v in value.items()}
    if isinstance(value, list):
        return [_relocated(v, moves) for v in value]
    return value


def _slim(path: Path, moves: list[tuple[str, str]]) -> str:
    data = _relocated(json.loads(path.read_text(encoding="utf-8")), moves)
    for key in DROPPED_FIELDS:
        if data.get(key):
            data[key] = {}
    if isinstance(data.get("error"), str) and len(data["error"]) > ERROR_CHARS:
        data["error"] = "…" + data["error"][-ERROR_CHARS:]
    return json.dumps(data, indent=2) + "\n"


def export(source: Path, dest: Path) -> list[Path]:
    """Copy a grid's (or any run directory's) ``grid.json`` and ``result.json`` files to ``dest``, keeping their
    relative paths, leaving out earlier attempts and the bulky fields no table reads; each run's ``metrics.csv``
    (beside its result.json) comes along, so that ``leaderboard --curves`` can draw from the copy. Paths inside them are made
    machine-independent: the source directory becomes ``dest`` and the repository root (the working directory)
    is dropped, so ``/home/me/dyt-bench/configs/x.yaml`` reads ``configs/x.yaml``. Returns the files written."""
    moves = [(str(source.resolve()), str(dest)), (str(Path.cwd().resolve()), "")]
    written = []
    summary = source / GRID_SUMMARY_FILE
    if summary.is_file():
        atomic_write_text(dest / GRID_SUMMARY_FILE, json.dumps(
            _relocated(json.loads(summary.read_text(encoding="utf-8")), moves), indent=2) + "\n")
        written.append(dest / GRID_SUMMARY_FILE)
    for path in sorted(source.rglob(RESULT_FILE)):
        rel = path.relative_to(source)
        if ATTEMPTS_DIR in rel.parts[:-1]:
            continue
        atomic_write_text(dest / rel, _slim(path, moves))
        written.append(dest / rel)
        metrics = path.parent / METRICS_FILE
        if metrics.is_file():
            atomic_write_text(dest / rel.parent / METRICS_FILE, metrics.read_text(encoding="utf-8"))
            written.append(dest / rel.parent / METRICS_FILE)
    if not written:
        raise FileNotFoundError(f"no {GRID_SUMMARY_FILE} or {RESULT_FILE} under {source}")
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m dyt_bench.leaderboard.doc_tables check|update DOC… | export SOURCE DEST`` (from the repository
    root): exit status 0, or 1 when a documented table differs from its results."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("check", "update", "export") or (args[0] == "export" and len(args) != 3):
        print(main.__doc__, file=sys.stderr)
        return 2
    root = Path(os.getcwd())
    if args[0] == "export":
        files = export(Path(args[1]), Path(args[2]))
        print(f"wrote {len(files)} file(s) under {args[2]}")
        return 0
    docs = [Path(d) for d in args[1:]] or sorted((root / "docs").glob("*.md"))
    if args[0] == "update":
        for doc in docs:
            print(f"{doc}: {update(doc, root)} table(s) rewritten")
        return 0
    tables, problems = check(docs, root)
    print("\n\n".join(problems) or f"{len(tables)} documented table(s) match their results")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
