"""NormFactory (the table of norm kinds), NormSpec.coerce, and the ``alpha-init`` command."""

import inspect
import subprocess
import sys

import pytest
import torch
from torch import nn

from dyt_bench.norms import NORM_KINDS, NormFactory, NormSpec, SquashNorm, build_norm
from dyt_bench.norms.alpha_init import build_parser, main
from dyt_bench.ops.functions import KINDS, POINTWISE_KINDS


def test_kinds_in_order_and_from_the_registry():
    assert NormFactory.kinds() == ("layernorm", "batchnorm", "rmsnorm") + POINTWISE_KINDS == NORM_KINDS
    assert NormFactory.kinds()[:9] == ("layernorm", "batchnorm", "rmsnorm", "dyt", "tanh", "hardtanh", "sigmoid",
                                       "identity", "derf")
    assert list(NormFactory.describe()) == list(NormFactory.kinds()) and all(NormFactory.describe().values())
    for kind in POINTWISE_KINDS:
        fields = NormFactory.entry(kind).fields
        assert {"alpha_init", "learnable_alpha", "impl", "affine"} <= set(fields)
        assert ("shift_init" in fields) == KINDS[kind][1].shift
    assert NormFactory.entry("layernorm").fields == ("eps", "affine")
    with pytest.raises(ValueError, match="norm.kind must be one of layernorm"):
        NormFactory.entry("groupnorm")


def test_build_and_build_norm_agree_and_keep_their_signature():
    assert inspect.signature(build_norm).parameters.keys() == {
        "spec", "num_features", "layout", "affine", "bias", "eps", "device", "dtype"}
    for kind in NormFactory.kinds():
        for layout in ("channels_last", "channels_first"):
            a = NormFactory.build(kind, 8, layout, dtype=torch.float64)
            b = build_norm(NormSpec(kind), 8, layout=layout, dtype=torch.float64)
            assert type(a) is type(b) and a.state_dict().keys() == b.state_dict().keys()
            assert all(t.dtype == torch.float64 for t in a.state_dict().values() if t.is_floating_point())
    assert isinstance(NormFactory.build({"kind": "derf"}, 4), SquashNorm)
    assert isinstance(NormFactory.build("layernorm", 4, eps=1e-3), nn.LayerNorm)
    assert NormFactory.build("layernorm", 4, eps=1e-3).eps == 1e-3


def test_unknown_kind_names_the_factorys_kinds():
    with pytest.raises(ValueError) as err:
        NormSpec(kind="groupnorm")
    assert all(k in str(err.value) for k in NormFactory.kinds())


def test_coerce_accepts_every_field_and_names_unknown_ones():
    spec = NormSpec.coerce({"kind": "dyt", "affine": False, "eps": 1e-5, "impl": "eager"})
    assert spec == NormSpec("dyt", affine=False, eps=1e-5, impl="eager")
    assert build_norm(spec, 4).weight is None
    with pytest.raises(ValueError, match=r"unknown norm field\(s\) \['alpha'\]; allowed: affine, alpha_init"):
        NormSpec.coerce({"kind": "dyt", "alpha": 0.5})
    assert NormSpec.coerce("rmsnorm") == NormSpec("rmsnorm")
    with pytest.raises(TypeError, match="norm must be"):
        NormSpec.coerce(3)


def test_alpha_init_command(tmp_path, capsys):
    assert main(["--width", "1024", "4096"]) == 0
    assert capsys.readouterr().out == "width 1024: alpha_init 1\nwidth 4096: alpha_init 0.15\n"
    config = tmp_path / "alpha.yaml"
    config.write_text("width: [2048]\n")
    assert main(["--config", str(config)]) == 0
    assert capsys.readouterr().out == "width 2048: alpha_init 0.5\n"
    assert build_parser().prog == "dyt-bench alpha-init"
    with pytest.raises(SystemExit):
        main(["--width", "0"])
    assert "positive integer" in capsys.readouterr().err


def test_alpha_init_command_imports_without_torch():
    code = ("import sys; from dyt_bench.norms.alpha_init import main; main(['--width', '3072']); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["width 3072: alpha_init 0.2", "False"]
