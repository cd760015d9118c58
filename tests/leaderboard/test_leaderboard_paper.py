"""The grid files' paper values: the supplied text's numbers (``version: supplied``), Diverge where it diverged, each
entry naming values of the grid's axes, and the version named in the leaderboard's header."""

from pathlib import Path

import pytest
import yaml

from dyt_bench.grid.spec import parse_grid

GRIDS = Path(__file__).resolve().parents[2] / "configs" / "grids"
PAPER_GRIDS = sorted(p for p in GRIDS.rglob("*.yaml") if "paper" in yaml.safe_load(p.read_text()))

TABLE8 = {("without α", "identity"): "Diverge", ("without α", "tanh"): 69.2, ("without α", "hardtanh"): 68.7,
          ("without α", "sigmoid"): 66.3, ("with α", "identity"): "Diverge", ("with α", "tanh"): 73.5,
          ("with α", "hardtanh"): 71.7, ("with α", "sigmoid"): 70.2}
TABLE11 = {"ResNet": {"batchnorm": 76.1, "layernorm": "Diverge", "dyt": 74.1},
           "ViT": {"batchnorm": "Diverge", "layernorm": 82.3, "dyt": 82.6},
           "VGG": {"batchnorm": 73.3, "layernorm": 70.2, "dyt": 72.1}}  # the supplied text's Table 11
TABLE6 = {"Mouse Enhancers": (85.1, 85.1), "Coding vs Intergenomic": (91.3, 91.4), "Human vs Worm": (85.9, 85.9),
          "Human Enhancers Cohn": (74.2, 74.4), "Human Enhancers Ensembl": (89.2, 89.2),
          "Human Regulatory": (93.8, 93.7), "Human Non-TATA Promoters": (96.6, 96.5),
          "Human OCR Ensembl": (80.9, 80.9)}


def _raw(name):
    return yaml.safe_load((GRIDS / name).read_text())


@pytest.mark.parametrize("path", PAPER_GRIDS, ids=lambda p: str(p.relative_to(GRIDS)))
def test_every_paper_block_is_the_supplied_version_on_the_grids_axes(path, tmp_path):
    raw = yaml.safe_load(path.read_text())
    assert raw["paper"]["version"] == "supplied" and raw["paper"]["source"].startswith("the supplied text")
    assert "2503.10622" not in raw["paper"]["source"]  # another version's numbers live in comments only
    paper = dict(raw["paper"])
    del paper["version"]  # what the grid spec's own checks see of the block
    spec = parse_grid({**raw, "paper": paper}, path, output=tmp_path)
    assert len(spec.paper["values"]) == len(raw["paper"]["values"])  # every entry names values of the axes


@pytest.mark.parametrize("name", ["table8_squash.yaml", "imagenet/table8_squash.yaml"])
def test_table8_is_vit_tiny_with_identity_diverging(name):
    values = {(v["alpha"], v["model.norm.kind"]): v["value"] for v in _raw(name)["paper"]["values"]}
    assert values == TABLE8


@pytest.mark.parametrize("name, archs", [("table11_bn_ln_dyt.yaml", ("ResNet-18", "ViT")),
                                         ("imagenet/table11_bn_ln_dyt.yaml", ("ResNet-50", "ViT-B", "VGG16"))])
def test_table11_has_ln_resnet_and_bn_vit_as_diverge(name, archs):
    values = {(v["arch"], v["model.norm.kind"]): v["value"] for v in _raw(name)["paper"]["values"]}
    expected = {(arch, kind): value for arch, row in zip(archs, TABLE11.values(), strict=False)
                for kind, value in row.items()}  # the digits grid has no VGG row
    assert values == expected


def test_table6_gives_every_dataset():
    values = {(v["dataset"], v["norm"]): v["value"] for v in _raw("table6_genomic.yaml")["paper"]["values"]}
    assert values == {(d, n): x for d, pair in TABLE6.items() for n, x in zip(("LN", "DyT"), pair, strict=True)}
