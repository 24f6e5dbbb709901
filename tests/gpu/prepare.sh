#!/usr/bin/env bash
# tests/gpu/prepare.sh — run HERE (the build machine, with LLVM and oneDNN): compiles the
# jobs the GPU machine runs and computes their CPU reference results, into tests/gpu/carry/
# (gitignored; the device tool carries it). Afterwards tests/gpu/run.sh on the GPU machine
# needs nothing from this machine but that folder and the source tree.
#
#   make && tests/gpu/prepare.sh          (BUILD=dir for another build folder)
#
# carry/checks.tsv, one check per line, tab-separated:
#   compare NAME JOB FLAGS   3 steps on the GPU vs ref/NAME.safetensors (3 CPU steps)
#   trains  NAME JOB FLAGS   10 steps on the GPU: the loss is finite and falls
#   sample  NAME JOB         --sample 24 from the initial params on the GPU: ref/NAME.txt, the CPU's text
# carry/mpi.tsv, one run under mpirun (one process per rank on the GPU) per line:
#   NAME NP JOB REF ENV FLAGS   3 steps vs ref/REF.safetensors; ENV is - or VAR=VALUE
# carry/bench.tsv: NAME JOB d layers heads ctx batch (tests/bench/gpt.mpl configs).
# carry/gpt2.tsv: PRECISION JOB ARENA_BYTES UPDATE_STATE_BYTES (optimizer state + update scratch), GPT-2 124M (tests/bench/gpt.mpl
#   at vocab 50257, d 768, 12 layers, 12 heads, T 1024, B 8, AdamW) and its plan, per precision.
# jobs/gpt_bf16.job, jobs/gpt_tf32.job: the GPU test GPT at precision bf16 and tf32;
#   ref/gpt_bf16_cpu.jsonl, ref/gpt_f32_cpu.jsonl: its CPU loss curves over 20 steps.
# jobs/half_bf16.job, jobs/half_f16.job: tests/e2e/half_*.mpl (a program's own bf16 and f16
#   tensors: bf16 loads and stores in the kernels, the attention on tensor cores);
#   ref/half_*_cpu.jsonl: their CPU loss curves over 10 steps.
# jobs/llama_hs128_f32.job: a Llama at head size 128 (d 1024, 8 heads, T 1024, B 4, 2 layers)
#   in f32, for the attention's speed as three tf32 products against the CUDA cores.
set -eu
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
MPLC=$BUILD/mplc MPLRUN=$BUILD/mplrun
C=tests/gpu/carry
# the jobs hold PTX for the GPU machine's architecture (H100 and H200: sm_90), so run.sh
# loads it; NOPTX=1 leaves one job without, so mplrun's own NVRTC compile runs there too
ARCH=(--gpu-arch "${GPU_ARCH:-sm_90}")
for t in "$MPLC" "$MPLRUN" examples/data/tiny.bin; do
  [ -e "$t" ] || { echo "prepare: $t is missing (run make first)" >&2; exit 1; }
done
rm -rf "$C"
mkdir -p "$C/jobs" "$C/ref"
# the sources the jobs were compiled from: run.sh refuses a carry made from other sources
# (a stale carry once missed a day of kernel changes: pass 55)
tests/gpu/src_digest.sh > "$C/source.digest"
cp examples/data/tiny.bin "$C/tiny.bin"
: > "$C/checks.tsv"

