#!/usr/bin/env bash
# MPI with --devices cuda on a machine without a GPU (this build machine): every process
# finds no GPU, they agree on it, and the job ends at once with one clear line, exit 1,
# no hang — for plain `cuda` and for a list (`cuda:0,0`), with the full mplrun and the
# CUDA-only one when it is built. A wrong -np is still refused first, once.
# (On a GPU machine tests/gpu/run.sh runs the MPI cases on the GPU; here they are skipped.)
# Every mpirun runs under `timeout 60`: a hang is a failure (exit 124), not a stuck test.
# Without mpirun, or with an mplrun built without MPI or CUDA, the script says so and
# counts nothing.
cd "$(dirname "$0")/../.."
source tests/tools/e2e_lib.sh
finish() { echo "$pass passed, $fail failed"; [ $fail = 0 ]; exit; }
skip() { echo "skip mpi_cuda: ($*): nothing checked"; finish; }

command -v mpirun > /dev/null 2>&1 || skip "mpirun is not installed"
ldd "$MPLRUN" 2>/dev/null | grep -q libmpi || skip "$MPLRUN was built without MPI"
ldd "$MPLRUN" 2>/dev/null | grep -q libcudart || skip "$MPLRUN was built without CUDA"
if nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then skip "this machine has a GPU: tests/gpu/run.sh checks MPI on it"; fi
MPIRUN=(timeout 60 mpirun --oversubscribe)
[ "$(id -u)" = 0 ] && MPIRUN+=(--allow-run-as-root)

"$MPLC" tests/e2e/small_gpt.mpl --mesh pp=2 -o "$tmp/pp2.job" > "$tmp/mplc.log" 2>&1 || { bad "mplc: $(head -n 3 "$tmp/mplc.log")"; finish; }

# no_gpu LABEL MPLRUN DEVICES: the job fails at once, rank 0 alone says why
no_gpu() {
  local label=$1 bin=$2 dev=$3 log=$tmp/$1.log
  "${MPIRUN[@]}" -np 2 "$bin" "$tmp/pp2.job" --devices "$dev" -q --steps 1 > "$log" 2>&1
  local rc=$? n
  n=$(grep -c 'mplrun: error' "$log")
  if [ $rc = 124 ]; then bad "$label: mpirun -np 2 --devices $dev hangs without a GPU"
  elif [ $rc = 0 ]; then bad "$label: mpirun -np 2 --devices $dev ran without a GPU"
  elif [ "$n" = 1 ] && grep -q "mplrun: error: --devices $dev under mpirun: 2 of the 2 processes have no usable GPU" "$log"; then
    ok "$label: no GPU, one line, exit $rc: $(grep -m1 'mplrun: error' "$log" | cut -c1-150)"
  else bad "$label: exit $rc, $n error lines: $(head -n 3 "$log")"; fi
}
no_gpu plain "$MPLRUN" cuda
no_gpu list "$MPLRUN" cuda:0,0
if [ -x "$BUILD/cuda-only/mplrun" ] && ldd "$BUILD/cuda-only/mplrun" 2>/dev/null | grep -q libmpi; then
  no_gpu cuda_only "$BUILD/cuda-only/mplrun" cuda
else
  echo "skip cuda_only (no $BUILD/cuda-only/mplrun with MPI: make cuda-only): nothing checked"
fi

"${MPIRUN[@]}" -np 3 "$MPLRUN" "$tmp/pp2.job" --devices cuda -q > "$tmp/np.log" 2>&1
rc=$?
if [ $rc = 124 ]; then bad "-np 3 with --devices cuda hangs"
elif [ $rc != 0 ] && [ "$(grep -c 'mplrun: error' "$tmp/np.log")" = 1 ] && grep -q 'use mpirun -np 2' "$tmp/np.log"; then
  ok "-np 3 with --devices cuda refused once: $(grep -m1 'mplrun: error' "$tmp/np.log")"
else bad "-np 3 with --devices cuda: exit $rc: $(head -n 3 "$tmp/np.log")"; fi

finish
