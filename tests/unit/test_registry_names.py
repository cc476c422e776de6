"""Validating a recipe names the methods without importing them (torch stays out of `axolotl` config checks)."""

from __future__ import annotations

import subprocess
import sys

from axolotl_decselfmask.registry import BUILTIN_METHOD_NAMES, relevance_methods


def test_static_names_match_the_classes():
    assert set(BUILTIN_METHOD_NAMES) <= set(relevance_methods())
    from axolotl_decselfmask.relevance.methods import BUILTIN_METHODS

    assert set(BUILTIN_METHOD_NAMES) == set(BUILTIN_METHODS)


def test_validating_the_block_does_not_import_torch():
    code = ("import sys\nfrom axolotl_decselfmask.args import DecSelfMaskConfig\n"
            "DecSelfMaskConfig(relevance={'method': 'integrated_gradients'}, spans={'selector': 'top_k'})\n"
            "try:\n    DecSelfMaskConfig(relevance={'method': 'nope'})\nexcept Exception as e:\n"
            "    assert 'available' in str(e)\nprint('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
