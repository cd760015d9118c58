"""The package's extras: pyproject.toml declares what dyt_bench.versions says each extra adds, the fast-moving
libraries have ceilings, the constraints pin what this environment runs, a missing extra is one clear error naming
``pip install "dyt-bench[<extra>]"``, and result files record every library's version."""

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from dyt_bench.versions import EXTRAS, VERSIONED, MissingExtraError, library_versions, require

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
OPTIONAL = PROJECT["optional-dependencies"]
# libraries whose private or fast-moving APIs the package uses: each needs an upper bound
CEILINGS = ("lightning", "jsonargparse", "torchmetrics", "timm", "transformers")


def _names(requirements: list[str]) -> set[str]:
    return {Requirement(r).name for r in requirements}


def _self_extras(requirements: list[str]) -> set[str]:
    """The extras of dyt-bench itself that a requirement list pulls in (``dyt-bench[a,b]``)."""
    return {e for r in requirements if Requirement(r).name == "dyt-bench" for e in Requirement(r).extras}


def test_pyproject_extras_are_the_ones_the_package_names():
    declared = {name: _names(reqs) for name, reqs in OPTIONAL.items() if name not in ("all", "dev")}
    assert declared == {name: set(dists) for name, dists in EXTRAS.items()}
    assert _self_extras(OPTIONAL["all"]) == set(EXTRAS)  # all = every extra
    assert {"speech", "language"} <= _self_extras(OPTIONAL["dev"])  # the test suite's own needs


def test_optional_libraries_are_not_core_dependencies():
    core = _names(PROJECT["dependencies"])
    assert not core & {"transformers", "soundfile", "triton", "torchaudio", "diffusers", "torch-fidelity",
                       "genomic-benchmarks", "tensorboard", "wandb"}


def test_fast_moving_libraries_have_ceilings():
    every = PROJECT["dependencies"] + [r for reqs in OPTIONAL.values() for r in reqs]
    for name in CEILINGS:
        specs = [Requirement(r).specifier for r in every if Requirement(r).name == name]
        assert specs, f"{name} is not a dependency"
        for spec in specs:
            assert any(s.operator in ("<", "<=", "==", "~=") for s in spec), f"{name}{spec} has no upper bound"


def test_constraints_pin_what_this_environment_runs():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not an exact pin"
            pins[name.strip()] = version.strip()
    assert {"torch", "lightning", "transformers"} <= set(pins)
    checked = 0
    for name, version in pins.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        assert installed.split("+")[0] == version, f"{name}: constraints.txt pins {version}, installed {installed}"
        checked += 1
    assert checked >= 5
    # every pin is within the declared ranges
    every = PROJECT["dependencies"] + [r for reqs in OPTIONAL.values() for r in reqs]
    for r in map(Requirement, every):
        if r.name in pins:
            assert r.specifier.contains(pins[r.name], prereleases=True), f"{r} excludes the pinned {pins[r.name]}"


def test_a_missing_extra_is_one_error_naming_the_install_command():
    with pytest.raises(MissingExtraError, match=re.escape('install it with: pip install "dyt-bench[fid]"')) as e:
        require("dyt_bench_module_that_does_not_exist", "fid", "model.fid.feature_extractor=inception")
    assert isinstance(e.value, ModuleNotFoundError) and "torch-fidelity" in str(e.value)
    with pytest.raises(ValueError, match="unknown extra 'gpus'; extras: speech, language"):
        require("os", "gpus", "x")
    assert require("json", "dna", "x").__name__ == "json"


def test_inception_fid_without_torch_fidelity_names_the_fid_extra(monkeypatch):
    import torchmetrics.image.fid as tm_fid

    from dyt_bench.evaluation.fid import FidConfig, build_fid_metric

    def missing(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'torch_fidelity'")

    monkeypatch.setattr(tm_fid, "FrechetInceptionDistance", missing)
    with pytest.raises(ModuleNotFoundError, match=re.escape('pip install "dyt-bench[fid]"')):
        build_fid_metric(FidConfig(feature_extractor="inception"))


def test_a_hugging_face_tokenizer_without_transformers_names_the_language_extra(tmp_path, monkeypatch):
    from dyt_bench.datamodules import TextDataModule

    monkeypatch.setitem(sys.modules, "transformers", None)  # an import of it now fails
    data = TextDataModule(tokenizer=str(tmp_path), cache_dir=str(tmp_path))
    with pytest.raises(MissingExtraError, match=re.escape('pip install "dyt-bench[language]"')):
        _ = data.vocab_size


def test_library_versions_cover_every_installed_library():
    versions = library_versions()
    installed = {d.metadata["Name"].lower().replace("_", "-") for d in metadata.distributions()}
    for dist in VERSIONED:
        if dist in installed:
            assert versions[dist] == metadata.version(dist)
        else:
            assert dist not in versions
    assert {"python", "torch", "lightning", "timm"} <= set(versions)


@pytest.mark.slow
def test_the_resolver_accepts_the_two_set_up_commands_and_all_extras(tmp_path):
    # needs the package index: `pip install --dry-run` resolves without installing
    for target in (".", ".[dev]", ".[all]"):
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "-q",
                               "-c", "constraints.txt", "-e", target, "--report", str(tmp_path / "r.json")],
                              cwd=ROOT, capture_output=True, text=True, timeout=900)
        if done.returncode and "Could not find a version" in done.stderr and "network" in done.stderr.lower():
            pytest.skip("no package index reachable")
        assert done.returncode == 0, f"pip install -e {target}: {done.stderr[-2000:]}"
