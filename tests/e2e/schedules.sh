#!/usr/bin/env bash
# The schedule and the pipeline depth never change the math: a GPT without @stage,
# compiled for pp = 1, 2, 4 under every schedule, gives bitwise-identical params after
# 3 steps (same seed, --threads 1); so does tests/e2e/pipeline_edges.mpl (a shared param
# with one gradient, a loss that is an alias) against one stage. Also: every example's loss falls.
cd "$(dirname "$0")/../.."
source tests/tools/e2e_lib.sh

ref=""
for pp in 1 2 4; do
  for sched in sequential gpipe 1f1b "interleaved(2)" zb zbv; do
    name="pp${pp}_${sched//[()]/}"
    if ! "$BUILD/mplc" tests/e2e/small_gpt.mpl --mesh pp=$pp --schedule "$sched" -o "$tmp/$name.job" 2> "$tmp/$name.err"; then
      bad "$name: mplc failed: $(head -n 3 "$tmp/$name.err")"; continue
    fi
    if ! "$BUILD/mplrun" "$tmp/$name.job" --threads 1 --steps 3 -q --save "$tmp/$name.safetensors" > "$tmp/$name.log" 2>&1; then
      bad "$name: mplrun failed: $(tail -n 3 "$tmp/$name.log")"; continue
    fi
    if [ -z "$ref" ]; then ref=$name; ok "$name (reference)"; continue; fi
    if cmp -s "$tmp/$ref.safetensors" "$tmp/$name.safetensors"; then ok "$name bitwise equal to $ref"
    else bad "$name differs from $ref"; fi
  done
done

# a param shared by the stages whose second read has no gradient, and a loss that is an
# alias: pp = 2 (each schedule) gives the params of one stage, bitwise
m=tests/e2e/pipeline_edges.mpl
if "$BUILD/mplc" "$m" -D second=0 --mesh pp=1 -o "$tmp/edges1.job" 2> "$tmp/edges1.err" &&
   "$BUILD/mplrun" "$tmp/edges1.job" --threads 1 -q --save "$tmp/edges1.st" > "$tmp/edges1.log" 2>&1; then
  for sched in gpipe 1f1b zb; do
    if "$BUILD/mplc" "$m" --schedule $sched -o "$tmp/edges2.job" 2> "$tmp/edges2.err" &&
       "$BUILD/mplrun" "$tmp/edges2.job" --threads 1 -q --save "$tmp/edges2.st" > "$tmp/edges2.log" 2>&1 &&
       cmp -s "$tmp/edges1.st" "$tmp/edges2.st"; then ok "pipeline_edges at pp = 2, $sched: the params of one stage (bitwise)"
    else bad "pipeline_edges at pp = 2, $sched: $(tail -q -n 2 "$tmp/edges2.err" "$tmp/edges2.log")"; fi
  done
else bad "pipeline_edges at pp = 1: $(tail -q -n 2 "$tmp/edges1.err" "$tmp/edges1.log")"; fi

# a stage of no params feeding a later one past its neighbour: no gradient message reaches
# it (once one per stage edge, dropped by the job), and the params are pp = 1's, bitwise
m=tests/e2e/skip_no_grad.mpl
if "$BUILD/mplc" "$m" -D b=0 -D c=0 --mesh pp=1 -o "$tmp/skip1.job" 2> "$tmp/skip1.err" &&
   "$BUILD/mplrun" "$tmp/skip1.job" --threads 1 -q --save "$tmp/skip1.st" > "$tmp/skip1.log" 2>&1; then
  for sched in gpipe 1f1b zb; do
    if "$BUILD/mplc" "$m" --mesh pp=3 --schedule $sched --emit=schedule > "$tmp/skip3.sched" 2> "$tmp/skip3.err" &&
       "$BUILD/mplc" "$m" --mesh pp=3 --schedule $sched -o "$tmp/skip3.job" 2>> "$tmp/skip3.err" &&
       "$BUILD/mplrun" "$tmp/skip3.job" --threads 1 -q --save "$tmp/skip3.st" > "$tmp/skip3.log" 2>&1 &&
       cmp -s "$tmp/skip1.st" "$tmp/skip3.st"; then
      n0=$(grep -cE 'grad\(stage [0-9]+ (<-|->) 0,|grad\(stage 0 ' "$tmp/skip3.sched"); n21=$(grep -c 'send_grad(stage 2 -> 1,' "$tmp/skip3.sched")
      if [ "$n0" = 0 ] && [ "$n21" = 4 ]; then ok "skip_no_grad at pp = 3, $sched: pp = 1's params (bitwise), no gradient message to stage 0, 4 from 2 to 1"
      else bad "skip_no_grad at pp = 3, $sched: $n0 gradient messages touch stage 0 (want 0), $n21 from 2 to 1 (want 4)"; fi
    else bad "skip_no_grad at pp = 3, $sched: $(tail -q -n 2 "$tmp/skip3.err" "$tmp/skip3.log")"; fi
  done
else bad "skip_no_grad at pp = 1: $(tail -q -n 2 "$tmp/skip1.err" "$tmp/skip1.log")"; fi

# every example and test model trains: the loss of the last step is below the first
for m in tests/e2e/small_mlp.mpl tests/e2e/recompute.mpl examples/mlp.mpl examples/layers_on_devices.mpl; do
  name=$(basename "$m" .mpl)
  if ! "$BUILD/mplc" "$m" -o "$tmp/$name.job" 2> "$tmp/$name.err"; then bad "$name: mplc: $(head -n 3 "$tmp/$name.err")"; continue; fi
  steps=12
  if ! "$BUILD/mplrun" "$tmp/$name.job" --steps $steps --metrics "$tmp/$name.jsonl" -q > "$tmp/$name.log" 2>&1; then
    bad "$name: mplrun: $(tail -n 3 "$tmp/$name.log")"; continue
  fi
  first=$(head -n 1 "$tmp/$name.jsonl" | sed -E 's/.*"loss": ?([-0-9.eE+]+).*/\1/')
  last=$(tail -n 1 "$tmp/$name.jsonl" | sed -E 's/.*"loss": ?([-0-9.eE+]+).*/\1/')
  if awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }'; then ok "$name: loss $first -> $last"
  else bad "$name: loss did not fall ($first -> $last)"; fi
done
echo "$pass passed, $fail failed"
[ $fail = 0 ]
