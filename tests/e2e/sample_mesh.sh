#!/bin/bash
# --sample on any mesh: every rank runs the token's forward through the mesh's own messages
# and collectives (exec.c's rank_sample), so a job compiled for pipeline, tensor or data
# parallelism samples what the same params give on one device.
#  - first against an independent reference: a bigram model (tests/e2e/bigram_lm.mpl)
#    trained 3 steps, its greedy text (--temperature 0, 24 tokens) computed from the saved
#    params in float64 by tests/tools/bigram_greedy.py: the same bytes from mplrun at
#    pp = 1 with the fused cross-entropy and without, pp = 2, tp = 2 (the head split,
#    all-reduced), and under mpirun -np 2 at tp = 2;
#  - a small Llama (GQA, RoPE, SwiGLU) trained 12 steps on one device, its params saved;
#    sampled (temperature 1, one seed, 48 tokens) from them at pp = 1, on threads at pp = 2
#    (1f1b, and interleaved(2): a rank with two stages), tp = 2 and pp = 2 x tp = 2: the same
#    text as pp = 1, byte for byte (tp sums in another order; at this size no token's draw
#    falls within that rounding of another's);
#  - the MoE example (experts split over tp) at tp = 1 and tp = 2: the same text;
#  - under mpirun (one rank per process): pp = 2 x tp = 2 and dp = 2 x tp = 2 (-np 4; the
#    second replica idles): the same text, on world rank 0's stdout alone;
#  - processes started with different prompts are refused at the start, naming --sample.
# Before, --sample refused tp > 1 and mpirun.
cd "$(dirname "$0")/../.."
source tests/tools/e2e_lib.sh
finish() { echo "$pass passed, $fail failed"; [ $fail = 0 ]; exit; }

B=tests/e2e/bigram_lm.mpl
if "$MPLC" "$B" -o "$tmp/bg.job" > "$tmp/bg.log" 2>&1 && "$MPLRUN" "$tmp/bg.job" --threads 1 -q --save "$tmp/bg.st" >> "$tmp/bg.log" 2>&1 &&
   "$PY" tests/tools/bigram_greedy.py "$tmp/bg.st" "The " 24 > "$tmp/bg.ref" 2>> "$tmp/bg.log"; then
  for v in "pp=1" "pp=1 --no-fused-ce" "pp=2" "tp=2"; do
    read -ra va <<< "$v"
    if "$MPLC" "$B" --mesh "${va[@]}" -o "$tmp/bgm.job" > "$tmp/bgm.log" 2>&1 &&
       "$MPLRUN" "$tmp/bgm.job" --threads 1 --init "$tmp/bg.st" --sample 24 --prompt "The " --temperature 0 > "$tmp/bgm.txt" 2>> "$tmp/bgm.log" &&
       cmp -s "$tmp/bgm.txt" "$tmp/bg.ref"; then ok "bigram at $v: the greedy text computed in float64 from its params"
    else bad "bigram at $v: [$(od -An -c "$tmp/bgm.txt" | head -c 60)] against [$(od -An -c "$tmp/bg.ref" | head -c 60)]; $(tail -n 1 "$tmp/bgm.log")"; fi
  done
else bad "the bigram model for the reference: $(tail -n 2 "$tmp/bg.log")"; fi

L=(examples/llama.mpl -D d=64 -D heads=4 -D kv_heads=2 -D hidden=96 -D layers=4 -D ctx=32 -D batch=8)
S=(--sample 48 --prompt "The " --seed 11)
if ! "$MPLC" "${L[@]}" -D stages=1 -o "$tmp/l1.job" > "$tmp/c.log" 2>&1 ||
   ! "$MPLRUN" "$tmp/l1.job" --steps 12 --save "$tmp/l.st" -q > "$tmp/t.log" 2>&1; then
  bad "the Llama for sampling: $(tail -n 3 "$tmp/c.log" "$tmp/t.log")"; finish
fi
"$MPLRUN" "$tmp/l1.job" --init "$tmp/l.st" "${S[@]}" > "$tmp/ref.txt" 2> "$tmp/ref.err"
if [ "$(wc -c < "$tmp/ref.txt")" = 53 ] && [ "$(head -c 4 "$tmp/ref.txt")" = "The " ]; then
  ok "pp = 1 samples 48 tokens: $(head -c 40 "$tmp/ref.txt" | tr '\n' ' ')..."
else bad "pp = 1 sampling: $(head -n 2 "$tmp/ref.err") [$(head -c 60 "$tmp/ref.txt")]"; finish; fi

