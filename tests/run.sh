#!/usr/bin/env bash
# tests/run.sh [SUITE...] — runs the test suites and ends with one line "N passed, N failed".
# A suite is a command whose output ends with "N passed, N failed" (or Check's
# "Checks: N, Failures: F, Errors: E"); a suite that exits non-zero without such a
# line counts as one failure. Suites: unit golden fuzz e2e parity (default: all).
#
# Independent suites run side by side, MPL_TEST_JOBS at a time (default: the machine's
# cores, at most 4); each suite's output is printed whole when it ends, with its time.
# The suites that measure time (plan_vs_run: measured bubbles) run alone at the end.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export BUILD
jobs=${MPL_TEST_JOBS:-$(nproc 2>/dev/null || echo 2)}
[ "$jobs" -gt 4 ] && jobs=4
[ "$jobs" -lt 1 ] && jobs=1
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
# one compile cache for the suites (runtime/kcache.c), empty at the start: what a run costs
# does not hang on the user's own cache, and the suites leave nothing in it
export MPL_CACHE_DIR=$work/cache
# the suites' Python: python3 resolved once to the interpreter (a shim such as pyenv's costs
# 0.35 s a call, and the suites call it hundreds of times)
PYTHON=${PYTHON:-$(python3 -c 'import sys; print(sys.executable)' 2> /dev/null || echo python3)}
export PYTHON
TIMED="e2e/plan_vs_run e2e/balance_run"   # suites that must run alone
# the longest suites start first, so the pool ends together (seconds on a 2-core Zen 4, two
# at a time: test_cuda_jobs 100, sanitize 91, fuzz 55, mpi 53, fiber_orders 24, random_programs
# 42, test_sdpa 30, bf16 35, cuda_mpi 30, test_refstep 29, test_cuda 24)
LONG="unit/test_cuda_jobs e2e/sanitize fuzz e2e/mpi e2e/fiber_orders e2e/random_programs e2e/bf16 unit/test_sdpa e2e/cuda_mpi unit/test_refstep unit/test_cuda"

# suite NAME CMD...: one line of the plan, "NAME<TAB>CMD..."
names=(); cmds=()
add() { names+=("$1"); shift; cmds+=("$*"); }
suites=("$@")
[ ${#suites[@]} = 0 ] && suites=(unit golden fuzz e2e parity)
unknown=0
for s in "${suites[@]}"; do
  case $s in
    unit) for t in "$BUILD"/tests/test_*; do
            [ -x "$t" ] && [[ "$t" != *.o ]] && [[ "$t" != *.d ]] && add "unit/$(basename "$t")" "$t"
          done ;;
    golden) [ -x tests/golden/run.sh ] && add golden tests/golden/run.sh ;;
    fuzz) [ -x tests/fuzz/run.sh ] && add fuzz tests/fuzz/run.sh ;;
    parity) [ -x tests/parity/run.sh ] && add parity tests/parity/run.sh
            [ -x tests/parity/run_v2.sh ] && add parity_v2 tests/parity/run_v2.sh ;;
    e2e) for t in tests/e2e/*.sh; do [ -x "$t" ] && add "e2e/$(basename "$t" .sh)" "$t"; done ;;
    *) echo "unknown suite $s"; unknown=$((unknown + 1)) ;;
  esac
done

# Runs suite i into $work/i.log and writes "pass fail seconds" to $work/i.res.
run_suite() {
  local i=$1 log=$work/$1.log t0 rc line p f
  t0=$(date +%s)
  bash -c "${cmds[$i]}" > "$log" 2>&1
  rc=$?
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
  echo "$p $f $(( $(date +%s) - t0 ))" > "$work/$i.res"
}

report() { # i
  local i=$1 p f sec
  read -r p f sec < "$work/$i.res"
  echo "== ${names[$i]}: ${cmds[$i]}"
  tail -n 40 "$work/$i.log"
  echo "-- ${names[$i]}: $p passed, $f failed (${sec} s)"
}

# the side-by-side part: a pool of $jobs workers, reported in the order suites end
declare -A running=()
serial=() order=()
for l in $LONG; do for i in "${!names[@]}"; do [ "${names[$i]}" = "$l" ] && order+=("$i"); done; done
for i in "${!names[@]}"; do [[ " $LONG " == *" ${names[$i]} "* ]] || order+=("$i"); done
for i in "${order[@]}"; do
  if [[ " $TIMED " == *" ${names[$i]} "* ]]; then serial+=("$i"); continue; fi
  while [ ${#running[@]} -ge "$jobs" ]; do
    wait -n 2> /dev/null || true
    for k in "${!running[@]}"; do
      if ! kill -0 "${running[$k]}" 2> /dev/null; then wait "${running[$k]}" 2> /dev/null; unset "running[$k]"; report "$k"; fi
    done
  done
  run_suite "$i" &
  running[$i]=$!
done
for k in "${!running[@]}"; do wait "${running[$k]}" 2> /dev/null; report "$k"; done
for i in "${serial[@]}"; do run_suite "$i"; report "$i"; done

total_pass=0; total_fail=$unknown
for i in "${!names[@]}"; do
  read -r p f sec < "$work/$i.res"
  total_pass=$((total_pass + p)); total_fail=$((total_fail + f))
done
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" = 0 ]
