#!/usr/bin/env bash
# tests/e2e/dropout.sh — a dropout mask is a function of (seed, step, op, element), the
# element counted over the step's whole batch (docs/LANGUAGE.md), so the layout never
# changes what is dropped: tests/e2e/dropout.mpl (dropout on both stages, plain SGD)
# trains 3 steps at pp = 2 with 4 micro-batches (the reference), and
#  - at 1 and 2 micro-batches, at pp = 1 and at dp = 2 (2 micro-batches each, and 1
#    micro-batch each) its params match the reference within 1e-5: the same
#    masks on the same rows (before, dp replicas drew the same masks as each other, and
#    changing the micro-batches changed them);
#  - dropout on values split over tp (tests/e2e/dropout_tp.mpl: a column-parallel hidden
#    layer, a q|k|v split per group) keeps the split, and tp = 2, tp = 4 and dp = 2 x
#    tp = 2 match tp = 1 within 1e-5 (each rank draws its part of the whole mask);
#  - with another train seed they differ by more than 1e-3, so the comparison can tell
#    masks apart;
#  - dropout(x, 1.0) gives zeros while training (PyTorch's p = 1), as the float64 reference.
cd "$(dirname "$0")/../.."
source tests/tools/e2e_lib.sh
m=tests/e2e/dropout.mpl

run() { # name, mplc args...: 3 steps, params to $tmp/NAME.st
  local n=$1; shift
  compile_run "$n" "$m" "$@" -- --threads 1 --save "$tmp/$n.st"
}
run ref || { echo "$pass passed, $fail failed"; exit 1; }
for v in "mb1 --microbatches 1" "mb2 --microbatches 2" "pp1 --mesh pp=1" "dp2 --mesh pp=2,dp=2 --microbatches 2" \
         "dp2mb1 --mesh pp=2,dp=2 --microbatches 1" "pp1dp2 --mesh pp=1,dp=2 --microbatches 1"; do
  set -- $v; n=$1; shift
  run "$n" "$@" || continue
  if "$PY" tests/tools/stcompare.py "$tmp/$n.st" "$tmp/ref.st" 1e-5 > "$tmp/$n.cmp"; then
    ok "$* : params after 3 steps match pp = 2 with 4 micro-batches within 1e-5"
  else bad "$* : params differ from pp = 2 with 4 micro-batches: $(grep FAIL "$tmp/$n.cmp" | head -n 2 | tr '\n' ' ')"; fi
done
# dropout on values split over tp keeps the split (no all-gather in the forward pass) and
# draws tp = 1's masks, at tp = 2, tp = 4 and dp = 2 x tp = 2
t=tests/e2e/dropout_tp.mpl
"$MPLC" "$t" --mesh tp=2 --emit=grad > "$tmp/tp.grad" 2>&1
nd=$(grep -c '= dropout(.*split(2' "$tmp/tp.grad"); fag=$(grep '= allgather(' "$tmp/tp.grad" | grep -vc ' bwd_')
if [ "$nd" = 4 ] && [ "$fag" = 0 ]; then ok "tp = 2: the 4 dropouts (2 forward, 2 backward) keep their split; no forward all-gather"
else bad "tp = 2: $nd split dropouts (want 4), $fag forward all-gathers (want 0): $(head -n 2 "$tmp/tp.grad")"; fi
compile_run tp1 "$t" --mesh tp=1 -- --threads 1 --save "$tmp/tp1.st" &&
  for v in "tp=2" "tp=4" "dp=2,tp=2"; do
    n=tp_${v//[=,]/_}
    compile_run "$n" "$t" --mesh "$v" --microbatches $([ "$v" = dp=2,tp=2 ] && echo 1 || echo 2) -- --threads 1 --save "$tmp/$n.st" || continue
    if "$PY" tests/tools/stcompare.py "$tmp/$n.st" "$tmp/tp1.st" 1e-5 > "$tmp/$n.cmp"; then
      ok "dropout_tp.mpl at $v: params after 3 steps match tp = 1 within 1e-5"
    else bad "dropout_tp.mpl at $v differs from tp = 1: $(grep FAIL "$tmp/$n.cmp" | head -n 2 | tr '\n' ' ')"; fi
  done
rewrite "$m" "$tmp/seed.mpl" 's/^  steps = 3$/  steps = 3\n  seed = 7/' &&
  compile_run seed "$tmp/seed.mpl" -- --threads 1 --save "$tmp/seed.st" &&
  if ! "$PY" tests/tools/stcompare.py "$tmp/seed.st" "$tmp/ref.st" 1e-3 > "$tmp/seed.cmp"; then
    ok "another seed draws other masks (params differ by more than 1e-3)"
  else bad "seed 7 gives the params of seed 0 within 1e-3: the comparison cannot tell masks apart"; fi
# p = 1 (as PyTorch's): zeros while training, against the float64 reference (one step, loss
# and gradients: the layer under it gets none through it); mplc refused it
rewrite "$m" "$tmp/p1.mpl" 's/dropout(gelu(nn.linear(h, 32)), 0.3)/dropout(gelu(nn.linear(h, 32)), 1.0)/' &&
  if "$BUILD/tests/test_refstep" "$tmp/p1.mpl" > "$tmp/p1.log" 2>&1; then ok "dropout(x, 1.0): zeros while training, as the reference"
  else bad "dropout(x, 1.0): $(grep -m1 -E 'F:|error' "$tmp/p1.log")"; fi
# a value of no model input draws one mask for the step: 1, 2, 4 micro-batches and dp = 2 alike
s=tests/e2e/dropout_step.mpl
if "$MPLC" "$s" --microbatches 1 -o "$tmp/ds1.job" > /dev/null 2>&1 && "$MPLRUN" "$tmp/ds1.job" -q --threads 1 --save "$tmp/ds1.st" > /dev/null 2>&1; then
  for mesh in "--microbatches 2" "--microbatches 4" "--mesh dp=2"; do
    n=ds$(echo "$mesh" | tr -dc '0-9a-z')
    if "$MPLC" "$s" $mesh -o "$tmp/$n.job" > /dev/null 2>&1 && "$MPLRUN" "$tmp/$n.job" -q --threads 1 --save "$tmp/$n.st" > /dev/null 2>&1 &&
       "$PY" tests/tools/stcompare.py "$tmp/$n.st" "$tmp/ds1.st" 1e-5 > "$tmp/$n.cmp"; then
      ok "dropout on a positional embedding, $mesh: the single micro-batch's params within 1e-5 (one mask a step)"
    else bad "dropout on a positional embedding, $mesh: $(grep FAIL "$tmp/$n.cmp" | head -n 2)"; fi
  done
else bad "dropout_step.mpl: mplc or mplrun failed"; fi
# ... and the float64 reference draws it so too: 2 micro-batches, a step against it (pass 108:
# a reference drawing a mask a micro-batch passed every suite)
rewrite "$s" "$tmp/ds_mb2.mpl" 's/^  microbatches = 1$/  microbatches = 2/' &&
  if "$BUILD/tests/test_refstep" "$tmp/ds_mb2.mpl" > "$tmp/ds_mb2.log" 2>&1; then
    ok "dropout on a positional embedding, 2 micro-batches: loss and gradients as the reference's one mask a step"
  else bad "dropout_step at 2 micro-batches against the reference: $(grep -m1 -E 'F:|error|differ' "$tmp/ds_mb2.log")"; fi
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
