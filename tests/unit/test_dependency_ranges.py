"""pyproject's dependency ranges: the Axolotl 0.19 that runs here, and the 0.20 and 0.21 that were read, all fit.

Axolotl pins transformers, TRL, PEFT and datasets to one version each; the package's ranges run from
0.19's pins (what the tests run) to 0.21's. 0.20 and 0.21 need Python 3.12 and are not installed here:
their pins below were read from the wheels' METADATA (``pip download --no-deps --python-version 3.12
--only-binary=:all: axolotl==0.20.0``, then ``unzip -p axolotl-0.20.0-py3-none-any.whl
axolotl-0.20.0.dist-info/METADATA``; the same for 0.21.0, the newest 0.21.x when this was written).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import requires, version

import pytest
from conftest import ROOT
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

# the libraries whose versions Axolotl fixes and the package's code calls
CONSTRAINED = ("axolotl", "torch", "transformers", "trl", "peft", "datasets")

# Requires-Dist of the Axolotl wheels (see the module docstring), for the constrained libraries
AXOLOTL_PINS = {
    "0.20.0": {"torch": ">=2.13.0,<=2.14.0", "transformers": "==5.17.0", "trl": "==1.13.0", "peft": "==0.21.0",
               "datasets": "==4.8.4", "accelerate": "==1.15.0", "bitsandbytes": "==0.50.2"},
    "0.21.0": {"torch": ">=2.13.0,<2.15.0", "transformers": "==5.20.1", "trl": "==1.14.1", "peft": "==0.21.2",
               "datasets": "==5.0.1", "accelerate": "==1.15.0", "bitsandbytes": "==0.50.2"},
}


def _ranges() -> dict[str, SpecifierSet]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {Requirement(d).name.lower(): Requirement(d).specifier for d in project["dependencies"]}


def _axolotl_019_requirements() -> dict[str, SpecifierSet]:
    """What the installed Axolotl (0.19) requires, from its own metadata."""
    out = {}
    for line in requires("axolotl") or []:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            out[req.name.lower()] = req.specifier
    return out


def _lower_bound(spec: SpecifierSet) -> Version:
    (bound,) = [Version(s.version) for s in spec if s.operator == ">="]
    return bound


def test_installed_versions_fit_the_ranges():
    ranges = _ranges()
    for name in CONSTRAINED:
        assert name in ranges, f"pyproject.toml declares no {name}"
        installed = Version(version(name))
        assert ranges[name].contains(installed, prereleases=True), f"installed {name} {installed} outside {ranges[name]}"
    assert Version(version("axolotl")).release[:2] == (0, 19)


def test_installed_axolotl_pins_fit_the_ranges_and_are_their_lower_bounds():
    """Every library both name: Axolotl 0.19's pin fits, and is the range's floor (what the tests run)."""
    ranges, pins = _ranges(), _axolotl_019_requirements()
    shared = sorted(set(ranges) & set(pins))
    assert {"transformers", "trl", "peft", "datasets", "torch", "accelerate", "bitsandbytes"} <= set(shared)
    for name in shared:
        pinned = [Version(s.version) for s in pins[name] if s.operator == "=="]
        for v in pinned:
            assert ranges[name].contains(v), f"Axolotl 0.19 pins {name}=={v}, outside pyproject's {ranges[name]}"
            if name in CONSTRAINED:
                assert _lower_bound(ranges[name]) == v, f"{name}: the floor {ranges[name]} is not 0.19's pin {v}"


@pytest.mark.parametrize("axolotl", sorted(AXOLOTL_PINS))
def test_read_axolotl_versions_and_their_pins_fit_the_ranges(axolotl):
    ranges = _ranges()
    assert ranges["axolotl"].contains(Version(axolotl))
    for name, spec in AXOLOTL_PINS[axolotl].items():
        ours = ranges[name]
        if spec.startswith("=="):
            assert ours.contains(Version(spec[2:])), f"Axolotl {axolotl} pins {name}{spec}, outside {ours}"
        else:  # a range (torch): both its ends must be allowed
            ends = [Version(s.version) for s in SpecifierSet(spec) if s.operator in (">=", "<=")]
            for v in ends:
                assert ours.contains(v), f"Axolotl {axolotl} allows {name} {v}, outside {ours}"


def test_unread_axolotl_versions_are_not_admitted():
    """A release nobody read against compat.py (0.22) is not installed by `pip install`."""
    ranges = _ranges()
    assert not ranges["axolotl"].contains(Version("0.22.0"))
    assert not ranges["axolotl"].contains(Version("0.18.0"))
    for name in ("transformers", "trl", "peft", "datasets", "torch"):
        assert any(s.operator in ("<", "<=") for s in ranges[name]), f"{name} has no upper bound"


def test_pip_install_keeps_the_installed_axolotl(tmp_path):
    """`pip install .` into this environment (Axolotl 0.19) installs the package and nothing else: no
    library up- or downgraded. --no-index: pip may use only what is installed, so the check needs no
    network and fails if a range excludes an installed version. The project is copied: pip writes its
    metadata build into the folder it installs."""
    project = tmp_path / "project"
    project.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        shutil.copy2(ROOT / name, project / name)
    for name in ("axolotl_decselfmask", "examples"):
        shutil.copytree(ROOT / name, project / name, ignore=ignore)
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--no-build-isolation",
         "--disable-pip-version-check", "--quiet", "--report", str(report), str(project)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    install = {item["metadata"]["name"].lower(): item["metadata"]["version"]
               for item in json.loads(report.read_text())["install"]}
    assert set(install) == {"axolotl-decselfmask"}, f"pip would also install or change: {install}"
