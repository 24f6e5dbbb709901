#!/usr/bin/env bash
# A bounded fuzz run of the parser and checker (libFuzzer + ASan + UBSan), seeded with
# the examples, the stdlib and the golden programs. Fails on any crash or sanitizer
# report. FUZZ_SECONDS (default 30: make test's time; the parser and checker met no report in
# the last 400 s run) bounds the run.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
out="$BUILD/fuzz"
mkdir -p "$out/corpus"
secs=${FUZZ_SECONDS:-30}
CC=${FUZZ_CC:-clang}
if ! command -v "$CC" >/dev/null; then echo "fuzz: $CC not found"; echo "0 passed, 1 failed"; exit 1; fi
srcs="lang/arena.c lang/diag.c lang/ast.c lang/parse.c $BUILD/lang/lexer.c $BUILD/lang/parser.c
      compiler/graph.c $(ls compiler/sema*.c) compiler/autodiff.c compiler/partition.c compiler/cost.c
      compiler/balance.c compiler/schedule.c compiler/sched_sim.c compiler/update.c tests/fuzz/fuzz_mplc.c"
bin="$out/fuzz_mplc"
newest=$(ls -t $srcs lang/*.h compiler/*.h | head -n 1)
if [ ! -x "$bin" ] || [ "$newest" -nt "$bin" ]; then
  echo "fuzz: building $bin"
  $CC -std=gnu11 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I. -I"$BUILD/lang" -Wno-unused-function $srcs -o "$bin" -lm || { echo "0 passed, 1 failed"; exit 1; }
fi
cp examples/*.mpl stdlib/*.mpl tests/golden/*.mpl "$out/corpus/" 2>/dev/null
# not the goldens that run the checker to its limits (a quarter-million def calls, two
# million ops): 8.6 s each in this build, so a loaded machine passed -timeout=10 on an
# unmutated seed (pass 52); the limits have their own goldens
rm -f "$out/corpus/err_def_calls.mpl" "$out/corpus/err_ops_limit_cascade.mpl"
log="$out/fuzz.log"
(cd "$out" && ./fuzz_mplc -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
  -print_final_stats=1 corpus > fuzz.log 2>&1)
rc=$?
execs=$(grep -E 'stat::number_of_executed_units' "$log" | awk '{print $2}')
echo "fuzz: ${execs:-0} executions in ${secs}s, exit $rc"
if [ $rc -ne 0 ]; then
  grep -E 'ERROR|SUMMARY|internal error|==[0-9]+==' "$log" | head -n 20
  ls "$out"/crash-* "$out"/timeout-* "$out"/leak-* 2>/dev/null | head
  echo "0 passed, 1 failed"
  exit 1
fi
if [ "${execs:-0}" -lt 1000 ]; then # a run that hardly ran tested nothing
  echo "fuzz: only ${execs:-0} executions (want at least 1000): $(tail -n 3 "$log" | tr '\n' ' ')"
  echo "0 passed, 1 failed"
  exit 1
fi
echo "1 passed, 0 failed"
