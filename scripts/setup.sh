#!/usr/bin/env bash
# Prepares a machine (Debian/Ubuntu) and this checkout for building and testing, idempotently:
#   1. the system tools the tests drive, installed with apt-get only when one is missing;
#   2. node_modules, with `npm ci` only when package.json or package-lock.json changed since the last
#      successful install (or node_modules does not satisfy package.json);
#   3. `npm run build`.
# Quiet when everything is present; any failure stops it with a message saying what failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'setup: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
trap 'die "failed at line $LINENO: $BASH_COMMAND"' ERR

# command the tests run -> Debian package that provides it
declare -A PACKAGE_OF=(
  [mkfs.erofs]=erofs-utils [fsck.erofs]=erofs-utils [dump.erofs]=erofs-utils
  [getfattr]=attr [setfattr]=attr
  [mkfs.ext4]=e2fsprogs
  [losetup]=mount [mount]=mount [umount]=mount [dmesg]=util-linux
  [python3]=python3
  # real OCI images for the tests are made and checked by tools that are not ours
  [skopeo]=skopeo [umoci]=umoci [rsync]=rsync [debootstrap]=debootstrap [dockerd]=docker.io [docker]=docker.io
  # a loopback registry for the registry tests (the reference distribution server) and its bcrypt htpasswd files
  [docker-registry]=docker-registry [htpasswd]=apache2-utils
  [mknod]=coreutils [truncate]=coreutils [sha256sum]=coreutils
  # node-gyp builds the native addons (fs-xattr, and zstd-napi when no prebuilt binary fits)
  [make]=make [g++]=g++
)
# header or library the native addons build against -> Debian package that provides it
declare -A PACKAGE_OF_FILE=(
  # native/isal-gunzip: ISA-L's igzip inflates gzip layers (src/oci/gunzip.ts says why)
  [/usr/include/isa-l/igzip_lib.h]=libisal-dev
)
missing=()
for cmd in "${!PACKAGE_OF[@]}"; do
  # sbin tools are not on every non-root PATH
  PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 || missing+=("${PACKAGE_OF[$cmd]}")
done
for file in "${!PACKAGE_OF_FILE[@]}"; do
  [[ -e $file ]] || missing+=("${PACKAGE_OF_FILE[$file]}")
done
if ((${#missing[@]} > 0)); then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  command -v apt-get >/dev/null || die "missing packages (${missing[*]}) and no apt-get to install them"
  [[ $(id -u) == 0 ]] || die "missing packages (${missing[*]}); run as root to install them"
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
fi

command -v node >/dev/null || die "node is not installed (Node.js >= 20 is required)"
command -v npm >/dev/null || die "npm is not installed"
node_major=$(node -p 'process.versions.node.split(".")[0]')
((node_major >= 20)) || die "Node.js >= 20 is required, found $(node --version)"

# The stamp records the manifests node_modules was last installed from.
stamp=node_modules/.setup-stamp
want=$(cat package.json package-lock.json 2>/dev/null | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
  if [[ -d node_modules && ! -f $stamp ]] && npm ls --all >/dev/null 2>&1; then
    : # installed by hand and consistent: adopt it rather than reinstalling
  elif [[ -f package-lock.json ]]; then
    # Not `npm ci`: @napi-rs/blake-hash lists other platforms' binaries at a version this registry
    # does not have, so the lock file cannot record them and `npm ci` refuses it as out of sync.
    # `npm install` still installs exactly the locked versions of everything that is locked.
    say "npm install (from package-lock.json)"
    npm install --no-audit --no-fund --loglevel=error >/dev/null || die "npm install failed"
  else
    say "npm install (no package-lock.json)"
    npm install --no-audit --no-fund --loglevel=error >/dev/null || die "npm install failed"
  fi
  printf '%s\n' "$want" >"$stamp"
fi
# The addons are optional dependencies (the build falls back to zlib and page-cache writes without
# them), so npm does not fail when one does not build: here, where the tests expect them, it must.
for addon in isal-gunzip direct-write sha256-pair; do
  node -e "require('@mkfs-erofs-ts/$addon')" 2>/dev/null || {
    say "building native/$addon"
    npm rebuild "@mkfs-erofs-ts/$addon" --loglevel=error >/dev/null 2>&1 || true
    node -e "require('@mkfs-erofs-ts/$addon')" || die "native/$addon did not build (see: npm rebuild @mkfs-erofs-ts/$addon)"
  }
done

# erofs-utils 1.9.4, built from Debian's source once and cached: its fsck.erofs checks fingerprints
# (`--xattr-inode-digest`), which bookworm's 1.5 cannot (test/build/fingerprint.test.ts).
bash scripts/erofs-utils-reference.sh >/dev/null || die "building erofs-utils 1.9.4 (scripts/erofs-utils-reference.sh) failed"

npm run --silent build || die "npm run build failed (tsc or bundling errors above)"
