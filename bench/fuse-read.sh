#!/usr/bin/env bash
# Whole-tree read benchmark: our FUSE mount (`erofs mount --fuse`) against the kernel EROFS mount
# (`erofs mount --no-share`) of the same image: `tar -c` of the tree piped to `wc -c` (GNU tar does
# not read file contents when writing to /dev/null directly), cold (after dropping caches) and warm.
# erofsfuse (erofs-utils' FUSE reader) would be the third column, but Debian bookworm does not ship it.
#
# Usage: bench/fuse-read.sh   (root; env RUNS=3; IMAGE_LAYOUT=OCI layout:tag, default the v1 image of
#                              ../shared/tools/make-real-oci.sh, built into a scratch directory)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${RUNS:-3}
REAL=${REAL_OCI_DIR:-/var/tmp/mkfs-erofs-ts-real-oci}
[ -d "$REAL/oci/gzip" ] || bash "$REPO/../shared/tools/make-real-oci.sh" "$REAL" >/dev/null
SOURCE=${IMAGE_LAYOUT:-$REAL/oci/gzip:v1}
WORK=$(mktemp -d /var/tmp/erofs-fuse-bench-XXXXXX)
RUNTIME=$WORK/run
cd "$REPO"
cleanup() {
  for m in "$WORK/kernel" "$WORK/fuse"; do node bin/run.js umount "$m" --runtime-dir "$RUNTIME" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
node bin/run.js build "$SOURCE" -o "$WORK/out" --json >"$WORK/report.json"
image=$(node -e 'const r=require(process.argv[1]); console.log(r.metadataImage)' "$WORK/report.json")
mkdir -p "$WORK/kernel" "$WORK/fuse"
node bin/run.js mount "$image" "$WORK/kernel" --no-share --runtime-dir "$RUNTIME" >/dev/null
node bin/run.js mount --fuse "$image" "$WORK/fuse" --runtime-dir "$RUNTIME" >/dev/null
bytes=$(tar -C "$WORK/kernel" -cf - . | wc -c)
echo "image: $SOURCE, tar stream $((bytes / 1048576)) MiB; machine: $(nproc) CPUs, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"

read_tree() { # MOUNT -> seconds
  local start end
  start=$(date +%s.%N)
  tar -C "$1" -cf - . | wc -c >/dev/null
  end=$(date +%s.%N)
  echo "$end - $start" | bc
}
. "$REPO/bench/stats.sh"
for mode in kernel fuse; do
  : >"$WORK/$mode.cold"; : >"$WORK/$mode.warm"
done
for i in $(seq "$RUNS"); do
  for mode in kernel fuse; do
    sync; echo 3 >/proc/sys/vm/drop_caches
    read_tree "$WORK/$mode" >>"$WORK/$mode.cold"
    read_tree "$WORK/$mode" >>"$WORK/$mode.warm"
  done
done
printf '\n| reader | runs | cold median s | warm median s |\n|---|---:|---:|---:|\n'
for mode in kernel fuse; do
  printf '| %s | %d | %.2f | %.2f |\n' "$mode" "$RUNS" "$(median <"$WORK/$mode.cold")" "$(median <"$WORK/$mode.warm")"
done
echo "fuse / kernel (cold, median): $(echo "$(median <"$WORK/fuse.cold") / $(median <"$WORK/kernel.cold")" | bc -l | cut -c1-4)"
