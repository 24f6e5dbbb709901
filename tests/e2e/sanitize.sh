#!/usr/bin/env bash
# mplc and mplrun built with AddressSanitizer and UBSan (make asan, under build-asan/),
# run on every golden program and on short training runs of the test models under every
# kind of parallelism: any sanitizer report (memory error, leak, undefined behaviour)
# fails. The fuzz suite covers the front end with random input; this covers codegen and
# the runtime on real jobs.
cd "$(dirname "$0")/../.."
source tests/tools/e2e_lib.sh
ASAN_BUILD=${ASAN_BUILD:-build-asan}
export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=0:exitcode=99
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:exitcode=99
if ! make -s asan > "$tmp/build.log" 2>&1; then
  tail -n 20 "$tmp/build.log"; echo "0 passed, 1 failed"; exit 1
fi
reported() { grep -q -E "ERROR: (Address|Leak)Sanitizer|runtime error:" "$1"; }

if BUILD=$ASAN_BUILD tests/golden/run.sh > "$tmp/golden.log" 2>&1 && ! reported "$tmp/golden.log"; then
  ok "goldens under the sanitizers: $(tail -n 1 "$tmp/golden.log")"
else bad "goldens under the sanitizers: $(grep -m 3 -E 'FAIL|ERROR|runtime error' "$tmp/golden.log")"; fi

run_case() { # name, mplc args..., -- mplrun args...
  local name=$1; shift
  local cargs=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do cargs+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  if "$ASAN_BUILD/mplc" "${cargs[@]}" -o "$tmp/$name.job" > "$tmp/$name.log" 2>&1 &&
     "$ASAN_BUILD/mplrun" "$tmp/$name.job" -q --threads 1 "$@" >> "$tmp/$name.log" 2>&1 && ! reported "$tmp/$name.log"; then
    ok "$name"
  else
    bad "$name: $(grep -m 2 -E 'ERROR|runtime error|error:' "$tmp/$name.log")"
  fi
}
[ -f examples/data/tiny.bin ] || build/mpltok examples/data/tiny.txt examples/data/tiny.bin > /dev/null
run_case mlp examples/mlp.mpl -- --steps 2
run_case gpt_tiny examples/gpt_tiny.mpl -- --steps 1 --sample 8 --prompt "The"
run_case layers examples/layers_on_devices.mpl -- --steps 2
run_case recompute tests/e2e/recompute.mpl -- --steps 2 --save "$tmp/r.safetensors"
run_case zb tests/e2e/small_gpt.mpl --mesh pp=2 --schedule zb -- --steps 2 --trace "$tmp/t.json"
run_case interleaved tests/e2e/small_gpt.mpl --mesh pp=2 --schedule "interleaved(2)" -- --steps 2
run_case dp_tp_pp tests/e2e/parallel_gpt.mpl --mesh dp=2,pp=2,tp=2 -- --steps 2 --checkpoint "$tmp/ck"
# precision = bf16: the rounding kernels, and products wide enough for the CPU's bf16 units
run_case bf16 tests/gpu/models/gpt_sgd.mpl --precision bf16 -D d=256 -D ctx=128 --mesh pp=2 -- --steps 1
run_case resume tests/e2e/parallel_gpt.mpl --mesh dp=2,pp=2,tp=2 -- --steps 3 --resume "$tmp/ck"
run_case tokens tests/e2e/tiny_lm.mpl -- --steps 2 --metrics "$tmp/m.jsonl"
run_case validation tests/e2e/tiny_lm.mpl --mesh dp=2 -- --steps 2 --val examples/data/tiny.bin --trace "$tmp/v.json"

# the in-process communicator's unit test under the sanitizers: its ranks are threads
# racing over shared buffers, where a read after free shows only here (pass 118: an
# all-reduce leaving before every member had copied its result passed test_comm itself)
# (make asan builds it)
if "$ASAN_BUILD/tests/test_comm" > "$tmp/comm.log" 2>&1 && ! reported "$tmp/comm.log"; then
  ok "test_comm under the sanitizers: $(grep -m 1 Checks "$tmp/comm.log")"
else bad "test_comm under the sanitizers: $(grep -m 2 -E 'ERROR|runtime error|:F:|:E:' "$tmp/comm.log")"; fi
echo "$pass passed, $fail failed"
[ $fail = 0 ]