# same_text NAME MPLC-ARGS... -- MPLRUN-PREFIX...: compiled, sampled, compared with ref.txt
same_text() {
  local name=$1; shift
  local cargs=() pre=()
  while [ "$1" != -- ]; do cargs+=("$1"); shift; done
  shift; pre=("$@")
  if ! "$MPLC" "${cargs[@]}" -o "$tmp/$name.job" > "$tmp/$name.cerr" 2>&1; then
    bad "$name: mplc $(head -n 2 "$tmp/$name.cerr")"; return
  fi
  "${pre[@]}" "$MPLRUN" "$tmp/$name.job" --threads 1 --init "$tmp/$REF.st" "${S[@]}" > "$tmp/$name.txt" 2> "$tmp/$name.err"
  if cmp -s "$tmp/$name.txt" "$tmp/$REF.txt"; then ok "$name samples the text of one device"
  else bad "$name: [$(head -c 50 "$tmp/$name.txt" | tr '\n' ' ')] against [$(head -c 50 "$tmp/$REF.txt" | tr '\n' ' ')]; $(grep -v '^$' "$tmp/$name.err" | tail -n 2)"; fi
}
REF=ref; cp "$tmp/l.st" "$tmp/ref.st"
same_text "pp=2 1f1b" "${L[@]}" -D stages=2 --
same_text "pp=2 interleaved(2)" "${L[@]}" -D stages=4 --mesh pp=2 --schedule 'interleaved(2)' --
same_text "tp=2" "${L[@]}" -D stages=1 --mesh tp=2 --
same_text "pp=2 x tp=2" "${L[@]}" -D stages=2 --mesh pp=2,tp=2 --

# the MoE example: experts split over tp
M=(examples/moe.mpl -D d=32 -D heads=2 -D hidden=64 -D ctx=16)
if "$MPLC" "${M[@]}" --mesh tp=1 -o "$tmp/moe1.job" > "$tmp/mc.log" 2>&1 &&
   "$MPLRUN" "$tmp/moe1.job" --steps 8 --save "$tmp/moe.st" -q > "$tmp/mt.log" 2>&1 &&
   "$MPLRUN" "$tmp/moe1.job" --init "$tmp/moe.st" "${S[@]}" > "$tmp/moe.txt" 2> "$tmp/moe.err"; then
  REF=moe
  same_text "MoE tp=2" "${M[@]}" --mesh tp=2 --
else bad "the MoE for sampling: $(tail -n 2 "$tmp/mc.log" "$tmp/mt.log" "$tmp/moe.err")"; fi

# under mpirun
if ! command -v mpirun > /dev/null 2>&1 || ! ldd "$MPLRUN" 2>/dev/null | grep -q libmpi; then
  echo "skip: no mpirun, or mplrun without MPI (the mpirun checks)"; finish
fi
MPIRUN=(timeout 120 mpirun --oversubscribe)
[ "$(id -u)" = 0 ] && MPIRUN+=(--allow-run-as-root)
if [ -s "$tmp/bg.ref" ] && "$MPLC" "$B" --mesh tp=2 -o "$tmp/bgt.job" > /dev/null 2>&1 &&
   "${MPIRUN[@]}" -np 2 "$MPLRUN" "$tmp/bgt.job" --threads 1 --init "$tmp/bg.st" --sample 24 --prompt "The " --temperature 0 \
     > "$tmp/bgt.txt" 2> "$tmp/bgt.err" && cmp -s "$tmp/bgt.txt" "$tmp/bg.ref"
then ok "bigram at tp = 2 under mpirun -np 2: the greedy text computed in float64"
else bad "bigram under mpirun: [$(od -An -c "$tmp/bgt.txt" | head -c 60)]; $(tail -n 1 "$tmp/bgt.err")"; fi
REF=ref
same_text "mpirun -np 4, pp=2 x tp=2" "${L[@]}" -D stages=2 --mesh pp=2,tp=2 -- "${MPIRUN[@]}" -np 4
same_text "mpirun -np 4, dp=2 x tp=2" "${L[@]}" -D stages=1 --mesh dp=2,tp=2 -- "${MPIRUN[@]}" -np 4
# different prompts on the two processes: refused before any token
"${MPIRUN[@]}" -np 1 "$MPLRUN" "$tmp/pp=2 1f1b.job" --threads 1 --init "$tmp/l.st" --sample 4 --prompt "ab" : \
  -np 1 "$MPLRUN" "$tmp/pp=2 1f1b.job" --threads 1 --init "$tmp/l.st" --sample 4 --prompt "cd" > "$tmp/diff.out" 2> "$tmp/diff.err"
rc=$?
if [ $rc != 0 ] && [ $rc != 124 ] && grep -q "different jobs or settings.*--sample" "$tmp/diff.err" && ! grep -q '[a-z]' "$tmp/diff.out"; then
  ok "mpirun with a different --prompt per process: refused (exit $rc), nothing sampled"
else bad "different prompts under mpirun: exit $rc, $(head -n 2 "$tmp/diff.err") [$(head -c 40 "$tmp/diff.out")]"; fi
finish
