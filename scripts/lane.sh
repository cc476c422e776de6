#!/bin/bash
# One lane of grid runs on one CPU core, run after run, for a grid split over sittings (docs/experiments.md,
# "Two lanes on two cores"). Its own output is one line per run start and exit, and one per predictions file
# the run wrote (its recorded precision and seconds), so a pre-registered grid can be run without reading its
# results; each run's full output goes to outputs/runlogs/<grid>-<methods>-<seeds>.log.
#
#   [KERNELS=avx2|native] [WAIT_PID=pid] scripts/lane.sh CORE "grid|methods|seeds|predictions-dir" ...
#
# grid: a file stem of examples/grids/; methods and seeds: comma lists, as `experiments run` takes them;
# predictions-dir: empty for docs/results/predictions. KERNELS=avx2 (the default) caps torch, oneDNN and MKL
# at AVX2, so that `bf16: auto` gives float32 on any x86 machine (docs/results.md, note 3); native leaves the
# machine's own kernels. WAIT_PID: start after that process has exited (to queue a lane behind a run).
# Stop a lane after its current run: kill the lane's bash process only; the run goes on to its end.
# Two lanes may hold the same jobs (docs/experiments.md, "Running the ladder"): before a job, a lane takes a lock
# per (grid, method, seeds) in outputs/locks/ (a folder made atomically, holding the lane's pid) and runs only the
# methods whose lock it got; a lock whose lane has died is taken over. The runner itself skips finished runs.
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
if [ -n "${WAIT_PID:-}" ]; then while kill -0 "$WAIT_PID" 2>/dev/null; do sleep 20; done; fi
mkdir -p outputs/runlogs outputs/locks
take_lock() {  # DIR: 0 when this lane now holds it
  if mkdir "$1" 2>/dev/null; then echo $$ > "$1/pid"; return 0; fi
  local owner
  owner=$(cat "$1/pid" 2>/dev/null || true)
  # no pid yet: its lane is writing it; a live pid: busy
  if [ -z "$owner" ] || kill -0 "$owner" 2>/dev/null; then return 1; fi
  rm -rf "$1"
  if mkdir "$1" 2>/dev/null; then echo $$ > "$1/pid"; return 0; fi
  return 1
}
for job in "$@"; do
  IFS='|' read -r stem wanted seeds pdir <<< "$job"
  pdir=${pdir:-docs/results/predictions}
  methods="" held=()
  for m in ${wanted//,/ }; do
    lock=outputs/locks/$stem-$m-${seeds//,/_}
    if take_lock "$lock"; then methods=${methods:+$methods,}$m; held+=("$lock")
    else echo "=== skip $(date -u +%H:%M) core $CORE $stem $m $seeds: another lane runs it ($(cat "$lock/pid" 2>/dev/null))"; fi
  done
  [ -n "$methods" ] || continue
  log=outputs/runlogs/$stem-${methods//,/_}-${seeds//,/_}.log
  echo "=== start $(date -u +%H:%M) core $CORE kernels $KERNELS $stem $methods $seeds"
  started=$(date +%s)
  taskset -c "$CORE" .venv/bin/axolotl decselfmask experiments run "examples/grids/$stem.yml" \
    --out "outputs/experiments/$stem" --predictions-dir "$pdir" --methods "$methods" --seeds "$seeds" > "$log" 2>&1
  echo "=== exit $? $(date -u +%H:%M) $stem $methods $seeds"
  # the predictions files this run wrote: their first line only (no F1 in it)
  find "$pdir" -mindepth 2 -maxdepth 2 -name '*.jsonl.gz' -newermt "@$started" | sort | while read -r f; do
    echo "=== precision $f $(zcat "$f" | head -1 | .venv/bin/python -c 'import json, sys
d = json.loads(sys.stdin.readline()); print(d.get("dtype"), "|", d.get("cpu_capability"), "|", d.get("seconds"), "s")')"
  done
  rm -rf "${held[@]}"
done
