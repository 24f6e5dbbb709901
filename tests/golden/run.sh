#!/usr/bin/env bash
# tests/golden/run.sh [--update] — compiler golden tests.
# Each tests/golden/NAME.mpl is compiled by build/mplc (from the repository root,
# as tests/golden/NAME.mpl) with the extra arguments of its first line
# "# args: ..." (default --emit=graph); stdout and stderr together, then a line
# "exit: N", must equal NAME.out. --update rewrites the expectations instead.
# A second line "# input: PATH" compiles PATH (from the repository root) instead
# of NAME.mpl, so one model under tests/golden/models/ serves several dumps.
# mplc finds the stdlib through MPL_STDLIB, set to this repository's stdlib/,
# so that a build outside the tree (BUILD=/tmp/x) works too.
# Ends with "N passed, N failed"; exits non-zero if any failed.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
MPLC=$BUILD/mplc
export MPL_STDLIB=$PWD/stdlib
update=0
[ "${1:-}" = "--update" ] && update=1
pass=0; fail=0
tmp=$(mktemp); trap 'rm -f "$tmp"' EXIT
for src in tests/golden/*.mpl; do
  name=${src%.mpl}
  first=$(head -n 1 "$src")
  args="--emit=graph"
  if [[ "$first" == "# args:"* ]]; then args=${first#"# args:"}; fi
  read -ra argv <<< "$args"
  input=$src
  second=$(sed -n 2p "$src")
  if [[ "$second" == "# input:"* ]]; then read -r input <<< "${second#"# input:"}"; fi
  timeout 20 "$MPLC" "$input" "${argv[@]}" > "$tmp" 2>&1
  echo "exit: $?" >> "$tmp"
  if [ $update = 1 ]; then
    cp "$tmp" "$name.out"; pass=$((pass + 1)); continue
  fi
  if [ -f "$name.out" ] && diff -u "$name.out" "$tmp" > /dev/null; then
    pass=$((pass + 1))
  else
    fail=$((fail + 1))
    echo "FAIL: $src"
    if [ -f "$name.out" ]; then diff -u "$name.out" "$tmp" | head -n 60; else echo "  (no $name.out; run tests/golden/run.sh --update)"; fi
  fi
done
echo "$pass passed, $fail failed"
[ $fail = 0 ]
