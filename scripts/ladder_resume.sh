#!/bin/bash
# Start (or restart, after a sitting's end stopped it) the ladder's lane in the order that docs/results.md
# registers (amendment L2: seed 0 of rungs 2 -> 7, then seeds 1 and 2 of rungs 1 -> 3), from the git
# worktree pinned at the ladder's commit, with the predictions already committed here copied into it so
# that finished runs are not run again (docs/experiments.md, "Running the ladder").
#
#   scripts/ladder_resume.sh [--print] [--two-lanes] [WORKTREE]     (default ../ladder)
#
# --print: only print the lane's jobs, one a line, and exit. --two-lanes (amendments L3, L4): lane 1 (core 1)
# runs seed 0 of rungs 2 -> 7 and lane 0 (core 0) seeds 1 and 2 of rungs 1 -> 3, then seed 0's runs from rung 7
# backwards, one method a job; each lane takes a lock per run before it (scripts/lane.sh), so the two meet in the
# middle without running anything twice. Rungs 6 and 7 run Qwen2.5-Coder-0.5B-Instruct as their teacher (about
# 10 GB): their jobs form one lane group (`|qwen`), never two at once, and rung 7's stage-1 cache is rung 6's
# folder (scripts/share_cache.sh, amendment L6: the same relevance and masked examples). Once that cache holds its
# masked examples (their manifest, written after the last relevance shard), rung 7 no longer loads the teacher,
# and its jobs leave the group from the next start. Each lane is started only if it is not running
# (outputs/lane1.pid, outputs/lane0.pid); without --two-lanes one lane on core 1 runs them all. The lanes run this checkout's
# scripts/lane.sh (copied to the worktree's outputs/lane.sh: the queue and its locks), the runs the worktree's
# package at the pinned commit. The worktree is made if it is not there
# (`git worktree add --detach`, the checkout's models and venvs linked into it). Refuses to start a second
# lane while one runs (outputs/lane1.pid in the worktree). Sync finished runs back with
# scripts/ladder_sync.sh WORKTREE.
set -euo pipefail
cd "$(dirname "$0")/.."
LADDER_PIN=5f65c46  # the commit every ladder run is made with (docs/results.md, the ladder's progress)
PRINT=0; TWO=0
while [ $# -gt 0 ]; do
  case $1 in
    --print) PRINT=1; shift ;;
    --two-lanes) TWO=1; shift ;;
    -*) echo "ladder_resume: unknown option $1 (--print, --two-lanes)" >&2; exit 2 ;;
    *) break ;;
  esac
done
WT=$(realpath -m "${1:-../ladder}")
P=docs/results/predictions
M2="sft,decselfmask,continual_pretraining_authors"
M3="decselfmask,continual_pretraining_authors"
JOBS=("ladder_2_hallmarks|$M2|0|$P/ladder_2_hallmarks" "ladder_3_hallmarks|$M3|0|$P/ladder_3_hallmarks")
for r in 4 5 6 7; do JOBS+=("ladder_${r}_hallmarks|$M3|0|$P/ladder_${r}_hallmarks"); done
SEED0=("${JOBS[@]}")
LATER=()
for s in 1 2; do
  LATER+=("ladder_1_hallmarks|$M2|$s|$P/ladder_1_hallmarks" "ladder_2_hallmarks|$M2|$s|$P/ladder_2_hallmarks"
         "ladder_3_hallmarks|$M3|$s|$P/ladder_3_hallmarks")
