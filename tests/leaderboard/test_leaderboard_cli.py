"""The leaderboard command: output formats, options from a YAML file, bad input refused with the field and the
allowed values, and a --help that loads none of the heavy libraries."""

import csv
import io
import subprocess
import sys

import pytest
import yaml
from leaderboard_cases import cell_of, leaderboard_json

from dyt_bench.leaderboard import main


def test_csv_html_and_png_outputs(runs, tmp_path, capsys):
    assert main([str(runs), "--output", str(tmp_path / "t.csv")]) == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "t.csv").read_text())))
    assert {r["model.norm.kind"] for r in rows} == {"layernorm", "dyt", "rmsnorm", "identity", "batchnorm"}
    identity = next(r for r in rows if r["model.norm.kind"] == "identity")
    assert identity["status"] == "Diverge" and identity["n"] == "0" and identity["diverged"] == "3"
    assert main([str(runs), "--output", str(tmp_path / "t.html")]) == 0
    page = (tmp_path / "t.html").read_text()
    assert page.startswith("<!doctype html>") and "Diverge" in page and "<table>" in page
    assert main([str(runs), "--output", str(tmp_path / "t.png")]) == 0
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_terminal_table_to_a_text_file(runs, tmp_path, capsys):
    assert main([str(runs), "--output", str(tmp_path / "sub" / "t.txt")]) == 0
    text = (tmp_path / "sub" / "t.txt").read_text()
    assert "image_classification" in text and "Diverge (3/3)" in text
    assert f"wrote {tmp_path / 'sub' / 't.txt'} (terminal, 1 table(s))" in capsys.readouterr().err


def test_options_can_come_from_a_yaml_file(runs, tmp_path, capsys):
    config = tmp_path / "leaderboard.yaml"
    config.write_text(yaml.safe_dump({"paths": [str(runs)], "metric": "val/loss", "value": "final",
                                      "baseline": ["model.norm.kind=layernorm"]}))
    data = leaderboard_json(capsys, "--config", config)
    assert data["metric"] == "val/loss" and data["value"] == "final" and data["mode"] == "min"
    assert cell_of(data, **{"model.norm.kind": "layernorm"})["baseline"]
    data = leaderboard_json(capsys, "--config", config, "--metric", "val/acc1")  # the command line wins
    assert data["metric"] == "val/acc1" and data["mode"] == "max"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--metric", "val/acc9"], "--metric: unknown metric 'val/acc9'; metrics in these results: val/acc1, val/loss"),
        (["--rows", "width"], "--rows (table image_classification): unknown axis 'width'; the axes of this table "
                              "are: model.norm.kind"),
        (["--argbest", "lr"], "unknown axis 'lr'"),
        (["--baseline", "kind=groupnorm"], "'groupnorm' is not a value of axis 'model.norm.kind'; allowed: "),
        (["--baseline", "kind"], "--baseline must be AXIS=VALUE"),
        (["--output", "table.xlsx"], "cannot tell the format from '.xlsx'; use a suffix in .md, .csv, .json, .html, "
                                     ".htm, .png, .txt or --format {terminal,md,csv,json,html,png}"),
        (["--format", "png"], "--format png needs --output FILE.png"),
        (["--alpha", "1.5"], "--alpha must be in (0, 1); got 1.5"),
        (["--stall-margin", "-0.1"], "--stall-margin must be >= 0 (in the metric's units); got -0.1"),
        (["--test", "bootstrap", "--baseline", "kind=layernorm"], "--test bootstrap (kind=dyt): needs at least 8 trained runs per cell, got 2 and 3"),
    ],
)
def test_bad_input_is_refused_with_the_field_and_allowed_values(runs, capsys, tmp_path, args, message):
    assert main([str(runs), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "table.xlsx").exists()


def test_bad_format_and_mode_are_refused_by_the_parser(runs, capsys):
    for args, allowed in ((["--format", "xls"], "'terminal', 'md', 'csv', 'json', 'html', 'png'"),
                          (["--mode", "up"], "'max', 'min'")):
        with pytest.raises(SystemExit) as info:
            main([str(runs), *args])
        assert info.value.code == 2 and allowed in capsys.readouterr().err


def test_no_results_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no result.json found under" in capsys.readouterr().err


def test_help_loads_neither_torch_nor_matplotlib_nor_scipy():
    code = ("import sys\nfrom dyt_bench.leaderboard.cli import main\ntry:\n    main(['--help'])\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'lightning', 'matplotlib', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "usage: dyt-bench leaderboard" in out and out.strip().endswith("[]")
