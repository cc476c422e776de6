"""The WARNING lines of `axolotl preprocess` on a tiny random model, as a user sees them.

Axolotl 0.19-0.21 import torch, torchao and bitsandbytes before they run any plugin code (the plugin's
``axolotl.cli_commands`` entry point is read only for a command Axolotl does not have, and the plugin is
imported when the recipe is loaded), so the start-up lines of those libraries cannot be silenced in
``axolotl preprocess`` / ``axolotl train``: docs/troubleshooting.md explains each of them instead, and on a
machine without CUDA the plugin says in one line, when it loads, what torchao's and bitsandbytes' mean. The
test fails when the command prints a WARNING line that troubleshooting.md does not explain (a new library
line, or one whose text changed), when a line the plugin silences from its import on comes back (transformers'
and Axolotl's lines of compat.AFTER_LOAD_LINES among them), and when the plugin's line is missing or names a
line that was not printed.
"""

from __future__ import annotations

import json
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
}
#: a WARNING line: Python logging as Axolotl formats it, or torch's own format (``W1207 12:08:00.601000 ...``)
WARNING_LINE = re.compile(r"\[WARNING\]|^W\d{4} \d\d:\d\d:\d\d\.\d+ ")
#: the plugin's own loggers (their lines are the plugin's, explained where each is documented)
PLUGIN_LINE = re.compile(r"\[WARNING\] \[axolotl_decselfmask[.\]]")


def test_every_warning_line_of_preprocess_is_explained(tmp_path, tiny_llama):
    import torch

    from axolotl_decselfmask.compat import AFTER_LOAD_LINES, CPU_LINES, FOREIGN_LINES, STARTUP_SECTION

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

    # from the plugin's import on, its filters hold (torchao's and the AMP line only where there is no CUDA)
    silenced = {**FOREIGN_LINES, **AFTER_LOAD_LINES, **({} if torch.cuda.is_available() else CPU_LINES)}
    after = [line for line in lines[loaded:] if "] [axolotl_decselfmask." not in line]  # the plugin's note quotes them
    back = [line for line in after for entries in silenced.values() for entry in entries
            if all(piece in line for piece in entry)]
    assert back == [], back
    # they would print: the tokenizer asks for clean-up (a BPE one: transformers ignores it, and says so at its
    # first decode), and the command ran Axolotl's model pre-download (no --no-download)
    assert json.loads((tiny_llama / "tokenizer_config.json").read_text())["clean_up_tokenization_spaces"] is True
    assert not [line for line in lines if "Ignoring clean_up_tokenization_spaces" in line or "pre-download" in line]

    # the plugin's line, on a CPU, says what the lines printed before it loaded mean, naming those that were
    notes = [line for line in lines if STARTUP_SECTION in line]
    if torch.cuda.is_available():
        assert notes == []
        return
    before = "\n".join(lines[:loaded])
    assert len(notes) == 1, notes
    assert "[INFO] [axolotl_decselfmask.plugin] decselfmask: on this machine without CUDA" in notes[0]
    assert lines.index(notes[0]) > loaded
    assert ("[torchao] Failed to load " in before) == ("torchao/_C_*.so" in notes[0]), notes[0]
    assert ("Failed to load CPU gemm_4bit_forward" in before) == ("gemm_4bit_forward" in notes[0]), notes[0]
    assert "[torchao] Failed to load " in before or torch.version.cuda  # a CPU build of torch: torchao printed it


SCRIPT = """
import json, sys
if sys.argv[1] == "plugin":
    from axolotl_decselfmask.compat import quiet_foreign_lines
    quiet_foreign_lines()
import torchao, bitsandbytes  # noqa: F401
from transformers import AutoTokenizer
from axolotl_decselfmask.compat import printed_startup_lines
tokenizer = AutoTokenizer.from_pretrained(sys.argv[2])
tokenizer.decode(tokenizer("Stroke is a complex disease.")["input_ids"])
print(json.dumps(printed_startup_lines()))
"""


def _run(mode: str, model) -> tuple[list[str], str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("LOG_LEVEL", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, mode, str(model)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1]), proc.stderr


def test_what_printed_startup_lines_reports_and_the_tokenizer_line(tiny_llama):
    """compat.printed_startup_lines names exactly the libraries whose line this process printed; transformers'
    clean-up line prints at a BPE tokenizer's first decode and not once the plugin's filters are installed."""
    printed, stderr = _run("alone", tiny_llama)
    assert ("torchao" in printed) == ("/torchao/_C" in stderr and "Could not load this library" in stderr), stderr
    assert ("bitsandbytes" in printed) == ("Failed to load CPU gemm_4bit_forward from kernels-community" in stderr)
    assert "Ignoring clean_up_tokenization_spaces=True for BPE tokenizer" in stderr  # what a user would see
    _, quiet = _run("plugin", tiny_llama)
    assert "Ignoring clean_up_tokenization_spaces" not in quiet and "gemm_4bit_forward" not in quiet, quiet[-3000:]
