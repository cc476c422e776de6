"""Every path users type keeps working after the restructure: imports, dataset types and `python -m` tools."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

TOOLS = ["precompute", "inspector", "experiments", "bench", "config_reference", "quickstart", "models", "predict"]


def test_plugin_import_and_version():
    from axolotl_decselfmask import DecSelfMaskPlugin, __version__
    from axolotl_decselfmask.plugin import DecSelfMaskPlugin as Same

    assert DecSelfMaskPlugin is Same and __version__


@pytest.mark.parametrize("type_name", ["axolotl_decselfmask.masked_reconstruction",
                                       "axolotl_decselfmask.continual_pretraining"])
def test_dataset_types_load_as_axolotl_imports_them(type_name):
    module = importlib.import_module(type_name)
    assert callable(module.load) and module.DATASET_TYPE == type_name


def test_every_tool_runs_its_help():
    """One interpreter runs every `python -m axolotl_decselfmask.<tool> --help` (runpy, as `-m` does)."""
    script = (
        "import runpy, sys\n"
        f"for tool in {TOOLS!r}:\n"
        "    sys.argv = [tool, '--help']\n"
        "    try:\n"
        "        runpy.run_module('axolotl_decselfmask.' + tool, run_name='__main__', alter_sys=True)\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code in (0, None), (tool, exc.code)\n"
        "        print('OK', tool)\n"
        "    else:\n"
        "        raise AssertionError(tool + ' --help did not exit')\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert [line.split()[1] for line in out.stdout.splitlines() if line.startswith("OK ")] == TOOLS
    assert "usage:" in out.stdout
