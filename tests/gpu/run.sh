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
# fails cleanly, and benchmarks the bench GPT configs against PyTorch on the same GPU
# (tokens/s, ratio, MFU). Every check prints PASS or FAIL; one table at the end; the exit
# status is 1 if any check failed. Logs go to $OUT/gpu (or /tmp/mpl_gpu). About 3-5 minutes.
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

row() { printf '%-26s %-5s %s\n' "$1" "$2" "$3" >> "$ROWS"; }
ok() { pass=$((pass + 1)); echo "PASS $1: $2"; row "$1" PASS "$2"; }
bad() { fail=$((fail + 1)); echo "FAIL $1: $2"; row "$1" FAIL "$2"; }
last_line() { tail -n "${2:-1}" "$1" 2>/dev/null | tr '\n' ' ' | cut -c1-160; }

finish() {
  echo
  echo "================ MPL GPU results ================"
  cat "$ROWS"
  [ -s "$LOGS/bench.txt" ] && { echo; cat "$LOGS/bench.txt"; }
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

# ---- 1. the CUDA-only mplrun ---------------------------------------------------------
# Without make: the same compile as the Makefile's cuda-only target, by hand.
build_by_hand() {
  local o=$GB/cuda-only/obj defs="-DMPL_HAVE_CUDA -DMPL_CUDA_ONLY" libs="-lnvrtc -lcublas -lcudart -ldl"
  if [ -f "$CUDA_HOME/include/nccl.h" ] && ls "$CUDA_HOME"/lib64/libnccl.so* > /dev/null 2>&1; then
    defs="$defs -DMPL_HAVE_NCCL"; libs="$libs -lnccl"
  fi
  mkdir -p "$o"
  local objs=() f
  for f in runtime/*.c; do
    case $f in runtime/mpltok.c|runtime/jit_cpu.c|runtime/gemm.c) continue ;; esac
    cc -std=gnu11 -O2 -fno-fast-math -ffp-contract=off -I. -pthread $defs -I"$CUDA_HOME/include" \
      -c -o "$o/$(basename "$f" .c).o" "$f" || return 1
    objs+=("$o/$(basename "$f" .c).o")
  done
  cc -pthread -o "$MPLRUN" "${objs[@]}" -L"$CUDA_HOME/lib64" -Wl,-rpath,"$CUDA_HOME/lib64" $libs -lm
}

echo "== build"
rm -rf "$GB/cuda-only"
t0=$(date +%s)
if command -v make > /dev/null; then
  make cuda-only BUILD="$GB" CUDA_HOME="$CUDA_HOME" -j"$(nproc)" > "$LOGS/build.log" 2>&1
else
  build_by_hand > "$LOGS/build.log" 2>&1
fi
if [ -x "$MPLRUN" ]; then
  ok build "make cuda-only in $(( $(date +%s) - t0 )) s, $(grep -c 'warning:' "$LOGS/build.log") warnings"
else
  bad build "$(grep -m 3 -E 'error|Error' "$LOGS/build.log" | tr '\n' ' ' | cut -c1-200)"
  tail -n 30 "$LOGS/build.log"
  finish
fi

# ---- 2. the carried jobs against the CPU ----------------------------------------------
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
  esac
done < "$C/checks.tsv"

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

# ---- 3. the bench GPT configs against PyTorch ------------------------------------------------
echo "== bench (mplrun vs PyTorch on this GPU)"
BENCH="$LOGS/bench.tsv"
: > "$BENCH"
median_ms() { # METRICS: median step ms after the first 2 steps
  "$PY" - "$1" << 'EOF'
import json, sys
ms = sorted(json.loads(l)["ms"] for l in list(open(sys.argv[1]))[2:] if l.strip())
print("%.3f" % ms[len(ms) // 2] if ms else "nan")
EOF
}
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
finish
