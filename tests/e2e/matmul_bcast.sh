#!/usr/bin/env bash
# tests/e2e/matmul_bcast.sh — every broadcast pattern of the batched matrix product (3-D to
# 6-D, broadcast on either side, transposed operands: tests/tools/bcast_models.py) trains one
# step on the CPU, and its loss and every gradient match the float64 reference evaluator
# (test_refstep FILE), then trains to the end with mplrun and the loss falls.
cd "$(dirname "$0")/../.."
source tests/tools/e2e_lib.sh
REFSTEP=$BUILD/tests/test_refstep
n=$("$PY" tests/tools/bcast_models.py "$tmp/models")
[ "$n" -ge 20 ] && ok "$n broadcast patterns" || bad "only $n broadcast patterns"
for m in "$tmp"/models/bcast_*.mpl; do
  name=$(basename "$m" .mpl)
  if "$REFSTEP" "$m" > "$tmp/$name.log" 2>&1; then ok "$name: loss and gradients match the reference"
  else bad "$name: $(grep -m1 -E 'differ|loss|off by|error' "$tmp/$name.log")"; fi
done
# through the commands users type: compile, train 3 steps, the loss falls
m=$tmp/models/bcast_gqa_5d.mpl
if "$MPLC" "$m" -o "$tmp/gqa.job" && "$MPLRUN" "$tmp/gqa.job" --threads 1 --metrics "$tmp/gqa.jsonl" > /dev/null &&
   "$PY" - "$tmp/gqa.jsonl" <<'PYEOF'
import json, sys
losses = [json.loads(l)["loss"] for l in open(sys.argv[1]) if '"loss"' in l]
sys.exit(0 if len(losses) == 3 and losses[-1] < losses[0] else 1)
PYEOF
then ok "mplc + mplrun: the 5-D grouped-query product trains"
else bad "mplc + mplrun: the 5-D grouped-query product does not train"; fi
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
