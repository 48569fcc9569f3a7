#!/usr/bin/env bash
# Directory build benchmark: mkfs-erofs-ts `build` vs erofs-utils `mkfs.erofs`, side by side.
#
# Usage: bench/build-vs-mkfs.sh [TREE_DIR]
#
#   TREE_DIR     where the generated source tree is cached (also env BENCH_TREE);
#                default /var/tmp/erofs-bench-tree. The tree itself is TREE_DIR/root, and
#                TREE_DIR/STAMP records the parameters it was made with. It is generated once and
#                reused while TREE_FILES / TREE_MB / TREE_SEED stay the same.
#   RUNS         timed runs per tool (default 5)
#   TREE_FILES   regular files in the tree (default 40000)
#   TREE_MB      target total data, MiB (default 2500)
#   TREE_SEED    layout seed (default 1)
#   BENCH_SKIP_TSC=1   do not run `npx tsc -p tsconfig.json` first (benchmark dist/ as it is)
#   BENCH_KEEP=1       keep the scratch directory (for debugging)
#
# Tree shape (bench/gen-tree.py has the details): at the defaults, ~40 000 regular files and
# ~2.5 GB of incompressible random data in ~2 700 nested directories (up to 8 levels), sizes
# log-uniform per class: 73% small (64 B-32 KiB), 21.5% medium (32-256 KiB), 0.4% large
# (1-16 MiB), two huge files (a few hundred MB each), 1% empty; plus 2.5% exact duplicate files,
# a few "versions" of large files sharing their first MiBs (chunk-level dedup), 0.25% hardlinks
# and 2% symlinks (relative to files/dirs, some dangling absolute ones).
#
# Method:
#   * Both tools read the same tree and write into fresh output directories under one scratch
#     directory on the same file system as the tree (/var/tmp), removed on exit.
#   * Warm page cache: one untimed warm-up build of each tool first, so the source tree is cached
#     for both. `sync` (untimed) before every timed run, so write-back of the previous run's
#     outputs does not land inside the next one.
#   * Runs alternate, order swapped every iteration (ours, mkfs, mkfs, ours, ...).
#   * Wall time and peak RSS from `/usr/bin/time -f '%e %M'` (plus user/sys CPU).
#   * ours:  node bin/run.js build TREE -o OUT --chunk-size 1M --json
#     mkfs:  mkfs.erofs --chunksize=1048576 --blobdev=BLOB META TREE
#     Ours fsyncs its blob and metadata image before returning; mkfs.erofs 1.5 does not fsync.
#     So after each mkfs.erofs run the script also times `sync META BLOB` (fsync of its two
#     outputs) and reports "mkfs.erofs + fsync" = the sum, the like-for-like durability figure.
#   * Checks inside the loop: both outputs exist; our metadata image passes
#     `fsck.erofs --device=BLOB META` (fsck reads all file data back); blob sizes are reported
#     for both (dedup may differ). A failed check makes the script exit 1 after the table.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$REPO/bench/stats.sh"   # for its NODE_EXTRA_CA_CERTS rule
TREE_DIR=${1:-${BENCH_TREE:-/var/tmp/erofs-bench-tree}}
RUNS=${RUNS:-5}
TREE_FILES=${TREE_FILES:-40000}
TREE_MB=${TREE_MB:-2500}
TREE_SEED=${TREE_SEED:-1}
TREE="$TREE_DIR/root"
TIME=/usr/bin/time

for tool in node mkfs.erofs fsck.erofs python3 "$TIME"; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done

# --- 1. The source tree (generated once) -------------------------------------------------------
want_stamp="files=$TREE_FILES mb=$TREE_MB seed=$TREE_SEED"
if [[ ! -f "$TREE_DIR/STAMP" || "$(head -n1 "$TREE_DIR/STAMP")" != "$want_stamp" ]]; then
  echo "== generating tree in $TREE ($want_stamp)" >&2
  rm -rf "$TREE_DIR"
  mkdir -p "$TREE_DIR"
  totals=$(python3 "$REPO/bench/gen-tree.py" "$TREE" --files "$TREE_FILES" --mb "$TREE_MB" --seed "$TREE_SEED")
  printf '%s\n%s\n' "$want_stamp" "$totals" >"$TREE_DIR/STAMP"
  sync
fi
tree_totals=$(sed -n 2p "$TREE_DIR/STAMP")

