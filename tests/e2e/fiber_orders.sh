#!/usr/bin/env bash
# The CUDA kernels run on the host (tests/unit/cuda_host.h) in other orders of their threads.
# A block's threads are fibers that take turns between barriers (tests/unit/host_fibers.h);
# the unit suites run them in one order, warp 0 first and each warp's lanes upwards, where a
# barrier missing between one thread's writes to shared memory and a later thread's reads
# gives the right numbers by luck. Here the same suites run again with MPL_FIBER_ORDER=rev
# (the last warp first, lanes downwards) and with a seeded shuffle drawn anew at every
# barrier. (Each of the 29 barriers of runtime/cuda/*.cu taken out in turn: the one order
# missed 4, three of which fail in the other orders, the fourth since test_ce's large
# logits; one more, the embedding gradient's last, is redundant: a barrier of the next
# tile comes before its list is written again.) One check per suite and order: every
# Check test passes.
cd "$(dirname "$0")/../.."
source tests/tools/e2e_lib.sh
finish() { echo "$pass passed, $fail failed"; [ $fail = 0 ]; exit; }

for t in test_ce test_embed test_optim_cu test_sdpa test_cuda_mock; do
  bin=$BUILD/tests/$t
  if [ ! -x "$bin" ]; then echo "skip: $bin is not built"; continue; fi
  case_=""
  [ $t = test_sdpa ] && case_=host # (its CUDA kernels on the host; not the CPU's, nor NVRTC's 10 s)
  for order in rev 7; do
    log=$tmp/$t.$order.log
    env ${case_:+CK_RUN_CASE=$case_} MPL_FIBER_ORDER=$order "$bin" > "$log" 2>&1
    rc=$?
    line=$(grep -E '^[0-9]+%: Checks:' "$log" | tail -n 1)
    if [ $rc = 0 ] && [[ "$line" == *"Failures: 0, Errors: 0"* ]]; then
      ok "$t, MPL_FIBER_ORDER=$order: $line"
    else
      bad "$t, MPL_FIBER_ORDER=$order (exit $rc): ${line:-no Check summary}"
      grep -E ':[FE]:' "$log" | head -n 5
    fi
  done
done

# The order's own check: a name that is neither fwd, rev nor a number is refused.
if MPL_FIBER_ORDER=sideways "$BUILD/tests/test_optim_cu" > "$tmp/bad.log" 2>&1; then
  bad "MPL_FIBER_ORDER=sideways: accepted"
elif grep -q "MPL_FIBER_ORDER=sideways: expected fwd, rev or a seed" "$tmp/bad.log"; then
  ok "MPL_FIBER_ORDER=sideways: refused"
else
  bad "MPL_FIBER_ORDER=sideways: $(head -n 2 "$tmp/bad.log")"
fi
finish
