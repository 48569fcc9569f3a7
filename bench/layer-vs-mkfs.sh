#!/usr/bin/env bash
# Layer conversion benchmark: `mkfs-erofs-ts build LAYER` (a real Debian root filesystem packed as one
# layer tarball, plain and gzip) against `mkfs.erofs` (erofs-utils 1.5, C) building the same content
# from the extracted directory (Debian's 1.5 has no tar input), same chunk size, blob device. Two
# references: mkfs.erofs alone on a directory extracted beforehand (a lower bound no converter of a
# tarball can reach: it neither reads nor unpacks the layer), and the whole conversion with
# erofs-utils 1.5 (`tar -x[z]f` into an empty directory, then mkfs.erofs), which starts from the
# same file ours does. And the reference the build issue names: erofs-utils 1.9.4's tar input
# (`mkfs.erofs --tar=f [--ungzip]`, with `--xattr-inode-digest` as our default fingerprints), built
# from Debian's source package by scripts/erofs-utils-reference.sh on first use. And the issue's scale,
# the "bare Node pipeline" (bench/bare-pipeline.mjs: read, layer digests, gunzip, tar-stream, BLAKE3,
# blob writes; no tree, metadata, dedup, content digests or fsync), on the same tarballs.
#
# Usage: bench/layer-vs-mkfs.sh            (env: RUNS=5; LAYER=debian (default: the v1 tree of
#        ../shared/tools/make-real-oci.sh, 180 MB, 9.6k entries) or LAYER=large (the same tool with
#        numpy, scipy, pandas, gcc, g++, git and perl: about 1 GB, 41k entries) or LAYER=mid (that
#        tree without usr/include/boost: about 865 MB, 25k entries, the scale of the issue's reference
#        layer of 744 MB and 27.7k entries); either made on first use; or ROOTFS=any dir to pack)
# Durability: ours fsyncs the blob and image it writes before it returns, mkfs.erofs 1.5 does not; the
# "mkfs.erofs+fsync" row adds a timed `sync META BLOB` after each of its runs (the goals' ratios are
# printed against both).
# Method: warm page cache (one untimed run of each first), runs alternate, medians of wall time, CPU time
# and peak RSS from /usr/bin/time; every run's output is checked (metadata image present, blob
# size reported; ours from the tarball must mount-equal mkfs.erofs's content, which the test suite
# covers, so here only fsck.erofs of a --no-fingerprints build is run once at the end).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${RUNS:-5}
case ${LAYER:-debian} in
  debian) REAL=${REAL_OCI_DIR:-/var/tmp/mkfs-erofs-ts-real-oci}; PACKAGES=() ;;
  large | mid) REAL=${REAL_OCI_DIR:-/var/tmp/mkfs-erofs-ts-real-oci-large}; PACKAGES=(python3 python3-numpy python3-scipy python3-pandas gcc g++ git perl) ;;
  *) echo "LAYER must be debian, mid or large" >&2; exit 2 ;;
