"""Values from result files cannot change the leaderboard's format: Rich markup is printed literally in the terminal,
markdown cells keep their column count, CSV rows keep their field count."""

import csv
import io

from leaderboard_cases import make_result

from dyt_bench.leaderboard import main
from dyt_bench.results import write_result

HOSTILE = "[bold red]x[/bold] | y\nz"


def _write(tmp_path):
    for kind in ("layernorm", "dyt"):
        for seed in range(3):
            result = make_result(kind, seed, 0.9 + 0.01 * seed + (0.02 if kind == "dyt" else 0), task=HOSTILE)
            write_result(tmp_path / f"{kind}_{seed}", result)


def test_terminal_prints_markup_from_results_literally(tmp_path, capsys):
    _write(tmp_path)
    assert main([str(tmp_path), "--metric", "val/acc1", "--rows", "model.norm.kind", "--format", "terminal"]) == 0
    out = capsys.readouterr().out
    assert "[/bold]" in out and "[bold red]" in out  # shown as text, not read as styles (an unmatched tag crashed)


def test_markdown_cells_keep_the_table_shape(tmp_path, capsys):
    _write(tmp_path)
    assert main([str(tmp_path), "--metric", "val/acc1", "--rows", "model.norm.kind", "--format", "md"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("|")]
    assert rows, out
    widths = {line.replace("\\|", "").count("|") for line in rows}
    assert len(widths) == 1, rows  # every row has as many unescaped pipes as the header
    title = next(line for line in out.splitlines() if line.startswith("**"))
    assert "\\|" in title and "<br>" in title  # the task name's pipe and newline are escaped in the title


def test_csv_keeps_its_field_count(tmp_path, capsys):
    _write(tmp_path)
    assert main([str(tmp_path), "--metric", "val/acc1", "--rows", "model.norm.kind", "--format", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert len({len(r) for r in rows if r}) == 1
