#!/bin/bash
# Before/after ratios of bench_speed.py for two commits, alternated, on the same machine:
#   benchmarks/compare_commits.sh BEFORE AFTER [ROUNDS]     (ONLY=train,eval,... selects rows)
# Each side runs from its own throw-away worktree with its own kernel cache; pause other work first.
set -euo pipefail
before=$1 after=$2 rounds=${3:-3}
repo=$(git rev-parse --show-toplevel) py=${PYTHON:-python}
tmp=$(mktemp -d)
trap 'git -C "$repo" worktree remove --force "$tmp/before" 2>/dev/null; git -C "$repo" worktree remove --force "$tmp/after" 2>/dev/null' EXIT
git -C "$repo" worktree add -f "$tmp/before" "$before" --detach >/dev/null
git -C "$repo" worktree add -f "$tmp/after" "$after" --detach >/dev/null
for round in $(seq "$rounds"); do
  for side in before after; do
    echo "=== round $round $side ($(git -C "$tmp/$side" rev-parse --short HEAD)) load $(cut -d' ' -f1 /proc/loadavg)"
    (cd "$tmp/$side" && PYTHONPATH="$tmp/$side/src" NOISYNN_CACHE_DIR="$tmp/cache-$side" \
      "$py" benchmarks/bench_speed.py --only "${ONLY:-train,eval,sampler,cnn6}" --repeats 5)
  done
done
