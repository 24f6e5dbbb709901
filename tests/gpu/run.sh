#!/usr/bin/env bash
# tests/gpu/run.sh — the GPU check, for a machine with a GPU, the CUDA toolkit, a C compiler
# and Python with PyTorch, and nothing else (no LLVM, oneDNN, flex, bison or Check).
#
#   tests/gpu/prepare.sh      # first, on the build machine: jobs + CPU references -> tests/gpu/carry/
#   tests/gpu/run.sh          # then, on the GPU machine, from a copy of the tree with that folder
#
# It builds the CUDA-only mplrun (make cuda-only, or plain cc when make is missing), runs
# every carried job on the GPU and compares the params after 3 steps with the CPU's
# (max |gpu - cpu| / max |cpu| per tensor below 1e-4, float32, no TF32), runs every schedule
# with the ranks sharing the GPU, dp and tp meshes (gpt_dp2, gpt_tp2, gpt_dp2_pp2_tp2, tp_gather; the
# optimizer and the tp collectives on the device), checks that the other models train, that a bad device
# fails cleanly, samples text (--sample) on pp = 1 and dp x pp x tp as the CPU does, runs jobs under mpirun with one process per rank on the GPU (carry/mpi.tsv:
# host-staged MPI messages for ranks sharing the GPU, NCCL's id broadcast over MPI for one
# rank) and the NCCL switch MPL_NCCL, and benchmarks the bench GPT configs against PyTorch
# on the same GPU (tokens/s, ratio, MFU) with a GPU time per kernel (MPL_PROFILE=1); precision
# (issue 14): the GPU test GPT 20 steps in bf16 against the CPU's bf16 and f32 loss curves, tf32
# from the job's precision, and with MPL_CUDA_GRAPHS=1 the same losses to the bit; GPT-2 124M (B 8,
# T 1024, AdamW) in f32, tf32 and bf16, each also with MPL_CUDA_GRAPHS=1, against PyTorch (fp32 and
# tf32 eager, bf16 autocast eager and with torch.compile): tokens/s, MFU, memory.
# Every check prints PASS or FAIL (or SKIP: no mpirun, no NCCL, counted neither way); one table
# at the end; the exit status is 1 if any check failed. Logs go to $OUT/gpu (or /tmp/mpl_gpu).
# About 3-5 minutes, and 4-5 more for GPT-2 (torch.compile's first compile among them; MPL in
# each precision with and without graphs);
# MPL_GPU_ONLY=precision,gpt2 (say) runs the build and only those sections. A device call is
# cut at 10 minutes: run MPL_GPU_ONLY=precision,gpt2 first (never run on a GPU yet), then
# MPL_GPU_ONLY=jobs,mpi,bench where the session's device time allows; MPL_GPU_ONLY=sanitize
# (never in the default run: slow) runs compute-sanitizer's racecheck, memcheck and synccheck
# on one step of the f32 head-size-128 Llama and the bf16 and tf32 GPTs.
set -u
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
C=tests/gpu/carry
LOGS=${OUT:-/tmp/mpl_gpu_out}/gpu
rm -rf "$LOGS"
mkdir -p "$LOGS"
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export PATH="$CUDA_HOME/bin:$PATH"
GB=${GPU_BUILD:-build}           # the build folder (ignored by git)
MPLRUN=$GB/cuda-only/mplrun
PY=$(command -v python3 || command -v python || echo python3)
pass=0 fail=0
ROWS="$LOGS/rows.txt"
: > "$ROWS"

# MPL_GPU_ONLY=SECTION,...: the build, then only those of the sections jobs, mpi, bench, precision
# and gpt2 (default: all of them), for a session short of device time
want() { [ -z "${MPL_GPU_ONLY:-}" ] || [[ ",$MPL_GPU_ONLY," == *",$1,"* ]]; }
# graphs_line LOG: the first of MPL_CUDA_GRAPHS's end-of-run lines in LOG whose graph launches are not
# 0 (printed), else fails: the run did launch graphs
graphs_line() { grep -m 1 -E '^MPL_CUDA_GRAPHS device [0-9]+.* in [1-9][0-9]* graph launches' "$1"; }
row() { printf '%-26s %-5s %s\n' "$1" "$2" "$3" >> "$ROWS"; }
ok() { pass=$((pass + 1)); echo "PASS $1: $2"; row "$1" PASS "$2"; }
bad() { fail=$((fail + 1)); echo "FAIL $1: $2"; row "$1" FAIL "$2"; }
skip() { echo "SKIP $1: $2"; row "$1" SKIP "$2"; }
last_line() { tail -n "${2:-1}" "$1" 2>/dev/null | tr '\n' ' ' | cut -c1-160; }

finish() {
  echo
  echo "================ MPL GPU results ================"
  cat "$ROWS"
  [ -s "$LOGS/bench.txt" ] && { echo; cat "$LOGS/bench.txt"; }
  [ -s "$LOGS/gpt2.txt" ] && { echo; cat "$LOGS/gpt2.txt"; }
  for f in "$LOGS"/profile_*.txt; do [ -s "$f" ] && { echo; echo "$(basename "$f" .txt), the kernels with most GPU time:"; grep -A 12 '^MPL_PROFILE' "$f" | cut -c1-150; }; done
  echo
  echo "gpu: $pass passed, $fail failed (logs in $LOGS)"
  [ "$fail" = 0 ]
  exit $?
}

# ---- 0. what is here --------------------------------------------------------------
echo "== machine"
nvidia-smi -L 2>&1 | head -n 8
nvcc --version 2>&1 | tail -n 1
if [ ! -f "$C/checks.tsv" ]; then
  bad carry "no $C/checks.tsv: run tests/gpu/prepare.sh on the build machine and carry $C"
  finish
fi
if [ "$(cat "$C/source.digest" 2>/dev/null)" != "$(tests/gpu/src_digest.sh)" ]; then
  bad carry "$C was prepared from other sources than these (source.digest): run tests/gpu/prepare.sh again and carry it"
  finish
fi

