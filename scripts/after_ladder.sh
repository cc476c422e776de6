#!/bin/bash
# Run what follows the ladder (docs/results.md, amendments A1 and T1): the arm beyond the paper, then the transfer
# of the ladder's moving rungs, in two lanes (cores 1 and 0) from a git worktree at this checkout's commit
# (docs/experiments.md, "After the ladder").
#
#   scripts/after_ladder.sh [--print] [WORKTREE]     (default ../after)
#
# Both lanes hold the same queue, in the registered order, and the locks of scripts/lane.sh run each job once:
# the arm's seed 0, then seed 1, then seed 2 (its seeds are what is cut first, 2 then 1, A1), one method a job;
# then the transfer (T1): mtsamples seed 0, Qwen seed 0, then seeds 1 and 2 of each. Qwen's three methods of a
# seed are one job, and its jobs are one group (scripts/lane.sh: never two at once, about 10 GB each).
# It needs examples/grids/arm_hallmarks.yml (scripts/arm_grids.py) committed, and the ladder's lanes and runs ended;
# the transfer grids are run when they are there (scripts/transfer_grids.py writes none when no rung moved the
# result), and must be committed as they are. When the mtsamples grid carries rung 6 (Qwen as the teacher), its two
# stage-1 methods of a seed are one job of the Qwen group too. The worktree is made at HEAD if it is not there, and keeps its commit afterwards (a restart after a
# sitting's end runs the same code); it refuses when HEAD's grids differ from the worktree's. The arm's
# decselfmask_* methods read the ladder's stage-1 models from ../ladder/outputs/experiments (the grid's
# stage1_models). --print: the queue, one job a line. Copy finished predictions back with
# scripts/ladder_sync.sh WORKTREE.
set -euo pipefail
cd "$(dirname "$0")/.."
PRINT=0
while [ $# -gt 0 ]; do
  case $1 in
    --print) PRINT=1; shift ;;
    -*) echo "after_ladder: unknown option $1 (--print)" >&2; exit 2 ;;
    *) break ;;
  esac
done
WT=$(realpath -m "${1:-../after}")
LADDER=$(realpath -m ../ladder)
P=docs/results/predictions
ARM=examples/grids/arm_hallmarks.yml
GRIDS=("$ARM")
[ -f "$ARM" ] || { echo "after_ladder: $ARM is not there: write it with python scripts/arm_grids.py --rung N once the" \
  "ladder is finished, and commit it" >&2; exit 1; }
for g in examples/grids/transfer_mtsamples.yml examples/grids/transfer_qwen_hallmarks.yml; do
  [ -f "$g" ] && GRIDS+=("$g")
done
for g in "${GRIDS[@]}"; do
  if ! git ls-files --error-unmatch "$g" > /dev/null 2>&1 || ! git diff --quiet HEAD -- "$g"; then
    echo "after_ladder: $g is not committed as it is: commit it before its runs (the plan registers it first)" >&2
    exit 1
  fi
done

# the queue
rung=$({ grep -oE -- '--rung [0-9]+' "$ARM" || true; } | head -1 | awk '{print $2}')
[ -n "$rung" ] || { echo "after_ladder: $ARM does not name its rung (--rung N): write it with scripts/arm_grids.py" >&2; exit 1; }
# the grid's methods, read by the checkout's Python (PYTHON: another one with PyYAML)
methods=$("${PYTHON:-.venv/bin/python}" -c \
  'import sys, yaml; print(",".join(yaml.safe_load(open(sys.argv[1])).get("methods") or []))' \
  "$ARM") || { echo "after_ladder: $ARM is not a grid YAML: write it with scripts/arm_grids.py" >&2; exit 1; }
