"""The command tree: every subcommand listed with a description, dispatched lazily, bad commands refused."""

import json
import subprocess
import sys

import pytest

from dyt_bench.cli import COMMANDS, main, usage


def test_help_lists_every_command_with_a_description(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, command in COMMANDS.items():
        assert f"  {name} " in out and command.description in out
    assert "predict" not in out  # no task has a predict_step


def test_no_command_prints_usage_and_fails(capsys):
    assert main([]) == 2
    assert "commands:" in capsys.readouterr().out


def test_unknown_command_names_the_allowed_ones(capsys):
    assert main(["trian"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'trian'" in err and "fit, validate, test, grid" in err


def _modules_loaded_by(argv):
    code = ("import sys, json, contextlib, io\nfrom dyt_bench.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    try:\n        main({argv!r})\n    except SystemExit:\n        pass\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"], ["leaderboard", "--help"], ["grid", "--help"]])
def test_help_does_not_import_torch_or_lightning(argv):
    assert _modules_loaded_by(argv) == []


@pytest.mark.parametrize("name", [n for n, c in COMMANDS.items() if not c.trainer])
def test_every_extra_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert "usage" in capsys.readouterr().out.lower()


def test_predict_is_not_a_lightning_subcommand():
    from dyt_bench.lightning_cli import BenchCLI

    assert set(BenchCLI.subcommands()) == {"fit", "validate", "test"}


def test_usage_mentions_the_command_help():
    assert "<command> --help" in usage()
