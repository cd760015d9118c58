"""The layer rule of docs/architecture.md: no module of the package imports from a higher layer (read from the code)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "dyt_bench"

# The first part of a module's path below dyt_bench -> its layer (docs/architecture.md, "Layers").
LAYERS = {
    "config_keys": 0, "coerce": 0, "results": 0, "versions": 0,
    "ops": 1,
    "norms": 2,
    "models": 3, "diffusion": 3, "evaluation": 3, "datamodules": 3,
    "callbacks": 4,
    "tasks": 5,
    "lightning_cli": 6, "grid": 6,
    "leaderboard": 7, "analysis": 7,
    "cli": 8,
}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts == ("__init__",):
            continue
        yield path, parts


def _imports(path: Path, parts: tuple[str, ...]):
    """(line, imported dyt_bench module path) for every import in the file, module level or inside a function."""
    package = ["dyt_bench", *parts[:-1]] if parts[-1] != "__init__" else ["dyt_bench", *parts[:-1]]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                names = [".".join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module or ""]
        else:
            continue
        for name in names:
            if name.startswith("dyt_bench."):
                yield node.lineno, name.split(".")[1:]


def test_every_top_level_module_has_a_layer():
    tops = {parts[0] for _, parts in _modules()}
    assert tops <= set(LAYERS), f"modules without a layer in docs/architecture.md: {sorted(tops - set(LAYERS))}"


@pytest.mark.parametrize("path,parts", list(_modules()), ids=lambda v: "/".join(v) if isinstance(v, tuple) else "")
def test_no_import_runs_up_the_layers(path, parts):
    own = LAYERS[parts[0]]
    upward = [f"line {line}: dyt_bench.{'.'.join(target)} (layer {LAYERS[target[0]]})"
              for line, target in _imports(path, parts) if target and LAYERS.get(target[0], -1) > own]
    assert not upward, f"{path.relative_to(PACKAGE.parent)} (layer {own}) imports from above: " + "; ".join(upward)


def test_the_rule_catches_an_upward_import(tmp_path):
    # the checker itself: a layer-2 module importing a task is reported
    fake = tmp_path / "spec.py"
    fake.write_text("from dyt_bench.tasks import BenchTask\n", encoding="utf-8")
    found = list(_imports(fake, ("norms", "spec")))
    assert found == [(1, ["tasks"])] and LAYERS["tasks"] > LAYERS["norms"]