# compare NAME MODEL [mplc flags...]: the job and its CPU params after 3 steps (INIT=FILE:
# both runs start from that file of the tree, --init)
compare() {
  local name=$1 model=$2; shift 2
  local init=() flags=${RUNFLAGS:-}
  [ -n "${INIT:-}" ] && init=(--init "$INIT") && flags="${flags:+$flags }--init $INIT"
  local arch=("${ARCH[@]}"); [ -n "${NOPTX:-}" ] && arch=()
  "$MPLC" "$model" "$@" ${arch[@]+"${arch[@]}"} -o "$C/jobs/$name.job"
  "$MPLRUN" "$C/jobs/$name.job" ${init[@]+"${init[@]}"} --steps 3 --threads 1 -q --save "$C/ref/$name.safetensors" > /dev/null
  printf 'compare\t%s\t%s\t%s\n' "$name" "jobs/$name.job" "$flags" >> "$C/checks.tsv"
  echo "prepared $name"
}
trains() {
  local name=$1 model=$2; shift 2
  "$MPLC" "$model" "$@" "${ARCH[@]}" -o "$C/jobs/$name.job"
  printf 'trains\t%s\t%s\t%s\n' "$name" "jobs/$name.job" "${RUNFLAGS:-}" >> "$C/checks.tsv"
  echo "prepared $name"
}

# every schedule and pipeline depth; on a one-GPU machine the ranks share the GPU
for pp in 1 2 4; do
  for sched in sequential gpipe 1f1b "interleaved(2)" zb; do
    compare "gpt_pp${pp}_${sched//[()]/}" tests/gpu/models/gpt_sgd.mpl --mesh pp=$pp --schedule "$sched"
  done
done
RUNFLAGS="--devices cuda:0,0" compare gpt_pp2_shared tests/gpu/models/gpt_sgd.mpl --mesh pp=2 --schedule 1f1b
# no PTX in the job: mplrun compiles its CUDA source with NVRTC for the GPU it finds
NOPTX=1 compare gpt_pp1_noptx tests/gpu/models/gpt_sgd.mpl --mesh pp=1 --schedule 1f1b
# data and tensor parallelism on the GPU (ranks share it: device copies, host-summed all-reduce)
compare gpt_dp2 tests/gpu/models/gpt_sgd.mpl --mesh dp=2
compare gpt_tp2 tests/gpu/models/gpt_sgd.mpl --mesh tp=2
compare gpt_dp2_pp2_tp2 tests/e2e/parallel_gpt.mpl --mesh dp=2,pp=2,tp=2
compare gpt_dp2_pp2 tests/gpu/models/gpt_sgd.mpl --mesh dp=2,pp=2
compare tp_gather tests/gpu/models/tp_gather.mpl
compare small_mlp tests/e2e/small_mlp.mpl
compare recompute tests/e2e/recompute.mpl
compare layers_on_devices examples/layers_on_devices.mpl
# the fused cross-entropy (runtime/cuda/ce.cu; every GPT above has it): an untied head of 2500
# classes (one block of rows), and the same with --no-fused-ce, each on the GPU against the CPU
compare fused_ce tests/e2e/fused_ce.mpl
compare fused_ce_off tests/e2e/fused_ce.mpl --no-fused-ce
trains mlp examples/mlp.mpl
# --sample on the GPU (each token's forward through the ranks' device messages and tp
# collectives): the text the CPU samples from the same (initial) params, temperature 1
sample() {
  local name=$1 job=$2
  "$MPLRUN" "$C/$job" --threads 1 --sample 24 --prompt "$(printf '\001\002')" --seed 3 > "$C/ref/$name.txt" 2> /dev/null
  printf 'sample\t%s\t%s\t\n' "$name" "$job" >> "$C/checks.tsv"
  echo "prepared $name"
}
sample sample_pp1 jobs/gpt_pp1_1f1b.job
sample sample_dp2_pp2_tp2 jobs/gpt_dp2_pp2_tp2.job
# dropout: masks over the whole batch and the whole value (tests/e2e/dropout.sh checks the
# CPU's against other layouts); at tp = 2 the CUDA kernels' tp index places each rank's part
compare dropout_pp2 tests/e2e/dropout.mpl
compare dropout_tp2 tests/e2e/dropout_tp.mpl --mesh tp=2
# row kernels that store a costly chain in their first loop and load it in the others (in a
# warp kernel the lanes split that loop, __syncwarp() before the lane loops read it), and
# one whose chain is read across rows, so computed in each loop
compare row_chains tests/e2e/row_chains.mpl
compare row_chains_t tests/e2e/row_chains_t.mpl
compare balance_model tests/e2e/balance_model.mpl --no-remat
# the v2 ops with kernels of their own (issue 13; tests/e2e/ops_v2.sh checks the CPU against
# the float64 reference); the tp program also at tp = 2
for m in tests/e2e/ops_v2_*.mpl; do compare "$(basename "$m" .mpl)" "$m"; done
compare ops_v2_tp_tp2 tests/e2e/ops_v2_tp.mpl --mesh tp=2
# the PyTorch parity models of tests/parity/run_v2.sh (Llama, MoE, CNN, ViT), from their
# stored initial params, on the meshes that script checks against float64 PyTorch
P=tests/parity/v2
INIT=$P/llama.init.safetensors compare parity_llama_pp1 $P/llama.mpl
INIT=$P/llama.init.safetensors compare parity_llama_pp2 $P/llama.mpl -D stages=2
INIT=$P/llama.init.safetensors compare parity_llama_tp2 $P/llama.mpl --mesh tp=2
INIT=$P/llama.init.safetensors compare parity_llama_pp2_tp2 $P/llama.mpl -D stages=2 --mesh tp=2
INIT=$P/moe.init.safetensors compare parity_moe_tp1 $P/moe.mpl
# Llama's head size, 128, in f32: the attention as three tf32 products each with q (k) read
# from shared memory and dout (v) from global (sdpa.cu's SDPA_X3_LAZY), two tiles of queries
compare llama_hs128 examples/llama.mpl -D stages=1 -D d=256 -D heads=2 -D kv_heads=1 -D hidden=128 -D layers=1 -D batch=4 -D ctx=96
INIT=$P/moe.init.safetensors compare parity_moe_tp2 $P/moe.mpl --mesh tp=2
INIT=$P/cnn.init.safetensors compare parity_cnn $P/cnn.mpl
INIT=$P/vit.init.safetensors compare parity_vit_tp1 $P/vit.mpl
INIT=$P/vit.init.safetensors compare parity_vit_tp2 $P/vit.mpl --mesh tp=2
# every broadcast pattern of the batched product (the CPU's results are checked against the
# float64 reference evaluator by tests/e2e/matmul_bcast.sh; here the GPU against the CPU)
python3 tests/tools/bcast_models.py "$C/bcast" > /dev/null
for m in "$C"/bcast/bcast_*.mpl; do compare "$(basename "$m" .mpl)" "$m"; done
RUNFLAGS="--data tests/gpu/carry/tiny.bin" trains gpt_tiny examples/gpt_tiny.mpl

