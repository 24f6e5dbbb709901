#!/usr/bin/env bash
# The v2 examples through the commands users type (issue 13):
#  - examples/llama.mpl (pp = 2), examples/moe.mpl (experts split over tp = 2) and
#    examples/vit.mpl (pp = 2) compile and train: the mean loss of the last 4 of 24 steps
#    is below the mean of the first 4;
#  - moe at tp = 4 (one expert per rank) and llama at pp = 2 x tp = 2 train too;
#  - the bigger settings the examples name compile and plan: Llama-3.2-1B's shape at
#    pp = 4 x tp = 2 (the plan covers 8 ranks; the biggest arena is reported).
cd "$(dirname "$0")/../.."
source tests/tools/e2e_lib.sh
"$BUILD/mpltok" examples/data/tiny.txt "$tmp/tiny.bin" > /dev/null || bad "mpltok"

# trains NAME FILE [mplc flags...]: 24 steps, the loss falls
trains() {
  local name=$1 file=$2; shift 2
  if ! "$MPLC" "$file" "$@" -o "$tmp/$name.job" > "$tmp/$name.log" 2>&1; then
    bad "$name: mplc: $(head -n 3 "$tmp/$name.log")"; return
  fi
  local data=(--data "$tmp/tiny.bin")
  grep -q 'tokens(' "$file" || data=()
  if ! "$MPLRUN" "$tmp/$name.job" "${data[@]}" --steps 24 -q --metrics "$tmp/$name.jsonl" > "$tmp/$name.log" 2>&1; then
    bad "$name: mplrun: $(tail -n 3 "$tmp/$name.log")"; return
  fi
  local r
  r=$("$PY" - "$tmp/$name.jsonl" <<'PYEOF'
import json, math, sys
l = [json.loads(x)["loss"] for x in open(sys.argv[1])]
a, b = sum(l[:4]) / 4, sum(l[-4:]) / 4
print("%d %.4f %.4f" % (len(l) == 24 and all(map(math.isfinite, l)) and b < a, a, b))
PYEOF
)
  read -r good first last <<< "$r"
  if [ "$good" = 1 ]; then ok "$name trains: mean loss of steps 1-4 $first, of steps 21-24 $last"
  else bad "$name: loss $first -> $last"; fi
}
trains llama examples/llama.mpl
trains moe_tp2 examples/moe.mpl
trains vit examples/vit.mpl
trains moe_tp4 examples/moe.mpl --mesh tp=4
trains llama_pp2_tp2 examples/llama.mpl --mesh tp=2

plan=$tmp/llama1b.plan
if timeout 120 "$MPLC" examples/llama.mpl -D vocab=128256 -D ctx=2048 -D d=2048 -D layers=16 -D heads=32 \
     -D kv_heads=8 -D hidden=8192 -D base=500000.0 -D eps=1e-5 -D batch=8 -D stages=4 --mesh tp=2 \
     --emit=plan > "$plan" 2>&1 && grep -q '^mesh: 8 ranks' "$plan" && [ "$(grep -c '^ranks .*: stages' "$plan")" = 4 ]; then
  ok "Llama-3.2-1B's shape at pp=4 x tp=2 plans 8 ranks (largest arena $(awk '/arena \(peak\)/ { if ($3 > m) m = $3 } END { printf "%.1f GiB", m / 2^30 }' "$plan"))"
else bad "Llama-3.2-1B at pp=4 x tp=2: $(head -n 3 "$plan")"; fi
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
