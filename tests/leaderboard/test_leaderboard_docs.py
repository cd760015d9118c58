"""Every leaderboard table in docs/ is regenerated from the committed results/ and must match; the machinery itself
(find, regenerate, report, rewrite, export) is checked on a small fixture, so it is tested whatever results/ holds."""

import json
from pathlib import Path

import pytest
from leaderboard_cases import make_result

from dyt_bench.leaderboard.doc_tables import check, export, find_tables, main, update
from dyt_bench.results import write_result

REPO = Path(__file__).resolve().parents[2]


def test_documented_tables_match_the_committed_results(capsys):
    docs = sorted((REPO / "docs").glob("*.md"))
    tables, problems = check(docs, REPO)
    assert not problems, "\n\n".join(problems)
    # and every committed folder of run results backs at least one documented table (results/ also holds other
    # files, e.g. benchmark tables: only folders with a grid.json or result.json count)
    results = REPO / "results"
    committed = sorted(p.name for p in results.iterdir() if p.is_dir() and (
        (p / "grid.json").is_file() or next(p.rglob("result.json"), None))) if results.is_dir() else []
    used = {Path(a).parts[1] for t in tables for a in t.args if Path(a).parts[:1] == ("results",)}
    assert not set(committed) - used, f"results/ folders no documented table regenerates: {set(committed) - used}"
    with capsys.disabled():
        print(f"\n{len(tables)} documented table(s) regenerated from results/ ({len(committed)} folder(s))")


def _grid_output(root: Path) -> Path:
    """A two-cell grid's output as `dyt-bench grid` leaves it: grid.json, cell folders, a shelved attempt."""
    out = root / "runs" / "toy"
    axes = {"model.norm.kind": [{"label": k, "model.norm.kind": k} for k in ("layernorm", "dyt")]}
    spec = {"name": "toy", "base": "base.yaml", "axes": axes, "seeds": [0, 1, 2], "overrides": {},
            "baseline": [{"when": {}, "ref": {"model.norm.kind": "layernorm"}}],
            "paper": {"source": "made up", "version": "supplied", "metric": "val/acc1",
                      "values": [{"model.norm.kind": "dyt", "value": "Diverge"}]},
            "leaderboard": {"cols": ["model.norm.kind"], "scale": 100}}
    out.mkdir(parents=True)
    (out / "grid.json").write_text(json.dumps({"name": "toy", "spec": spec, "cells": []}))
    accs = {"layernorm": [0.90, 0.91, 0.93], "dyt": [0.92, 0.95, None]}
    for kind, values in accs.items():
        for seed, acc in enumerate(values):
            r = make_result(kind, seed, acc, status="completed" if acc is not None else "diverged")
            r.norm_replacement = {"replaced": {"LayerNorm": 7}, "modules": ["blocks.0.norm1"] * 50}
            write_result(out / f"kind={kind}_s{seed}", r)
    write_result(out / "kind=dyt_s2" / "attempts" / "1", make_result("dyt", 2, None, status="failed"))
    return out


def test_the_machinery_on_a_fixture(tmp_path, monkeypatch, capsys):
    export(_grid_output(tmp_path), tmp_path / "results" / "toy")
    exported = sorted(p.relative_to(tmp_path / "results").as_posix() for p in (tmp_path / "results").rglob("*.json"))
    assert exported == ["toy/grid.json"] + [f"toy/kind={k}_s{s}/result.json" for k in ("dyt", "layernorm")
                                             for s in range(3)]  # no shelved attempt
    slim = json.loads((tmp_path / "results/toy/kind=dyt_s0/result.json").read_text())
    assert slim["norm_replacement"] == {} and slim["metrics_final"]["val/acc1"] == pytest.approx(0.91)

    doc = tmp_path / "docs" / "page.md"
    doc.parent.mkdir()
    stale = "| old | table |\n"
    doc.write_text(f"# Page\n\nBefore.\n\n<!-- leaderboard: results/toy -->\n{stale}<!-- /leaderboard -->\n\nAfter.\n"
                   "<!-- leaderboard: results/missing --value best -->\n| x |\n<!-- /leaderboard -->\n")
    (table, missing) = find_tables(doc)
    assert table.args == ("results/toy",) and table.line == 5 and table.text == stale
    assert missing.args == ("results/missing", "--value", "best")

    tables, problems = check([doc], tmp_path)
    assert len(tables) == 2 and len(problems) == 2
    assert "page.md:5 (dyt-bench leaderboard results/toy): differs from its results" in problems[0]
    assert "-| old | table |" in problems[0] and "+| all | 90.33 ± 1.53 (3)<br>baseline" in problems[0]
    assert "the leaderboard failed: dyt-bench leaderboard: error: no such file or directory: results/missing" \
        in problems[1]
    with pytest.raises(LookupError, match="results/missing"):
        update(doc, tmp_path)  # nothing is rewritten while one table cannot be regenerated
    assert stale in doc.read_text()

    doc.write_text(doc.read_text().split("After.")[0] + "After.\n")
    assert update(doc, tmp_path) == 1 and update(doc, tmp_path) == 0
    text = doc.read_text()
    assert text.startswith("# Page\n\nBefore.\n\n<!-- leaderboard: results/toy -->\n**toy · image_classification**")
    assert text.endswith("<!-- /leaderboard -->\n\nAfter.\n")
    assert "92.50 ± 2.12 (2) · 1/3 diverged<br>Δ +2.17 [−6.69, +11.02]<br>p=0.36 (Holm 0.36) survivors only" in text
    assert "<br>paper Diverge |" in text and "paper version: supplied" in text
    assert check([doc], tmp_path)[1] == []
    doc.write_text(text.replace("90.33", "90.34"))
    monkeypatch.chdir(tmp_path)  # the command runs from the repository root
    assert main(["check", str(doc)]) == 1 and "-| all | 90.34" in capsys.readouterr().out
    assert main(["update", str(doc)]) == 0 and main(["check", str(doc)]) == 0
    assert "1 documented table(s) match their results" in capsys.readouterr().out


def test_export_leaves_no_machine_local_path(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    run = repo / "runs" / "g" / "cell_s0"
    run.mkdir(parents=True)
    monkeypatch.chdir(repo)
    data = {"config": {"config": [str(repo / "configs" / "base.yaml")],
                       "trainer": {"default_root_dir": str(run)}}, "note": "unrelated /elsewhere/path"}
    (run / "result.json").write_text(json.dumps(data), encoding="utf-8")
    (repo / "runs" / "g" / "grid.json").write_text(json.dumps({"output": str(repo / "runs" / "g")}), encoding="utf-8")
    export(repo / "runs" / "g", Path("results/g"))
    got = json.loads((repo / "results/g/cell_s0/result.json").read_text(encoding="utf-8"))
    assert got["config"]["config"] == ["configs/base.yaml"]
    assert got["config"]["trainer"]["default_root_dir"] == "results/g/cell_s0"
    assert got["note"] == "unrelated /elsewhere/path"  # only whole path prefixes move
    assert json.loads((repo / "results/g/grid.json").read_text(encoding="utf-8")) == {"output": "results/g"}
    assert str(tmp_path) not in (repo / "results/g/cell_s0/result.json").read_text(encoding="utf-8")
