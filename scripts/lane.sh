#!/bin/bash
# One lane of grid runs on one CPU core, run after run, for a grid split over sittings (docs/experiments.md,
# "Two lanes on two cores"). Its own output is one line per run start and exit, and one per predictions file
# the run wrote (its recorded precision and seconds), so a pre-registered grid can be run without reading its
# results; each run's full output goes to outputs/runlogs/<grid>-<methods>-<seeds>.log.
#
#   [KERNELS=avx2|native] [WAIT_PID=pid] scripts/lane.sh CORE "grid|methods|seeds|predictions-dir[|group]" ...
#
# grid: a file stem of examples/grids/; methods and seeds: comma lists, as `experiments run` takes them;
# predictions-dir: empty for docs/results/predictions. group (optional): jobs of one group never run at once, in
# any lane: a job of a group waits (after taking its own locks) until no other lane runs one (a lock on
# outputs/locks/group-<group>.lock, kept like the job's): Qwen's runs, about 10 GB each. KERNELS=avx2 (the default) caps torch, oneDNN and MKL
# at AVX2, so that `bf16: auto` gives float32 on any x86 machine (docs/results.md, note 3); native leaves the
# machine's own kernels. WAIT_PID: start after that process has exited (to queue a lane behind a run).
# Stop a lane after its current run: kill the lane's bash process only; the run goes on to its end (its pid is in
# outputs/run<CORE>.pid, which scripts/ladder_resume.sh hands to the next lane of that core as WAIT_PID).
# Two lanes may hold the same jobs (docs/experiments.md, "Running the ladder"): before a job, a lane takes a lock
# per (grid, method, seeds), `flock` on outputs/locks/<grid>-<method>-<seeds>.lock, all of the job's or none (then
# it skips the job). The run inherits the locks, so they last while it runs, even when its lane is killed, and the
# kernel releases them when the last process holding them ends, whatever ended it. The runner skips finished runs.
set -u
cd "$(dirname "$0")/.."
CORE=$1; shift
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 AXOLOTL_DO_NOT_TRACK=1 \
  TOKENIZERS_PARALLELISM=false OMP_WAIT_POLICY=PASSIVE
KERNELS=${KERNELS:-avx2}
case $KERNELS in
  avx2) export ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ;;
  native) ;;
  *) echo "lane.sh: KERNELS must be avx2 or native, got '$KERNELS'" >&2; exit 2 ;;
esac
if [ -n "${WAIT_PID:-}" ]; then while kill -0 "$WAIT_PID" 2>/dev/null; do sleep 2; done; fi
mkdir -p outputs/runlogs outputs/locks
for job in "$@"; do
  IFS='|' read -r stem methods seeds pdir group <<< "$job"
  pdir=${pdir:-docs/results/predictions}
  fds=() busy=""
  for m in ${methods//,/ }; do
    exec {fd}>>"outputs/locks/$stem-$m-${seeds//,/_}.lock"
    if flock -n "$fd"; then fds+=("$fd"); else busy=${busy:+$busy,}$m; exec {fd}>&-; fi
  done
  if [ -n "$busy" ]; then
    for fd in "${fds[@]}"; do exec {fd}>&-; done
    echo "=== skip $(date -u +%H:%M) core $CORE $stem $methods $seeds: another lane runs $busy"
    continue
  fi
  if [ -n "${group:-}" ]; then
    exec {gfd}>>"outputs/locks/group-$group.lock"
    if ! flock -n "$gfd"; then
      echo "=== wait $(date -u +%H:%M) core $CORE $stem $methods $seeds: another lane runs a job of group $group"
      flock "$gfd"
    fi
    fds+=("$gfd")
  fi
  log=outputs/runlogs/$stem-${methods//,/_}-${seeds//,/_}.log
  echo "=== start $(date -u +%H:%M) core $CORE kernels $KERNELS $stem $methods $seeds"
  started=$(date +%s)
  taskset -c "$CORE" .venv/bin/axolotl decselfmask experiments run "examples/grids/$stem.yml" \
    --out "outputs/experiments/$stem" --predictions-dir "$pdir" --methods "$methods" --seeds "$seeds" > "$log" 2>&1 &
  run=$!
  echo "$run" > "outputs/run$CORE.pid"  # a lane started on this core while the run goes on waits for it
  wait "$run"
  echo "=== exit $? $(date -u +%H:%M) $stem $methods $seeds"
  # the predictions files this run wrote: their first line only (no F1 in it)
  find "$pdir" -mindepth 2 -maxdepth 2 -name '*.jsonl.gz' -newermt "@$started" | sort | while read -r f; do
    echo "=== precision $f $(zcat "$f" | head -1 | .venv/bin/python -c 'import json, sys
d = json.loads(sys.stdin.readline()); print(d.get("dtype"), "|", d.get("cpu_capability"), "|", d.get("seconds"), "s")')"
  done
  for fd in "${fds[@]}"; do exec {fd}>&-; done
done
