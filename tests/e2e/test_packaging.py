"""The sdist and wheel: built the way a release is (sdist first, the wheel from the sdist)."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGE = ROOT / "axolotl_decselfmask"
QUICKSTART_DATA = [
    "axolotl_decselfmask/examples/quickstart.yml",
    "axolotl_decselfmask/examples/quickstart_sft.yml",
    "axolotl_decselfmask/examples/data/abstracts_train.jsonl",
    "axolotl_decselfmask/examples/data/abstracts_test.jsonl",
    "axolotl_decselfmask/examples/data/abstracts_unlabelled.jsonl",
    "axolotl_decselfmask/examples/data/LICENSE-medical_abstracts.md",
]


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return wheel, sdist


def _source_modules() -> set[str]:
    """Every module of the package in the checkout, as a wheel path."""
    out = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if "__pycache__" in rel.parts:
            continue
        # only importable packages (a folder with __init__.py all the way up)
        if all((ROOT / Path(*rel.parts[:i]) / "__init__.py").is_file() for i in range(1, len(rel.parts))):
            out.add(rel.as_posix())
    return out


def test_wheel_holds_every_module_and_the_quickstart_files(dist):
    wheel, _ = dist
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = _source_modules() - names
    assert not missing, f"modules missing from the wheel (add their package to pyproject.toml): {sorted(missing)}"
    assert not [n for n in QUICKSTART_DATA if n not in names]
    assert "axolotl_decselfmask/config_reference.py" in names and "axolotl_decselfmask/stage2/model_card.py" in names


def test_wheel_has_no_prototypes_goal_numbers_or_checkout_paths(dist):
    """benchmarks/ stays in the checkout; the shipped code names no goal of an old issue and no
    file that exists only in a checkout (the recorded data, the models folder's parent, docs/)."""
    wheel, _ = dist
    archive = zipfile.ZipFile(wheel)
    names = archive.namelist()
    assert not [n for n in names if n.startswith("benchmarks/") or "prototype" in n]
    checkout_only = ("examples/data/medical_abstracts.csv.gz", "../shared/", "relevance_goals", "--variants",
                     "lxt", "parents[2]")
    for name in names:
        if name.endswith(".py"):
            code = archive.read(name).decode("utf-8")
            found = [c for c in checkout_only if c in code]
            assert not found, f"{name} names {found}"


def test_wheel_has_no_tests_caches_or_big_sources(dist):
    wheel, _ = dist
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.startswith("tests/") or "/tests/" in n or Path(n).name.startswith("test_")]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.endswith(".csv.gz")], "the 1.2 MB source CSV is not needed at run time"
    assert {n.split("/")[0] for n in names} == {"axolotl_decselfmask", "axolotl_decselfmask-0.1.0.dist-info"}


def test_wheel_metadata_and_licence(dist):
    wheel, _ = dist
    z = zipfile.ZipFile(wheel)
    licence = z.read("axolotl_decselfmask-0.1.0.dist-info/licenses/LICENSE").decode()
    assert "Apache License" in licence and "Version 2.0" in licence
    meta = z.read("axolotl_decselfmask-0.1.0.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in meta
    assert "Requires-Dist: axolotl<0.22,>=0.19.0" in meta  # a range: 0.19 runs here, 0.20-0.21 read (README)
    assert "Provides-Extra: lrp" in meta
    assert "Provides-Extra: experiments" in meta and "Requires-Dist: matplotlib; extra == \"experiments\"" in meta
    # `axolotl decselfmask ...` (Axolotl's plugin commands) and the `decselfmask` console script
    entry_points = z.read("axolotl_decselfmask-0.1.0.dist-info/entry_points.txt").decode()
    assert "[axolotl.cli_commands]\ndecselfmask = axolotl_decselfmask.cli:decselfmask" in entry_points
    assert "[console_scripts]\ndecselfmask = axolotl_decselfmask.cli:decselfmask" in entry_points
    assert "make quickstart" in meta  # the README is the long description


def test_sdist_has_docs_tests_and_licence(dist):
    _, sdist = dist
    names = {n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n}
    for needed in ("LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml", "docs/configuration.md",
                   "tests/e2e/test_packaging.py", "examples/quickstart.yml", "examples/data/abstracts_train.jsonl"):
        assert needed in names, needed


def test_sdist_has_every_tracked_file(dist):
    """MANIFEST.in lists patterns, not files: a file the tests read (scripts/ladder_grids.py, the
    committed results under docs/results/ and benchmarks/results/) that matches none is silently left
    out, and the tests fail in the unpacked sdist. Only .ci/ and .gitignore stay out."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (an unpacked sdist): nothing to compare with")
    proc = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    tracked = {n for n in proc.stdout.split("\0") if n and (ROOT / n).is_file()}  # not ones deleted in the tree
    tracked = {n for n in tracked if not n.startswith(".ci/") and n != ".gitignore"}
    _, sdist = dist
    names = {n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n}
    missing = sorted(tracked - names)
    assert not missing, f"{len(missing)} tracked files not in the sdist (add a pattern to MANIFEST.in): {missing[:20]}"
    assert not [n for n in names if "-adapter/" in n], "ignored local adapters (benchmarks/results/stage2_dev) in the sdist"


def test_quickstart_runs_from_the_unpacked_wheel(dist, tmp_path):
    """`axolotl decselfmask quickstart DIR` finds its recipe and data inside the wheel."""
    wheel, _ = dist
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    target = tmp_path / "elsewhere"
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = ("import sys, axolotl_decselfmask.tools.quickstart as q; print(q.examples_dir()); "
            "sys.exit(q.main([sys.argv[1], '--no-model']))")
    proc = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[0] == str(site / "axolotl_decselfmask" / "examples")
    assert "axolotl preprocess examples/quickstart.yml" in proc.stdout
    for name in QUICKSTART_DATA:
        rel = name.split("axolotl_decselfmask/", 1)[1]
        assert (target / rel).read_bytes() == (ROOT / rel).read_bytes()


def test_quickstart_set_up_keeps_identical_files_and_refuses_changed_ones(tmp_path):
    from axolotl_decselfmask.tools import quickstart

    quickstart.set_up(tmp_path, model=False)
    recipe = tmp_path / "examples" / "quickstart.yml"
    assert recipe.read_bytes() == (ROOT / "examples" / "quickstart.yml").read_bytes()
    quickstart.set_up(tmp_path, model=False)  # same content: nothing to do
    recipe.write_text("base_model: mine\n")
    with pytest.raises(SystemExit, match="differs from the bundled copy"):
        quickstart.set_up(tmp_path, model=False)
    assert recipe.read_text() == "base_model: mine\n"
    quickstart.set_up(tmp_path, model=False, force=True)
    assert recipe.read_bytes() == (ROOT / "examples" / "quickstart.yml").read_bytes()
