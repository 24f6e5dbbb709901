#!/usr/bin/env bash
# tests/bench/bench.sh — `make bench`: MPL's training speed against PyTorch, in one run.
#
# Models (tests/bench/*.mpl and their twins in torch_gpt.py):
#   mlp        784-1024-1024-10, batch 256                  ("tokens" are examples)
#   gpt-384    vocab 256, d 384, 6 layers, 6 heads, T 256, B 8
#   gpt-768    vocab 256, d 768, 4 layers, 12 heads, T 512, B 4
#   llama      vocab 256, d 384, 6 layers, 6 heads (2 kv), SwiGLU 1024, T 256, B 8 (examples/llama.mpl's layers)
# and gpt-768 once more on 1 rank with mplc --no-fused-sdpa: the fused attention's effect on
# the step time and on the planned arena at T = 512, and with mplc --no-remat: selective
# recomputation's cost in time and its saving in memory.
# MPL runs each on 1 CPU rank (pp = 1) and on 2 ranks (pp = 2, 1F1B, --threads 1 each),
# with no environment variables set. PyTorch (Debian's python3-torch, when installed) runs
# the same models with torch.set_num_threads(1 and 2), twice: as the machine gives it, and
# tuned (OPENBLAS_CORETYPE=Cooperlake OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=T, set
# before torch is imported). The GEMM peak (oneDNN sgemm, tests/bench/gemm_bench.c --peak)
# is measured in the same run (before and after the models; the better is kept); MPL's FLOP/s use the job's own count (mplrun --inspect).
# Times are medians of the steady-state steps (warm-up steps discarded). A benchmark, not
# a test: it prints one table and exits 0 unless something fails to build or run.
#
# Environment: BUILD (default build), TORCH_PYTHON (default /usr/bin/python3),
# TORCH_LD_LIBRARY_PATH (prepended to LD_LIBRARY_PATH for the PyTorch runs only, e.g. to
# try an unpacked OpenBLAS), BENCH_QUICK=1 (fewer steps, for a smoke run).
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
MPLC=$BUILD/mplc MPLRUN=$BUILD/mplrun
TORCH_PYTHON=${TORCH_PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
quick=${BENCH_QUICK:-0}
# variables that change how MPL, OpenMP or a BLAS behave; MPL and "as given" run without them
TUNING_VARS="OPENBLAS_CORETYPE OPENBLAS_NUM_THREADS OMP_NUM_THREADS OMP_WAIT_POLICY OMP_PROC_BIND OMP_PLACES GOMP_SPINCOUNT MKL_NUM_THREADS DNNL_MAX_CPU_ISA ONEDNN_MAX_CPU_ISA"
unset_args=(); for v in $TUNING_VARS; do unset_args+=(-u "$v"); done
die() { echo "bench: $*" >&2; exit 1; }
t_start=$(date +%s)

# ---- the models: name | mplc flags | torch args | tokens per step | microbatches on 2 ranks
CONFIGS=(
  "mlp|tests/bench/mlp.mpl|model=mlp B=256|256|2"
  "gpt-384|tests/bench/gpt.mpl|model=gpt d=384 layers=6 heads=6 T=256 B=8|2048|4"
  "gpt-768|tests/bench/gpt.mpl -D d=768 -D layers=4 -D heads=12 -D ctx=512 -D batch=4|model=gpt d=768 layers=4 heads=12 T=512 B=4|2048|4"
  "llama|tests/bench/llama.mpl|model=llama d=384 layers=6 heads=6 kv_heads=2 hidden=1024 T=256 B=8|2048|4"
)

# ---- GEMM peak ----------------------------------------------------------------------
# (the Makefile's $(BUILD)/gemm_bench: make bench builds it first, and so does make test)
make -s BUILD="$BUILD" "$BUILD/gemm_bench" >&2 || die "cannot build tests/bench/gemm_bench.c"
# The peak is measured before the models and again after them, and the better of the two
# is kept: a GEMM that shares the cores with anything else reads low.
measure_peak() {
  local out p1 p2
  out=$(env "${unset_args[@]}" "$BUILD/gemm_bench" --peak) || die "gemm_bench failed"
  p1=$(echo "$out" | awk '/peak_1thread_gflops/ { print $2 }')
  p2=$(echo "$out" | awk '/peak_2ranks_gflops/ { print $2 }')
  peak1=$(awk -v a="${peak1:-0}" -v b="$p1" 'BEGIN { print (b > a ? b : a) }')
  peak2=$(awk -v a="${peak2:-0}" -v b="$p2" 'BEGIN { print (b > a ? b : a) }')
}
measure_peak

# ---- MPL ----------------------------------------------------------------------------
# median of the "ms" of the metrics lines after the first $2 (warm-up) steps
median_ms() {
  sed -E -n 's/.*"ms": ?([0-9.eE+-]+).*/\1/p' "$1" | tail -n +$(($2 + 1)) | sort -g |
    awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# run_mpl NAME PP MICROBATCHES "MPLC FLAGS": sets mpl_ms, mpl_flops
run_mpl() {
  local name=$1 pp=$2 mb=$3 flags=$4 job="$tmp/$1.pp$2.job" warm=2 steps
  # shellcheck disable=SC2086
  "$MPLC" $flags -I stdlib --mesh pp=$pp --microbatches $mb --schedule 1f1b -o "$job" 2> "$tmp/mplc.err" ||
    die "mplc $flags --mesh pp=$pp failed: $(head -n 5 "$tmp/mplc.err")"
  mpl_flops=$("$MPLRUN" "$job" --inspect | sed -E -n 's/^flops per step: ([0-9.eE+]+).*/\1/p')
  # about 6 s of timed steps, estimated from the job's FLOPs at 100 GFLOP/s per rank
  steps=$(awk -v f="$mpl_flops" -v p=$pp -v q=$quick 'BEGIN { n = int(6 / (f / (1e11 * p))); if (n < 3) n = 3;
          if (n > 40) n = 40; if (q) n = 2; print n }')
  env "${unset_args[@]}" "$MPLRUN" "$job" --steps $((warm + steps)) --threads 1 -q --metrics "$tmp/m.jsonl" \
    > "$tmp/mplrun.log" 2>&1 || die "mplrun $job failed: $(tail -n 5 "$tmp/mplrun.log")"
  mpl_ms=$(median_ms "$tmp/m.jsonl" $warm)
}

# ---- PyTorch --------------------------------------------------------------------------
have_torch=0
if [ -x "$TORCH_PYTHON" ] && "$TORCH_PYTHON" -c "import torch" 2>/dev/null; then have_torch=1; fi
torch_blas="-"

# run_torch "ARGS" THREADS given|tuned: sets torch_ms and torch_cores (its CPU time over its wall time)
run_torch() {
  local args=$1 th=$2 mode=$3 out budget=8
  [ "$quick" = 1 ] && budget=1
  local envs=("${unset_args[@]}")
  [ -n "${TORCH_LD_LIBRARY_PATH:-}" ] && envs+=(LD_LIBRARY_PATH="$TORCH_LD_LIBRARY_PATH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
  [ "$mode" = tuned ] && envs+=(OPENBLAS_CORETYPE=Cooperlake OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=$th)
  # shellcheck disable=SC2086
  out=$(env "${envs[@]}" "$TORCH_PYTHON" tests/bench/torch_gpt.py bench $args threads=$th warmup=1 steps=20 \
        budget=$budget 2> "$tmp/torch.err") || { echo "bench: torch $args failed: $(tail -n 3 "$tmp/torch.err")" >&2; torch_ms=nan; torch_cores=nan; return; }
  torch_ms=$(echo "$out" | sed -E -n 's/.*"ms_per_step": ?([0-9.eE+-]+).*/\1/p')
  torch_cores=$(echo "$out" | sed -E -n 's/.*"cores": ?([0-9.eE+-]+).*/\1/p')
  torch_blas=$(echo "$out" | sed -E -n 's/.*"blas": ?"([^"]*)".*/\1/p')
}

# ---- run everything, one row per (model, ranks = threads) ----------------------------------
rows=()
for cfg in "${CONFIGS[@]}"; do
  IFS='|' read -r name flags targs tokens mb2 <<< "$cfg"
  for n in 1 2; do
    pp=$n mb=1; [ $n = 2 ] && mb=$mb2
    echo "bench: $name, MPL on $n rank(s)" >&2
    run_mpl "$name" $pp $mb "$flags"
    g=nan t=nan gc=nan
    if [ $have_torch = 1 ]; then
      echo "bench: $name, PyTorch on $n thread(s), as given and tuned" >&2
      run_torch "$targs" $n given; g=$torch_ms gc=${torch_cores:-nan}
      run_torch "$targs" $n tuned; t=$torch_ms
    fi
    rows+=("$name $n $mb $tokens $mpl_ms $mpl_flops $g $t $gc")
  done
done

# ---- the fused attention (issue 14): gpt-768 (T = 512) on 1 rank, fused and lowered ---------
IFS='|' read -r name flags targs tokens mb2 <<< "${CONFIGS[2]}"
echo "bench: $name, MPL on 1 rank with --no-fused-sdpa" >&2
run_mpl "$name-lowered" 1 1 "$flags --no-fused-sdpa"; lowered_ms=$mpl_ms
fused_ms=$(printf '%s\n' "${rows[@]}" | awk -v n="$name" '$1 == n && $2 == 1 { print $5 }')
plan_arena() { # MPLC FLAGS -> the planned arena (peak) in MiB
  # shellcheck disable=SC2086
  "$MPLC" $1 -I stdlib --emit=plan | sed -E -n 's/.*arena \(peak\) +[0-9]+ bytes \(([0-9.]+) MiB\).*/\1/p' | head -n 1
}
fused_mib=$(plan_arena "$flags"); lowered_mib=$(plan_arena "$flags --no-fused-sdpa")

# ---- selective recomputation (remat.c): gpt-768 on 1 rank with --no-remat ----------------------
echo "bench: $name, MPL on 1 rank with --no-remat" >&2
run_mpl "$name-held" 1 1 "$flags --no-remat"; held_ms=$mpl_ms
held_mib=$(plan_arena "$flags --no-remat")

measure_peak

# ---- the table ------------------------------------------------------------------------------
echo
echo "MPL vs PyTorch, training steps on $(nproc) CPU cores ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'))"
echo "GEMM peak (oneDNN sgemm, measured now): ${peak1} GFLOP/s on 1 thread, ${peak2} GFLOP/s on 2 rank threads"
if [ $have_torch = 1 ]; then
  echo "PyTorch $("$TORCH_PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null), BLAS: $torch_blas"
else
  echo "PyTorch: not installed ($TORCH_PYTHON cannot import torch); its columns are empty"
fi
echo "n = MPL ranks (pp = n, 1F1B, --threads 1 each) = PyTorch's torch.set_num_threads; ms per step are medians; x = MPL speed / PyTorch's"
echo "cores = the CPU time PyTorch as given used over its wall time (a BLAS's own threads do not heed torch.set_num_threads)"
printf '%s\n' "${rows[@]}" | awk -v p1="$peak1" -v p2="$peak2" -f tests/bench/table.awk
awk -v f="$fused_ms" -v l="$lowered_ms" -v fa="$fused_mib" -v la="$lowered_mib" 'BEGIN {
  printf "fused attention, gpt-768 (T 512) on 1 rank: %.1f ms/step fused, %.1f ms/step lowered (--no-fused-sdpa): %.2fx; planned arena %.1f MiB vs %.1f MiB: %.2fx\n",
         f, l, (f > 0 ? l / f : 0), fa, la, (la > 0 ? fa / la : 0) }'
awk -v f="$fused_ms" -v h="$held_ms" -v fa="$fused_mib" -v ha="$held_mib" 'BEGIN {
  printf "selective recomputation, gpt-768 (T 512) on 1 rank: %.1f ms/step, %.1f ms/step holding every value (--no-remat): %.3fx; planned arena %.1f MiB vs %.1f MiB: %.2fx\n",
         f, h, (f > 0 ? h / f : 0), fa, ha, (ha > 0 ? fa / ha : 0) }'
echo "bench: done in $(( $(date +%s) - t_start )) s" >&2
