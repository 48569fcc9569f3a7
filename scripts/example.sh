#!/usr/bin/env bash
# Installs what the project needs, then runs the main job on the bundled example: converts
# examples/hello-rootfs into an EROFS metadata image plus a chunk blob under out/example/, prints
# the build report, inspects the image, and (as root) mounts it with the kernel and runs a program
# from it. Everything it mounts is unmounted again, also on failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh

out=out/example
rm -rf "$out"
node bin/run.js build examples/hello-rootfs -o "$out" --chunk-size 64K
echo
node bin/run.js inspect "$out/hello-rootfs.erofs"
echo
node bin/run.js inspect "$out/hello-rootfs.erofs" /usr/lib/libdata-copy.so

if [[ $(id -u) == 0 ]]; then
  mnt=$(mktemp -d /tmp/erofs-example-XXXXXX)
  loops=()
  cleanup() {
    mountpoint -q "$mnt" && umount "$mnt"
    for l in "${loops[@]}"; do losetup -d "$l"; done
    rmdir "$mnt"
  }
  trap cleanup EXIT
  meta=$(losetup --find --show --read-only "$out/hello-rootfs.erofs"); loops+=("$meta")
  opts=ro
  for blob in "$out"/blobs/sha256/*; do
    l=$(losetup --find --show --read-only "$blob"); loops+=("$l"); opts+=",device=$l"
  done
  mount -t erofs -o "$opts" "$meta" "$mnt"
  echo
  echo "mounted with the kernel at $mnt:"
  (cd "$mnt" && find . | sort | sed 's/^/  /')
  echo -n "running bin/hello from the image: "
  "$mnt/bin/hello"
  cmp "$mnt/usr/lib/libdata.so" examples/hello-rootfs/usr/lib/libdata.so && echo "usr/lib/libdata.so reads back byte-identical"
fi
