#!/usr/bin/env bash
# Every tests/golden/ok_*.mpl (with the flags of its "# args:" line, less --emit)
# compiled all the way to a job file with -o: mplc either writes a job that
# `mplrun --inspect` loads, or reports a located diagnostic (bf16 kernels); it never
# aborts. The goldens stop at --emit dumps, so the lowering after them (fusion of the
# whole program, codegen, NVRTC, the job writer) is checked here; ok_matmul.mpl once
# died in fuse.c ("reshape has no buffer when needed") on a reshape of a reshape.
cd "$(dirname "$0")/../.."
source tests/tools/e2e_lib.sh
must_write=(ok_matmul ok_gpt_tiny ok_nn_gpt ok_neural ok_shape_ops ok_reductions ok_broadcast)
for src in tests/golden/ok_*.mpl; do
  name=$(basename "$src" .mpl)
  first=$(head -n 1 "$src") args=()
  if [[ "$first" == "# args:"* ]]; then read -ra args <<< "${first#"# args:"}"; fi
  flags=()
  for a in "${args[@]}"; do [[ "$a" == --emit* ]] || flags+=("$a"); done
  input=$src second=$(sed -n 2p "$src") # "# input: PATH" as in tests/golden/run.sh
  if [[ "$second" == "# input:"* ]]; then read -r input <<< "${second#"# input:"}"; fi
  job=$tmp/$name.job
  timeout 60 "$BUILD/mplc" "$input" "${flags[@]}" -o "$job" > "$tmp/out" 2>&1
  rc=$?
  if [ $rc -ge 124 ] || grep -qiE 'internal error|assert|segmentation|core dumped' "$tmp/out"; then
    bad "$name: exit $rc: $(head -n 2 "$tmp/out")"
  elif [ $rc != 0 ]; then
    if [[ " ${must_write[*]} " == *" $name "* ]]; then bad "$name: exit $rc: $(head -n 2 "$tmp/out")"
    elif grep -qE "^$input:[0-9]+:[0-9]+: error:" "$tmp/out"; then ok "$name: located error: $(head -n 1 "$tmp/out")"
    else bad "$name: exit $rc without a located error: $(head -n 2 "$tmp/out")"; fi
  elif ! "$BUILD/mplrun" --inspect "$job" > /dev/null 2> "$tmp/err"; then
    bad "$name: mplrun --inspect: $(head -n 2 "$tmp/err")"
  else ok "$name: job written and loaded"; fi
done
# GPT-2 small on the full mesh: 16 ranks, each with its memory and communication in the plan
plan=$tmp/gpt2_mesh.plan
if timeout 60 "$BUILD/mplc" examples/gpt2.mpl --mesh pp=4,tp=2,dp=2 --emit=plan > "$plan" 2>&1 &&
   grep -q '^mesh: 16 ranks' "$plan" && [ "$(grep -c '^ranks .*: stages' "$plan")" = 4 ] &&
   [ "$(grep -c 'arena (peak)' "$plan")" = 4 ] && grep -q 'tp_allreduce' "$plan" && grep -q 'dp_allreduce' "$plan"; then
  ok "examples/gpt2.mpl at pp=4,tp=2,dp=2: the plan covers 16 ranks ($(grep -m1 'arena (peak)' "$plan" | sed 's/  */ /g'))"
else bad "gpt2 at pp=4,tp=2,dp=2: $(head -n 3 "$plan")"; fi
if timeout 60 "$BUILD/mplc" examples/gpt2.mpl --mesh pp=4,tp=2,dp=2 -o "$tmp/gpt2.job" > "$tmp/out" 2>&1 &&
   "$BUILD/mplrun" --inspect "$tmp/gpt2.job" > "$tmp/inspect" 2>&1 && grep -q 'mesh: dp=2 pp=4 tp=2' "$tmp/inspect"; then
  ok "examples/gpt2.mpl at pp=4,tp=2,dp=2: job written and loaded"