esac
ROOTFS=${ROOTFS:-$REAL/rootfs/v1}
# Left out of the layer (tar) and of mkfs.erofs's build of the directory alike.
TAR_EXCLUDES=(--exclude=./.made); MKFS_EXCLUDES=(--exclude-path=.made)
if [ "${LAYER:-debian}" = mid ]; then TAR_EXCLUDES+=(--exclude=./usr/include/boost); MKFS_EXCLUDES+=(--exclude-path=usr/include/boost); fi
[ -d "$ROOTFS" ] || bash "$REPO/../shared/tools/make-real-oci.sh" "$REAL" "${PACKAGES[@]}" >/dev/null
WORK=$(mktemp -d /var/tmp/erofs-layer-bench-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cd "$REPO"
. "$REPO/bench/stats.sh"
npm run --silent build >&2   # dist/ and the CLI bundle (dist/src/cli.js) as the CLI ships
REF_BIN=$(bash "$REPO/scripts/erofs-utils-reference.sh")

echo "== packing $ROOTFS as layer tarballs" >&2
tar --xattrs --xattrs-include='*' --numeric-owner "${TAR_EXCLUDES[@]}" -C "$ROOTFS" -cf "$WORK/layer.tar" .
gzip -1 -c "$WORK/layer.tar" >"$WORK/layer.tar.gz"
entries=$(tar -tf "$WORK/layer.tar" | wc -l)
echo "layer: $(du -m "$WORK/layer.tar" | cut -f1) MB tar, $(du -m "$WORK/layer.tar.gz" | cut -f1) MB gzip, $entries entries"
echo "machine: $(nproc) CPUs, $(uname -r), node $(node --version), mkfs.erofs $(dpkg-query -W -f '${Version}' erofs-utils 2>/dev/null || echo '?') and $("$REF_BIN/mkfs.erofs" --version | head -1)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

run() { # NAME CMD... -> appends "wall_s peak_kb user_s sys_s" to $WORK/NAME.times
  local name=$1; shift
  rm -rf "$WORK/out"; mkdir -p "$WORK/out"; sync
  /usr/bin/time -f '%e %M %U %S' -o "$WORK/t" "$@" >/dev/null 2>"$WORK/err" || { cat "$WORK/err" >&2; exit 1; }
  cat "$WORK/t" >>"$WORK/$name.times"
  compgen -G "$WORK/out/*.erofs" >/dev/null || [ -s "$WORK/out/meta" ] || [ -s "$WORK/out/blob" ] || { echo "$name: no output" >&2; exit 1; }
}
ours_tar() { run ours-tar node bin/run.js build "$WORK/layer.tar" -o "$WORK/out" --chunk-size 1M; }
ours_gz() { run ours-gzip node bin/run.js build "$WORK/layer.tar.gz" -o "$WORK/out" --chunk-size 1M; }
mkfs() {
  run mkfs.erofs mkfs.erofs --quiet "${MKFS_EXCLUDES[@]}" --chunksize=1048576 --blobdev="$WORK/out/blob" "$WORK/out/meta" "$ROOTFS"
  # Ours fsyncs what it writes before it returns; mkfs.erofs 1.5 does not. `sync META BLOB` (fsync of its two
  # outputs) right after, timed: "mkfs.erofs+fsync" is the sum, the time until its image is as durable as ours
  # (as bench/build-vs-mkfs.sh reports it). Its peak is mkfs.erofs's; its CPU is not recorded.
  /usr/bin/time -f '%e' -o "$WORK/synct" sync "$WORK/out/meta" "$WORK/out/blob"
  echo "$(tail -1 "$WORK/mkfs.erofs.times" | awk -v s="$(cat "$WORK/synct")" '{printf "%.2f %s", $1 + s, $2}')" >>"$WORK/mkfs.erofs+fsync.times"
}
# The layer to an image with erofs-utils 1.5: unpack (as root, keeping owners, modes and xattrs), then mkfs.
untar_mkfs() { # NAME TAR_FLAGS LAYER
  rm -rf "$WORK/x" && mkdir "$WORK/x" && sync   # outside the timed command
  run "$1" sh -c 'tar --xattrs --xattrs-include="*" --numeric-owner -C "$1/x" -x'"$2"'f "$3" && mkfs.erofs --quiet --chunksize=1048576 --blobdev="$1/out/blob" "$1/out/meta" "$1/x"' _ "$WORK" "$2" "$3"
}
tar_mkfs() { untar_mkfs tar+mkfs.erofs '' "$WORK/layer.tar"; }
gz_mkfs() { untar_mkfs gunzip+tar+mkfs.erofs z "$WORK/layer.tar.gz"; }
# erofs-utils 1.9.4 converting the tarball itself, fingerprints included as in our default build.
ref_tar() { run mkfs.erofs-1.9.4-tar "$REF_BIN/mkfs.erofs" --quiet --tar=f --xattr-inode-digest --chunksize=1048576 --blobdev="$WORK/out/blob" "$WORK/out/meta" "$WORK/layer.tar"; }
bare_tar() { run bare-node-tar node bench/bare-pipeline.mjs "$WORK/layer.tar" "$WORK/out/blob"; }
bare_gz() { run bare-node-gzip node bench/bare-pipeline.mjs "$WORK/layer.tar.gz" "$WORK/out/blob"; }
ref_gz() { run mkfs.erofs-1.9.4-ungzip "$REF_BIN/mkfs.erofs" --quiet --tar=f --ungzip --xattr-inode-digest --chunksize=1048576 --blobdev="$WORK/out/blob" "$WORK/out/meta" "$WORK/layer.tar.gz"; }

ours_tar; ours_gz; mkfs; tar_mkfs; gz_mkfs; ref_tar; ref_gz; bare_tar; bare_gz; rm -f "$WORK"/*.times   # warm-up
for i in $(seq "$RUNS"); do
  if ((i % 2)); then ours_tar; ours_gz; mkfs; tar_mkfs; gz_mkfs; ref_tar; ref_gz; bare_tar; bare_gz; else bare_gz; bare_tar; ref_gz; ref_tar; gz_mkfs; tar_mkfs; mkfs; ours_gz; ours_tar; fi
done
rm -rf "$WORK/x"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

times_table tool "$WORK" ours-tar ours-gzip mkfs.erofs mkfs.erofs+fsync tar+mkfs.erofs gunzip+tar+mkfs.erofs mkfs.erofs-1.9.4-tar mkfs.erofs-1.9.4-ungzip bare-node-tar bare-node-gzip
med() { cut -d' ' -f1 "$WORK/$1.times" | median; }
ratio() { echo "ratio $1 / $2 (median wall): $(echo "$(med "$1") / $(med "$2")" | bc -l | cut -c1-5)"; }
paired() { # A B: wall of A / wall of B in each round (line i of each .times file is round i)
  paste -d' ' <(cut -d' ' -f1 "$WORK/$1.times") <(cut -d' ' -f1 "$WORK/$2.times") | awk '{print $1 / $2}' | sort -n |
    awk -v a="$1" -v b="$2" '{r[NR] = $1} END {printf "ratio %s / %s per round (%d rounds): min %.3f, median %.3f, max %.3f\n", a, b, NR, r[1], (NR % 2 ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2), r[NR]}'
}
ratio ours-tar mkfs.erofs
ratio ours-gzip mkfs.erofs
ratio ours-tar mkfs.erofs+fsync
ratio ours-gzip mkfs.erofs+fsync
ratio ours-tar tar+mkfs.erofs
ratio ours-gzip gunzip+tar+mkfs.erofs
ratio ours-tar mkfs.erofs-1.9.4-tar
ratio ours-gzip mkfs.erofs-1.9.4-ungzip
ratio ours-tar bare-node-tar
ratio ours-gzip bare-node-gzip
ratio bare-node-tar mkfs.erofs
ratio bare-node-gzip mkfs.erofs
ratio bare-node-gzip mkfs.erofs-1.9.4-ungzip
# The goals' ratios per round as well: the two runs of a round are minutes apart, where medians over the
# whole bench pair runs up to an hour apart, and this VM's speed drifts by more than 10% within an hour.
paired ours-tar mkfs.erofs
paired ours-gzip mkfs.erofs
paired ours-gzip mkfs.erofs+fsync
# One correctness check outside the timing: the tarball build without fingerprints passes fsck.erofs.
rm -rf "$WORK/out"
node bin/run.js build "$WORK/layer.tar" -o "$WORK/out" --no-fingerprints --json >"$WORK/report.json"
meta=$(node -e 'const r=require(process.argv[1]); console.log(r.metadataImage)' "$WORK/report.json")
mapfile -t blobs < <(node -e 'const r=require(process.argv[1]); for (const b of r.blobs) console.log(b)' "$WORK/report.json")
fsck.erofs "${blobs[@]/#/--device=}" "$meta" >/dev/null && echo "fsck.erofs: clean"
# And the default build (fingerprints: long xattr prefixes, which fsck.erofs 1.5 cannot read) with 1.9.4's fsck.
rm -rf "$WORK/out"
node bin/run.js build "$WORK/layer.tar" -o "$WORK/out" --json >"$WORK/report.json"
meta=$(node -e 'const r=require(process.argv[1]); console.log(r.metadataImage)' "$WORK/report.json")
mapfile -t blobs < <(node -e 'const r=require(process.argv[1]); for (const b of r.blobs) console.log(b)' "$WORK/report.json")
"$REF_BIN/fsck.erofs" "${blobs[@]/#/--device=}" "$meta" >/dev/null && echo "fsck.erofs 1.9.4 (default build): clean"