# ---- 1. the CUDA-only mplrun ---------------------------------------------------------
# Without make: the same compile as the Makefile's cuda-only target, by hand.
build_by_hand() {
  local o=$GB/cuda-only/obj defs="-DMPL_HAVE_CUDA -DMPL_CUDA_ONLY" libs="-lcudart -ldl"
  if [ -n "$NCCL_INC" ] && [ -n "$NCCL_SO" ]; then
    defs="$defs -DMPL_HAVE_NCCL -I$NCCL_INC"; libs="$libs -L$(dirname "$NCCL_SO") -Wl,-rpath,$(dirname "$NCCL_SO") -l:$(basename "$NCCL_SO")"
  fi
  if command -v mpicc > /dev/null; then
    defs="$defs -DMPL_HAVE_MPI $(mpicc --showme:compile)"; libs="$libs $(mpicc --showme:link)"
  fi
  mkdir -p "$o/gen/runtime/cuda"
  # the CUDA sources embedded as the Makefile does (its $(BUILD)/gen/%.cu.inc rule)
  sh tools/embed.sh runtime/cuda/optim.cu > "$o/gen/runtime/cuda/optim.cu.inc" || return 1
  sh tools/embed.sh runtime/cuda/sdpa.cu > "$o/gen/runtime/cuda/sdpa.cu.inc" || return 1
  sh tools/embed.sh runtime/cuda/ce.cu > "$o/gen/runtime/cuda/ce.cu.inc" || return 1
  sh tools/embed.sh runtime/cuda/embed.cu > "$o/gen/runtime/cuda/embed.cu.inc" || return 1
  local objs=() f
  for f in runtime/*.c; do
    case $f in runtime/mpltok.c|runtime/jit_cpu.c|runtime/llvm_host.c|runtime/gemm.c) continue ;; esac
    cc -std=gnu11 -O2 -fno-fast-math -ffp-contract=off -I. -I"$o/gen" -pthread $defs -I"$CUDA_HOME/include" \
      -c -o "$o/$(basename "$f" .c).o" "$f" || return 1
    objs+=("$o/$(basename "$f" .c).o")
  done
  cc -pthread -o "$MPLRUN" "${objs[@]}" -L"$CUDA_HOME/lib64" -Wl,-rpath,"$CUDA_HOME/lib64" $libs -lm
}

# NCCL's header: the toolkit's, the system's, or a Python wheel's (nvidia/nccl/include);
# its library: the system's, or next to that header (a wheel's lib/)
find_nccl() {
  local d sp
  for d in "$CUDA_HOME/include" /usr/include /usr/local/include; do
    [ -f "$d/nccl.h" ] && { echo "$d"; return; }
  done
  for sp in $("$PY" -c 'import site, sys; print(" ".join(site.getsitepackages() + sys.path))' 2> /dev/null) \
            /opt/torch/.venv/lib/python3*/site-packages; do
    [ -f "$sp/nvidia/nccl/include/nccl.h" ] && { echo "$sp/nvidia/nccl/include"; return; }
  done
}
NCCL_INC=$(find_nccl)
NCCL_SO=$(ls "$CUDA_HOME"/lib64/libnccl.so* /usr/lib/*/libnccl.so* /usr/local/lib/libnccl.so* 2> /dev/null | head -n 1)
[ -z "$NCCL_SO" ] && [ -n "$NCCL_INC" ] && NCCL_SO=$(ls "$NCCL_INC"/../lib/libnccl.so* 2> /dev/null | head -n 1)
echo "nccl.h: ${NCCL_INC:-none}; libnccl: ${NCCL_SO:-none}; mpicc: $(command -v mpicc || echo none); mpirun: $(command -v mpirun || echo none)"

echo "== build"
rm -rf "$GB/cuda-only"
t0=$(date +%s)
if command -v make > /dev/null; then
  nccl_vars=()
  [ -n "$NCCL_INC" ] && [ -n "$NCCL_SO" ] && nccl_vars=(NCCL_INC="$NCCL_INC" NCCL_LIB="$(dirname "$NCCL_SO")")
  make cuda-only BUILD="$GB" CUDA_HOME="$CUDA_HOME" ${nccl_vars[@]+"${nccl_vars[@]}"} -j"$(nproc)" > "$LOGS/build.log" 2>&1
else
  build_by_hand > "$LOGS/build.log" 2>&1
fi
has_lib() { ldd "$MPLRUN" 2> /dev/null | grep -q "$1"; }
yn() { if [ -n "$1" ]; then echo yes; else echo no; fi; }
HAVE_MPI=; has_lib libmpi && HAVE_MPI=1
HAVE_NCCL=; has_lib libnccl && HAVE_NCCL=1
if [ -x "$MPLRUN" ]; then
  ok build "make cuda-only in $(( $(date +%s) - t0 )) s, $(grep -c 'warning:' "$LOGS/build.log") warnings, MPI $(yn "$HAVE_MPI"), NCCL $(yn "$HAVE_NCCL")"
else
  bad build "$(grep -m 3 -E 'error|Error' "$LOGS/build.log" | tr '\n' ' ' | cut -c1-200)"
  tail -n 30 "$LOGS/build.log"
  finish
fi

median_ms() { # METRICS: median step ms after the first 2 steps
  "$PY" - "$1" << 'EOF'
import json, sys
ms = sorted(json.loads(l)["ms"] for l in list(open(sys.argv[1]))[2:] if l.strip())
print("%.3f" % ms[len(ms) // 2] if ms else "nan")
EOF
}

# ---- 2. the carried jobs against the CPU ----------------------------------------------
if want jobs; then # (to the end of section 2)
echo "== jobs on the GPU vs the CPU"
# loss_falls METRICS: the loss of the last step is finite and below the first's
loss_falls() {
  "$PY" - "$1" << 'EOF'
import json, math, sys
L = [json.loads(l)["loss"] for l in open(sys.argv[1]) if l.strip()]
ok = len(L) >= 2 and all(x is not None and math.isfinite(x) for x in L) and L[-1] < L[0]
print("loss %s -> %s over %d steps" % (L[0] if L else "?", L[-1] if L else "?", len(L)))
sys.exit(0 if ok else 1)
EOF
}

while IFS=$'\t' read -r kind name job flags; do
  [ -n "$kind" ] || continue
  log="$LOGS/$name.log"
  case $kind in
  compare)
    # shellcheck disable=SC2086
    if ! timeout 180 "$MPLRUN" "$C/$job" --devices cuda $flags --steps 3 -q --save "$LOGS/$name.safetensors" < /dev/null > "$log" 2>&1; then
      bad "$name" "mplrun: $(last_line "$log" 3)"; continue
    fi
    if "$PY" tests/gpu/compare.py "$C/ref/$name.safetensors" "$LOGS/$name.safetensors" 1e-4 < /dev/null > "$LOGS/$name.cmp" 2>&1; then
      ok "$name" "$(last_line "$LOGS/$name.cmp")${flags:+ [$flags]}"
    else
      bad "$name" "$(last_line "$LOGS/$name.cmp")${flags:+ [$flags]}"
    fi ;;
  trains)
    # shellcheck disable=SC2086
    if ! timeout 180 "$MPLRUN" "$C/$job" --devices cuda $flags --steps 10 -q --metrics "$LOGS/$name.jsonl" < /dev/null > "$log" 2>&1; then
      bad "$name" "mplrun: $(last_line "$log" 3)"; continue
    fi
    if loss_falls "$LOGS/$name.jsonl" > "$LOGS/$name.loss" 2>&1; then ok "$name" "$(last_line "$LOGS/$name.loss")"
    else bad "$name" "$(last_line "$LOGS/$name.loss")"; fi ;;
  sample)
    if ! timeout 180 "$MPLRUN" "$C/$job" --devices cuda --sample 24 --prompt "$(printf '\001\002')" --seed 3 < /dev/null > "$LOGS/$name.txt" 2> "$log"; then
      bad "$name" "mplrun --sample: $(last_line "$log" 3)"; continue
    fi
    if cmp -s "$LOGS/$name.txt" "$C/ref/$name.txt"; then ok "$name" "--sample 24 prints the CPU's text ($(wc -c < "$LOGS/$name.txt") bytes)"
    else bad "$name" "--sample 24: $(od -An -tu1 "$LOGS/$name.txt" | head -c 80) against the CPU's $(od -An -tu1 "$C/ref/$name.txt" | head -c 80)"; fi ;;
  esac
done < "$C/checks.tsv"

# MPL_CUDA_GRAPHS=1 on pipelines and a 3-D mesh (ranks sharing the GPU: the messages and the
# collectives run between the graphs): the same params, to the bit, as the runs above
for name in gpt_pp2_1f1b gpt_dp2_pp2_tp2; do
  [ -f "$C/jobs/$name.job" ] && [ -f "$LOGS/$name.safetensors" ] || continue
  if MPL_CUDA_GRAPHS=1 timeout 180 "$MPLRUN" "$C/jobs/$name.job" --devices cuda --steps 3 -q \
       --save "$LOGS/${name}_graphs.safetensors" < /dev/null > "$LOGS/${name}_graphs.log" 2>&1 &&
     graphs_line "$LOGS/${name}_graphs.log" > /dev/null &&
     cmp -s "$LOGS/$name.safetensors" "$LOGS/${name}_graphs.safetensors"
  then ok "${name}_cuda_graphs" "the same --save bytes; $(graphs_line "$LOGS/${name}_graphs.log")"
  else bad "${name}_cuda_graphs" "$(last_line "$LOGS/${name}_graphs.log" 2); --save differs: $(cmp "$LOGS/$name.safetensors" "$LOGS/${name}_graphs.safetensors" 2>&1 | head -c 200)"; fi
done

# mplrun's own NVRTC compile (a job without PTX: mplc without --gpu-arch) against loading the
# job's PTX: the wall time of a 1-step run of each, the same model
if [ -f "$C/jobs/gpt_pp1_noptx.job" ] && [ -f "$C/jobs/gpt_pp1_1f1b.job" ]; then
  one_step_s() { # JOB LOG: seconds of a 1-step run, or "nan"
    local t0 t1
    t0=$(date +%s.%N)
    timeout 120 "$MPLRUN" "$1" --devices cuda --steps 1 -q < /dev/null > "$2" 2>&1 || { echo nan; return; }
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'
  }
  t_ptx=$(one_step_s "$C/jobs/gpt_pp1_1f1b.job" "$LOGS/start_ptx.log")
  t_src=$(one_step_s "$C/jobs/gpt_pp1_noptx.job" "$LOGS/start_nvrtc.log")
  if [ "$t_ptx" != nan ] && [ "$t_src" != nan ]; then
    ok start_nvrtc "1-step run: $t_ptx s loading the job's PTX, $t_src s compiling its CUDA source with NVRTC here"
  else bad start_nvrtc "PTX: $t_ptx s ($(last_line "$LOGS/start_ptx.log")); NVRTC: $t_src s ($(last_line "$LOGS/start_nvrtc.log"))"; fi
fi

# TF32: allowed by --tf32 only; the same job within TF32's precision
name=gpt_pp1_1f1b
if [ -f "$C/jobs/$name.job" ]; then
  if timeout 120 "$MPLRUN" "$C/jobs/$name.job" --devices cuda --tf32 --steps 3 -q --save "$LOGS/tf32.safetensors" > "$LOGS/tf32.log" 2>&1 &&
     "$PY" tests/gpu/compare.py "$C/ref/$name.safetensors" "$LOGS/tf32.safetensors" 1e-2 > "$LOGS/tf32.cmp" 2>&1; then
    ok tf32 "$(last_line "$LOGS/tf32.cmp")"
  else
    bad tf32 "$(last_line "$LOGS/tf32.log" 2) $(last_line "$LOGS/tf32.cmp")"
  fi
fi

# a device that does not exist: one clear line, exit 1, no crash
name=gpt_pp2_1f1b
timeout 60 "$MPLRUN" "$C/jobs/$name.job" --devices cuda:63,63 --steps 1 > "$LOGS/baddev.log" 2>&1
rc=$?
if [ $rc = 1 ] && grep -q 'mplrun: error: .*does not exist' "$LOGS/baddev.log"; then ok bad_device "$(last_line "$LOGS/baddev.log")"
else bad bad_device "exit $rc: $(last_line "$LOGS/baddev.log" 2)"; fi

fi # section 2

# ---- 3. MPI (one process per rank on the GPU) and NCCL ----------------------------------------
if want mpi; then # (to the end of section 3)
echo "== MPI and NCCL"
mpi_skip=
if ! command -v mpirun > /dev/null; then mpi_skip="mpirun is not installed"
elif [ -z "$HAVE_MPI" ]; then bad mpi_build "mpirun is here, but mplrun was built without MPI (no mpicc? see $LOGS/build.log)"; mpi_skip="mplrun has no MPI"
fi
MPIRUN=(mpirun --oversubscribe --bind-to none)
[ "$(id -u)" = 0 ] && MPIRUN+=(--allow-run-as-root)
# containers often forbid the cross-memory attach of Open MPI's shared-memory copies
export OMPI_MCA_btl_vader_single_copy_mechanism=none
# mpi_run LOG SECONDS NP ENV CMD...: mpirun -np NP CMD with ENV (- or VAR=VALUE) for every process
mpi_run() {
  local log=$1 t=$2 np=$3 e=(); [ "$4" != - ] && e=("$4"); shift 4
  env ${e[@]+"${e[@]}"} timeout "$t" "${MPIRUN[@]}" -np "$np" "$@" < /dev/null > "$log" 2>&1
}
errline() { grep -m 1 -iE 'error' "$1" | cut -c1-160; }

while IFS=$'\t' read -r name np job ref env flags; do
  [ -n "$name" ] || continue
  if [ -n "$mpi_skip" ]; then skip "$name" "$mpi_skip"; continue; fi
  if [ "$env" = MPL_NCCL=1 ] && [ -z "$HAVE_NCCL" ]; then skip "$name" "mplrun was built without NCCL"; continue; fi
  log="$LOGS/$name.log"
  # shellcheck disable=SC2086
  mpi_run "$log" 180 "$np" "$env" "$MPLRUN" "$C/$job" $flags --steps 3 -q --save "$LOGS/$name.safetensors"
  rc=$?
  if [ $rc != 0 ]; then
    bad "$name" "mpirun -np $np: exit $rc$([ $rc = 124 ] && echo ' (timed out: a hang)'): $(errline "$log")"; continue
  fi
  tag="mpirun -np $np $flags"; [ "$env" != - ] && tag="$env $tag"
  if "$PY" tests/gpu/compare.py "$C/ref/$ref.safetensors" "$LOGS/$name.safetensors" 1e-4 < /dev/null > "$LOGS/$name.cmp" 2>&1; then
    ok "$name" "$(last_line "$LOGS/$name.cmp") [$tag]"
  else
    bad "$name" "$(last_line "$LOGS/$name.cmp") [$tag]"
  fi
done < <([ -f "$C/mpi.tsv" ] && cat "$C/mpi.tsv")

# expect_fail NAME LOG RC REGEX: a run that must fail: exit != 0, no hang, a line matching REGEX
expect_fail() {
  if [ "$3" = 124 ]; then bad "$1" "timed out (a hang): $(errline "$2")"
  elif [ "$3" = 0 ]; then bad "$1" "exit 0: it should have failed"
  elif grep -qE "$4" "$2"; then ok "$1" "exit $3: $(grep -m 1 -E "$4" "$2" | cut -c1-150)"
  else bad "$1" "exit $3, no line matching '$4': $(last_line "$2" 2)"; fi
}
PP2=$C/jobs/gpt_pp2_1f1b.job PP1=$C/jobs/gpt_pp1_1f1b.job
if [ -n "$mpi_skip" ]; then
  skip mpi_rank_fails "$mpi_skip"; skip mpi_rank_killed "$mpi_skip"
else
  # a rank that fails (a missing --init file) ends the whole job
  mpi_run "$LOGS/mpi_fail.log" 60 2 - "$MPLRUN" "$PP2" --devices cuda:0,0 --steps 1 -q --init "$LOGS/missing.safetensors"
  expect_fail mpi_rank_fails "$LOGS/mpi_fail.log" $? 'mplrun: error: rank [01]: .*missing.safetensors'
  # a rank killed in the middle of training ends the job (rank 0 is not left waiting on the GPU)
  env timeout 90 "${MPIRUN[@]}" -np 2 "$MPLRUN" "$PP2" --devices cuda:0,0 --steps 100000000 -q \
    --metrics "$LOGS/mpi_kill.jsonl" < /dev/null > "$LOGS/mpi_kill.log" 2>&1 &
  job=$!
  for _ in $(seq 600); do [ -s "$LOGS/mpi_kill.jsonl" ] && break; kill -0 $job 2> /dev/null || break; sleep 0.1; done
  victim=
  for pid in $(pgrep -f "^$MPLRUN $PP2"); do
    tr '\0' '\n' < "/proc/$pid/environ" 2> /dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=1' && victim=$pid
  done
  if [ -n "$victim" ] && [ -s "$LOGS/mpi_kill.jsonl" ]; then
    t0=$(date +%s); kill -9 "$victim"; wait $job; rc=$?
    if [ $rc = 124 ]; then bad mpi_rank_killed "rank 1 killed: the job did not end (a hang)"
    elif [ $rc = 0 ]; then bad mpi_rank_killed "rank 1 killed: exit 0"
    else ok mpi_rank_killed "rank 1 killed with SIGKILL: the job ends in $(( $(date +%s) - t0 )) s, exit $rc"; fi
  else
    kill $job 2> /dev/null; wait $job
    bad mpi_rank_killed "training did not start or rank 1's process was not found: $(last_line "$LOGS/mpi_kill.log" 2)"
  fi
fi
if [ -n "$mpi_skip" ] || [ -z "$HAVE_NCCL" ]; then
  skip mpi_nccl_forced_shared "${mpi_skip:-mplrun was built without NCCL}"
else # MPL_NCCL=1 with two ranks on one GPU: NCCL's own refusal, the job ends
  mpi_run "$LOGS/mpi_nccl_shared.log" 30 2 MPL_NCCL=1 "$MPLRUN" "$PP2" --devices cuda:0,0 --steps 1 -q
  expect_fail mpi_nccl_forced_shared "$LOGS/mpi_nccl_shared.log" $? 'mplrun: error: .*NCCL.*share a GPU'
fi
# the threads' NCCL: a one-rank communicator (ncclCommInitRank in a group, an all-reduce);
# forced on two ranks of one GPU it fails with NCCL's message; a bad MPL_NCCL is refused
if [ -z "$HAVE_NCCL" ]; then
  skip nccl_threads_one_rank "mplrun was built without NCCL"; skip nccl_threads_forced_shared "mplrun was built without NCCL"
else
  if MPL_NCCL=1 timeout 120 "$MPLRUN" "$PP1" --devices cuda --steps 3 -q --save "$LOGS/nccl1.safetensors" < /dev/null > "$LOGS/nccl1.log" 2>&1 &&
     "$PY" tests/gpu/compare.py "$C/ref/gpt_pp1_1f1b.safetensors" "$LOGS/nccl1.safetensors" 1e-4 > "$LOGS/nccl1.cmp" 2>&1; then
    ok nccl_threads_one_rank "$(last_line "$LOGS/nccl1.cmp") [MPL_NCCL=1]"
  else
    bad nccl_threads_one_rank "$(last_line "$LOGS/nccl1.log" 2) $(last_line "$LOGS/nccl1.cmp" 2>/dev/null)"
  fi
  MPL_NCCL=1 timeout 30 "$MPLRUN" "$PP2" --devices cuda:0,0 --steps 1 -q < /dev/null > "$LOGS/nccl_shared.log" 2>&1
  expect_fail nccl_threads_forced_shared "$LOGS/nccl_shared.log" $? 'mplrun: error: .*NCCL.*share a GPU'
fi
MPL_NCCL=yes timeout 60 "$MPLRUN" "$PP1" --devices cuda --steps 1 -q < /dev/null > "$LOGS/nccl_env.log" 2>&1
expect_fail nccl_env_bad "$LOGS/nccl_env.log" $? "mplrun: error: .*MPL_NCCL must be 0, 1 or auto, not 'yes'"

fi # section 3

# ---- 4. the bench GPT configs against PyTorch ------------------------------------------------
if want bench; then # (to the end of section 4)
echo "== bench (mplrun vs PyTorch on this GPU)"
BENCH="$LOGS/bench.tsv"
: > "$BENCH"
while IFS=$'\t' read -r name job d layers heads ctx batch; do
  [ -n "$name" ] || continue
  for prec in fp32 tf32; do
    flag=""; [ $prec = tf32 ] && flag="--tf32"
    m="$LOGS/bench_${name}_$prec.jsonl"
    # shellcheck disable=SC2086
    if timeout 240 "$MPLRUN" "$C/$job" --devices cuda $flag --steps 8 -q --metrics "$m" < /dev/null > "$LOGS/bench_${name}_$prec.log" 2>&1; then
      ms=$(median_ms "$m")
      ok "bench_${name}_${prec}_mpl" "median $ms ms/step"
    else
      ms=nan
      bad "bench_${name}_${prec}_mpl" "$(last_line "$LOGS/bench_${name}_$prec.log" 2)"
    fi
    tj="$LOGS/torch_${name}_$prec.json"
    # shellcheck disable=SC2086
    if timeout 240 "$PY" tests/gpu/torch_bench.py --d "$d" --layers "$layers" --heads "$heads" --T "$ctx" --B "$batch" $flag \
         < /dev/null > "$tj" 2> "$LOGS/torch_${name}_$prec.err"; then
      tms=$("$PY" -c 'import json,sys; print("%.3f" % json.load(open(sys.argv[1]))["ms_per_step"])' "$tj")
      ok "bench_${name}_${prec}_torch" "median $tms ms/step"
    else
      tms=nan
      bad "bench_${name}_${prec}_torch" "$(last_line "$LOGS/torch_${name}_$prec.err" 2)"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$prec" "$d" "$layers" "$heads" "$ctx" "$batch" "$ms" "$tms" >> "$BENCH"
  done
done < "$C/bench.tsv"

# where the time goes: GPU time per kernel (MPL_PROFILE=1) for each bench config in fp32
while IFS=$'\t' read -r name job _; do
  [ -n "$name" ] || continue
  prof="$LOGS/profile_$name.txt"
  if MPL_PROFILE=1 timeout 120 "$MPLRUN" "$C/$job" --devices cuda --steps 4 -q < /dev/null > "$prof" 2>&1 &&
     grep -q '^MPL_PROFILE device 0, [1-9][0-9]* steps after the first: [1-9]' "$prof"; then
    ok "profile_$name" "$(grep -m1 '^MPL_PROFILE' "$prof" | sed 's/^MPL_PROFILE device 0, //' | cut -c1-110)"
  else bad "profile_$name" "$(last_line "$prof" 2)"; fi
done < "$C/bench.tsv"

# tokens/s, ratio and MFU (6N + 12 L d T flops per token; peak FP32 67 TFLOPS and TF32 495
# dense, an H100 SXM's; MPL_PEAK_FP32 / MPL_PEAK_TF32 in TFLOPS override)
"$PY" - "$BENCH" > "$LOGS/bench.txt" << 'EOF'
import math, os, sys
peak = {"fp32": float(os.environ.get("MPL_PEAK_FP32", 67)), "tf32": float(os.environ.get("MPL_PEAK_TF32", 495))}
print("bench GPT (vocab 256, AdamW, one GPU): tokens/s, MPL/PyTorch, MFU (peak fp32 %g, tf32 %g TFLOPS)" % (peak["fp32"], peak["tf32"]))
print("%-6s %-5s %-22s %12s %12s %7s %8s %8s" % ("config", "prec", "d/layers/heads/T/B", "mpl tok/s", "torch tok/s", "ratio", "mpl MFU", "torch MFU"))
for line in open(sys.argv[1]):
    name, prec, d, L, H, T, B, ms, tms = line.rstrip("\n").split("\t")
    d, L, T, B = int(d), int(L), int(T), int(B)
    ms, tms = float(ms), float(tms)
    N = 256 * d + T * d + L * (12 * d * d + 13 * d) + 2 * d
    fpt = 6 * N + 12 * L * d * T
    tok = lambda m: B * T / (m / 1e3) if m == m and m > 0 else float("nan")
    mfu = lambda m: tok(m) * fpt / (peak[prec] * 1e12)
    a, b = tok(ms), tok(tms)
    print("%-6s %-5s %-22s %12.0f %12.0f %7.2f %7.1f%% %7.1f%%" % (name, prec, "%d/%d/%s/%d/%d" % (d, L, H, T, B),
          a, b, a / b if b == b and b > 0 else float("nan"), 100 * mfu(ms), 100 * mfu(tms)))
EOF
fi # section 4

# ---- 5. precision: the GPU test GPT in bf16 and tf32 ---------------------------------------------
# 20 steps in bf16 on the GPU: the loss curve within 1e-3 relative of the CPU's bf16 one and within
# 1e-2 of the CPU's f32 one; tf32 from the job's precision (no --tf32): 3 steps within 1e-2 of the
# CPU's f32 params (a CPU computes a tf32 job in f32)
if want precision && [ -f "$C/jobs/gpt_bf16.job" ]; then
echo "== precision"
if timeout 120 "$MPLRUN" "$C/jobs/gpt_bf16.job" --devices cuda --steps 20 -q --metrics "$LOGS/gpt_bf16_gpu.jsonl" \
     < /dev/null > "$LOGS/gpt_bf16_gpu.log" 2>&1; then
  for ref in bf16:1e-3 f32:1e-2; do
    p=${ref%%:*} tol=${ref#*:}
    if "$PY" tests/tools/losscompare.py "$LOGS/gpt_bf16_gpu.jsonl" "$C/ref/gpt_${p}_cpu.jsonl" "$tol" > "$LOGS/gpt_bf16_vs_$p.cmp" 2>&1
    then ok "bf16_gpu_vs_cpu_$p" "$(last_line "$LOGS/gpt_bf16_vs_$p.cmp")"
    else bad "bf16_gpu_vs_cpu_$p" "$(last_line "$LOGS/gpt_bf16_vs_$p.cmp")"; fi
  done
else
  bad bf16_gpu "mplrun: $(last_line "$LOGS/gpt_bf16_gpu.log" 3)"
fi
# the same with the attention on CUDA cores (MPL_SDPA_TC=0): where the line above fails and this
# passes, the tensor-core attention kernels (sdpa.cu's *_tc) are what differ
if MPL_SDPA_TC=0 timeout 120 "$MPLRUN" "$C/jobs/gpt_bf16.job" --devices cuda --steps 20 -q \
     --metrics "$LOGS/gpt_bf16_gpu_cc.jsonl" < /dev/null > "$LOGS/gpt_bf16_gpu_cc.log" 2>&1 &&
   "$PY" tests/tools/losscompare.py "$LOGS/gpt_bf16_gpu_cc.jsonl" "$C/ref/gpt_bf16_cpu.jsonl" 1e-3 > "$LOGS/gpt_bf16_cc.cmp" 2>&1
then ok bf16_gpu_cuda_core_attn "$(last_line "$LOGS/gpt_bf16_cc.cmp")"
else bad bf16_gpu_cuda_core_attn "$(last_line "$LOGS/gpt_bf16_gpu_cc.log" 2) $(last_line "$LOGS/gpt_bf16_cc.cmp")"; fi
# the keys' gradients in two kernels (MPL_SDPA_TC=split, the device's choice past head size 64):
# the same arithmetic as the one kernel, so the same curve (1e-6: the GPU compiler may contract
# the two builds' products differently)
if MPL_SDPA_TC=split timeout 120 "$MPLRUN" "$C/jobs/gpt_bf16.job" --devices cuda --steps 20 -q \
     --metrics "$LOGS/gpt_bf16_gpu_split.jsonl" < /dev/null > "$LOGS/gpt_bf16_gpu_split.log" 2>&1 &&
   "$PY" tests/tools/losscompare.py "$LOGS/gpt_bf16_gpu_split.jsonl" "$LOGS/gpt_bf16_gpu.jsonl" 1e-6 > "$LOGS/gpt_bf16_split.cmp" 2>&1
then ok bf16_gpu_split_kv_attn "$(last_line "$LOGS/gpt_bf16_split.cmp")"
else bad bf16_gpu_split_kv_attn "$(last_line "$LOGS/gpt_bf16_gpu_split.log" 2) $(last_line "$LOGS/gpt_bf16_split.cmp")"; fi
# MPL_CUDA_GRAPHS=1 (the step's work launched as CUDA graphs from step 2 on): the same 20 losses,
# to the bit, as the run above without graphs (the same kernels in the same order on one stream)
if MPL_CUDA_GRAPHS=1 timeout 120 "$MPLRUN" "$C/jobs/gpt_bf16.job" --devices cuda --steps 20 -q \
     --metrics "$LOGS/gpt_bf16_gpu_graphs.jsonl" < /dev/null > "$LOGS/gpt_bf16_gpu_graphs.log" 2>&1 &&
   graphs_line "$LOGS/gpt_bf16_gpu_graphs.log" > /dev/null &&
   "$PY" tests/tools/losscompare.py "$LOGS/gpt_bf16_gpu_graphs.jsonl" "$LOGS/gpt_bf16_gpu.jsonl" 0 > "$LOGS/gpt_bf16_graphs.cmp" 2>&1
then ok bf16_gpu_cuda_graphs "$(last_line "$LOGS/gpt_bf16_graphs.cmp"); $(graphs_line "$LOGS/gpt_bf16_gpu_graphs.log")"
else bad bf16_gpu_cuda_graphs "$(last_line "$LOGS/gpt_bf16_gpu_graphs.log" 2) $(last_line "$LOGS/gpt_bf16_graphs.cmp")"; fi
# a program's own bf16 and f16 tensors: 10 steps on the GPU within 1e-3 of the CPU's curve
for t in bf16 f16; do
  [ -f "$C/jobs/half_$t.job" ] || continue
  if timeout 120 "$MPLRUN" "$C/jobs/half_$t.job" --devices cuda --steps 10 -q --metrics "$LOGS/half_$t.jsonl" \
       < /dev/null > "$LOGS/half_$t.log" 2>&1 &&
     "$PY" tests/tools/losscompare.py "$LOGS/half_$t.jsonl" "$C/ref/half_${t}_cpu.jsonl" 1e-3 > "$LOGS/half_$t.cmp" 2>&1
  then ok "half_${t}_gpu_vs_cpu" "$(last_line "$LOGS/half_$t.cmp")"
  else bad "half_${t}_gpu_vs_cpu" "$(last_line "$LOGS/half_$t.log" 2) $(last_line "$LOGS/half_$t.cmp")"; fi
done
if timeout 120 "$MPLRUN" "$C/jobs/gpt_tf32.job" --devices cuda --steps 3 -q --save "$LOGS/gpt_tf32.safetensors" \
     < /dev/null > "$LOGS/gpt_tf32.log" 2>&1 &&
   "$PY" tests/gpu/compare.py "$C/ref/gpt_pp1_1f1b.safetensors" "$LOGS/gpt_tf32.safetensors" 1e-2 > "$LOGS/gpt_tf32.cmp" 2>&1; then
  ok tf32_precision "$(last_line "$LOGS/gpt_tf32.cmp")"
else
  bad tf32_precision "$(last_line "$LOGS/gpt_tf32.log" 2) $(last_line "$LOGS/gpt_tf32.cmp")"
fi
# an f32 Llama at head size 128 (T 1024): 8 steps with the attention as three tf32 products
# (sdpa.cu's *_x3, q or k read from shared memory past head size 64) and with it on the CUDA
# cores (MPL_SDPA_TC=0, whose kernels spill registers there): the median ms/step of each, and
# the two loss curves within 1e-4 of each other (both f32 within about 2^-21 a product)
if [ -f "$C/jobs/llama_hs128_f32.job" ]; then
  for v in x3 cc; do
    env $([ $v = cc ] && echo MPL_SDPA_TC=0) timeout 200 "$MPLRUN" "$C/jobs/llama_hs128_f32.job" --devices cuda --steps 8 -q \
      --metrics "$LOGS/llama128_$v.jsonl" < /dev/null > "$LOGS/llama128_$v.log" 2>&1 || : > "$LOGS/llama128_$v.jsonl"
  done
  if "$PY" tests/tools/losscompare.py "$LOGS/llama128_x3.jsonl" "$LOGS/llama128_cc.jsonl" 1e-4 > "$LOGS/llama128.cmp" 2>&1; then
    ok llama_hs128_f32_attn "median $(median_ms "$LOGS/llama128_x3.jsonl") ms/step on tensor cores (3xtf32), $(median_ms "$LOGS/llama128_cc.jsonl") on the CUDA cores; $(last_line "$LOGS/llama128.cmp")"
  else
    bad llama_hs128_f32_attn "$(last_line "$LOGS/llama128_x3.log" 2) $(last_line "$LOGS/llama128_cc.log" 2) $(last_line "$LOGS/llama128.cmp")"
  fi
fi
fi # section 5

# ---- 6. GPT-2 124M: MPL in f32, tf32 and bf16 against PyTorch ---------------------------------
# vocab 50257, d 768, 12 layers, 12 heads, T 1024, B 8, AdamW: MPL 10 steps per precision (the
# median after the first 2), then 3 steps under MPL_PROFILE (where the GPU time goes, and the
# memory the run took from the pool); PyTorch (tests/gpu/torch_bench.py) in fp32 eager, tf32
# eager, bf16 autocast eager and bf16 autocast + torch.compile
if want gpt2 && [ -f "$C/gpt2.tsv" ]; then
echo "== GPT-2 124M (mplrun vs PyTorch on this GPU)"
G2="$LOGS/gpt2.tsv"
: > "$G2"
while IFS=$'\t' read -r prec job arena state; do
  [ -n "$prec" ] || continue
  m="$LOGS/gpt2_mpl_$prec.jsonl" ms=nan mem=nan
  if timeout 300 "$MPLRUN" "$C/$job" --devices cuda --steps 10 -q --metrics "$m" < /dev/null > "$LOGS/gpt2_mpl_$prec.log" 2>&1; then
    ms=$(median_ms "$m")
    ok "gpt2_mpl_$prec" "median $ms ms/step"
  else
    bad "gpt2_mpl_$prec" "$(last_line "$LOGS/gpt2_mpl_$prec.log" 2)"
  fi
  prof="$LOGS/profile_gpt2_$prec.txt"
  if MPL_PROFILE=1 timeout 200 "$MPLRUN" "$C/$job" --devices cuda --steps 3 -q < /dev/null > "$prof" 2>&1; then
    mem=$(sed -n 's/^MPL_PROFILE device 0 memory: \([0-9]*\) bytes.*/\1/p' "$prof" | head -n 1)
  fi
  printf 'mpl\t%s\t%s\t%s\t%s\n' "$prec" "$ms" "$((arena + state))" "${mem:-nan}" >> "$G2"
  # the same with the step's work launched as CUDA graphs (MPL_CUDA_GRAPHS=1, from step 2 on)
  m="$LOGS/gpt2_mpl_${prec}_graphs.jsonl" gms=nan
  if MPL_CUDA_GRAPHS=1 timeout 300 "$MPLRUN" "$C/$job" --devices cuda --steps 10 -q --metrics "$m" < /dev/null \
       > "$LOGS/gpt2_mpl_${prec}_graphs.log" 2>&1; then
    gms=$(median_ms "$m")
    ok "gpt2_mpl_${prec}_cuda_graphs" "median $gms ms/step (without graphs: $ms); $(graphs_line "$LOGS/gpt2_mpl_${prec}_graphs.log")"
  else bad "gpt2_mpl_${prec}_cuda_graphs" "$(last_line "$LOGS/gpt2_mpl_${prec}_graphs.log" 2)"; fi
  printf 'mpl\t%s\t%s\t%s\t-\n' "$prec+graphs" "$gms" "$((arena + state))" >> "$G2"
  # the attention on the CUDA cores (MPL_SDPA_TC=0): what the tensor-core kernels give (f32: three tf32 products each)
  m="$LOGS/gpt2_mpl_${prec}_cc.jsonl"
  if MPL_SDPA_TC=0 timeout 300 "$MPLRUN" "$C/$job" --devices cuda --steps 10 -q --metrics "$m" < /dev/null \
       > "$LOGS/gpt2_mpl_${prec}_cc.log" 2>&1; then
    ok "gpt2_mpl_${prec}_cuda_core_attn" "median $(median_ms "$m") ms/step (tensor-core attention: $ms)"
  else bad "gpt2_mpl_${prec}_cuda_core_attn" "$(last_line "$LOGS/gpt2_mpl_${prec}_cc.log" 2)"; fi
  if [ "$prec" = bf16 ]; then
    # and the keys' gradients in two kernels (head size 64 takes one): what the split costs
    m="$LOGS/gpt2_mpl_bf16_split.jsonl"
    if MPL_SDPA_TC=split timeout 300 "$MPLRUN" "$C/$job" --devices cuda --steps 10 -q --metrics "$m" < /dev/null \
         > "$LOGS/gpt2_mpl_bf16_split.log" 2>&1; then
      ok gpt2_mpl_bf16_split_kv_attn "median $(median_ms "$m") ms/step (one kernel for dk and dv: $ms)"
    else bad gpt2_mpl_bf16_split_kv_attn "$(last_line "$LOGS/gpt2_mpl_bf16_split.log" 2)"; fi
  fi
done < "$C/gpt2.tsv"
for mode in fp32 tf32 bf16 bf16-compile; do
  tj="$LOGS/gpt2_torch_$mode.json" tms=nan tmem=nan
  if timeout 400 "$PY" tests/gpu/torch_bench.py --vocab 50257 --d 768 --layers 12 --heads 12 --T 1024 --B 8 \
       --mode $mode --steps 10 --warmup 4 < /dev/null > "$tj" 2> "$LOGS/gpt2_torch_$mode.err"; then
    read -r tms tmem < <("$PY" -c 'import json,sys; j=json.load(open(sys.argv[1])); print("%.3f %d" % (j["ms_per_step"], j["max_memory_allocated"]))' "$tj")
    ok "gpt2_torch_$mode" "median $tms ms/step"
  else
    bad "gpt2_torch_$mode" "$(last_line "$LOGS/gpt2_torch_$mode.err" 2)"
  fi
  printf 'torch\t%s\t%s\t-\t%s\n' "$mode" "$tms" "$tmem" >> "$G2"
done
# tokens/s; MFU: (6 N + 12 L d T) flops per token (as section 4: the products forward and backward,
# plus attention's) over the card's dense peak for the precision: bf16 989, tf32 495, fp32 67
# TFLOP/s (an H100 / H200 SXM's; MPL_PEAK_BF16 / _TF32 / _FP32 override); memory: MPL's plan
# (arena + optimizer state) and what it took from the pool, PyTorch's max_memory_allocated
"$PY" - "$G2" > "$LOGS/gpt2.txt" << 'EOF'
import os, sys
V, d, L, T, B = 50257, 768, 12, 1024, 8
N = V * d + T * d + L * (12 * d * d + 13 * d) + 2 * d
fpt = 6 * N + 12 * L * d * T
peak = {"fp32": float(os.environ.get("MPL_PEAK_FP32", 67)), "tf32": float(os.environ.get("MPL_PEAK_TF32", 495)),
        "bf16": float(os.environ.get("MPL_PEAK_BF16", 989))}
names = {"fp32": "fp32 eager", "tf32": "tf32 eager", "bf16": "bf16 autocast eager", "bf16-compile": "bf16 autocast + compile"}
print("GPT-2 124M (%.1fM params, vocab %d, B %d, T %d, AdamW), one GPU; MFU over fp32 %g, tf32 %g, bf16 %g TFLOP/s"
      % (N / 1e6, V, B, T, peak["fp32"], peak["tf32"], peak["bf16"]))
print("%-32s %9s %10s %6s %12s %12s" % ("run", "ms/step", "tokens/s", "MFU", "planned GiB", "peak GiB"))
gib = lambda x: "%.2f" % (float(x) / 2**30) if x not in ("-", "nan", "") else "-"
toks = {}
for line in open(sys.argv[1]):
    if not line.strip():
        continue
    who, prec, ms, plan, mem = line.rstrip("\n").split("\t")
    ms = float(ms)
    tok = B * T / (ms / 1e3) if ms == ms and ms > 0 else float("nan")
    base = prec.split("+")[0]  # "bf16+graphs": MPL_CUDA_GRAPHS=1
    p = "fp32" if base in ("f32", "fp32") else "tf32" if base == "tf32" else "bf16"
    name = "MPL " + prec if who == "mpl" else "PyTorch " + names[prec]
    toks[name] = tok
    print("%-32s %9.1f %10.0f %5.1f%% %12s %12s" % (name, ms, tok, 100 * tok * fpt / (peak[p] * 1e12), gib(plan), gib(mem)))
for a, b in (("MPL f32", "PyTorch fp32 eager"), ("MPL tf32", "PyTorch tf32 eager"),
             ("MPL bf16", "PyTorch bf16 autocast eager"), ("MPL bf16", "PyTorch bf16 autocast + compile"),
             ("MPL f32+graphs", "PyTorch fp32 eager"), ("MPL tf32+graphs", "PyTorch tf32 eager"),
             ("MPL bf16+graphs", "PyTorch bf16 autocast + compile"), ("MPL bf16+graphs", "MPL bf16")):
    if a in toks and b in toks and toks[b] == toks[b] and toks[b] > 0:
        print("%s / %s: %.2fx tokens/s" % (a, b, toks[a] / toks[b]))
print("planned: MPL's arena plus optimizer state (mplc --emit=plan); peak: MPL's stream-ordered pool high-water")
print("(MPL_PROFILE), PyTorch's torch.cuda.max_memory_allocated; neither counts the CUDA context or cuBLAS workspaces")
EOF
fi # section 6

# ---- 7. compute-sanitizer on the runtime's own kernels (only when asked: MPL_GPU_ONLY=sanitize) ----
# racecheck (shared-memory hazards: a missing __syncthreads in sdpa.cu's tiles), memcheck (reads
# and writes out of bounds) and synccheck, one step each of: the f32 Llama at head size 128
# (3xtf32 attention, q from a shared copy, dout from global), the bf16 GPT (bf16 tensor cores)
# and the tf32 GPT. SKIP where the tool is missing or refuses the device (gVisor)
if [[ ",${MPL_GPU_ONLY:-}," == *",sanitize,"* ]]; then
echo "== compute-sanitizer"
CS=$(command -v compute-sanitizer || echo "$CUDA_HOME/bin/compute-sanitizer")
for job in llama_hs128 gpt_bf16 gpt_tf32; do
  [ -f "$C/jobs/$job.job" ] || continue
  for tool in racecheck memcheck synccheck; do
    log="$LOGS/sanitize_${job}_$tool.log"
    if [ ! -x "$CS" ]; then skip "sanitize_$job" "no compute-sanitizer"; break; fi
    timeout 300 "$CS" --tool "$tool" --error-exitcode 3 "$MPLRUN" "$C/jobs/$job.job" --devices cuda --steps 1 -q \
      < /dev/null > "$log" 2>&1
    rc=$?
    if grep -q -i 'not supported\|unable to' "$log" && [ $rc != 0 ] && ! grep -q 'ERROR SUMMARY: [1-9]' "$log"; then
      skip "sanitize_${job}_$tool" "$(last_line "$log")"
    elif [ $rc = 0 ] && grep -q 'ERROR SUMMARY: 0 errors' "$log"; then ok "sanitize_${job}_$tool" "0 errors"
    else bad "sanitize_${job}_$tool" "exit $rc: $(grep -m1 -i 'error\|hazard' "$log" | cut -c1-120)"; fi
  done
done
fi # section 7
finish