# under mpirun, one process per rank: ranks that share the one GPU stage device buffers
# through the host and MPI (plain `cuda` picks the GPU by the process's rank on its host);
# MPL_NCCL=1 on one rank makes the NCCL communicator from an id broadcast over MPI
: > "$C/mpi.tsv"
mpi_case() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$C/mpi.tsv"; }
mpi_case mpi_pp2_shared 2 jobs/gpt_pp2_1f1b.job gpt_pp2_1f1b - "--devices cuda:0,0"
mpi_case mpi_pp2_local_rank 2 jobs/gpt_pp2_1f1b.job gpt_pp2_1f1b - "--devices cuda"
mpi_case mpi_dp2_pp2_shared 4 jobs/gpt_dp2_pp2.job gpt_dp2_pp2 - "--devices cuda:0,0,0,0"
mpi_case mpi_dp2_pp2_tp2_shared 8 jobs/gpt_dp2_pp2_tp2.job gpt_dp2_pp2_tp2 - "--devices cuda:0,0,0,0,0,0,0,0"
mpi_case mpi_nccl_one_rank 1 jobs/gpt_pp1_1f1b.job gpt_pp1_1f1b MPL_NCCL=1 "--devices cuda"
# MPL_CUDA_GRAPHS=1 under mpirun: each process's graphs split at its staged messages and collectives
mpi_case mpi_dp2_pp2_tp2_graphs 8 jobs/gpt_dp2_pp2_tp2.job gpt_dp2_pp2_tp2 MPL_CUDA_GRAPHS=1 "--devices cuda:0,0,0,0,0,0,0,0"
echo "prepared $(wc -l < "$C/mpi.tsv") MPI runs"

