#!/usr/bin/env bash
# precision (LANGUAGE.md, "Precision") end to end on the CPU:
#  - f32 is what a program was before the key existed: mplc --precision f32 gives the
#    same CUDA source, LLVM IR, kernels and job bytes as no flag; tf32 the same kernels
#    (only the GEMM and fused sdpa steps say tf32, and the job's precision byte);
#  - the GPU test GPT (tests/gpu/models/gpt_sgd.mpl) trained 20 steps in bf16 on the
#    CPU: its loss curve within 1e-2 relative of the f32 run's, and not equal to it;
#  - bf16 never lets the schedule, the pipeline or @recompute change the math: pp = 1, 2, 4
#    under 1f1b and zb give bitwise-identical params, and so do tests/e2e/recompute.mpl and
#    the same without @recompute; tp = 2 and dp = 2 x tp = 2 train like tp = 1 (within 1e-3);
#  - the CPU's bf16 units (oneDNN's bf16 GEMM on a CPU with avx512_bf16) and the f32
#    product they fall back to (MPL_CPU_BF16=0) train the same GPT made wider (d 256, T
#    128, so that its products take the bf16 units) within 1e-3 relative, and the units
#    were used where the CPU has them;
#  - bf16 storage (the roundings in 2 bytes) trains to the bits of --no-bf16-storage under
#    the f32 product, with a smaller planned arena;
#  - a program's own bf16 and f16 tensors train like the program in f32 (10 steps within 1e-2,
#    not equal), the same bits on one stage and two; their constants are taken as PyTorch
#    takes a Python number (tests/e2e/half_scalars.mpl, against a float64 emulation);
#  - sums of products the compiler makes are rounded once (tests/e2e/bf16_sums.mpl).
cd "$(dirname "$0")/../.."
source tests/tools/e2e_lib.sh

gpt=tests/gpu/models/gpt_sgd.mpl
# ---- f32 and tf32 change no kernel -------------------------------------------------------
same=1
for e in cuda llvm kernels; do
  "$MPLC" examples/gpt_tiny.mpl --emit=$e > "$tmp/none.$e" 2>&1
  "$MPLC" examples/gpt_tiny.mpl --emit=$e --precision f32 > "$tmp/f32.$e" 2>&1
  "$MPLC" examples/gpt_tiny.mpl --emit=$e --precision tf32 > "$tmp/tf32.$e" 2>&1
  cmp -s "$tmp/none.$e" "$tmp/f32.$e" || { bad "--precision f32 changes --emit=$e"; same=0; }
  [ $e = kernels ] && sed -i 's/ tf32$//' "$tmp/tf32.$e"
  cmp -s "$tmp/none.$e" "$tmp/tf32.$e" || { bad "--precision tf32 changes --emit=$e beyond the GEMM and sdpa steps"; same=0; }
done
"$MPLC" examples/gpt_tiny.mpl -o "$tmp/none.job" && "$MPLC" examples/gpt_tiny.mpl --precision f32 -o "$tmp/f32.job"
cmp -s "$tmp/none.job" "$tmp/f32.job" || { bad "--precision f32 changes the job's bytes"; same=0; }
"$MPLC" examples/gpt_tiny.mpl --emit=kernels --precision tf32 > "$tmp/tf32k.txt" 2>&1
n=$(grep -c ' tf32$' "$tmp/tf32k.txt")
na=$(grep ' tf32$' "$tmp/tf32k.txt" | grep -c 'sdpa')
[ "$n" -gt "$na" ] && [ "$na" -gt 0 ] || { bad "tf32: $n steps say tf32, $na of them sdpa steps (want GEMM and sdpa steps)"; same=0; }
[ $same = 1 ] && ok "gpt_tiny: --precision f32 is the default's bits (CUDA, LLVM, kernels, job); tf32 marks its $n GEMM and sdpa steps ($na sdpa) only"

if "$MPLC" $gpt --precision bf16 --emit=graph | grep -q '^#   optimizer.* precision=bf16$' &&
   "$MPLC" $gpt --precision bf16 -o "$tmp/p.job" && "$MPLRUN" "$tmp/p.job" --inspect | grep -q 'precision bf16$'; then
  ok "the precision is on --emit=graph's train line and in the job (--inspect)"
else
  bad "precision missing from --emit=graph or --inspect"
fi

# ---- the GPU test GPT, 20 steps: bf16 against f32 ----------------------------------------
if compile_run f32 $gpt -- --threads 1 --steps 20 --metrics "$tmp/f32.jsonl" &&
   compile_run bf16 $gpt --precision bf16 -- --threads 1 --steps 20 --metrics "$tmp/bf16.jsonl"; then
  if out=$("$PY" tests/tools/losscompare.py "$tmp/bf16.jsonl" "$tmp/f32.jsonl" 1e-2); then
    ok "gpt_sgd 20 steps, bf16 against f32: $out"
  else
    bad "gpt_sgd 20 steps, bf16 against f32: $out"
  fi
  if "$PY" tests/tools/losscompare.py "$tmp/bf16.jsonl" "$tmp/f32.jsonl" 1e-7 > /dev/null; then
    bad "bf16's loss curve equals f32's: nothing was rounded"
  fi
