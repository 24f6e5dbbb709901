# tests/tools/e2e_lib.sh — the common start of the end-to-end scripts (tests/e2e/*.sh),
# sourced from the repository root: strict mode, BUILD and the tools in it, the Python
# to run, the stdlib (so a build outside the tree, BUILD=/tmp/x, finds it), a temporary
# directory removed at exit, and the ok/bad counters behind each script's last line
# "N passed, N failed" (the line tests/run.sh reads).
set -u
BUILD=${BUILD:-build}
MPLC=$BUILD/mplc MPLRUN=$BUILD/mplrun
# (python3 resolved to the interpreter itself once: a version manager's shim, pyenv's,
# costs 0.35 s a call, and the suites make hundreds; tests/run.sh does it for them all)
PY=${PYTHON:-$(python3 -c 'import sys; print(sys.executable)' 2> /dev/null || echo python3)}
export MPL_STDLIB=$PWD/stdlib
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
pass=0; fail=0
# MPL_TEST_TIMES=1: each ok/FAIL line ends with the seconds since the one before it (what
# to shorten when the suites' time grows)
_t_last=${EPOCHREALTIME:-0} _t=""
_t_since() {
  _t=""
  [ -n "${MPL_TEST_TIMES:-}" ] || return 0
  local now=$EPOCHREALTIME
  _t=$(LC_ALL=C printf ' [%.1f s]' "$(echo "$now - $_t_last" | bc)"); _t_last=$now
}
ok() { pass=$((pass + 1)); _t_since; echo "ok   $*$_t"; }
bad() { fail=$((fail + 1)); _t_since; echo "FAIL $*$_t"; }
# rewrite SRC DST EXPR...: DST is SRC with each sed EXPR applied in turn; an EXPR that
# changes nothing (the model no longer has the line it edits) is a failure, so a check
# can never quietly compare a model with itself.
rewrite() {
  local src=$1 dst=$2 e; shift 2
  cp "$src" "$dst"
  for e in "$@"; do
    sed "$e" "$dst" > "$dst.new"
    if cmp -s "$dst" "$dst.new"; then bad "rewrite of $src: '$e' changes nothing"; rm -f "$dst.new"; return 1; fi
    mv "$dst.new" "$dst"
  done
}

# compile_run NAME MPLC-ARGS... -- MPLRUN-ARGS...: mplc to $tmp/NAME.job, then mplrun -q on it
# (its output in $tmp/NAME.log); on failure one FAIL line and status 1.
compile_run() {
  local name=$1; shift
  local cargs=() rargs=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do cargs+=("$1"); shift; done
  shift
  rargs=("$@")
  if ! "$MPLC" "${cargs[@]}" -o "$tmp/$name.job" > "$tmp/$name.cerr" 2>&1; then
    bad "$name: mplc $(head -n 3 "$tmp/$name.cerr")"; return 1
  fi
  if ! "$MPLRUN" "$tmp/$name.job" -q "${rargs[@]}" > "$tmp/$name.log" 2>&1; then
    bad "$name: mplrun $(tail -n 3 "$tmp/$name.log")"; return 1
  fi
}
