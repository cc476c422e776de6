#!/bin/bash
# Start (or restart, after a sitting's end stopped it) the ladder's lane in the order that docs/results.md
# registers (amendment L2: seed 0 of rungs 2 -> 7, then seeds 1 and 2 of rungs 1 -> 3), from the git
# worktree pinned at the ladder's commit, with the predictions already committed here copied into it so
# that finished runs are not run again (docs/experiments.md, "Running the ladder").
#
#   scripts/ladder_resume.sh [--print] [WORKTREE]     (default ../ladder)
#
# --print: only print the lane's jobs, one a line, and exit. The worktree is made if it is not there
# (`git worktree add --detach`, the checkout's models and venvs linked into it). Refuses to start a second
# lane while one runs (outputs/lane1.pid in the worktree). Sync finished runs back with
# scripts/ladder_sync.sh WORKTREE.
set -euo pipefail
cd "$(dirname "$0")/.."
LADDER_PIN=5f65c46  # the commit every ladder run is made with (docs/results.md, the ladder's progress)
PRINT=0
if [ "${1:-}" = "--print" ]; then PRINT=1; shift; fi
WT=${1:-../ladder}
P=docs/results/predictions
M2="sft,decselfmask,continual_pretraining_authors"
M3="decselfmask,continual_pretraining_authors"
JOBS=("ladder_2_hallmarks|$M2|0|$P/ladder_2_hallmarks" "ladder_3_hallmarks|$M3|0|$P/ladder_3_hallmarks")
for r in 4 5 6 7; do JOBS+=("ladder_${r}_hallmarks|$M3|0|$P/ladder_${r}_hallmarks"); done
for s in 1 2; do
  JOBS+=("ladder_1_hallmarks|$M2|$s|$P/ladder_1_hallmarks" "ladder_2_hallmarks|$M2|$s|$P/ladder_2_hallmarks"
         "ladder_3_hallmarks|$M3|$s|$P/ladder_3_hallmarks")
done
if [ $PRINT = 1 ]; then printf '%s\n' "${JOBS[@]}"; exit 0; fi

if [ ! -d "$WT" ]; then
  git worktree add --detach "$WT" "$LADDER_PIN"
  here=$(pwd)
  for link in models .venv .venv-setfit; do ln -s "$here/$link" "$WT/$link"; done
fi
if [ -f "$WT/outputs/lane1.pid" ] && kill -0 "$(cat "$WT/outputs/lane1.pid")" 2>/dev/null; then
  echo "ladder_resume: a lane already runs in $WT (pid $(cat "$WT/outputs/lane1.pid")); stop it first" >&2
  exit 1
fi
# the committed predictions, so that the runner skips what is done
for f in $P/ladder_*/*/*.jsonl.gz; do
  [ -e "$f" ] || continue
  mkdir -p "$WT/$(dirname "$f")"
  cmp -s "$f" "$WT/$f" 2>/dev/null || cp "$f" "$WT/$f"
done
cd "$WT"
mkdir -p outputs
echo "=== resumed $(date -u +%F' '%H:%M) by scripts/ladder_resume.sh at $(git rev-parse --short HEAD)" >> outputs/lane1.log
PYTHONPATH=$PWD KERNELS=native setsid nohup scripts/lane.sh 1 "${JOBS[@]}" >> outputs/lane1.log 2>&1 &
echo $! > outputs/lane1.pid
echo "ladder_resume: lane started in $WT (pid $(cat outputs/lane1.pid)); log $WT/outputs/lane1.log"