# --- Scratch space, same file system as the tree --------------------------------------------
WORK=$(mktemp -d /var/tmp/erofs-bench-run.XXXXXX)
cleanup() { if [[ "${BENCH_KEEP:-0}" != 1 ]]; then rm -rf "$WORK"; else echo "kept $WORK" >&2; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM
if [[ "$(stat -c %d "$WORK")" != "$(stat -c %d "$TREE")" ]]; then
  echo "warning: scratch $WORK and tree $TREE are on different file systems" >&2
fi

# --- Our build ----------------------------------------------------------------------------------
cd "$REPO"
if [[ "${BENCH_SKIP_TSC:-0}" != 1 ]]; then
  echo "== npx tsc -p tsconfig.json" >&2
  # tsc emits even with type errors; only errors outside test/ (i.e. in what we run) stop us.
  if ! npx tsc -p tsconfig.json >"$WORK/tsc.log" 2>&1; then
    if grep -v '^ ' "$WORK/tsc.log" | grep -qv '^test/'; then
      cat "$WORK/tsc.log" >&2
      echo "tsc failed; set BENCH_SKIP_TSC=1 to benchmark dist/ as it is" >&2
      exit 2
    fi
    echo "warning: tsc reported type errors in test/ only (dist/src was emitted):" >&2
    grep -v '^ ' "$WORK/tsc.log" | sed 's/^/  /' >&2
  fi
  node scripts/bundle.mjs   # as `npm run build` does: the CLI as one bundled file
fi

# Variants of our build that are timed: "default" (the CLI's defaults: fingerprint xattrs on) and
# "no-fingerprints" (--no-fingerprints: no erofs.fingerprint.v1 xattr, so no per-file sha256, and an
# image that erofs-utils 1.5's fsck.erofs can read: it predates long xattr name prefixes).
OURS_VARIANTS=${OURS_VARIANTS:-default no-fingerprints}
variant_flags() { [[ $1 == no-fingerprints ]] && echo --no-fingerprints || true; }

run_ours() { # VARIANT OUT [time-file]
  local out=$2 tf=${3:-/dev/null}
  # shellcheck disable=SC2046
  "$TIME" -f '%e %M %U %S' -o "$tf" node "$REPO/bin/run.js" build "$TREE" -o "$out" --chunk-size 1M --json $(variant_flags "$1") >"$out.json"
}
run_mkfs() { # OUT [time-file]
  local out=$1 tf=${2:-/dev/null}
  mkdir -p "$out"
  "$TIME" -f '%e %M %U %S' -o "$tf" mkfs.erofs --chunksize=1048576 --blobdev="$out/blob" "$out/meta.erofs" "$TREE" >"$out.log" 2>&1
}

# tool iter wall_s rss_kb user_s sys_s meta_bytes blob_bytes check blob_name
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
failures=0
cpu_pressure() { awk '/^some/{sub("avg60=","",$3); print $3"%"}' /proc/pressure/cpu 2>/dev/null || echo '?'; }
load_before="$(cut -d' ' -f1-3 /proc/loadavg) (cpu pressure avg60 $(cpu_pressure))"

echo "== warm-up (untimed): one build with each tool" >&2
run_ours default "$WORK/warm-ours" || { echo "warm-up build (ours) failed" >&2; exit 1; }
run_mkfs "$WORK/warm-mkfs" || { echo "warm-up build (mkfs.erofs) failed" >&2; exit 1; }
rm -rf "$WORK"/warm-*

measure_ours() { # VARIANT ITERATION
  local v=$1 i=$2 out="$WORK/ours-$1-$2" tf="$WORK/time" tool="ours:$1"
  sync
  if ! run_ours "$v" "$out" "$tf"; then
    echo "run $i: $tool FAILED (exit status)" >&2; failures=$((failures + 1))
    printf '%s\t%s\t%s\t0\t0\tFAIL\t-\n' "$tool" "$i" "$(tail -n1 "$tf" | tr ' ' '\t')" >>"$RESULTS"
    rm -rf "$out" "$out.json"
    return
  fi
  local meta blobs nblobs check=ok meta_b=0 blob_b=0
  meta=$(node -e 'const r=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));console.log(r.metadataImage)' "$out.json")
  blobs=$(node -e 'const r=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8"));console.log(r.blobs.join("\n"))' "$out.json")
  nblobs=$(grep -c . <<<"$blobs" || true)
  if [[ ! -f "$meta" || "$nblobs" != 1 || ! -f "$blobs" ]]; then
    echo "run $i: $tool: missing outputs (meta=$meta blobs=$nblobs)" >&2; check=FAIL
  else
    meta_b=$(stat -c %s "$meta"); blob_b=$(stat -c %s "$blobs")
    if fsck.erofs --device="$blobs" "$meta" >"$WORK/fsck.log" 2>&1; then
      check=fsck-ok
    elif [[ $v != no-fingerprints ]] && grep -q 'unidentified incompatible feature' "$WORK/fsck.log"; then
      # fsck.erofs 1.5 predates a feature the image uses (long xattr prefixes, for fingerprints):
      # not a failure; the report checks that its blob is byte-identical to the fsck-clean
      # no-fingerprints build's.
      check=fsck-unsupported
    else
      echo "run $i: $tool: fsck.erofs FAILED:" >&2; tail -n 20 "$WORK/fsck.log" >&2; check=FAIL
    fi
  fi
  [[ $check != FAIL ]] || failures=$((failures + 1))
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$i" "$(tail -n1 "$tf" | tr ' ' '\t')" "$meta_b" "$blob_b" "$check" "$(basename "${blobs:-x}")" >>"$RESULTS"
  echo "run $i: $tool  $(tail -n1 "$tf") (wall s, peak RSS KiB, user s, sys s) check=$check" >&2
  rm -rf "$out" "$out.json"
}

measure_mkfs() { # iteration
  local i=$1 out="$WORK/mkfs-$1" tf="$WORK/time" ok=ok meta_b=0 blob_b=0
  rm -f "$WORK/synctime"
  sync
  if ! run_mkfs "$out" "$tf"; then
    echo "run $i: mkfs.erofs FAILED:" >&2; tail -n 5 "$out.log" >&2; ok=FAIL
  elif [[ ! -f "$out/meta.erofs" || ! -f "$out/blob" ]]; then
    echo "run $i: mkfs.erofs: missing outputs" >&2; ok=FAIL
  else
    meta_b=$(stat -c %s "$out/meta.erofs"); blob_b=$(stat -c %s "$out/blob")
    "$TIME" -f '%e' -o "$WORK/synctime" sync "$out/meta.erofs" "$out/blob"
  fi
  [[ $ok == ok ]] || failures=$((failures + 1))
  printf 'mkfs\t%s\t%s\t%s\t%s\t%s\t-\n' "$i" "$(tail -n1 "$tf" | tr ' ' '\t')" "$meta_b" "$blob_b" "${ok/#ok/outputs-exist}" >>"$RESULTS"
  [[ $ok == ok ]] && printf 'fsync\t%s\t%s\t0\t0\t0\t0\t0\tok\t-\n' "$i" "$(cat "$WORK/synctime")" >>"$RESULTS"
  echo "run $i: mkfs  $(cat "$tf") (wall s, peak RSS KiB, user s, sys s) + fsync $(cat "$WORK/synctime" 2>/dev/null) s" >&2
  rm -rf "$out" "$out.log"
}

for ((i = 1; i <= RUNS; i++)); do
  # Order swapped every iteration: ours..., mkfs, then mkfs, ...ours (variants reversed too).
  if ((i % 2 == 1)); then
    for v in $OURS_VARIANTS; do measure_ours "$v" "$i"; done
    measure_mkfs "$i"
  else
    measure_mkfs "$i"
    for v in $(tr ' ' '\n' <<<"$OURS_VARIANTS" | tac); do measure_ours "$v" "$i"; done
  fi
done
load_after="$(cut -d' ' -f1-3 /proc/loadavg) (cpu pressure avg60 $(cpu_pressure))"

# --- Report -------------------------------------------------------------------------------------
mkfs_version=$(dpkg-query -W -f '${Version}' erofs-utils 2>/dev/null || true)
echo
echo "## Directory build vs mkfs.erofs"
echo
echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/{print $2}') GiB RAM, kernel $(uname -r), $(df -T "$WORK" | awk 'NR==2{print $2}') on $(df "$WORK" | awk 'NR==2{print $1}')"
echo "node $(node --version), mkfs.erofs $(mkfs.erofs 2>&1 | grep -o 'mkfs.erofs [0-9.]*' | head -n1 | cut -d' ' -f2) (Debian erofs-utils ${mkfs_version:-?}), commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$REPO" diff --quiet HEAD -- src 2>/dev/null || echo ' (+ uncommitted src changes)')"
echo "tree: $TREE ($want_stamp): $tree_totals"
echo "method: warm page cache (one untimed warm-up build per tool), sync before each run, $RUNS alternating runs per tool, chunk size 1 MiB"
echo "load average (1/5/15 min) on $(nproc) CPUs: before $load_before, after $load_after; above ~$(nproc) (or pressure well above 0%) means the machine was shared and wall times are inflated: compare CPU s too"
echo
python3 - "$RESULTS" <<'EOF'
import statistics as st, sys
rows = [l.rstrip('\n').split('\t') for l in open(sys.argv[1]) if l.strip()]
by = {}
for tool, it, wall, rss, usr, sys_, meta, blob, check, blobname in rows:
    if check == 'FAIL':
        continue
    by.setdefault(tool, []).append(dict(wall=float(wall), rss=int(rss), cpu=float(usr) + float(sys_),
                                        meta=int(meta), blob=int(blob), check=check, blobname=blobname))
