#!/usr/bin/env bash
# tests/e2e/build.sh — the build's set-up rules (Makefile):
#  - installing packages is the explicit `make deps` step: plain `make` on a machine that
#    lacks a package stops, naming the package and `make deps`, and never runs apt-get
#    (a fake apt-get on PATH records any call); `make deps` does run it, and says so when
#    it fails; `make test`/`make run` run deps first;
#  - `make unit` builds the cuda-only mplrun that test_cuda runs (when CUDA is here);
#  - tests/run.sh refuses a suite it does not have;
#  - mplc links no runtime backend: no oneDNN, cuBLAS, CUDA runtime, NCCL or MPI library,
#    and none of the executor's, devices' or communicators' code (libmpljob.a is the
#    contract both programs share).
cd "$(dirname "$0")/../.."
source tests/tools/e2e_lib.sh
mkdir -p "$tmp/bin"
printf '#!/bin/sh\necho "$@" >> %s/apt.calls\n[ "$1" = update ]\n' "$tmp" > "$tmp/bin/apt-get"
chmod +x "$tmp/bin/apt-get"
FAKE=(env PATH="$tmp/bin:$PATH")
PKGS="flex mpl-no-such-package"

if "${FAKE[@]}" make -s BUILD="$BUILD" DEB_PKGS="$PKGS" all > "$tmp/all.out" 2>&1; then
  bad "plain make with a missing package succeeds"
elif grep -q 'missing Debian packages: mpl-no-such-package; run `make deps`' "$tmp/all.out"; then
  ok "plain make stops, naming the missing package and make deps"
else bad "plain make with a missing package: $(head -n 2 "$tmp/all.out")"; fi
[ ! -e "$tmp/apt.calls" ] && ok "plain make runs no apt-get" || bad "plain make ran apt-get: $(cat "$tmp/apt.calls")"

"${FAKE[@]}" make -s BUILD="$BUILD" DEB_PKGS="$PKGS" deps > "$tmp/deps.out" 2>&1
if grep -q 'mpl-no-such-package' "$tmp/apt.calls" 2> /dev/null && grep -q 'deps: could not install' "$tmp/deps.out"; then
  ok "make deps runs apt-get for the missing package and reports its failure"
else bad "make deps: $(head -n 2 "$tmp/deps.out") / calls: $(cat "$tmp/apt.calls" 2> /dev/null)"; fi
rm -f "$tmp/apt.calls"
# make test runs deps first (and stops there when it fails): dry-run it with the fake
"${FAKE[@]}" make -s BUILD="$BUILD" DEB_PKGS="$PKGS" test > "$tmp/test.out" 2>&1
if grep -q 'mpl-no-such-package' "$tmp/apt.calls" 2> /dev/null && ! grep -q 'passed, ' "$tmp/test.out"; then
  ok "make test installs first and stops when it cannot"
else bad "make test with a package it cannot install: $(tail -n 2 "$tmp/test.out")"; fi

if [ -e /usr/local/cuda/include/cuda.h ] || [ -n "${CUDA_HOME:-}" ]; then
  if make -n -B BUILD="$BUILD" unit 2>&1 | grep -q -- "-o $BUILD/cuda-only/mplrun"; then ok "make unit builds the cuda-only mplrun"
  else bad "make unit does not build the cuda-only mplrun test_cuda needs"; fi
fi
if tests/run.sh gpu-cpu > "$tmp/run.out" 2>&1; then bad "tests/run.sh runs a suite it does not have"
elif grep -q "unknown suite gpu-cpu" "$tmp/run.out"; then ok "tests/run.sh refuses an unknown suite"
else bad "tests/run.sh gpu-cpu: $(tail -n 1 "$tmp/run.out")"; fi
libs=$(ldd "$MPLC" 2> /dev/null | grep -oE 'lib(dnnl|cublas|cudart|nccl|mpi)[a-z_]*' | sort -u | tr '\n' ' ')
[ -z "$libs" ] && ok "mplc links no runtime library" || bad "mplc links $libs"
syms=$(nm "$MPLC" 2> /dev/null | grep -cE ' T (mpl_run_|mpl_device_|mpl_comm_|mpl_gemm|mpl_cuda_|upd_run|rank_step)')
[ "$syms" = 0 ] && ok "mplc holds none of the runtime's executor, devices or communicators" || bad "mplc holds $syms runtime symbols"
nm "$MPLRUN" | grep -q ' T job_read' && nm "$MPLC" | grep -q ' T job_write' && ok "both link the job library" || bad "the job library is not linked by both"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