fi

# ---- schedules and meshes -----------------------------------------------------------------
ref=""
for m in pp=1 pp=2 pp=4; do
  for s in 1f1b zb; do
    compile_run "$m.$s" $gpt --precision bf16 --mesh $m --schedule $s -- --threads 1 --steps 3 --save "$tmp/$m.$s.st" || continue
    [ -z "$ref" ] && ref=$tmp/$m.$s.st
    cmp -s "$ref" "$tmp/$m.$s.st" || bad "bf16 $m $s: params differ from pp=1 1f1b's"
  done
done
[ -n "$ref" ] && [ $fail = 0 ] && ok "bf16: pp = 1, 2, 4 under 1f1b and zb give bitwise-identical params"
sed 's/ @recompute//' tests/e2e/recompute.mpl > "$tmp/plain.mpl"
if compile_run rc tests/e2e/recompute.mpl --precision bf16 -- --threads 1 --steps 3 --save "$tmp/rc.st" &&
   compile_run plain "$tmp/plain.mpl" --precision bf16 -- --threads 1 --steps 3 --save "$tmp/plain.st"; then
  if cmp -s "$tmp/rc.st" "$tmp/plain.st"; then ok "bf16: @recompute gives bitwise the same params"
  else bad "bf16: @recompute changes the params"; fi
fi
for m in tp=1 tp=2 dp=2,tp=2; do
  compile_run "$m" tests/e2e/parallel_gpt.mpl --precision bf16 --mesh $m -- --threads 1 --steps 5 --metrics "$tmp/$m.jsonl"
done
for m in tp=2 dp=2,tp=2; do
  if out=$("$PY" tests/tools/losscompare.py "$tmp/$m.jsonl" "$tmp/tp=1.jsonl" 1e-3); then ok "bf16 $m against tp=1: $out"
  else bad "bf16 $m against tp=1: $out"; fi
done

# ---- the CPU's bf16 units against the f32 product -------------------------------------------
wide=(-D d=256 -D ctx=128)
if compile_run units $gpt "${wide[@]}" --precision bf16 -- --threads 1 --steps 4 --metrics "$tmp/units.jsonl"; then
  MPL_CPU_BF16=0 "$MPLRUN" "$tmp/units.job" -q --threads 1 --steps 4 --metrics "$tmp/sgemm.jsonl" > "$tmp/sgemm.log" 2>&1 ||
    bad "MPL_CPU_BF16=0: $(tail -n 3 "$tmp/sgemm.log")"
  if out=$("$PY" tests/tools/losscompare.py "$tmp/units.jsonl" "$tmp/sgemm.jsonl" 1e-3); then
    ok "wide gpt_sgd 4 steps, bf16 units against MPL_CPU_BF16=0 (sgemm): $out"
  else
    bad "wide gpt_sgd, bf16 units against sgemm: $out"
  fi
  units=$(MPL_CPU_PROFILE=1 "$MPLRUN" "$tmp/units.job" -q --threads 1 --steps 1 2>&1 | sed -n 's/.*bf16 units: //p')
  if grep -qw avx512_bf16 /proc/cpuinfo 2> /dev/null; then
    if [ "${units:-0}" -gt 0 ]; then ok "avx512_bf16: $units products of a step ran in bf16 units"
    else bad "this CPU has avx512_bf16 but no product ran in bf16 units (${units:-none})"; fi
  else
    echo "note: no avx512_bf16 here; both runs used the f32 product"
  fi
fi

# ---- bf16 storage: 2 bytes a rounding, the same bits ------------------------------------------
# The roundings (and views of them) that kernels, products and the fused attention read are
# stored as bf16; --no-bf16-storage keeps them in f32. Widening is exact and a product takes
# the same path whatever its operands' storage, so both train to the same bits, with the CPU's
# bf16 units where it has them; the plan's arena is smaller.
for prog in "$gpt --mesh pp=2" "examples/llama.mpl"; do
  set -- $prog
  name=$(basename "$1" .mpl)
  arena() { "$MPLC" "$@" --precision bf16 --emit=plan | awk '/arena \(peak\)/ { s += $3 } END { print s + 0 }'; }
  a2=$(arena "$@"); a4=$(arena "$@" --no-bf16-storage)
  nb=$("$MPLC" "$@" --precision bf16 --emit=kernels | grep -c ': bf16 ')
  if "$MPLC" "$@" --precision bf16 -o "$tmp/s2.job" && "$MPLC" "$@" --precision bf16 --no-bf16-storage -o "$tmp/s4.job" &&
     "$MPLRUN" "$tmp/s2.job" -q --threads 1 --steps 2 --save "$tmp/s2.st" > "$tmp/s2.log" 2>&1 &&
     "$MPLRUN" "$tmp/s4.job" -q --threads 1 --steps 2 --save "$tmp/s4.st" > "$tmp/s4.log" 2>&1; then
    if cmp -s "$tmp/s2.st" "$tmp/s4.st" && [ "$nb" -gt 0 ] && [ "$a2" -lt "$a4" ]; then
      ok "$name ($*): bf16 storage trains to the --no-bf16-storage params bit for bit; $nb kernel arguments bf16; arena $a2 < $a4 bytes (all ranks)"
    else bad "$name: bf16 storage: params $(cmp -s "$tmp/s2.st" "$tmp/s4.st" && echo same || echo differ), $nb bf16 arguments, arena $a2 vs $a4"; fi
  else bad "$name: bf16 storage against --no-bf16-storage: $(tail -n 3 "$tmp/s2.log" "$tmp/s4.log" 2>/dev/null)"; fi
