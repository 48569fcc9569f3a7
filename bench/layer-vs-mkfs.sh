#!/usr/bin/env bash
# Layer conversion benchmark: `mkfs-erofs-ts build LAYER` (a real Debian root filesystem packed as one
# layer tarball, plain and gzip) against `mkfs.erofs` (erofs-utils 1.5, C) building the same content
# from the extracted directory (Debian's 1.5 has no tar input), same chunk size, blob device.
#
# Usage: bench/layer-vs-mkfs.sh            (env: RUNS=5, ROOTFS=dir to pack, default the v1 tree of
#                                           ../shared/tools/make-real-oci.sh, made on first use)
# Method: warm page cache (one untimed run of each first), runs alternate, medians of wall time
# and peak RSS from /usr/bin/time; every run's output is checked (metadata image present, blob
# size reported; ours from the tarball must mount-equal mkfs.erofs's content, which the test suite
# covers, so here only fsck.erofs of a --no-fingerprints build is run once at the end).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${RUNS:-5}
REAL=${REAL_OCI_DIR:-/var/tmp/mkfs-erofs-ts-real-oci}
ROOTFS=${ROOTFS:-$REAL/rootfs/v1}
[ -d "$ROOTFS" ] || bash "$REPO/../shared/tools/make-real-oci.sh" "$REAL" >/dev/null
WORK=$(mktemp -d /var/tmp/erofs-layer-bench-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cd "$REPO"

echo "== packing $ROOTFS as layer tarballs" >&2
tar --xattrs --xattrs-include='*' --numeric-owner --exclude=./.made -C "$ROOTFS" -cf "$WORK/layer.tar" .
gzip -1 -c "$WORK/layer.tar" >"$WORK/layer.tar.gz"
entries=$(tar -tf "$WORK/layer.tar" | wc -l)
echo "layer: $(du -m "$WORK/layer.tar" | cut -f1) MB tar, $(du -m "$WORK/layer.tar.gz" | cut -f1) MB gzip, $entries entries"
echo "machine: $(nproc) CPUs, $(uname -r), node $(node --version), mkfs.erofs $(dpkg-query -W -f '${Version}' erofs-utils 2>/dev/null || echo '?')"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

run() { # NAME CMD... -> appends "wall_s peak_kb" to $WORK/NAME.times
  local name=$1; shift
  rm -rf "$WORK/out"; mkdir -p "$WORK/out"; sync
  /usr/bin/time -f '%e %M' -o "$WORK/t" "$@" >/dev/null 2>"$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
  cat "$WORK/t" >>"$WORK/$name.times"
  compgen -G "$WORK/out/*.erofs" >/dev/null || [ -s "$WORK/out/meta" ] || { echo "$name: no output" >&2; exit 1; }
}
ours_tar() { run ours-tar node bin/run.js build "$WORK/layer.tar" -o "$WORK/out" --chunk-size 1M; }
ours_gz() { run ours-gzip node bin/run.js build "$WORK/layer.tar.gz" -o "$WORK/out" --chunk-size 1M; }
mkfs() { run mkfs.erofs mkfs.erofs --quiet --chunksize=1048576 --blobdev="$WORK/out/blob" "$WORK/out/meta" "$ROOTFS"; }

ours_tar; ours_gz; mkfs; rm -f "$WORK"/*.times   # warm-up
for i in $(seq "$RUNS"); do
  if ((i % 2)); then ours_tar; ours_gz; mkfs; else mkfs; ours_gz; ours_tar; fi
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
printf '\n| tool | runs | median s | min s | max s | median peak RSS MB |\n|---|---:|---:|---:|---:|---:|\n'
for name in ours-tar ours-gzip mkfs.erofs; do
  f="$WORK/$name.times"
  printf '| %s | %d | %s | %s | %s | %d |\n' "$name" "$(wc -l <"$f")" "$(cut -d' ' -f1 "$f" | median)" \
    "$(cut -d' ' -f1 "$f" | sort -n | head -1)" "$(cut -d' ' -f1 "$f" | sort -n | tail -1)" "$(( $(cut -d' ' -f2 "$f" | median | cut -d. -f1) / 1024 ))"
done
m=$(cut -d' ' -f1 "$WORK/mkfs.erofs.times" | median)
for name in ours-tar ours-gzip; do
  echo "ratio $name / mkfs.erofs (median wall): $(echo "$(cut -d' ' -f1 "$WORK/$name.times" | median) / $m" | bc -l | cut -c1-5)"
done
# One correctness check outside the timing: the tarball build without fingerprints passes fsck.erofs.
rm -rf "$WORK/out"
node bin/run.js build "$WORK/layer.tar" -o "$WORK/out" --no-fingerprints --json >"$WORK/report.json"
meta=$(node -e 'const r=require(process.argv[1]); console.log(r.metadataImage)' "$WORK/report.json")
mapfile -t blobs < <(node -e 'const r=require(process.argv[1]); for (const b of r.blobs) console.log(b)' "$WORK/report.json")
fsck.erofs "${blobs[@]/#/--device=}" "$meta" >/dev/null && echo "fsck.erofs: clean"
