#!/usr/bin/env bash
# The operations of issue 13 that the front end lowers to existing ops, the defs that
# return several values, and the Llama-class layers of nn (tests/e2e/v2/):
#  - one training step of each program on the CPU kernels matches the float64 reference
#    evaluator, loss and every gradient (test_refstep FILE): repeat, expand, stack and
#    int indexing (shape_ops), sdpa in its forms (sdpa_grad, fused; in f32 and in bf16),
#    several results (multi_return), unused statements that read the loss (dead_reads_loss),
#    the axis ops of a 0-d tensor (scalar_axis);
#  - sdpa equals the textbook formula with k and v repeated per query head (sdpa_ref: the
#    loss, the sum of the squared differences, is 0), and the check can fail: with the
#    causal mask dropped from one call the loss is not 0;
#  - nn.attention(x, heads, causal = false) is a fused sdpa without the causal mask, the
#    default one with it (and the same with --no-fused-sdpa in the lowered form);
#  - a Llama (nn.llama_block) and a mixture of experts (nn.moe) match the reference
#    evaluator; nn.rope and nn.moe (routing, gates, aux) match float64 references of their
#    definitions (tests/tools/v2_ref.py); the Llama has Meta's param names, and --init
#    refuses a tensor of another shape.
cd "$(dirname "$0")/../.."
source tests/tools/e2e_lib.sh
REFSTEP=$BUILD/tests/test_refstep
V2=tests/e2e/v2

refstep() { # name: $V2/name.mpl against the reference
  if "$REFSTEP" "$V2/$1.mpl" > "$tmp/$1.log" 2>&1; then ok "$1: one step matches the float64 reference"
  else bad "$1: $(grep -m1 -E 'differ|loss|off by|error|check' "$tmp/$1.log")"; fi
}
for m in shape_ops sdpa_grad multi_return dead_reads_loss dead_reads_view_loss scalar_axis; do refstep $m; done
# the fused sdpa's forms in bf16 (issue 14): the probabilities and dS rounded in the kernels
# as the reference rounds them (its gradients equal the reference's: within 1e-3, where
# leaving out either rounding moves them by 3e-3 to 7e-3, under the bf16 tolerance 1e-2;
# pass 108); and the lowered form in bf16 against its own reference
rewrite "$V2/sdpa_grad.mpl" "$tmp/sdpa_bf16.mpl" 's/train m { batch = 2; seq = 5 }/train m { batch = 2; seq = 5; precision = bf16 }/' &&
if grep -q 'precision = bf16' "$tmp/sdpa_bf16.mpl" && MPL_REFSTEP_TOL_BF16=1e-3 "$REFSTEP" "$tmp/sdpa_bf16.mpl" > "$tmp/sdpa_bf16.log" 2>&1; then
  ok "sdpa_grad in bf16: one step matches the float64 reference (gradients within 1e-3)"
else bad "sdpa_grad in bf16: $(grep -m1 -E 'differ|loss|off by|error|check' "$tmp/sdpa_bf16.log")"; fi
# the fused cross-entropy in bf16, logits near 20 (each rounded by 2^-4 to 2^-3): within 1e-3
# of the reference, which rounds them as the kernels do (left out: 1.4e-2; pass 108)
printf '%s\n' 'model m(x: f32[B, 32], y: i32[B]) {' '  param w: f32[32, 50] = normal(1.5)' '  return cross_entropy(x @ w, y)' '}' \
  'train m { batch = 16; steps = 1; precision = bf16 }' > "$tmp/ce_bf16.mpl"
if MPL_REFSTEP_TOL_BF16=1e-3 "$REFSTEP" "$tmp/ce_bf16.mpl" > "$tmp/ce_bf16.log" 2>&1; then
  ok "the fused cross-entropy in bf16 (logits near 20): one step matches the float64 reference (gradients within 1e-3)"
else bad "the fused cross-entropy in bf16: $(grep -m1 -E 'differ|loss|off by|error|check' "$tmp/ce_bf16.log")"; fi