done
JOBS+=("${LATER[@]}")
TEACHER=ladder_6_hallmarks  # its relevance runs Qwen2.5-Coder-0.5B (about 10 GB): never two of its runs at once
SHARER=ladder_7_hallmarks   # the same teacher's relevance, read from rung 6's cache (amendment L6)
teacher_done() {  # rung 7 reads the teacher rung's cache, and it holds its masked examples (its relevance complete)
  [ -L "$WT/outputs/experiments/$SHARER/runs/hallmarks_of_cancer/stage1-cache" ] &&
    compgen -G "$WT/outputs/experiments/$TEACHER/runs/hallmarks_of_cancer/stage1-cache/examples-*/manifest.json" \
      > /dev/null
}
grouped() {  # JOB: the job, in the lane group qwen where its rung may load the teacher
  local stem=${1%%|*}
  if [ "$stem" = "$TEACHER" ] || { [ "$stem" = "$SHARER" ] && ! teacher_done; }; then echo "$1|qwen"
  else echo "$1"; fi
}
per_method() {  # each job "grid|m1,m2|seeds|dir" as one job per method (the teacher rung's kept whole)
  local job stem methods seeds dir m
  for job in "$@"; do
    IFS='|' read -r stem methods seeds dir <<< "$job"
    if [ "$stem" = "$TEACHER" ]; then grouped "$job"; continue; fi
    for m in ${methods//,/ }; do grouped "$stem|$m|$seeds|$dir"; done
  done
}
mapfile -t JOBS < <(for job in "${JOBS[@]}"; do grouped "$job"; done)
mapfile -t LANE1 < <(per_method "${SEED0[@]}")
mapfile -t LANE0 < <(per_method "${LATER[@]}"; per_method "${SEED0[@]}" | tac)
if [ $PRINT = 1 ]; then
  if [ $TWO = 1 ]; then echo "# lane 1 (core 1)"; printf '%s\n' "${LANE1[@]}"; echo "# lane 0 (core 0)"; printf '%s\n' "${LANE0[@]}"
  else printf '%s\n' "${JOBS[@]}"; fi
  exit 0
fi

if [ ! -d "$WT" ]; then
  git worktree add --detach "$WT" "$LADDER_PIN"
  here=$(pwd)
  for link in models .venv .venv-setfit; do ln -s "$here/$link" "$WT/$link"; done
fi
scripts/share_cache.sh "$WT" "$SHARER" "$TEACHER"
cmdline() {  # PID: its arguments, one a line
  tr '\0' '\n' < "/proc/$1/cmdline" 2>/dev/null
}
running() {  # lane CORE's recorded pid is alive and is a lane (not a pid reused after a sitting's end)
  local pid
  pid=$(cat "$WT/outputs/lane$1.pid" 2>/dev/null) || return 1
  kill -0 "$pid" 2>/dev/null && cmdline "$pid" | grep -q "lane.sh"
}
if [ $TWO = 0 ] && { running 1 || running 0; }; then
  echo "ladder_resume: a lane already runs in $WT (outputs/lane1.pid or lane0.pid); stop it first, or add" \
    "--two-lanes to start the lane that is missing" >&2
  exit 1
fi
if [ $TWO = 1 ] && running 1 && running 0; then
  echo "ladder_resume: both lanes already run in $WT (pids $(cat "$WT/outputs/lane1.pid"), $(cat "$WT/outputs/lane0.pid"))" >&2
  exit 1
fi
# the committed predictions, so that the runner skips what is done
for f in $P/ladder_*/*/*.jsonl.gz; do
  [ -e "$f" ] || continue
  mkdir -p "$WT/$(dirname "$f")"
  cmp -s "$f" "$WT/$f" 2>/dev/null || cp "$f" "$WT/$f"
done
LANE_SH=$(pwd)/scripts/lane.sh
cd "$WT"
mkdir -p outputs
# the queue and its locks: this checkout's; the runs: the worktree's package. A new file, not the one a running
# lane reads (bash reads its script as it goes)
cp "$LANE_SH" outputs/lane.sh.new && mv -f outputs/lane.sh.new outputs/lane.sh
# a lane started before the locks (scripts/lane.sh of the worktree) takes none: never start one beside it
for core in 0 1; do
  if running "$core" && ! cmdline "$(cat "outputs/lane$core.pid")" | grep -q "outputs/lane.sh"; then
    echo "ladder_resume: lane $core (pid $(cat "outputs/lane$core.pid")) runs a lane script without locks; stop it" \
      "first (kill its bash: its run goes on to its end), then start the lanes again" >&2
    exit 1
  fi
  # a lane started before amendment L6 holds the teacher rungs outside the lane group: it may load the teacher
  # beside the other lane's
  if running "$core" && cmdline "$(cat "outputs/lane$core.pid")" | grep -q "^$TEACHER|" &&
     ! cmdline "$(cat "outputs/lane$core.pid")" | grep -q "^$TEACHER|.*|qwen$"; then
    echo "ladder_resume: lane $core (pid $(cat "outputs/lane$core.pid")) holds rungs 6-7 outside the lane group" \
      "qwen (started before amendment L6): stop it after its run (kill its bash) and start the lanes again" \
      "before it reaches them" >&2
  fi
done
start_lane() {  # CORE JOB...
  local core=$1 wait_pid="" run; shift
  # a run of this core whose lane was stopped (its bash killed) goes on: the new lane starts after it
  run=$(cat "outputs/run$core.pid" 2>/dev/null) || true
  if [ -n "$run" ] && kill -0 "$run" 2>/dev/null && cmdline "$run" | tr '\n' ' ' | grep -q "experiments run"; then
    wait_pid=$run
    echo "ladder_resume: lane $core starts after the run still going on in it (pid $run)"
  fi
  echo "=== resumed $(date -u +%F' '%H:%M) by scripts/ladder_resume.sh at $(git rev-parse --short HEAD)" >> "outputs/lane$core.log"
  WAIT_PID=$wait_pid PYTHONPATH=$PWD KERNELS=native setsid nohup bash outputs/lane.sh "$core" "$@" \
    >> "outputs/lane$core.log" 2>&1 &
  echo $! > "outputs/lane$core.pid"
  echo "ladder_resume: lane started on core $core in $WT (pid $(cat "outputs/lane$core.pid")); log $WT/outputs/lane$core.log"
}
if [ $TWO = 0 ]; then
  start_lane 1 "${JOBS[@]}"
else
  # a lane already running keeps its queue (a lane 1 started alone reaches seeds 1-2 only after every seed-0 run)
  running 1 && echo "ladder_resume: lane 1 already runs (pid $(cat outputs/lane1.pid)); left as it is" || start_lane 1 "${LANE1[@]}"
  running 0 && echo "ladder_resume: lane 0 already runs (pid $(cat outputs/lane0.pid)); left as it is" || start_lane 0 "${LANE0[@]}"
fi
