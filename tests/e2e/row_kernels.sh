#!/usr/bin/env bash
# Row kernels that store a fused chain in their first loop and load it in their other loops
# (compiler/fuse_rows.c picks them, compiler/fuse_emit.c's emit_early_stores writes the loop):
#  - the same params bit for bit at --threads 1 and 2 (the kernels' rows split over the
#    threads: a row read back from a row another thread has not stored would show) on
#    tests/e2e/row_chains.mpl, row_chains_t.mpl (read across rows: never stored early) and
#    balance_model.mpl at pp = 1;
#  - balance_model.mpl (twelve exp/tanh chains before the loss) at pp = 1 and pp = 2: the
#    same params bit for bit, though the last chain is fused into the loss's kernel at
#    pp = 1 and into an elementwise kernel of the other stage at pp = 2;
#  - the loss's kernel at pp = 1 computes the tanh of the chains fused into it in its first
#    loop only: none from its max and sum loops on (before, each loop had them all).
# (tests/unit/test_refstep.c checks row_chains and row_chains_t against the float64 reference.)
cd "$(dirname "$0")/../.."
source tests/tools/e2e_lib.sh

# same_bits NAME MPLC-ARGS...: --threads 1 and 2, 3 steps each, params compared
same_bits() {
  local name=$1; shift
  if compile_run "${name}_1" "$@" -- --threads 1 --steps 3 --save "$tmp/${name}_1.st" &&
     compile_run "${name}_2" "$@" -- --threads 2 --steps 3 --save "$tmp/${name}_2.st"; then
    if cmp -s "$tmp/${name}_1.st" "$tmp/${name}_2.st"; then ok "$name: --threads 1 and 2 give the same params, bit for bit"
    else bad "$name: params differ between --threads 1 and 2"; fi
  fi
}
same_bits row_chains tests/e2e/row_chains.mpl
same_bits row_chains_t tests/e2e/row_chains_t.mpl
same_bits balance_pp1 tests/e2e/balance_model.mpl --mesh pp=1 --no-remat

model=tests/e2e/balance_model.mpl
if compile_run pp1 "$model" --mesh pp=1 --no-remat -- --threads 1 --steps 3 --save "$tmp/pp1.st" &&
   compile_run pp2 "$model" --no-remat -- --threads 1 --steps 3 --save "$tmp/pp2.st"; then
  if cmp -s "$tmp/pp1.st" "$tmp/pp2.st"; then ok "balance_model: pp = 1 and pp = 2 give the same params, bit for bit"
  else bad "balance_model: params differ between pp = 1 and pp = 2"; fi
fi

# the forward's loss kernel at pp = 1: the chains before it are fused into it; each tanh once
if "$MPLC" "$model" --mesh pp=1 --no-remat --emit=kernels > "$tmp/k.txt" 2> "$tmp/err"; then
  name=$(sed -nE 's/^step [0-9]+: kernel (k[0-9]+_ce_rows)\(.*/\1/p' "$tmp/k.txt" | head -n 1)
  n=$(awk -v k="kernel $name(" 'index($0, k) == 1 { on = 1 } on && /TANH/ { t++ } on && /^}/ { exit } END { print t + 0 }' "$tmp/k.txt")
  late=$(awk -v k="kernel $name(" 'index($0, k) == 1 { on = 1 } on && /loop\.(max|sum)/ { red = 1 } on && red && /TANH/ { t++ } on && /^}/ { exit } END { print t + 0 }' "$tmp/k.txt")
  if [ -n "$name" ] && [ "$n" -gt 0 ] && [ "$late" = 0 ]; then
    ok "balance_model: the loss's kernel $name computes its chains' $n tanh before its max and sum loops, none after"
  else bad "balance_model: the loss's kernel ${name:-?}: $n TANH, $late of them from its max and sum loops on"; fi
else bad "balance_model: mplc --emit=kernels: $(head -n 3 "$tmp/err")"; fi

echo "$pass passed, $fail failed"
[ $fail = 0 ]
