#!/usr/bin/env bash
# The optimizer's two runtime paths give the same bits: a run of one UPDATE (one trainable
# param, runtime/update.c's update()) and the multi-tensor one (adamw_list, sgd_list), under
# AdamW with warm-up and cosine, weight decay and clipping, and under SGD with momentum:
# tests/e2e/one_update.mpl's w after 5 steps equals w of the same program with a second
# param that changes nothing (0 times its sum: its gradient 0, the clipping norm the same).
# (review pass 95: the one-UPDATE path's learning rate at step + 1 and its beta2 swapped
# for beta1 passed every suite)
cd "$(dirname "$0")/../.."
source tests/tools/e2e_lib.sh
m=tests/e2e/one_update.mpl
two() { # SRC DST: SRC with a second param whose gradient is 0
  rewrite "$1" "$2" 's/^  param w: f32\[d, d\] = normal(0.5)$/  param w: f32[d, d] = normal(0.5)\n  param u: f32[d] = normal(0.5)/' \
    's/^  return cross_entropy(x @ w, y)$/  return cross_entropy(x @ w, y) + 0.0 * sum(u)/'
}
same_w() { # A.st B.st: tensor w bit for bit the same in both
  "$PY" - "$1" "$2" << 'PYEOF'
import json, struct, sys
def w(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    t = json.loads(data[8:8 + n])["w"]
    a, b = t["data_offsets"]
    return data[8 + n + a: 8 + n + b]
sys.exit(0 if w(sys.argv[1]) == w(sys.argv[2]) else 1)
PYEOF
}
sgd() { rewrite "$1" "$2" 's/^  optimizer = adamw(.*)$/  optimizer = sgd(lr = 0.05, momentum = 0.9)/'; }
cp "$m" "$tmp/one_adamw.mpl"
two "$m" "$tmp/two_adamw.mpl"
sgd "$m" "$tmp/one_sgd.mpl"
two "$tmp/one_sgd.mpl" "$tmp/two_sgd.mpl"
for opt in adamw sgd; do
  for n in one two; do
    "$MPLC" "$tmp/${n}_$opt.mpl" -o "$tmp/${n}_$opt.job" > "$tmp/${n}_$opt.log" 2>&1 &&
      "$MPLRUN" "$tmp/${n}_$opt.job" -q --threads 1 --save "$tmp/${n}_$opt.st" >> "$tmp/${n}_$opt.log" 2>&1 ||
      bad "$n param(s), $opt: $(tail -n 2 "$tmp/${n}_$opt.log")"
  done
  if [ -s "$tmp/one_$opt.st" ] && ! cmp -s "$tmp/one_$opt.st" "$tmp/two_$opt.st" && same_w "$tmp/one_$opt.st" "$tmp/two_$opt.st"; then
    ok "$opt, 5 steps: w the same bits through update() (one param) and the multi-tensor path (two)"
  else bad "$opt: w differs between one param and two"; fi
done

# the one-UPDATE path's clipping by a coefficient just under 1: one param whose gradient is
# all ones (norm 2 exactly), grad_clip = 1.999, sgd(lr = 1): w = -1.999 / (2 + 1e-6), as
# torch.nn.utils.clip_grad_norm_ scales, in f32 (pass 117: the path taking coefficients past
# 0.999 as 1 passed; the multi-tensor path's case is test_refstep's)
cat > "$tmp/near_one.mpl" <<'MPL'
model m(x: f32[B, 4]) {
  param w: f32[4] = zeros
  return sum(w) + 0.0 * sum(x)
}
train m { data = synthetic(8); batch = 8; optimizer = sgd(lr = 1.0); grad_clip = 1.999; steps = 1; seed = 1 }
MPL
if "$MPLC" "$tmp/near_one.mpl" -o "$tmp/near_one.job" > "$tmp/near_one.log" 2>&1 &&
   "$MPLRUN" "$tmp/near_one.job" -q --threads 1 --save "$tmp/near_one.st" >> "$tmp/near_one.log" 2>&1 &&
   "$PY" - "$tmp/near_one.st" > "$tmp/near_one.out" 2>&1 << 'PYEOF'
import json, struct, sys
data = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", data[:8])[0]
a, b = json.loads(data[8:8 + n])["w"]["data_offsets"]
w = struct.unpack("<4f", data[8 + n + a: 8 + n + b])
want = struct.unpack("<f", struct.pack("<f", -1.999 / (2 + 1e-6)))[0]
print(" ".join(f"{v:.7f}" for v in w), "want", f"{want:.7f}")
sys.exit(0 if all(abs(v - want) <= 2e-7 for v in w) else 1)
PYEOF
then ok "one param clipped by 1.999 / (2 + 1e-6): w = $(cat "$tmp/near_one.out")"
else bad "clip near 1 on the one-UPDATE path: $(tail -n 2 "$tmp/near_one.out" "$tmp/near_one.log")"; fi
echo "$pass passed, $fail failed"
[ $fail = 0 ]
