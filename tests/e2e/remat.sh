#!/usr/bin/env bash
# Selective recomputation (compiler/remat.c, mplc's default; --no-remat turns it off) and the
# one-pass backward of every schedule but zb and zbv (partition.c, part_join_backward):
#  - the trained params are the same bits with and without it: the 4-layer GPT over 2
#    stages (1f1b, which joins the backward, and zb, which does not), in f32 and bf16, and
#    over tp = 2; the tanh chain (one pass);
#  - what is held: no GELU output and no LayerNorm output in the GPT's stash (the
#    --no-remat stash has both); the tanh chain holds every 9th tanh (the chain bound); a
#    value made from a held one and a constant is remade;
#  - GPT-2 124M, B 8, T 1024, bf16, one stage: the plan's arena and AdamW state within
#    PyTorch's bf16 torch.compile peak for that step (5.83 GiB, issue 14), and the arena
#    smaller than --no-remat's, which is smaller than zb's (two passes, no remat).
cd "$(dirname "$0")/../.."
source tests/tools/e2e_lib.sh

gpt=tests/e2e/small_gpt.mpl
chain=tests/e2e/remat_chain.mpl
same_params() { # NAME ARGS... : trains with and without --no-remat, compares the saved params
  local name=$1; shift
  if compile_run "$name" "$@" -- --threads 2 --steps 3 --save "$tmp/$name.st" &&
     compile_run "${name}_off" "$@" --no-remat -- --threads 2 --steps 3 --save "$tmp/${name}_off.st"; then
    if cmp -s "$tmp/$name.st" "$tmp/${name}_off.st"; then ok "$name: the same params, bit for bit, as --no-remat"
    else bad "$name: params differ from --no-remat's"; fi
  fi
}
same_params gpt_1f1b $gpt --mesh pp=2 --schedule 1f1b
same_params gpt_zb $gpt --mesh pp=2 --schedule zb
same_params gpt_bf16 $gpt --mesh pp=2 --precision bf16
same_params gpt_tp2 tests/e2e/parallel_gpt.mpl --mesh pp=1,tp=2,dp=1
same_params chain $chain

# ---- what is held ----------------------------------------------------------------------------
held() { "$MPLC" "$@" --emit=partition | grep -E '^%[0-9]+ = .* stash  #'; }
if held $gpt > "$tmp/on" && held $gpt --no-remat > "$tmp/off"; then
  on_g=$(grep -c '= gelu(' "$tmp/on"); off_g=$(grep -c '= gelu(' "$tmp/off")
  # a LayerNorm's output: x̂ * γ + β, an add of a mul (nn.mpl:40)
  on_ln=$(grep -c '= add(.*nn.mpl:40:10' "$tmp/on"); off_ln=$(grep -c '= add(.*nn.mpl:40:10' "$tmp/off")
  if [ "$on_g" = 0 ] && [ "$off_g" = 4 ] && [ "$on_ln" = 0 ] && [ "$off_ln" -ge 8 ] &&
     [ "$(wc -l < "$tmp/on")" -lt "$(wc -l < "$tmp/off")" ]; then
    ok "small_gpt holds $(wc -l < "$tmp/on") values (--no-remat: $(wc -l < "$tmp/off")): no GELU output (--no-remat: $off_g), no LayerNorm output ($off_ln)"
  else bad "small_gpt's stash: gelu $on_g/$off_g, layernorm outputs $on_ln/$off_ln, values $(wc -l < "$tmp/on")/$(wc -l < "$tmp/off")"; fi
fi
if held $chain > "$tmp/chain" && [ "$(grep -c '= tanh(' "$tmp/chain")" = 3 ] &&
   grep -q '^%6 = tanh' "$tmp/chain" && grep -q '^%15 = tanh' "$tmp/chain" && grep -q '^%24 = tanh' "$tmp/chain"; then
  ok "the 20-tanh chain holds the 1st, 10th and 19th tanh: no recomputation longer than 8 ops"
else bad "the tanh chain holds: $(grep -o '^%[0-9]* = tanh' "$tmp/chain" | tr '\n' ' ')"; fi

# a value made from a held one and a constant (no stage: pass 112) is remade, not held:
# h = tanh(x @ v) * 0.5 holds the tanh, and --no-remat holds the product too
printf '%s\n' 'model m(x: f32[B, 32], y: i32[B]) {' '  param v: f32[32, 32] = normal(0.1)' \
  '  param u: f32[32, 32] = normal(0.1)' '  param w: f32[32, 10] = normal(0.1)' '  h = tanh(x @ v) * 0.5' \
  '  return cross_entropy(tanh(h @ u) @ w, y)' '}' 'train m { batch = 8; optimizer = sgd(lr = 0.1) }' > "$tmp/const.mpl"
if held "$tmp/const.mpl" > "$tmp/c_on" && held "$tmp/const.mpl" --no-remat > "$tmp/c_off" &&
   [ "$(grep -c '= mul(' "$tmp/c_on")" = 0 ] && [ "$(grep -c '= mul(' "$tmp/c_off")" = 1 ] &&
   [ "$(grep -c '= tanh(' "$tmp/c_on")" = 2 ]; then
  ok "tanh(x @ v) * 0.5 is remade from the held tanh and the constant (--no-remat holds it)"
else bad "tanh(x @ v) * 0.5: held $(grep -o '= [a-z_]*(' "$tmp/c_on" | tr '\n' ' '), --no-remat $(grep -o '= [a-z_]*(' "$tmp/c_off" 2>/dev/null | tr '\n' ' ')"; fi
same_params const "$tmp/const.mpl"

# ---- GPT-2 124M's plan -------------------------------------------------------------------------
g2=(tests/bench/gpt.mpl -D vocab=50257 -D d=768 -D layers=12 -D heads=12 -D ctx=1024 -D batch=8 --precision bf16 --emit=plan)
# the arena, and the update phase's memory: optimizer state plus scratch (what mplrun allocates)
plan() { "$MPLC" "${g2[@]}" "$@" | awk '/arena \(peak\)/ { a = $3 } /optimizer state/ { o = $3 } /update scratch/ { s = $3 } END { printf "%.0f %.0f\n", a, o + s }'; }
read -r a o <<< "$(plan)"; read -r a_off _ <<< "$(plan --no-remat)"; read -r a_zb _ <<< "$(plan --schedule zb --no-remat)"
limit=$((583 * 1024 * 1024 * 1024 / 100)) # 5.83 GiB
if [ -n "$a" ] && [ -n "$o" ] && [ $((a + o)) -le $limit ] && [ "$a" -lt "$a_off" ] && [ "$a_off" -lt "$a_zb" ]; then
  ok "GPT-2 124M bf16 plan: arena $a + update state (AdamW, scratch) $o = $(awk -v b=$((a + o)) 'BEGIN { printf "%.2f", b / 2^30 }') GiB <= 5.83; arena --no-remat $a_off, zb without remat $a_zb"
else bad "GPT-2 124M bf16 plan: arena '$a' + update state '$o' (limit $limit); --no-remat '$a_off'; zb '$a_zb'"; fi
echo "$pass passed, $fail failed"
[ $fail = 0 ]