[ -n "$methods" ] || { echo "after_ladder: no methods in $ARM" >&2; exit 1; }
JOBS=()
for s in 0 1 2; do
  for m in ${methods//,/ }; do
    # the methods that start from the ladder's stage-1 models have the seeds their rung ran (rungs 4-7: seed 0)
    if [[ $m == decselfmask_* ]] && [ "$rung" -ge 4 ] && [ "$s" != 0 ]; then continue; fi
    JOBS+=("arm_hallmarks|$m|$s|$P/arm_hallmarks")
  done
done
T3="sft,decselfmask,continual_pretraining_authors"
for s in 0 1 2; do
  if [ -f examples/grids/transfer_mtsamples.yml ]; then
    if grep -q "qwen2.5-coder-0.5b-instruct" examples/grids/transfer_mtsamples.yml; then
      # rung 6 carried over: Qwen is the teacher of both stage-1 methods (one relevance, about 10 GB): one job of
      # the qwen group, as the ladder kept its rung 6 whole
      JOBS+=("transfer_mtsamples|sft|$s|$P/transfer_mtsamples"
             "transfer_mtsamples|decselfmask,continual_pretraining_authors|$s|$P/transfer_mtsamples|qwen")
    else
      for m in ${T3//,/ }; do JOBS+=("transfer_mtsamples|$m|$s|$P/transfer_mtsamples"); done
    fi
  fi
  if [ -f examples/grids/transfer_qwen_hallmarks.yml ]; then
    JOBS+=("transfer_qwen_hallmarks|$T3|$s|$P/transfer_qwen_hallmarks|qwen")
  fi
done
if [ $PRINT = 1 ]; then printf '%s\n' "${JOBS[@]}"; exit 0; fi

running() {  # DIR CORE: that worktree's lane CORE is alive (not a pid reused after a sitting's end)
  local pid
  pid=$(cat "$1/outputs/lane$2.pid" 2>/dev/null) || return 1
  kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "lane.sh"
}
for core in 0 1; do
  if running "$LADDER" "$core"; then
    echo "after_ladder: the ladder's lane $core still runs in $LADDER: the arm is chosen from the finished ladder," \
      "and Qwen never runs beside the ladder's teacher rung; wait for it" >&2
    exit 1
  fi
done
# a run whose lane was stopped (its bash killed) goes on, holding its locks (scripts/lane.sh)
for lock in "$LADDER"/outputs/locks/*.lock; do
  [ -e "$lock" ] || continue
  if ! flock -n "$lock" true; then
    echo "after_ladder: a ladder run still holds $lock (its lane was stopped, the run goes on): wait for it" >&2
    exit 1
  fi
done
if [ ! -d "$WT" ]; then
  git worktree add --detach "$WT" HEAD
  here=$(pwd)
  for link in models .venv .venv-setfit; do ln -s "$here/$link" "$WT/$link"; done
fi
for g in "${GRIDS[@]}"; do
  if ! cmp -s "$g" "$WT/$g"; then
    echo "after_ladder: $WT/$g differs from this checkout's (the worktree is at $(git -C "$WT" rev-parse --short HEAD))" \
      "; if none of its runs has started, remove it (git worktree remove $WT) and run this again" >&2
    exit 1
  fi
done
if running "$WT" 1 || running "$WT" 0; then
  echo "after_ladder: a lane already runs in $WT (outputs/lane1.pid or lane0.pid); stop it first" >&2
  exit 1
fi
# the committed predictions, so that the runner skips what is done
for f in $P/{arm,transfer}_*/*/*.jsonl.gz; do
  [ -e "$f" ] || continue
  mkdir -p "$WT/$(dirname "$f")"
  cmp -s "$f" "$WT/$f" 2>/dev/null || cp "$f" "$WT/$f"
done
cd "$WT"
mkdir -p outputs
for core in 1 0; do
  echo "=== started $(date -u +%F' '%H:%M) by scripts/after_ladder.sh at $(git rev-parse --short HEAD)" >> "outputs/lane$core.log"
  PYTHONPATH=$PWD KERNELS=native setsid nohup bash scripts/lane.sh "$core" "${JOBS[@]}" >> "outputs/lane$core.log" 2>&1 &
  echo $! > "outputs/lane$core.pid"
  echo "after_ladder: lane started on core $core in $WT (pid $(cat "outputs/lane$core.pid")), at" \
    "$(git rev-parse --short HEAD); log $WT/outputs/lane$core.log"
done
