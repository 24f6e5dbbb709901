#!/usr/bin/env bash
# tests/run.sh [SUITE...] — runs the test suites and ends with one line "N passed, N failed".
# A suite is a command whose output ends with "N passed, N failed" (or Check's
# "Checks: N, Failures: F, Errors: E"); a suite that exits non-zero without such a
# line counts as one failure. Suites: unit golden fuzz e2e parity (default: all).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
total_pass=0; total_fail=0
log=$(mktemp); trap 'rm -f "$log"' EXIT

run_suite() { # name, command...
  local name=$1; shift
  echo "== $name: $*"
  "$@" 2>&1 | tee "$log" | tail -n 40
  local rc=${PIPESTATUS[0]}
  local p f line
  line=$(grep -E '^([A-Za-z-]+: )?[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
  if [ -n "$line" ]; then
    p=$(echo "$line" | sed -E 's/^([A-Za-z-]+: )?([0-9]+) passed.*/\2/')
    f=$(echo "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
  elif line=$(grep -E 'Checks: [0-9]+, Failures: [0-9]+, Errors: [0-9]+' "$log" | tail -n 1) && [ -n "$line" ]; then
    local n fl er
    n=$(echo "$line" | sed -E 's/.*Checks: ([0-9]+).*/\1/')
    fl=$(echo "$line" | sed -E 's/.*Failures: ([0-9]+).*/\1/')
    er=$(echo "$line" | sed -E 's/.*Errors: ([0-9]+).*/\1/')
    f=$((fl + er)); p=$((n - f))
  else
    p=0; f=1
  fi
  if [ "$rc" != 0 ] && [ "$f" = 0 ]; then f=1; fi
  echo "-- $name: $p passed, $f failed"
  total_pass=$((total_pass + p)); total_fail=$((total_fail + f))
}

suites=("$@")
[ ${#suites[@]} = 0 ] && suites=(unit golden fuzz e2e parity)
for s in "${suites[@]}"; do
  case $s in
    unit) for t in "$BUILD"/tests/test_*; do [ -x "$t" ] && [[ "$t" != *.o ]] && [[ "$t" != *.d ]] && run_suite "unit/$(basename "$t")" "$t"; done ;;
    golden) [ -x tests/golden/run.sh ] && run_suite golden tests/golden/run.sh ;;
    fuzz) [ -x tests/fuzz/run.sh ] && run_suite fuzz tests/fuzz/run.sh ;;
    parity) [ -x tests/parity/run.sh ] && run_suite parity tests/parity/run.sh ;;
    e2e) for t in tests/e2e/*.sh; do [ -x "$t" ] && run_suite "e2e/$(basename "$t" .sh)" "$t"; done ;;
    *) echo "unknown suite $s"; total_fail=$((total_fail + 1)) ;;
  esac
done
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" = 0 ]
