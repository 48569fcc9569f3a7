#!/usr/bin/env bash
# Runs setup (tools, node_modules, build) and then the test suite, one test file at a time.
#
#   scripts/test.sh                      every dist/test/**/*.test.js
#   scripts/test.sh test/format          only the files under test/format (or dist/test/format)
#   scripts/test.sh test/harness.test.ts only that file
#   scripts/test.sh --test-name-pattern=chunk test/build   options starting with '-' go to node --test
#
# SKIP_SETUP=1 skips apt/npm and only builds. The exit status is the test runner's.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ $(id -u) != 0 ]]; then
  echo "scripts/test.sh: the tests must run as root: they attach loop devices and mount EROFS images." >&2
  echo "Run: sudo bash scripts/test.sh $*" >&2
  exit 1
fi

if [[ ${SKIP_SETUP:-} == 1 ]]; then
  npm run --silent build
else
  bash scripts/setup.sh
fi

# Architecture rules (no import cycles, folder boundaries) before any test runs.
npx --no-install eslint src test

node_args=()
selectors=()
for arg in "$@"; do
  if [[ $arg == -* ]]; then node_args+=("$arg"); else selectors+=("$arg"); fi
done

# tsc never deletes outputs, so dist/test may hold tests whose source is gone: run only those whose
# test/**/*.test.ts still exists.
files=()
stale=()
while IFS= read -r js; do
  ts="${js#dist/}"
  ts="${ts%.js}.ts"
  if [[ ! -f $ts ]]; then stale+=("$js"); continue; fi
  if ((${#selectors[@]} > 0)); then
    keep=0
    for sel in "${selectors[@]}"; do
      sel="${sel#./}"
      sel="${sel#dist/}"
      sel="${sel%/}"
      sel="${sel%.ts}"
      sel="${sel%.js}"
      [[ ${ts%.ts} == "$sel" || $ts == "$sel"/* ]] && keep=1
    done
    ((keep)) || continue
  fi
  files+=("$js")
done < <(find dist/test -name '*.test.js' -type f 2>/dev/null | LC_ALL=C sort)

if ((${#stale[@]} > 0)); then
  echo "scripts/test.sh: skipping ${#stale[@]} compiled test(s) whose source is gone: ${stale[*]}" >&2
fi
if ((${#files[@]} == 0)); then
  echo "scripts/test.sh: no test files found${selectors:+ for: ${selectors[*]}}" >&2
  exit 1
fi

exec node --test --test-concurrency=1 "${node_args[@]}" "${files[@]}"
