#!/usr/bin/env bash
# tests/parity/run_v2.sh — parity of the v2 models with float64 PyTorch twins, without torch.
# Each program of tests/parity/v2 (a Llama, a mixture-of-experts LM, a CNN, a ViT) trains 3
# AdamW steps of 2 micro-batches from MODEL.init.safetensors; every param must match
# MODEL.expected.safetensors (relative L2 error per tensor below $tol) and the 3 step losses
# MODEL.expected_loss.txt (relative error below $loss_tol). Meshes: the Llama at pp = 1, 2,
# tp = 2 and pp = 2 x tp = 2; the MoE at tp = 1 and 2 (expert parallelism); the CNN at 1;
# the ViT at tp = 1 and 2.
#
# The stored files come from `/usr/bin/python3 tests/parity/torch_v2.py` (run once with
# torch, committed); compare.py needs only Python's standard library.
#
#   tests/parity/run_v2.sh [MODEL...]     (llama moe cnn vit: only these; default all)
#
# EXPECTED=DIR takes the expected files from DIR instead: a deliberately wrong twin
# (WRONG=... OUTDIR=DIR torch_v2.py, see there) must fail here.
#
# The tolerance: float32 against float64 after 3 AdamW steps, the worst tensor is about
# 2e-5 (the ViT's c_attn.bias: the key third of it has a gradient that is zero in exact
# arithmetic, since softmax ignores a shift of a row's scores, so each AdamW step moves it
# by rounding noise divided by its own size plus eps, up to about lr/100), every other tensor
# below 1.2e-5 (the MoE's; the figures vary with the CPU's GEMM kernels) and most below
# 1e-6; the losses agree to 2e-7. A wrong twin fails by 3e-3 or
# more (torch_v2.py's WRONG=...).
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
dir=tests/parity/v2
want=${EXPECTED:-$dir}
tol=1e-4
loss_tol=1e-5
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
PY=${PYTHON:-$(command -v python3 || command -v /usr/bin/python3)}
only=("$@")

# check NAME MODEL [mplc flags...]: 3 steps of tests/parity/v2/MODEL.mpl against PyTorch
check() {
  local name=$1 model=$2; shift 2
  [ ${#only[@]} = 0 ] || [[ " ${only[*]} " == *" $model "* ]] || return 0
  local job="$tmp/$name.job" out="$tmp/$name.safetensors" m="$tmp/$name.jsonl"
  if ! "$BUILD/mplc" "$dir/$model.mpl" -I stdlib "$@" -o "$job" 2> "$tmp/mplc.err"; then
    bad "$name: mplc failed: $(head -n 3 "$tmp/mplc.err")"; return
  fi
  if ! "$BUILD/mplrun" "$job" --init "$dir/$model.init.safetensors" --steps 3 --threads 1 \
       --save "$out" --metrics "$m" -q > "$tmp/run.log" 2>&1; then
    bad "$name: mplrun failed: $(tail -n 3 "$tmp/run.log")"; return
  fi
  sed -E -n 's/.*"loss": ?([-0-9.eE+naif]+).*/\1/p' "$m" > "$tmp/loss.txt"
  local worst
  if worst=$(paste "$tmp/loss.txt" "$want/$model.expected_loss.txt" | awk -v t=$loss_tol '
       { d = $1 - $2; if (d < 0) d = -d; r = d / ($2 < 0 ? -$2 : $2); if (!(r <= w)) w = r; n++
         if (!($1 == $1 && r < t)) bad = 1; got = got " " $1; want = want " " $2 }
       END { printf "losses%s (PyTorch%s), worst rel %.1e\n", got, want, w; exit !(n == 3 && !bad) }'); then
    ok "$name: $worst"
  else
    bad "$name: $worst"
  fi
  "$PY" "$dir/../compare.py" "$out" "$want/$model.expected.safetensors" $tol > "$tmp/cmp.log" 2>&1
  local rc=$? line
  grep '^FAIL' "$tmp/cmp.log" | sed 's/^/     /'
  worst=$(grep -E '^(ok|FAIL)' "$tmp/cmp.log" | sort -g -k4 | tail -n 1 | awk '{ print $2, $4 }')
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$tmp/cmp.log")
  if [ $rc = 0 ] && [ -n "$line" ]; then ok "$name: params after 3 AdamW steps ($line, rel < $tol; worst $worst)"
  else bad "$name: params differ from PyTorch (${line:-$(tail -n 2 "$tmp/cmp.log")}; worst $worst)"; fi
}

check llama_pp1 llama
check llama_pp2 llama -D stages=2
check llama_tp2 llama --mesh tp=2
check llama_pp2_tp2 llama -D stages=2 --mesh tp=2
check moe_tp1 moe
check moe_tp2 moe --mesh tp=2
check cnn cnn
check vit_tp1 vit
check vit_tp2 vit --mesh tp=2
echo "$pass passed, $fail failed"
[ $fail = 0 ]