else bad "gpt2 job at pp=4,tp=2,dp=2: $(head -n 2 "$tmp/out") $(head -n 2 "$tmp/inspect" 2>/dev/null)"; fi
# the micro-batch bound is usable: the arena plan walked every placed buffer below each
# new one's offset, quadratic in micro-batches (65536 of a 2-stage MLP: over 5 minutes; now
# about 2 s); GPT-2 at pp = 4 with 512 micro-batches (63 s, now about 3)
sed -e 's/^  batch = [0-9]*/  batch = 65536/' examples/mlp.mpl > "$tmp/mlp64k.mpl"
if timeout 120 "$BUILD/mplc" "$tmp/mlp64k.mpl" --microbatches 65536 -o "$tmp/mlp64k.job" > "$tmp/out" 2>&1 &&
   "$BUILD/mplrun" --inspect "$tmp/mlp64k.job" 2>&1 | grep -q 'microbatches 65536'; then
  ok "examples/mlp.mpl with 65536 micro-batches (the bound): job written and loaded within 2 minutes"
else bad "mlp with 65536 micro-batches: $(head -n 2 "$tmp/out")"; fi
sed -e 's/^  batch = 16$/  batch = 512/' examples/gpt2.mpl > "$tmp/gpt2_512.mpl"
if timeout 120 "$BUILD/mplc" "$tmp/gpt2_512.mpl" -I stdlib --microbatches 512 --emit=plan > "$tmp/plan512" 2>&1 &&
   [ "$(grep -c 'arena (peak)' "$tmp/plan512")" = 4 ]; then
  ok "examples/gpt2.mpl at pp = 4 with 512 micro-batches: planned within 2 minutes ($(grep -m1 'arena (peak)' "$tmp/plan512" | sed 's/  */ /g'))"
else bad "gpt2 with 512 micro-batches: $(head -n 2 "$tmp/plan512")"; fi
# gpipe holds every micro-batch's stash until the backward: each one's lifetime meets every
# other's, and the plan walked them one by one (a 4-stage small GPT with 1,024 micro-batches
# 10.5 s, 4,096 131 s; now the unions of bytes of a tree over start times: 1.8 s and 4.1 s)
sed -e 's/^  batch = [0-9]*/  batch = 2048/' tests/e2e/small_gpt.mpl > "$tmp/sg2k.mpl"
t0=$EPOCHREALTIME
if timeout 60 "$BUILD/mplc" "$tmp/sg2k.mpl" --mesh pp=4 --schedule gpipe --microbatches 2048 -o "$tmp/sg2k.job" > "$tmp/out" 2>&1 &&
   "$BUILD/mplrun" --inspect "$tmp/sg2k.job" 2>&1 | grep -q 'microbatches 2048'; then
  ok "tests/e2e/small_gpt.mpl at pp = 4, gpipe, 2048 micro-batches: planned in $(LC_ALL=C printf '%.1f' "$(echo "$EPOCHREALTIME - $t0" | bc)") s (within a minute)"
else bad "small_gpt under gpipe with 2048 micro-batches: $(head -n 2 "$tmp/out")"; fi
# A chain of 2,000 fused multiplies: kernels of at most 128 ops, so none stores more than a
# few dozen values (one kernel of 226 arguments before; at 4,000 one of 448 took 3.3 s of
# LLVM's alias analysis), and the job is written
if timeout 120 "$BUILD/mplc" tests/e2e/long_chain.mpl -D n=2000 --emit=kernels > "$tmp/chain.k" 2>&1 &&
   timeout 120 "$BUILD/mplc" tests/e2e/long_chain.mpl -D n=2000 -o "$tmp/chain.job" > "$tmp/out" 2>&1; then
  most=$(grep '^kernel' "$tmp/chain.k" | awk -F'a[0-9]+: ' '{print NF-1}' | sort -n | tail -1)
  nk=$(grep -c '^kernel' "$tmp/chain.k")
  if [ "$most" -le 40 ] && [ "$nk" -ge 15 ]; then ok "a chain of 2,000 multiplies: $nk kernels, the largest with $most arguments"
  else bad "a chain of 2,000 multiplies: $nk kernels, the largest with $most arguments (at most 40 expected)"; fi
else bad "a chain of 2,000 multiplies: $(head -n 2 "$tmp/out" "$tmp/chain.k")"; fi
echo "$pass passed, $fail failed"
[ $fail = 0 ]
