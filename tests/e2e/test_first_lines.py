"""The WARNING lines of `axolotl preprocess` on a tiny random model, as a user sees them.

Axolotl 0.19-0.21 import torch, torchao and bitsandbytes before they run any plugin code (the plugin's
``axolotl.cli_commands`` entry point is read only for a command Axolotl does not have, and the plugin is
imported when the recipe is loaded), so the start-up lines of those libraries cannot be silenced in
``axolotl preprocess`` / ``axolotl train``: docs/troubleshooting.md explains each of them instead. The test
fails when the command prints a WARNING line that troubleshooting.md does not explain (a new library line,
or one whose text changed), and when a line the plugin silences from its import on comes back.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from helpers import base_recipe, data_rows, write_rows

ROOT = Path(__file__).resolve().parents[2]

#: each WARNING line Axolotl's stack prints (a pattern of the line) -> the words of troubleshooting.md
#: that explain it (whitespace-normalised)
EXPLAINED = {
    r"\[torchao\] Failed to load .*torchao/_C_.*Could not load this library":
        "[torchao] Failed to load .../torchao/_C_",
    r"torch/utils/_pytree\.py:\d+\] <enum '\w+'> is an Enum subclass and is now natively supported":
        "is an Enum subclass and is now natively supported by torch.compile",
    r"UserWarning: Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes'":
        "Skipping publisher trust check for 'kernels-community/quantization-bitsandbytes'",
    r"\[bitsandbytes\.backends\.cpu\.ops\] Failed to load CPU gemm_4bit_forward from kernels-community":
        "Failed to load CPU gemm_4bit_forward from kernels-community",
    r"\[axolotl\.cli\.preprocess\] Skipping model pre-download for `[^`]+`: You are using `from_pretrained` with a "
    r"meta device": "Skipping model pre-download for",
}
#: a WARNING line: Python logging as Axolotl formats it, or torch's own format (``W1207 12:08:00.601000 ...``)
WARNING_LINE = re.compile(r"\[WARNING\]|^W\d{4} \d\d:\d\d:\d\d\.\d+ ")
#: the plugin's own loggers (their lines are the plugin's, explained where each is documented)
PLUGIN_LINE = re.compile(r"\[WARNING\] \[axolotl_decselfmask[.\]]")


def test_every_warning_line_of_preprocess_is_explained(tmp_path, tiny_llama):
    import torch

    from axolotl_decselfmask.compat import CPU_LINES, FOREIGN_LINES

    write_rows(tmp_path / "pool.jsonl", data_rows("abstracts_unlabelled.jsonl", n=4))
    recipe = base_recipe(tmp_path, tiny_llama)
    recipe["decselfmask"]["relevance"]["method"] = "random"  # the lines, not the scores, are under test
    recipe["decselfmask"]["classification"]["enabled"] = False
    recipe["bf16"] = True  # on a CPU Axolotl's validation says "AMP is not supported": the plugin drops it
    path = tmp_path / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", HF_HUB_OFFLINE="1",
               AXOLOTL_DO_NOT_TRACK="1", PYTHONUNBUFFERED="1")
    env.pop("LOG_LEVEL", None)  # Axolotl's default (WARNING), what a user sees
    # one stream, in the order a terminal shows it (Axolotl logs to stdout, torch to stderr)
    proc = subprocess.run([str(Path(sys.executable).parent / "axolotl"), "preprocess", str(path)], cwd=tmp_path,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    log = proc.stdout
    assert proc.returncode == 0, log[-6000:]
    lines = log.splitlines()
    loaded = next(i for i, line in enumerate(lines) if "Plugin loaded successfully: axolotl_decselfmask" in line)

    warnings = [line for line in lines if WARNING_LINE.search(line) and not PLUGIN_LINE.search(line)]
    unexplained = [line for line in warnings if not any(re.search(p, line) for p in EXPLAINED)]
    assert unexplained == [], "WARNING lines docs/troubleshooting.md does not explain:\n" + "\n".join(unexplained)
    doc = " ".join((ROOT / "docs" / "troubleshooting.md").read_text().split())
    for pattern, words in EXPLAINED.items():
        if any(re.search(pattern, line) for line in warnings):
            assert words in doc, f"troubleshooting.md lacks {words!r}"

    # from the plugin's import on, its filters hold (the AMP line only where there is no CUDA)
    silenced = {**FOREIGN_LINES, **({} if torch.cuda.is_available() else CPU_LINES)}
    after = lines[loaded:]
    back = [line for line in after for entries in silenced.values() for entry in entries
            if all(piece in line for piece in entry)]
    assert back == [], back
