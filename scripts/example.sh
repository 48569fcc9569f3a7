#!/usr/bin/env bash
# Installs what the project needs, then runs the main job on the bundled example: converts
# examples/hello-rootfs into an EROFS metadata image plus a chunk blob under out/example/, prints
# the build report, inspects the image, and (as root) mounts it with `erofs mount` (kernel, page
# cache sharing through the blob's object index) and runs a program from it. Everything it mounts
# is unmounted again, also on failure.
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
  runtime=$(mktemp -d /tmp/erofs-example-run-XXXXXX)
  cleanup() {
    node bin/run.js umount "$mnt" --runtime-dir "$runtime" >/dev/null 2>&1 || true
    rmdir "$mnt" 2>/dev/null || true
    rm -rf "$runtime"
  }
  trap cleanup EXIT
  echo
  node bin/run.js mount "$out/hello-rootfs.erofs" "$mnt" --runtime-dir "$runtime"
  echo "mounted at $mnt:"
  (cd "$mnt" && find . | sort | sed 's/^/  /')
  echo -n "running bin/hello from the image: "
  "$mnt/bin/hello"
  cmp "$mnt/usr/lib/libdata.so" examples/hello-rootfs/usr/lib/libdata.so && echo "usr/lib/libdata.so reads back byte-identical"
fi
