#!/usr/bin/env bash
# tp layouts beyond column/row-parallel linears (tests/e2e/tp_layouts.mpl): a partial sum
# meeting a split operand is reduce-scattered (not all-reduced), means and sums over the
# split dimension are partial sums, and nothing is all-gathered in the forward pass.
#  - the compiled program has the reduce-scatter, and all-gathers only in the backward;
#  - params after 3 steps at tp = 2 and tp = 4 match tp = 1 within 1e-5, on threads
#    and (where mpirun and an MPI build exist) at tp = 2 under mpirun;
#  - nn.row_linear on a replicated input and on a partial sum (tests/e2e/tp_row_input.mpl)
#    cuts the input (tp_slice; reduce_scatter) instead of refusing it, all-gathers nothing
#    in the forward pass, and trains like tp = 1 at tp = 2 and tp = 4;
#  - a forced re-gather is a compile error unless --allow-gather (message and exit code;
#    the exact text is the golden err_tp_regather).
cd "$(dirname "$0")/../.."
source tests/tools/e2e_lib.sh
model=tests/e2e/tp_layouts.mpl

"$BUILD/mplc" "$model" --emit=grad > "$tmp/grad.txt" 2>&1
rs=$(grep -c '= reduce_scatter(' "$tmp/grad.txt"); fag=$(grep '= allgather(' "$tmp/grad.txt" | grep -vc ' bwd_')
ar=$(grep '= allreduce(' "$tmp/grad.txt" | grep -vc ' bwd_')
if [ "$rs" = 1 ] && [ "$fag" = 0 ] && [ "$ar" = 2 ]; then ok "tp = 2: 1 reduce-scatter, 2 forward all-reduces, no forward all-gather"
else bad "tp = 2 collectives: $rs reduce-scatters (want 1), $ar forward all-reduces (want 2), $fag forward all-gathers (want 0)"; fi

train() { # name, mesh, extra mplrun args... (the model is $model)
  local name=$1 mesh=$2; shift 2
  "$BUILD/mplc" "$model" --mesh "$mesh" -o "$tmp/$name.job" > "$tmp/$name.log" 2>&1 &&
    "$@" "$BUILD/mplrun" "$tmp/$name.job" -q --threads 1 --save "$tmp/$name.st" >> "$tmp/$name.log" 2>&1
}
# like_tp1 PREFIX: $model at tp = 2 and 4 against tp = 1, runs named PREFIX-tpN
like_tp1() {
  local p=$1 tp
  train "$p-tp1" tp=1 || bad "$p tp = 1: $(tail -n 3 "$tmp/$p-tp1.log")"
  for tp in 2 4; do
    if ! train "$p-tp$tp" "tp=$tp"; then bad "$p tp = $tp: $(tail -n 3 "$tmp/$p-tp$tp.log")"; continue; fi
    if "$PY" tests/tools/stcompare.py "$tmp/$p-tp$tp.st" "$tmp/$p-tp1.st" 1e-5 > "$tmp/$p-tp$tp.cmp"; then
      ok "$p: tp = $tp matches tp = 1 within 1e-5 (worst $(sed -n 's/.*max rel err //p' "$tmp/$p-tp$tp.cmp" | sort -g | tail -n 1))"
    else bad "$p: tp = $tp differs from tp = 1: $(grep FAIL "$tmp/$p-tp$tp.cmp" | head -n 3)"; fi
  done
}
like_tp1 layouts

if command -v mpirun > /dev/null 2>&1 && ldd "$BUILD/mplrun" 2>/dev/null | grep -q libmpi; then
  MPIRUN=(timeout 60 mpirun --oversubscribe -np 2)
  [ "$(id -u)" = 0 ] && MPIRUN+=(--allow-run-as-root)
  if train mpi2 tp=2 "${MPIRUN[@]}" && "$PY" tests/tools/stcompare.py "$tmp/mpi2.st" "$tmp/layouts-tp1.st" 1e-5 > "$tmp/mpi2.cmp"; then
    ok "tp = 2 under mpirun -np 2 matches tp = 1 within 1e-5"
  else bad "tp = 2 under mpirun: $(tail -n 2 "$tmp/mpi2.log") $(grep FAIL "$tmp/mpi2.cmp" 2>/dev/null | head -n 2)"; fi
else echo "skip: no mpirun or no MPI build (the mpirun check is not counted)"; fi

model=tests/e2e/tp_row_input.mpl
if "$BUILD/mplc" "$model" --emit=grad > "$tmp/row.txt" 2>&1; then
  sl=$(grep '= tp_slice(' "$tmp/row.txt" | grep -vc ' bwd_'); rs=$(grep '= reduce_scatter(' "$tmp/row.txt" | grep -vc ' bwd_')
  fag=$(grep '= allgather(' "$tmp/row.txt" | grep -vc ' bwd_')
  if [ "$sl" = 1 ] && [ "$rs" = 1 ] && [ "$fag" = 0 ]; then ok "row_linear on whole inputs: 1 tp_slice, 1 reduce-scatter, no forward all-gather"
  else bad "row_linear on whole inputs: $sl tp_slices (want 1), $rs reduce-scatters (want 1), $fag forward all-gathers (want 0)"; fi
else bad "row_linear on whole inputs does not compile at tp = 2: $(head -n 2 "$tmp/row.txt")"; fi
like_tp1 row_input

bad_prog=tests/golden/err_tp_regather.mpl
"$BUILD/mplc" "$bad_prog" -o "$tmp/rg.job" > "$tmp/rg.log" 2>&1; rc=$?
if [ $rc != 0 ] && grep -q 'error: softmax needs its input replicated, but the input is split on dimension 1' "$tmp/rg.log" && [ ! -e "$tmp/rg.job" ]; then
  ok "a forced re-gather is refused (exit $rc, no job written)"
else bad "re-gather: exit $rc, $(head -n 2 "$tmp/rg.log")"; fi
if "$BUILD/mplc" "$bad_prog" --allow-gather -o "$tmp/rg.job" > "$tmp/rg2.log" 2>&1 && "$BUILD/mplrun" "$tmp/rg.job" -q --threads 1 --steps 1 > /dev/null 2>&1; then
  ok "--allow-gather compiles and runs it"
else bad "--allow-gather: $(head -n 2 "$tmp/rg2.log")"; fi
echo "$pass passed, $fail failed"
[ $fail = 0 ]
