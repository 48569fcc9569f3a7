#!/usr/bin/env bash
# Builds erofs-utils 1.9.4 from Debian's source package on deb.debian.org, once, into a cache
# directory, and prints the path of its bin/ directory. Debian bookworm's erofs-utils 1.5 lacks what
# this one has:
# - `fsck.erofs --xattr-inode-digest`, which checks every file's fingerprint xattr against its data:
#   the test suite verifies our fingerprints with it (scripts/setup.sh runs this script);
# - `mkfs.erofs --tar=f [--ungzip]`, the reference of the build issue's speed figures (bench/).
#
# Usage: scripts/erofs-utils-reference.sh     (env: EROFS_UTILS_REF_DIR, default /var/tmp/mkfs-erofs-ts-erofs-utils-1.9.4)
set -euo pipefail
VERSION=1.9.4
# From erofs-utils_1.9.4-1.dsc (Debian sid), Checksums-Sha256 of the upstream tarball.
SHA256=7d135aa2550326a5acf20f53c518aea5a8900015ce50700044e40f818c31dd80
DIR=${EROFS_UTILS_REF_DIR:-/var/tmp/mkfs-erofs-ts-erofs-utils-$VERSION}
if [ -x "$DIR/bin/mkfs.erofs" ] && "$DIR/bin/mkfs.erofs" --version 2>/dev/null | grep -q "$VERSION"; then
  echo "$DIR/bin"; exit 0
fi
need=()
for pkg in curl autoconf automake libtool pkg-config make gcc zlib1g-dev liblz4-dev libzstd-dev libdeflate-dev uuid-dev libssl-dev; do
  dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "installing build dependencies: ${need[*]}" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >&2
fi
WORK=$(mktemp -d /var/tmp/erofs-utils-build-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
tarball=erofs-utils_$VERSION.orig.tar.gz
echo "fetching $tarball from deb.debian.org" >&2
curl -fsS -m 120 -o "$WORK/$tarball" "http://deb.debian.org/debian/pool/main/e/erofs-utils/$tarball"
echo "$SHA256  $WORK/$tarball" | sha256sum -c --quiet - >&2 || { echo "$tarball: sha256 differs from the Debian .dsc's" >&2; exit 1; }
tar -xzf "$WORK/$tarball" -C "$WORK"
cd "$WORK/erofs-utils-$VERSION"
{ ./autogen.sh && ./configure --prefix="$DIR.tmp" --disable-fuse && make -j"$(nproc)" && make install; } >"$WORK/build.log" 2>&1 || { tail -20 "$WORK/build.log" >&2; exit 1; }
rm -rf "$DIR" && mv "$DIR.tmp" "$DIR"
echo "$DIR/bin"