def col(tool, k):
    return [r[k] for r in by.get(tool, [])]
MB = 1e6
hdr = ('tool', 'runs', 'median s', 'min s', 'max s', 'median CPU s (user+sys)', 'median peak RSS MB',
       'metadata MB', 'blob MB', 'check')
def row(name, tool, walls=None):
    walls = col(tool, 'wall') if walls is None else walls
    if not walls:
        return (name, '0') + ('-',) * (len(hdr) - 2)
    checks = sorted(set(col(tool, 'check')))
    return (name, str(len(walls)), '%.2f' % st.median(walls), '%.2f' % min(walls), '%.2f' % max(walls),
            '%.2f' % st.median(col(tool, 'cpu')), '%.0f' % (st.median(col(tool, 'rss')) * 1024 / MB),
            '%.2f' % (st.median(col(tool, 'meta')) / MB), '%.1f' % (st.median(col(tool, 'blob')) / MB),
            ', '.join(checks))
ours = [t for t in by if t.startswith('ours:')]
lines = [hdr]
for t in ours:
    lines.append(row('ours `build` (%s%s)' % (t[5:], '' if t[5:] == 'default' else ' flag'), t))
lines.append(row('mkfs.erofs 1.5 (no fsync)', 'mkfs'))
sums = [a + b for a, b in zip(col('mkfs', 'wall'), col('fsync', 'wall'))] if len(col('fsync', 'wall')) == len(col('mkfs', 'wall')) else []
if sums:
    lines.append(row('mkfs.erofs 1.5 + fsync of its 2 outputs', 'mkfs', sums)[:5] + ('-',) * 5)