# first_loss JOB: the first step's loss from --metrics (empty when the run fails)
first_loss() {
  "$MPLRUN" "$1" -q --threads 1 --steps 1 --metrics "$tmp/m.jsonl" > /dev/null 2>&1 &&
    "$PY" -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["loss"])' "$tmp/m.jsonl"
}
# a 0-d tensor's axis 0 or -1, as torch: softmax 1, log_softmax 0, argmax 0, cumsum, sum,
# mean and amax the value (scalar_axis_ref's loss, the squared differences, is exactly 0)
if "$MPLC" "$V2/scalar_axis_ref.mpl" -o "$tmp/sa.job" > "$tmp/sa.log" 2>&1; then
  l=$(first_loss "$tmp/sa.job")
  if [ "$l" = 0 ]; then ok "the axis ops of a 0-d tensor take axis 0 and -1 as torch does: squared difference 0"
  else bad "the axis ops of a 0-d tensor differ from torch's: squared difference '$l'"; fi
else bad "scalar_axis_ref does not compile: $(head -n 3 "$tmp/sa.log")"; fi
# both forms: the fused op and the lowered one (--no-fused-sdpa: its own causal mask, cut to
# [T, S] from the top-left as torch's is_causal, and its own GQA grouping)
for form in "" --no-fused-sdpa; do
  if "$MPLC" "$V2/sdpa_ref.mpl" $form -o "$tmp/ref.job" > "$tmp/ref.log" 2>&1; then
    l=$(first_loss "$tmp/ref.job")
    if [ -n "$l" ] && "$PY" -c "import sys; sys.exit(0 if float('$l') < 1e-10 else 1)"; then
      ok "sdpa${form:+ ($form)} equals the textbook attention (GQA, MQA, causal with T < S and T > S, scale): squared difference $l"
    else bad "sdpa${form:+ ($form)} differs from the textbook attention: squared difference '$l'"; fi
  else bad "sdpa_ref${form:+ ($form)} does not compile: $(head -n 3 "$tmp/ref.log")"; fi
done
rewrite "$V2/sdpa_ref.mpl" "$tmp/ref_neg.mpl" 's/sdpa(q, k, v, causal = true) - ref$/sdpa(q, k, v) - ref/' &&
  "$MPLC" "$tmp/ref_neg.mpl" -o "$tmp/neg.job" > /dev/null 2>&1 && l=$(first_loss "$tmp/neg.job") &&
  if "$PY" -c "import sys; sys.exit(0 if float('$l') > 1 else 1)"; then ok "the check can fail: without the causal mask the difference is $l"
  else bad "without the causal mask the difference is '$l' (the check cannot fail)"; fi

cat > "$tmp/enc.mpl" <<'MPL'
import nn
model m(x: f32[B, T, 16], y: i32[B, T]) {
  e = nn.attention(x, 4, causal = false) as enc
  c = nn.attention(x, 4) as dec
  return cross_entropy(e + c, y)
}
MPL
"$MPLC" "$tmp/enc.mpl" --emit=graph > "$tmp/enc.txt" 2>&1
ne=$(grep -c '= sdpa(.*causal :' "$tmp/enc.txt"); nw=$(grep -c '= sdpa(' "$tmp/enc.txt")
if [ "$ne" = 1 ] && [ "$nw" = 2 ]; then ok "nn.attention: causal = false is a fused sdpa without the mask, the default one with it"
else bad "nn.attention: $ne causal of $nw fused sdpa for one causal and one encoder call (want 1 of 2)"; fi
"$MPLC" "$tmp/enc.mpl" --emit=graph --no-fused-sdpa > "$tmp/enc.txt" 2>&1
ne=$(grep -c '= causal_mask(' "$tmp/enc.txt"); nw=$(grep -c '= where(' "$tmp/enc.txt")
if [ "$ne" = 1 ] && [ "$nw" = 1 ]; then ok "nn.attention, --no-fused-sdpa: causal = false has no mask, the default has one"
else bad "nn.attention, --no-fused-sdpa: $ne causal masks and $nw wheres for one causal and one encoder call (want 1 and 1)"; fi

