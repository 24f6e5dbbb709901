#!/usr/bin/env bash
# tests/e2e/random_programs.sh — random programs against the float64 reference evaluator.
#
# tests/tools/randprog.py SEED writes a program from the language's ops (elementwise,
# reductions, shape ops, products, indexing, sdpa, conv2d, the stdlib's layers, moe,
# dropout, bf16/f16 casts), with random placement (pp, @stage or the balancer,
# @recompute, schedule, micro-batches) and sometimes precision = bf16. For each seed:
#  - test_refstep compiles it, runs one step on the CPU kernels and GEMMs, and compares
#    the loss and every param's gradient with ref_eval (see tests/unit/test_refstep.c
#    for the tolerances);
#  - every fourth seed, and each program with a "# compare:" line, also goes through the
#    commands users type: mplc (in a CUDA build with --gpu-arch, sm_80 and sm_90 in turn:
#    NVRTC compiles every kernel's CUDA C to PTX) and mplrun for 2 steps to a finite loss;
#    1 step, --checkpoint, and --resume to step 2 must give those params bit for bit, and so must mpirun -np PP (one
#    process per pipeline rank) where mpirun and an MPI build exist;
#  - a "# compare: pp=P,tp=2 pp=P,dp=2/M" line (params split with @shard at random, plain
#    SGD) trains the program at those meshes too (mplc --mesh MESH --allow-gather, and
#    --microbatches M: dp = 2 with half the micro-batches, so that each micro-batch holds
#    the same rows), and its params after 2 steps must match the program's own mesh
#    within 1e-4 (1e-2 in bf16) of each tensor's largest value, or of 1e-2 of the largest
#    param where that is larger (a zero-initialised bias whose gradient is zero in exact
#    arithmetic holds only rounding noise: random programs found one).
# RANDPROG_SEEDS (default "1-12,182,10000-10003") picks the seeds: "1-500" for a long run,
# "107" to replay one, a comma list of both. 182 stays in the default: it found a row kernel
# that read a value back in rows it had not stored yet (a softmax of a transpose). Seeds
# from 10000 also draw reductions broadcast back onto square shapes along every axis (with
# and without keepdims, through transposes, reshapes and rotations), i32 arithmetic,
# comparisons and masks, norms and softmax along other axes, and sdpa, conv2d, product and
# half-precision variants (a review found a row kernel reading rows not written yet when a
# sum without keepdims was added back along the other axis of a square value). A failing
# program is kept in $BUILD/randprog/ with its log.
cd "$(dirname "$0")/../.."
source tests/tools/e2e_lib.sh
REFSTEP=$BUILD/tests/test_refstep
cuda=0; "$MPLC" --version | grep -q 'CUDA: PTX' && cuda=1
seeds=()
IFS=, read -r -a ranges <<< "${RANDPROG_SEEDS:-1-12,182,10000-10003}"
for range in "${ranges[@]}"; do
  lo=${range%-*} hi=${range#*-}
  if ! [[ "$lo" =~ ^[0-9]+$ && "$hi" =~ ^[0-9]+$ ]]; then echo "RANDPROG_SEEDS: '$range' is not N or N-M"; echo "0 passed, 1 failed"; exit 1; fi
  seeds+=($(seq "$lo" "$hi"))
done
keep=$BUILD/randprog
mkdir -p "$keep"
# the MPI mode, where there is one (tests/e2e/mpi.sh's set-up)
mpi=0
if command -v mpirun > /dev/null 2>&1 && ldd "$MPLRUN" 2>/dev/null | grep -q libmpi; then
  mpi=1 MPIRUN=(timeout 60 mpirun --oversubscribe)
  [ "$(id -u)" = 0 ] && MPIRUN+=(--allow-run-as-root)
fi

# train PROGRAM NAME MESH[/MICROBATCHES]: mplc (--mesh MESH --allow-gather unless MESH is
# empty), then mplrun 2 steps to a finite loss, params saved to $tmp/pNAME.st
train() {
  local p=$1 n=$2 mesh=${3%/*} margs=()
  [ -n "$mesh" ] && margs=(--mesh "$mesh" --allow-gather)
  [[ "$3" == */* ]] && margs+=(--microbatches "${3#*/}")
  [ "$cuda" = 1 ] && [ -z "$3" ] && margs+=(--gpu-arch "sm_$(( n % 2 ? 80 : 90 ))") # the seed's own mesh
  "$MPLC" "$p" "${margs[@]}" -o "$tmp/p$n.job" > "$tmp/p$n.cerr" 2>&1 &&
    "$MPLRUN" "$tmp/p$n.job" --steps 2 --threads 1 --metrics "$tmp/p$n.jsonl" --save "$tmp/p$n.st" > /dev/null 2>> "$tmp/p$n.cerr" &&
    "$PY" - "$tmp/p$n.jsonl" <<'PYEOF'
import json, math, sys
losses = [json.loads(l)["loss"] for l in open(sys.argv[1]) if '"loss"' in l]
sys.exit(0 if len(losses) == 2 and all(math.isfinite(x) for x in losses) else 1)
PYEOF
}

