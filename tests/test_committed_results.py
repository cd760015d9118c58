"""Committed result files carry no machine-local absolute paths: every path in results/ is repository-relative."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ABSOLUTE = re.compile(r"(?<![\w.$])/(?:work|tmp|root|home|Users|scratch)/[\w.+-]")


def test_no_absolute_machine_paths_in_results():
    offenders = []
    for path in sorted((ROOT / "results").rglob("*")):
        if path.is_file() and path.suffix in {".json", ".yaml", ".md", ".log", ".txt", ".csv", ".py"}:
            for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                if ABSOLUTE.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}")
    assert not offenders, "absolute paths in committed results: " + ", ".join(offenders[:10])


def test_the_check_catches_one():
    assert ABSOLUTE.search('"default_root_dir": "/tmp/grid/kind=dyt_s0"')
    assert not ABSOLUTE.search('"default_root_dir": "results/table2_self_supervised/kind=dyt_s0"')
