"""docs/method.md's module map names modules that exist (like the configuration reference's drift test)."""

from __future__ import annotations

import re

from conftest import ROOT

PKG = ROOT / "axolotl_decselfmask"


def test_every_module_in_the_method_map_exists():
    text = (ROOT / "docs" / "method.md").read_text(encoding="utf-8")
    table = text.split("| step | module | what it does |", 1)[1].split("\n\n", 1)[0]
    named = re.findall(r"`([\w/]+(?:\.py|/))`", table)
    assert len(named) > 20
    missing = [name for name in named if not (PKG / name).exists()]
    assert not missing, f"docs/method.md names modules that do not exist: {missing}"


def test_every_subpackage_is_in_the_map():
    text = (ROOT / "docs" / "method.md").read_text(encoding="utf-8")
    folders = sorted(p.name for p in PKG.iterdir() if (p / "__init__.py").is_file() and p.name != "examples")
    absent = [f for f in folders if f"`{f}/" not in text]
    assert not absent, f"subpackages missing from docs/method.md: {absent}"
