#!/usr/bin/env bash
# A/B of two revisions of this repository on the same layer: each revision is checked out into a
# temporary worktree (with this checkout's node_modules, but its own native addons) and built; then `build LAYER --chunk-size 1M`
# runs alternately with each (order swapped every round), warm page cache, `sync` before every run.
# Prints the table of wall time, CPU time and peak memory, and whether both revisions wrote
# byte-identical outputs (reports included: both were built at the same path): a speed change should
# not change the image.
#
# Usage: bench/ab-build.sh REV_A REV_B LAYER.tar[.gz]     (env: RUNS=5)
#        e.g. bench/ab-build.sh HEAD~1 HEAD /var/tmp/layer.tar
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ $# -eq 3 ] || { echo "usage: bench/ab-build.sh REV_A REV_B LAYER.tar[.gz]" >&2; exit 2; }
RUNS=${RUNS:-5}
LAYER=$(realpath "$3")
WORK=$(mktemp -d /var/tmp/erofs-ab-XXXXXX)
cleanup() {
  for side in a b; do git -C "$REPO" worktree remove --force "$WORK/$side" 2>/dev/null || true; done
  git -C "$REPO" worktree prune
  rm -rf "$WORK"
}
trap cleanup EXIT
. "$REPO/bench/stats.sh"
for side in a b; do
  rev=$([ $side = a ] && echo "$1" || echo "$2")
  git -C "$REPO" worktree add --detach -q "$WORK/$side" "$rev"
  # This checkout's node_modules, but our native addons (native/*) built from each revision's own
  # source: a change to an addon is part of what is compared.
  mkdir "$WORK/$side/node_modules" "$WORK/$side/node_modules/@mkfs-erofs-ts"
  for entry in "$REPO"/node_modules/* "$REPO"/node_modules/.bin; do
    [ "$(basename "$entry")" = @mkfs-erofs-ts ] || ln -s "$entry" "$WORK/$side/node_modules/"
  done
  for addon in "$WORK/$side"/native/*/; do
    (cd "$addon" && npm run --silent install >/dev/null 2>&1) || { echo "building $addon failed" >&2; exit 1; }
    ln -s "$addon" "$WORK/$side/node_modules/@mkfs-erofs-ts/$(basename "$addon")"
  done
  (cd "$WORK/$side" && npm run --silent build >&2)
  echo "$side: $(git -C "$WORK/$side" log --oneline -1 | cut -c1-80)"
done
echo "layer: $LAYER ($(du -m "$LAYER" | cut -f1) MB); machine: $(nproc) CPUs, node $(node --version); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
# Every run starts from the same state: no earlier output on disk (each output is checksummed, then
# removed and synced before the next run). With the outputs left in place, the side that ran second in
# most rounds measured 6-19% slower, whichever revision it was, even with the same revision on both sides.
run() { # SIDE -> appends "wall_s peak_kb user_s sys_s" to $WORK/SIDE.times
  rm -rf "$WORK/out"; sync
  /usr/bin/time -f '%e %M %U %S' -o "$WORK/t" node "$WORK/$1/bin/run.js" build "$LAYER" -o "$WORK/out" --chunk-size 1M >/dev/null
  (cd "$WORK/out" && find . -type f | sort | xargs sha256sum) >"$WORK/$1.sums"
  rm -rf "$WORK/out"; sync
  cat "$WORK/t" >>"$WORK/$1.times"
}
run a; run b; rm -f "$WORK"/*.times   # warm-up
for i in $(seq "$RUNS"); do if ((i % 2)); then run a; run b; else run b; run a; fi; done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
times_table revision "$WORK" a b
echo "ratio b / a (median wall): $(echo "$(cut -d' ' -f1 "$WORK/b.times" | median) / $(cut -d' ' -f1 "$WORK/a.times" | median)" | bc -l | cut -c1-5)"
# Reports name the output path, the same for both sides.
if cmp -s "$WORK/a.sums" "$WORK/b.sums"; then
  echo "outputs: byte-identical ($(wc -l <"$WORK/a.sums") files)"
else
  echo "outputs differ:"; diff "$WORK/a.sums" "$WORK/b.sums" || true
fi
