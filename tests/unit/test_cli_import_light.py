"""The commands' module stays light (Axolotl imports it to render `axolotl --help`), each command
names a tool that exists, and the research harness's dependencies are its extra's, nobody else's."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import ROOT

from axolotl_decselfmask.cli import COMMANDS, decselfmask

PKG = ROOT / "axolotl_decselfmask"
HARNESS = ("tools/experiments", "tools/bench")
#: installed on their own, not by an extra (Makefile: `make setfit`; SetFit's pins clash with Axolotl's)
SEPARATE = {"setfit", "sentence_transformers"}
#: modules of the extra that the rest of the package imports only inside a function, when installed
#: (stage2/figures.py: evaluate draws its pictures with matplotlib when it is there, else says which extra draws them)
LAZY_IN_REST = {"matplotlib"}
HEAVY = ("torch", "transformers", "axolotl", "numpy", "pandas", "datasets", "peft", "trl", "matplotlib")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_importing_the_commands_loads_no_heavy_library():
    code = ("import json, sys; import axolotl_decselfmask.cli as c; c.decselfmask.list_commands(None); "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in %r)))" % (HEAVY,))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_the_entry_point_and_the_console_script_name_the_group():
    project = _pyproject()["project"]
    target = "axolotl_decselfmask.cli:decselfmask"
    assert project["entry-points"]["axolotl.cli_commands"] == {"decselfmask": target}
    assert project["scripts"] == {"decselfmask": target}
    assert "axolotl_decselfmask.cli" in _pyproject()["tool"]["setuptools"]["packages"]
    assert sorted(decselfmask.commands) == sorted(COMMANDS) == sorted(
        ["predict", "evaluate", "inspect", "precompute", "models", "quickstart", "experiments", "bench", "config-reference"])


def _defines(path: Path, name: str) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(isinstance(n, ast.FunctionDef) and n.name == name for n in tree.body)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_forwards_to_a_main_that_exists(name):
    module, _, function = COMMANDS[name].target.partition(":")
    path = ROOT.joinpath(*module.split(".")).with_suffix(".py")
    assert path.is_file(), f"{name}: {module} is not a module of the package"
    assert _defines(path, function), f"{name}: {module} defines no {function}()"


def _third_party(paths: list[Path], top_level_only: bool = False) -> set[str]:
    found = set()
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = tree.body if top_level_only else ast.walk(tree)
        for node in nodes:
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in ("__future__", "axolotl_decselfmask")}


def _split_modules() -> tuple[list[Path], list[Path]]:
    harness = [p for d in HARNESS for p in (PKG / d).rglob("*.py")]
    return harness, [p for p in PKG.rglob("*.py") if p not in harness]


def test_the_experiments_extra_is_what_only_the_harness_imports():
    """What tools/experiments and tools/bench import beyond the rest of the package is the extra, and
    each command that needs a module of it says so (`needs`)."""
    harness, rest = _split_modules()
    only_harness = _third_party(harness) - (_third_party(rest) - LAZY_IN_REST) - SEPARATE
    extra = set(_pyproject()["project"]["optional-dependencies"]["experiments"])
    assert only_harness == extra, f"harness-only imports {sorted(only_harness)} vs the extra {sorted(extra)}"
    needs = {m for c in COMMANDS.values() for m in c.needs}
    assert needs == extra and {c.extra for c in COMMANDS.values() if c.needs} == {"experiments"}


def test_no_module_outside_the_harness_imports_matplotlib_at_module_level():
    _, rest = _split_modules()
    found = [p.relative_to(ROOT).as_posix() for p in rest if "matplotlib" in _third_party([p], top_level_only=True)]
    assert not found, f"matplotlib at module level (it is the experiments extra's): {found}"