done

# ---- a program's own bf16 and f16 tensors -------------------------------------------------------
# tests/e2e/half_bf16.mpl and half_f16.mpl (every op computed in f32 and rounded to its type):
# 10 steps within 1e-2 relative of the same program in f32 and not equal to it; one stage and
# two give the same params bit for bit
sed 's/bf16/f32/g' tests/e2e/half_bf16.mpl > "$tmp/half_f32.mpl"
if compile_run hf32 "$tmp/half_f32.mpl" -- --threads 1 --steps 10 --metrics "$tmp/hf32.jsonl"; then
  for t in bf16 f16; do
    compile_run "h$t" tests/e2e/half_$t.mpl -- --threads 1 --steps 10 --metrics "$tmp/h$t.jsonl" --save "$tmp/h$t.st" || continue
    if out=$("$PY" tests/tools/losscompare.py "$tmp/h$t.jsonl" "$tmp/hf32.jsonl" 1e-2) &&
       ! "$PY" tests/tools/losscompare.py "$tmp/h$t.jsonl" "$tmp/hf32.jsonl" 1e-7 > /dev/null; then
      ok "half_$t.mpl, 10 steps against the program in f32: $out"
    else bad "half_$t.mpl against f32: $out"; fi
    if compile_run "h${t}1" tests/e2e/half_$t.mpl --mesh pp=1 -- --threads 1 --steps 10 --save "$tmp/h${t}1.st" &&
       cmp -s "$tmp/h$t.st" "$tmp/h${t}1.st"; then ok "half_$t.mpl: pp = 1 and pp = 2 give the same params bit for bit"
    else bad "half_$t.mpl: pp = 1 and pp = 2 differ"; fi
  done
fi
# ---- a half program's constants as PyTorch takes a Python number (tests/e2e/half_scalars.mpl) ----
for t in bf16 f16; do
  sed "s/bf16/$t/g" tests/e2e/half_scalars.mpl > "$tmp/hs_$t.mpl"
  if "$PY" tests/tools/half_scalars.py init $t "$tmp/hs_$t.init.st" > "$tmp/hs_$t.cmp" 2>&1 &&
     compile_run "hs0_$t" "$tmp/hs_$t.mpl" -- --threads 1 --init "$tmp/hs_$t.init.st" --steps 0 --save "$tmp/hs_$t.0.st" &&
     compile_run "hs1_$t" "$tmp/hs_$t.mpl" -- --threads 1 --init "$tmp/hs_$t.init.st" --save "$tmp/hs_$t.1.st"; then
    if "$PY" tests/tools/half_scalars.py check $t "$tmp/hs_$t.0.st" "$tmp/hs_$t.1.st" > "$tmp/hs_$t.cmp" 2>&1; then
      ok "$t constants as PyTorch takes a Python number: arithmetic in f32 (a * 0.3, mean's 1/3 forward and backward), a comparison with the $t rounding, as a float64 emulation"
    else bad "$t constants: $(grep -h FAIL "$tmp/hs_$t.cmp" | head -n 3)"; fi
  else bad "$t constants: $(tail -n 3 "$tmp/hs_$t.cmp")"; fi
done
# ---- sums of products rounded once (tests/e2e/bf16_sums.mpl, against a float64 emulation) ----
for tp in 1 2; do
  if "$MPLC" tests/e2e/bf16_sums.mpl --mesh tp=$tp -o "$tmp/sums$tp.job" > "$tmp/sums$tp.log" 2>&1 &&
     "$MPLRUN" "$tmp/sums$tp.job" --threads 1 -q --steps 0 --save "$tmp/sums$tp.0.st" >> "$tmp/sums$tp.log" 2>&1 &&
     "$MPLRUN" "$tmp/sums$tp.job" --threads 1 -q --save "$tmp/sums$tp.1.st" >> "$tmp/sums$tp.log" 2>&1 &&
     "$PY" tests/tools/bf16_sums.py "$tmp/sums$tp.0.st" "$tmp/sums$tp.1.st" > "$tmp/sums$tp.cmp" 2>&1; then
    ok "bf16 sums of products at tp = $tp: a batched product's weight gradient, conv2d's input gradient and the all-reduced partial sums rounded once, a bias's gradient not, as a float64 emulation"
  else bad "bf16 sums of products at tp = $tp: $(grep -h FAIL "$tmp/sums$tp.cmp" "$tmp/sums$tp.log" | head -n 3)"; fi
done
echo "$pass passed, $fail failed"
[ $fail = 0 ]
