#!/bin/bash
# Make one grid's stage-1 cache folder a link to another's, in a worktree that runs grids with scripts/lane.sh
# (docs/results.md, amendment L6): two grids whose runs differ only in how stage 1 trains compute the same
# relevance and masked examples (the same cache keys: stage1/cache.py), so the second one reads the first one's
# instead of computing them again. Run it before either grid starts; scripts/ladder_resume.sh does, for rungs 7
# and 6. Both grids must run in one lane group (scripts/lane.sh), so that they never fill the cache at once.
#
#   scripts/share_cache.sh WORKTREE FROM TO [CORPUS]     (CORPUS: hallmarks_of_cancer)
#
# FROM's folder outputs/experiments/FROM/runs/CORPUS/stage1-cache becomes a relative link to TO's (made empty if
# it is not there). Nothing changes where FROM's is a link already, or a folder already (then it says so: its
# runs have computed their own).
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: scripts/share_cache.sh WORKTREE FROM TO [CORPUS]" >&2; exit 2; }
WT=$1 FROM=$2 TO=$3 CORPUS=${4:-hallmarks_of_cancer}
from=$WT/outputs/experiments/$FROM/runs/$CORPUS/stage1-cache
to=$WT/outputs/experiments/$TO/runs/$CORPUS/stage1-cache
if [ -L "$from" ]; then exit 0; fi
if [ -e "$from" ]; then
  echo "share_cache: $from is a folder already (its runs computed their own); not linked to $TO's" >&2
  exit 0
fi
mkdir -p "$to" "$(dirname "$from")"
ln -sn "../../../$TO/runs/$CORPUS/stage1-cache" "$from"
echo "share_cache: $FROM's stage-1 cache is $TO's ($from -> $to)"
