"""Dependencies: ranges in pyproject.toml (a user's own torch stays), the exact set in constraints.txt."""

import json
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def requirements() -> dict[str, Requirement]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {(r := Requirement(d)).name: r for d in deps}


def test_torch_is_a_range_that_admits_other_builds_and_versions():
    reqs = requirements()
    for name, inside, outside in (("torch", ["2.11.0", "2.13.0", "2.14.1+cu130", "2.99"], ["2.10.0", "3.0.0"]),
                                  ("torchvision", ["0.26.0", "0.29.1"], ["0.25.0", "1.0.0"]),
                                  ("optuna", ["5.0.0", "5.9"], ["4.5.0", "6.0.0"])):
        spec = reqs[name].specifier
        assert all(spec.contains(v, prereleases=False) for v in inside), (name, spec)
        assert not any(spec.contains(v) for v in outside), (name, spec)
    assert not any(str(r.specifier).startswith("==") for r in reqs.values())  # exact versions: constraints.txt


def test_constraints_pin_every_dependency_to_the_installed_tested_version():
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    for name, req in requirements().items():
        assert name in pins or name.lower() in pins, f"{name} is not pinned in constraints.txt"
        pinned = pins.get(name) or pins[name.lower()]
        assert req.specifier.contains(pinned, prereleases=True), (name, pinned, req.specifier)


def test_the_installed_torch_is_in_range_and_ci_installs_the_pinned_one():
    """Any torch in pyproject's range is a supported install (a CUDA build, an older 2.x on a GPU machine); only
    an install through constraints.txt (CI, the README's set-up) must have exactly the pinned one."""
    pins = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    installed = version("torch").split("+")[0]
    assert requirements()["torch"].specifier.contains(installed, prereleases=True), installed
    if installed != pins["torch"]:
        pytest.skip(f"torch {installed} is installed, not the pinned {pins['torch']}: an install without "
                    "constraints.txt (your own torch), which pyproject's range admits")
    assert version("torchvision").split("+")[0] == pins["torchvision"]


@pytest.mark.slow
def test_pip_installing_kdsearch_keeps_the_installed_torch(tmp_path):
    """What `pip install .` would do here, without constraints: nothing to torch (it satisfies the range)."""
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report),
                           str(ROOT)], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.skip(f"pip could not resolve here: {done.stderr.strip().splitlines()[-1:]}")
    names = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert "torch" not in names and "torchvision" not in names, names
