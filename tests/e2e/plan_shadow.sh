#!/usr/bin/env bash
# The memory plan checked from the runtime's side (pass 59): each program is compiled twice,
# as is and with its buffers placed in a shuffled order (mplc's MPL_PLAN_SHUFFLE, so other
# pairs of values share bytes), and the shuffled job runs with MPL_SHADOW_CHECK=1 (every
# arena granule's last toucher recorded: a value touched again after another took its
# bytes is reported) and MPL_SHADOW_POISON=1 (every value but params, gradients and inputs
# set to NaN bytes at each pass's start: one read before it is written poisons the
# results). The params after 2 steps must be the plain job's, byte for byte, with no
# SHADOW report: over the schedules, pipeline depths, tp, @recompute and bf16. And a plan
# broken on purpose (MPL_PLAN_BREAK=1) is refused by mplc's own check.
cd "$(dirname "$0")/../.."
source tests/tools/e2e_lib.sh

check() { # label, program, mplc flags...
  local label=$1 prog=$2; shift 2
  local n=$tmp/$(echo "$label" | tr -c 'a-z0-9' _)
  if ! "$MPLC" "$prog" "$@" -o "$n.a.job" > "$n.log" 2>&1 ||
     ! MPL_PLAN_SHUFFLE=7 "$MPLC" "$prog" "$@" -o "$n.b.job" >> "$n.log" 2>&1; then
    bad "$label: mplc: $(head -n 2 "$n.log")"; return
  fi
  if ! "$MPLRUN" "$n.a.job" --steps 2 --threads 1 -q --save "$n.a.st" >> "$n.log" 2>&1 ||
     ! MPL_SHADOW_CHECK=1 MPL_SHADOW_POISON=1 "$MPLRUN" "$n.b.job" --steps 2 --threads 1 -q --save "$n.b.st" \
       > "$n.shadow" 2>&1; then
    bad "$label: mplrun: $(tail -q -n 2 "$n.log" "$n.shadow")"; return
  fi
  if grep -q SHADOW "$n.shadow"; then bad "$label: $(grep -m1 SHADOW "$n.shadow")"
  elif cmp -s "$n.a.st" "$n.b.st"; then ok "$label: a shuffled plan, poisoned, gives the same params"
  else bad "$label: the shuffled, poisoned run's params differ from the plain run's"; fi
}

g=tests/e2e/small_gpt.mpl
check "small_gpt pp=2 1f1b" "$g" --mesh pp=2
check "small_gpt pp=2 zb" "$g" --mesh pp=2 --schedule zb
check "small_gpt pp=2 zbv" "$g" --mesh pp=2 --schedule zbv
check "small_gpt pp=2 interleaved(2)" "$g" --mesh pp=2 --schedule "interleaved(2)"
check "small_gpt pp=4 gpipe bf16" "$g" --mesh pp=4 --schedule gpipe --precision bf16
check "small_gpt pp=2 tp=2" "$g" --mesh pp=2,tp=2
check "recompute zb" tests/e2e/recompute.mpl --schedule zb
check "dropout pp=2" tests/e2e/dropout.mpl
check "llama pp=2 zbv" tests/e2e/v2/llama.mpl --mesh pp=2 --schedule zbv
check "fused cross-entropy bf16" tests/e2e/fused_ce_bf16.mpl
check "aliases of aliases (random program 8100021)" tests/e2e/ref_alias_chain.mpl
# every plan is checked (pass 112: the call could be deleted unseen): MPL_PLAN_BREAK=1 puts
# one buffer on another live at the same time, and mplc stops naming both
if { MPL_PLAN_BREAK=1 "$MPLC" tests/e2e/small_mlp.mpl -o "$tmp/broken.job"; } > "$tmp/broken.log" 2>&1; then
  bad "a broken plan (MPL_PLAN_BREAK=1) was accepted"
elif grep -qE 'plan: rank 0: %[0-9]+ \(micro-batch 0\) and %[0-9]+ \(micro-batch 0\) are live at once at overlapping offsets' "$tmp/broken.log" &&
     [ ! -e "$tmp/broken.job" ]; then
  ok "a broken plan is refused: $(grep -o 'plan: rank.*' "$tmp/broken.log")"
else bad "a broken plan: $(head -n 2 "$tmp/broken.log")"; fi
echo "$pass passed, $fail failed"
[ $fail = 0 ]