# ---- the Llama-class layers ----
refstep llama
refstep moe
# rope and moe against float64 references of their definitions (tests/tools/v2_ref.py)
if "$MPLC" "$V2/rope_ref.mpl" -o "$tmp/rope.job" > "$tmp/rope.log" 2>&1 &&
   "$MPLRUN" "$tmp/rope.job" -q --threads 1 --steps 0 --save "$tmp/rope0.st" >> "$tmp/rope.log" 2>&1 &&
   "$MPLRUN" "$tmp/rope.job" -q --threads 1 --steps 1 --save "$tmp/rope1.st" >> "$tmp/rope.log" 2>&1 &&
   "$PY" tests/tools/v2_ref.py check-rope "$tmp/rope0.st" "$tmp/rope1.st" > "$tmp/rope.cmp" 2>&1; then
  ok "nn.rope matches its formula in float64 ($(cat "$tmp/rope.cmp"))"
else bad "nn.rope: $(tail -n 2 "$tmp/rope.log") $(cat "$tmp/rope.cmp" 2>/dev/null)"; fi
if "$PY" tests/tools/v2_ref.py init-moe "$tmp/moe.init" && "$MPLC" "$V2/moe_ref.mpl" -o "$tmp/moe.job" > "$tmp/moe.log" 2>&1 &&
   "$MPLRUN" "$tmp/moe.job" -q --threads 1 --steps 0 --init "$tmp/moe.init" --save "$tmp/moe0.st" >> "$tmp/moe.log" 2>&1 &&
   "$MPLRUN" "$tmp/moe.job" -q --threads 1 --steps 1 --init "$tmp/moe.init" --save "$tmp/moe1.st" >> "$tmp/moe.log" 2>&1 &&
   "$PY" tests/tools/v2_ref.py check-moe "$tmp/moe0.st" "$tmp/moe1.st" > "$tmp/moe.cmp" 2>&1; then
  ok "nn.moe (top-2 of 4) and its aux loss match their definition in float64 ($(cat "$tmp/moe.cmp"))"
else bad "nn.moe: $(tail -n 2 "$tmp/moe.log") $(cat "$tmp/moe.cmp" 2>/dev/null)"; fi
"$MPLC" "$V2/llama.mpl" --emit=graph > "$tmp/llama.txt" 2>&1
names=$(grep -o 'param() "[^"]*"' "$tmp/llama.txt" | sed 's/param() "//; s/"$//' | grep '^layers\.0\.' | sort | tr '\n' ' ')
want="layers.0.attention.wk.weight layers.0.attention.wo.weight layers.0.attention.wq.weight layers.0.attention.wv.weight layers.0.attention_norm.weight layers.0.feed_forward.w1.weight layers.0.feed_forward.w2.weight layers.0.feed_forward.w3.weight layers.0.ffn_norm.weight "
if [ "$names" = "$want" ]; then ok "llama_block has Meta's names (layers.0.attention.wq.weight, ...)"
else bad "llama_block names: $names"; fi
# --init: the params of a model with hidden = 48 do not fit one with hidden = 40
rewrite "$V2/llama.mpl" "$tmp/llama40.mpl" 's/^const hidden = 48/const hidden = 40/' &&
if "$MPLC" "$V2/llama.mpl" -o "$tmp/l48.job" && "$MPLRUN" "$tmp/l48.job" -q --threads 1 --steps 0 --save "$tmp/l48.st" &&
   "$MPLC" "$tmp/llama40.mpl" -o "$tmp/l40.job"; then
  "$MPLRUN" "$tmp/l40.job" -q --threads 1 --steps 1 --init "$tmp/l48.st" > "$tmp/init.log" 2>&1; rc=$?
  if [ $rc != 0 ] && grep -q 'feed_forward.w[123].weight' "$tmp/init.log"; then ok "--init refuses llama params of another shape: $(head -n 1 "$tmp/init.log")"
  else bad "--init with mismatched llama params: exit $rc, $(head -n 2 "$tmp/init.log")"; fi
  if "$MPLRUN" "$tmp/l48.job" -q --threads 1 --steps 1 --init "$tmp/l48.st" > "$tmp/init2.log" 2>&1; then ok "--init takes llama params of the same shapes"
  else bad "--init with the model's own params: $(head -n 2 "$tmp/init2.log")"; fi
else bad "llama: could not compile or save"; fi
echo "$pass passed, $fail failed"
[ $fail = 0 ]