# the bench GPT configs (tests/bench/gpt.mpl), one pipeline stage
printf 'small\tjobs/bench_small.job\t384\t6\t6\t256\t8\n' > "$C/bench.tsv"
"$MPLC" tests/bench/gpt.mpl "${ARCH[@]}" -o "$C/jobs/bench_small.job"
printf 'wide\tjobs/bench_wide.job\t768\t4\t12\t512\t4\n' >> "$C/bench.tsv"
"$MPLC" tests/bench/gpt.mpl -D d=768 -D layers=4 -D heads=12 -D ctx=512 -D batch=4 "${ARCH[@]}" -o "$C/jobs/bench_wide.job"
echo "prepared bench jobs"

# precision (issue 14): the GPU test GPT in bf16 and tf32, and the CPU's loss curves over 20
# steps in bf16 and in f32, which tests/gpu/run.sh compares the GPU's bf16 curve with
"$MPLC" tests/gpu/models/gpt_sgd.mpl --precision bf16 "${ARCH[@]}" -o "$C/jobs/gpt_bf16.job"
"$MPLC" tests/gpu/models/gpt_sgd.mpl --precision tf32 "${ARCH[@]}" -o "$C/jobs/gpt_tf32.job"
"$MPLRUN" "$C/jobs/gpt_bf16.job" --steps 20 --threads 1 -q --metrics "$C/ref/gpt_bf16_cpu.jsonl" > /dev/null
"$MPLRUN" "$C/jobs/gpt_pp1_1f1b.job" --steps 20 --threads 1 -q --metrics "$C/ref/gpt_f32_cpu.jsonl" > /dev/null
for t in bf16 f16; do
  "$MPLC" tests/e2e/half_$t.mpl --mesh pp=1 "${ARCH[@]}" -o "$C/jobs/half_$t.job"
  "$MPLRUN" "$C/jobs/half_$t.job" --steps 10 --threads 1 -q --metrics "$C/ref/half_${t}_cpu.jsonl" > /dev/null
done
echo "prepared the bf16 GPT and its CPU loss curves"
"$MPLC" examples/llama.mpl -D stages=1 -D vocab=256 -D d=1024 -D heads=8 -D kv_heads=4 -D hidden=2816 -D layers=2 \
  -D ctx=1024 -D batch=4 "${ARCH[@]}" -o "$C/jobs/llama_hs128_f32.job"
# GPT-2 124M in each precision, with its plan's arena and optimizer state (bytes)
g2=(-D vocab=50257 -D d=768 -D layers=12 -D heads=12 -D ctx=1024 -D batch=8)
: > "$C/gpt2.tsv"
for p in f32 tf32 bf16; do
  "$MPLC" tests/bench/gpt.mpl "${g2[@]}" --precision $p "${ARCH[@]}" -o "$C/jobs/gpt2_$p.job"
  "$MPLC" tests/bench/gpt.mpl "${g2[@]}" --precision $p --emit=plan > "$C/gpt2_$p.plan"
  arena=$(awk '/arena \(peak\)/ { print $3; exit }' "$C/gpt2_$p.plan")
  state=$(awk '/optimizer state/ { o = $3 } /update scratch/ { s = $3 } END { printf "%.0f", o + s }' "$C/gpt2_$p.plan")
  printf '%s\t%s\t%s\t%s\n' $p "jobs/gpt2_$p.job" "$arena" "$state" >> "$C/gpt2.tsv"
done
echo "prepared GPT-2 124M in f32, tf32 and bf16"
du -sh "$C"
echo "tests/gpu/carry is ready: carry it and run tests/gpu/run.sh on the GPU machine"
