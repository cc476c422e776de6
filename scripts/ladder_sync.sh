#!/bin/bash
# Copy the finished predictions of the ladder, the arm and the transfer (amendments A1, T1) from the worktree that
# runs them into this checkout, rebuild the ladder report from every committed prediction (docs/results/ladder/ and
# the generated part of docs/results.md's "Which part of the paper's protocol carries its gain"), and commit them
# (docs/experiments.md, "The ladder"). A rung's figures stay withheld until all of its runs are there.
#   scripts/ladder_sync.sh [WORKTREE]     (default ../ladder; ../after for the arm and the transfer)
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${1:-../ladder}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 AXOLOTL_DO_NOT_TRACK=1 OMP_NUM_THREADS=1
for f in "$SRC"/docs/results/predictions/{ladder,arm,transfer}_*/*/*.jsonl.gz; do
  [ -e "$f" ] || continue
  rel=${f#"$SRC"/}
  mkdir -p "$(dirname "$rel")"
  cmp -s "$f" "$rel" 2>/dev/null || cp "$f" "$rel"
done
# what git does not hold yet, or holds otherwise
mapfile -t new < <(git status --porcelain --untracked-files=all -- 'docs/results/predictions/ladder_*' \
  'docs/results/predictions/arm_*' 'docs/results/predictions/transfer_*' | awk '{print $2}')
[ ${#new[@]} -gt 0 ] || { echo "ladder_sync: nothing new"; exit 0; }
# docs/results.md is committed only if nobody has edits of it waiting: a commit takes the whole file
results=(docs/results.md)
git diff --quiet HEAD -- docs/results.md || results=()
# the arm beyond the paper (docs/results.md, amendment A1), once scripts/arm_grids.py has written its grid
arm=(); [ -f examples/grids/arm_hallmarks.yml ] && arm=(--arm examples/grids/arm_hallmarks.yml)
# the transfer of the ladder's moving rungs (amendment T1), once scripts/transfer_grids.py has written its grids
mapfile -t transfer < <(ls examples/grids/transfer_*.yml 2>/dev/null)
[ ${#transfer[@]} -gt 0 ] && transfer=(--transfer "${transfer[@]}")
taskset -c 0 .venv/bin/axolotl decselfmask experiments report --ladder examples/grids/ladder_*_hallmarks.yml \
  "${arm[@]}" "${transfer[@]}" --out docs/results/ladder --predictions-dir docs/results/predictions --results-md docs/results.md > /dev/null
[ ${#results[@]} -gt 0 ] || echo "ladder_sync: docs/results.md had uncommitted edits before this sync; its ladder" \
  "section is rewritten but not committed: commit it with those edits"
names=$(printf '%s\n' "${new[@]}" | sed 's#docs/results/predictions/##; s#/hallmarks_of_cancer/# #; s#.jsonl.gz##' | tr '\n' ';')
dtypes=$(.venv/bin/python - "${new[@]}" <<'PY'
import gzip, json, sys
seen = []
for path in sys.argv[1:]:
    with gzip.open(path, "rt") as f:
        d = json.loads(f.readline())
    line = f"{d.get('dtype')} on {d.get('cpu_capability')}"
    if line not in seen:
        seen.append(line)
print("; ".join(seen))
PY
)
git add "${new[@]}" docs/results/ladder
git commit -q -m "Predictions: ladder/arm/transfer ${names%;} (${dtypes}); the ladder report rebuilt from the committed predictions" -- "${new[@]}" docs/results/ladder "${results[@]}"
git log --oneline -1
