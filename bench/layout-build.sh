#!/usr/bin/env bash
# Image-source benchmark: `mkfs-erofs-ts build` of the real Debian v1 image from an OCI layout (gzip and
# zstd layers) and a `docker save` archive (uncompressed layers), two layers each (base, then a derived
# layer with deletions), every layer's digest and diff_id verified while streaming. No reference tool
# reads these sources, so the table shows our times and peak memory next to ours for the flattened v1 tree as
# one gzip layer (bench/layer-vs-mkfs.sh compares that one with mkfs.erofs): the difference is what the
# digest checks, the second layer and its blob cost.
#
# Usage: bench/layout-build.sh      (env: RUNS=5; REAL_OCI_DIR, default /var/tmp/mkfs-erofs-ts-real-oci,
#                                    made by ../shared/tools/make-real-oci.sh on first use)
# Method: warm page cache (one untimed run of each first), runs alternate, medians of wall time and
# peak RSS from /usr/bin/time; every run must write its metadata image.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${RUNS:-5}
REAL=${REAL_OCI_DIR:-/var/tmp/mkfs-erofs-ts-real-oci}
[ -d "$REAL/oci/zstd" ] || bash "$REPO/../shared/tools/make-real-oci.sh" "$REAL" >/dev/null
WORK=$(mktemp -d /var/tmp/erofs-layout-bench-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cd "$REPO"
. "$REPO/bench/stats.sh"
npm run --silent build >&2
tar --xattrs --xattrs-include='*' --numeric-owner --exclude=./.made -C "$REAL/rootfs/v1" -cf - . | gzip -1 >"$WORK/v1.tar.gz"
echo "sources: $(du -sm "$REAL/oci/gzip" | cut -f1) MB gzip layout, $(du -sm "$REAL/oci/zstd" | cut -f1) MB zstd layout, $(du -m "$REAL/docker/v1.tar" | cut -f1) MB docker archive, $(du -m "$WORK/v1.tar.gz" | cut -f1) MB flattened gzip layer"
echo "machine: $(nproc) CPUs, $(uname -r), node $(node --version)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

run() { # NAME SOURCE -> appends "wall_s peak_kb" to $WORK/NAME.times
  local name=$1 source=$2
  rm -rf "$WORK/out"; sync
  /usr/bin/time -f '%e %M' -o "$WORK/t" node bin/run.js build "$source" -o "$WORK/out" --name v1 --chunk-size 1M >/dev/null 2>"$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
  [ -s "$WORK/out/v1.erofs" ] || { echo "$name: no metadata image" >&2; exit 1; }
  cat "$WORK/t" >>"$WORK/$name.times"
}
names=(oci-gzip oci-zstd docker-archive flattened-gzip-layer)
sources=("$REAL/oci/gzip:v1" "$REAL/oci/zstd:v1" "$REAL/docker/v1.tar" "$WORK/v1.tar.gz")
for i in "${!names[@]}"; do run "${names[$i]}" "${sources[$i]}"; done; rm -f "$WORK"/*.times   # warm-up
for r in $(seq "$RUNS"); do
  order=("${!names[@]}"); ((r % 2)) || order=(3 2 1 0)
  for i in "${order[@]}"; do run "${names[$i]}" "${sources[$i]}"; done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

times_table source "$WORK" "${names[@]}"
