"""Other libraries' lines a user cannot act on (torchao's CUDA libraries, torch's pytree notice about
torchao's enums, bitsandbytes' offline hub kernel, Axolotl's "bf16 requested, but AMP is not supported
on this GPU ... Training will fail" on a CPU) are not printed once the plugin is imported. Each case
runs in a fresh Python process, as a run would; the same process without the plugin shows what is
silenced, so the test can fail."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import base_recipe

MESSAGES = ["Could not load this library", "is an Enum subclass and is now natively supported",
            "Failed to load CPU gemm_4bit_forward", "Skipping publisher trust check",
            "bf16 requested, but AMP is not supported"]

SCRIPT = """
import json, sys
if sys.argv[1] == "plugin":
    import axolotl_decselfmask.plugin  # what Axolotl imports for `plugins: [axolotl_decselfmask.DecSelfMaskPlugin]`
import axolotl.integrations.base, bitsandbytes  # noqa: F401
from axolotl.utils.config import validate_config
from axolotl.utils.dict import DictDefault
validate_config(DictDefault(json.loads(sys.argv[2])), capabilities={"bf16": False, "fp8": False, "tf32": False,
                "n_gpu": 1, "compute_capability": None}, env_capabilities={"torch_version": "2.13.0"})
print("validated")
"""


def _stderr(mode: str, recipe: dict) -> str:
    env = dict(os.environ, HF_HUB_OFFLINE="1", AXOLOTL_DO_NOT_TRACK="1")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, mode, json.dumps(recipe)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and "validated" in proc.stdout, proc.stderr[-3000:]
    return proc.stderr


def test_foreign_lines_are_not_printed_once_the_plugin_is_imported(tmp_path, tiny_llama):
    import torch

    if torch.cuda.is_available():
        pytest.skip("the AMP line is silenced on machines without CUDA only")
    recipe = {k: v for k, v in base_recipe(tmp_path, tiny_llama).items() if k not in ("plugins", "decselfmask")}
    recipe["bf16"] = True  # bf16 on a CPU: Axolotl says training will fail; it does not
    without = [m for m in MESSAGES if m in _stderr("alone", recipe)]
    assert "bf16 requested, but AMP is not supported" in without  # what a user sees without the plugin
    with_plugin = _stderr("plugin", recipe)
    assert [m for m in MESSAGES if m in with_plugin] == []


def test_the_plugins_commands_print_no_foreign_lines():
    """`decselfmask precompute` imports Axolotl's config loader: the plugin's commands quiet those lines
    first (cli/commands.run); the same import without it shows them, so the test can fail."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", AXOLOTL_DO_NOT_TRACK="1")
    bare = subprocess.run([sys.executable, "-c", "import axolotl.cli.config, bitsandbytes"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert [m for m in MESSAGES if m in bare.stderr], bare.stderr[-2000:]  # what the command would print
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "decselfmask"), "precompute", "--help"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "usage: axolotl decselfmask precompute" in proc.stdout, proc.stderr[-2000:]
    assert [m for m in MESSAGES if m in proc.stderr] == [], proc.stderr[-2000:]