print('| ' + ' | '.join(lines[0]) + ' |')
print('|' + '|'.join(['---'] + ['---:'] * (len(hdr) - 2) + ['---']) + '|')
for l in lines[1:]:
    print('| ' + ' | '.join(l) + ' |')
print()
m = col('mkfs', 'wall')
for t in ours:
    o = col(t, 'wall')
    if o and m:
        print('%s / mkfs.erofs: median wall %.2f (vs mkfs.erofs + fsync: %s), median CPU %.2f, median peak RSS %.2f' % (
            t, st.median(o) / st.median(m), '%.2f' % (st.median(o) / st.median(sums)) if sums else '-',
            st.median(col(t, 'cpu')) / st.median(col('mkfs', 'cpu')), st.median(col(t, 'rss')) / st.median(col('mkfs', 'rss'))))
names = set(n for t in ours for n in col(t, 'blobname'))
if ours and col('mkfs', 'blob'):
    print('blob bytes: ours %d, mkfs.erofs %d (difference %+d); our blob digest %s across all %d of our builds%s' % (
        st.median(col(ours[0], 'blob')), st.median(col('mkfs', 'blob')),
        st.median(col(ours[0], 'blob')) - st.median(col('mkfs', 'blob')),
        'identical' if len(names) == 1 else 'DIFFERS (%d digests)' % len(names),
        sum(len(by[t]) for t in ours),
        ' (so the fingerprinted builds, which fsck.erofs 1.5 cannot read, store the same data as the fsck-clean ones)'
        if len(names) == 1 and any('fsck-unsupported' in col(t, 'check') for t in ours) else ''))
print()
print('per run (tool, run, wall s, peak RSS KiB, user s, sys s, metadata bytes, blob bytes, check):')
for r in rows:
    print('  ' + ' '.join(r[:9]))
if len(names) > 1:
    sys.exit(3)
EOF

if ((failures > 0)); then
  echo "$failures run(s) failed their checks" >&2
  exit 1
fi
