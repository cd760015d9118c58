"""The model sweep's bookkeeping: docs/surgery.md's tables are what the committed results JSON gives, the selection
rule, the --models forms, and the per-model timeout of the process pool."""

import json
from pathlib import Path

import pytest

from dyt_bench.norms import sweep

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / sweep.DEFAULT_RESULTS
DOC = ROOT / "docs" / "surgery.md"


def test_doc_tables_equal_what_the_committed_results_give(tmp_path):
    data = json.loads(RESULTS.read_text())
    doc = DOC.read_text()
    sources = sorted({m["source"] for m in data["models"]})
    assert sources == ["hf", "timm", "tv"]
    for source in sources:
        assert sweep.render(source, data) in doc, f"docs/surgery.md's {source} table is stale: run --from-results"
    # and the command that regenerates them leaves the doc as it is
    copy = tmp_path / "surgery.md"
    copy.write_text(doc)
    assert sweep.main(["--from-results", str(RESULTS), "--out", str(copy)]) == 0
    assert copy.read_text() == doc


def test_committed_results_are_consistent():
    data = json.loads(RESULTS.read_text())
    ran = {(m["source"], m["name"]) for m in data["models"]}
    chosen = {(s, n) for s, names in data["selection"].items() for n in names}
    assert ran == chosen and len(ran) == len(data["models"])
    for m in data["models"]:
        assert m["status"] in sweep.STATUSES
        if m["status"] == "refused":
            assert " at '" in m["note"] and "(" in m["note"]  # names the class, the path and a reason
        if m["status"] == "OK" and m["round_trip"] is not None:
            assert m["round_trip"] <= sweep.ROUND_TRIP_TOL
    counts = sweep.summary([sweep.ModelResult.from_dict(m) for m in data["models"]])
    assert counts["silently changed"] == 0 and counts["crash"] == 0


def test_timm_family_is_the_architecture_prefix():
    assert sweep._timm_family("convnextv2_atto") == sweep._timm_family("convnextv1") == "convnextv"
    assert sweep._timm_family("resnet50d") == sweep._timm_family("resnet_gn") == "resnet"
    assert sweep._timm_family("mobilenetv3_small_050") == "mobilenetv"
    assert sweep._timm_family("vit_tiny_patch16_224") == "vit"


def test_select_timm_takes_each_familys_smallest_and_each_norm_class():
    meta = [
        {"name": "resnet50", "params": 25, "norms": ["torch.BatchNorm2d"]},
        {"name": "resnet18", "params": 11, "norms": ["torch.BatchNorm2d"]},
        {"name": "resnet50_gn", "params": 25, "norms": ["torch.GroupNorm"]},
        {"name": "resnet101_gn", "params": 44, "norms": ["torch.GroupNorm"]},
        {"name": "vit_base", "params": 86, "norms": ["torch.LayerNorm"]},
        {"name": "vit_small", "params": 22, "norms": ["torch.LayerNorm"]},
        {"name": "odd_net", "params": None, "norms": []},  # failed on meta: chosen by name
    ]
    chosen = sweep.select_timm(meta)
    assert chosen == {"odd_net": "smallest of family odd", "resnet18": "smallest of family resnet",
                      "vit_small": "smallest of family vit", "resnet50_gn": "smallest holding GroupNorm"}


def test_norm_layer_is_a_leaf_or_holds_tensors():
    from torch import nn

    class ConvNormAct(nn.Module):  # a block named like a norm
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)

    assert not sweep._norm_layer(ConvNormAct())
    assert sweep._norm_layer(nn.BatchNorm2d(2)) and sweep._norm_layer(nn.LayerNorm(2))


def test_models_option_forms(tmp_path):
    assert sweep._parse_models("a,b", ("tv",)) == {"tv": {"a": "named on the command line",
                                                          "b": "named on the command line"}}
    assert sweep._parse_models("tv:a,hf:llama", sweep.SOURCES)["hf"] == {"llama": "named on the command line"}
    with pytest.raises(ValueError, match="needs a source prefix"):
        sweep._parse_models("resnet18", sweep.SOURCES)
    with pytest.raises(ValueError, match="source must be one of tv"):
        sweep._parse_models("hf:llama", ("tv",))
    recorded = tmp_path / "r.json"
    recorded.write_text(json.dumps({"selection": {"tv": {"resnet18": "classifier"}}}))
    assert sweep._parse_models(str(recorded), ("tv", "hf")) == {"tv": {"resnet18": "classifier"}, "hf": {}}


@pytest.mark.slow
def test_sweep_model_on_a_small_torchvision_model():
    result = sweep.sweep_model("tv", "mobilenet_v3_small")
    assert result.status == "OK", result.note
    assert result.found == {"BatchNorm2d": 34} and result.replaced == 34
    assert result.activations[0] == result.activations[1] and result.finite
    assert result.round_trip is not None and result.round_trip <= sweep.ROUND_TRIP_TOL


@pytest.mark.slow
def test_pool_kills_a_model_past_its_timeout():
    done = []
    sweep.run_tasks([("model", "tv", "resnet18")], jobs=1, timeout=0.05,
                    on_done=lambda task, value, why: done.append((value, why)))
    assert done == [(None, done[0][1])] and "timeout" in done[0][1]
