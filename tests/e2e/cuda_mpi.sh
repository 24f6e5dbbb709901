#!/usr/bin/env bash
# The cuda device under mpirun, without a GPU: build/tests/cuda_mock_run trains a job on the
# mock GPU (tests/unit/cuda_mock.c, the job's kernels built for the host), alone (every rank
# a thread: comm_cuda_world.c) or one rank a process under mpirun (comm_cuda_mpi.c: device
# buffers staged through the host over MPI, summed in rank order: the threads' bits). For
# each job, the --save file of the mpirun run is the threads run's byte for byte, and so is
# the mpirun run's with MPL_CUDA_GRAPHS=1 (each rank's work launched as graphs between its
# messages and collectives: mpl_cuda_flush in comm_cuda_mpi.c). The jobs: pp = 2 (messages
# only), dp x pp x tp = 8 ranks (all-reduces of gradients and of tp partial sums, the norm's
# float64 all-reduce on the host), ZeRO-1 at dp = 2 (reduce-scatter and all-gather), and an
# MoE at tp = 2 with the fused attention (all-gathers). Every mpirun under `timeout`: a hang
# is a failure. (Dropping the copy back of a staged message, or staging an all-gather's
# whole buffer instead of this rank's chunk, fails 6 and 4 of the 8 checks.)
# Without CUDA, mpirun or MPI in the build, the script says so and counts nothing.
cd "$(dirname "$0")/../.."
source tests/tools/e2e_lib.sh
finish() { echo "$pass passed, $fail failed"; [ $fail = 0 ]; exit; }
RUN=$BUILD/tests/cuda_mock_run

if [ ! -x "$RUN" ]; then echo "skip: $RUN is not built (no CUDA toolkit)"; finish; fi
if ! command -v mpirun > /dev/null 2>&1; then echo "skip: mpirun is not installed"; finish; fi
if ! ldd "$RUN" 2>/dev/null | grep -q libmpi; then echo "skip: built without MPI"; finish; fi
MPIRUN=(timeout -k 5 120 mpirun --oversubscribe)
export MPL_MOCK_SO_CACHE=$tmp/so # a job's kernels built once for all its runs and processes
[ "$(id -u)" = 0 ] && MPIRUN+=(--allow-run-as-root)

# case NAME NP STEPS MODEL MPLC-ARGS...
case_() {
  local name=$1 np=$2 steps=$3; shift 3
  if ! "$MPLC" "$@" -o "$tmp/$name.job" > "$tmp/$name.mplc" 2>&1; then bad "$name: mplc: $(head -n 2 "$tmp/$name.mplc")"; return; fi
  if ! "$RUN" "$tmp/$name.job" "$steps" "$tmp/$name.threads.st" > "$tmp/$name.threads.log" 2>&1; then
    bad "$name: the threads run: $(tail -n 2 "$tmp/$name.threads.log")"; return
  fi
  local g
  for g in 0 1; do
    local what="mpirun -np $np" log=$tmp/$name.mpi$g.log
    [ $g = 1 ] && what="$what, MPL_CUDA_GRAPHS=1"
    MPL_CUDA_GRAPHS=$g "${MPIRUN[@]}" -np "$np" "$RUN" "$tmp/$name.job" "$steps" "$tmp/$name.mpi$g.st" > "$log" 2>&1
    local rc=$?
    if [ $rc != 0 ]; then
      bad "$name, $what: exit $rc$([ $rc = 124 ] && echo ' (a hang)'): $(grep -m 2 -i 'error\|cuda_mock_run' "$log")"
    elif ! cmp -s "$tmp/$name.threads.st" "$tmp/$name.mpi$g.st"; then
      bad "$name, $what: the params differ from the threads run's"
    elif [ $g = 1 ] && [ "$(grep -c 'MPL_CUDA_GRAPHS device .* graph launches' "$log")" != "$np" ]; then
      bad "$name, $what: not every rank launched graphs: $(grep -m 1 MPL_CUDA_GRAPHS "$log")"
    else
      ok "$name, $what: the threads run's params, byte for byte"
    fi
  done
}

case_ gpt_pp2 2 3 tests/e2e/small_gpt.mpl --mesh pp=2 -D d=64 -D layers=2 --no-fused-sdpa
case_ gpt_dp2_pp2_tp2 8 2 tests/e2e/parallel_gpt.mpl --mesh dp=2,pp=2,tp=2 --no-fused-sdpa
rewrite tests/e2e/parallel_gpt.mpl "$tmp/zero.mpl" 's/^  steps = 3/  zero = 1/' &&
  case_ gpt_zero_dp2 4 2 "$tmp/zero.mpl" --mesh dp=2,pp=2 --no-fused-sdpa
case_ moe_tp2 2 2 examples/moe.mpl --mesh tp=2 -D d=32 -D heads=2 -D hidden=64 -D ctx=16
finish