for s in "${seeds[@]}"; do
  p=$tmp/p$s.mpl
  if ! "$PY" tests/tools/randprog.py "$s" "$p"; then bad "seed $s: randprog.py failed"; continue; fi
  what=$(head -n 1 "$p" | sed 's/^# randprog.py //')
  grep -q 'precision = bf16' "$p" && what="$what, bf16"
  if MPL_REFSTEP_FD=1 timeout 300 "$REFSTEP" "$p" > "$tmp/p$s.log" 2>&1; then
    ok "seed $what: loss and gradients match the reference, its gradients finite differences"
  else
    cp "$p" "$tmp/p$s.log" "$keep/"
    bad "seed $what: $(grep -m2 -E 'differ|loss|off by|error|does not' "$tmp/p$s.log" | tr '\n' ' ') (kept in $keep/p$s.mpl)"
    continue
  fi
  compare=$(sed -n 's/^# compare: //p' "$p")
  [ -n "$compare" ] || [ $((s % 4)) = 0 ] || continue
  if ! train "$p" "$s" ""; then cp "$p" "$tmp/p$s.cerr" "$keep/"; bad "seed $s: mplc/mplrun: $(head -n 2 "$tmp/p$s.cerr" | tr '\n' ' ')"; continue; fi
  ok "seed $s: mplc and mplrun train 2 steps"
  if "$MPLRUN" "$tmp/p$s.job" -q --steps 1 --threads 1 --checkpoint "$tmp/ck$s" > "$tmp/p$s.ck.log" 2>&1 &&
     "$MPLRUN" "$tmp/p$s.job" -q --steps 2 --threads 1 --resume "$tmp/ck$s" --save "$tmp/p$s.resumed.st" >> "$tmp/p$s.ck.log" 2>&1 &&
     cmp -s "$tmp/p$s.resumed.st" "$tmp/p$s.st"; then ok "seed $s: 1 step + checkpoint + resume = 2 steps (bitwise)"
  else cp "$p" "$keep/"; bad "seed $s: checkpoint and resume: $(tail -n 2 "$tmp/p$s.ck.log" | tr '\n' ' ')(params differ, or the run failed)"; fi
  pp=$(sed -n 's/^mesh(pp = \([0-9]*\))$/\1/p' "$p")
  if [ "$mpi" = 1 ] && [ "${pp:-1}" -gt 1 ]; then
    if "${MPIRUN[@]}" -np "$pp" "$MPLRUN" "$tmp/p$s.job" -q --steps 2 --threads 1 --save "$tmp/p$s.mpi.st" > "$tmp/p$s.mpi.log" 2>&1 &&
       cmp -s "$tmp/p$s.mpi.st" "$tmp/p$s.st"; then ok "seed $s: mpirun -np $pp gives the threads run's params (bitwise)"
    else cp "$p" "$keep/"; bad "seed $s: mpirun -np $pp: $(grep -m 2 error "$tmp/p$s.mpi.log" | tr '\n' ' ')(params differ, or the run failed)"; fi
  fi
  tol=1e-4; grep -q 'precision = bf16' "$p" && tol=1e-2
  for mesh in $compare; do
    n="$s-${mesh//\//-}"
    if ! train "$p" "$n" "$mesh"; then
      cp "$p" "$tmp/p$n.cerr" "$keep/"; bad "seed $s at $mesh: $(head -n 2 "$tmp/p$n.cerr" | tr '\n' ' ')"; continue
    fi
    if "$PY" tests/tools/stcompare.py "$tmp/p$n.st" "$tmp/p$s.st" $tol 1e-2 > "$tmp/p$n.cmp"; then
      ok "seed $s: params after 2 steps at $mesh match the program's own mesh within $tol"
    else cp "$p" "$keep/"; bad "seed $s: params at $mesh differ: $(grep FAIL "$tmp/p$n.cmp" | head -n 2 | tr '\n' ' ') (kept in $keep/p$s.mpl)"; fi
  done
done
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
