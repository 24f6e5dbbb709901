#!/usr/bin/env bash
# The MPI mode (one rank per process under mpirun) trains bit for bit like the threads
# of one mplrun, for the same job, seed and --threads:
#  - small_gpt on pp = 2 and parallel_gpt on dp=2, tp=2, tp=4, dp=2,pp=2 and
#    dp=2,pp=2,tp=2: the --save files are identical (cmp) and so are the progress lines'
#    losses; the parallel_gpt params under mpirun are within 1e-5 relative error per
#    tensor of the single-rank threads run (tp = dp = 1);
#  - examples/gpt_tiny.mpl (its pp = 2, SGD in place of AdamW, see parallel.sh for why)
#    at tp = 2 and dp = 2 under mpirun: params within 1e-5 of tp = dp = 1 on threads;
#  - tiny_lm (llm.c tokens, AdamW, cosine lr, grad clip; pp = 2): 3 steps + --checkpoint
#    under MPI, then --resume under MPI up to 6, equals 6 threads steps (cmp); the MPI
#    checkpoint's files equal the threads checkpoint's;
#  - processes whose --resume names other checkpoints are refused (no hang);
#  - dp x tp x pp with ZeRO-1 and AdamW: 3 + resume + 3 under MPI == 6 threads steps;
#  - --trace and --metrics under MPI: valid JSON with one row per rank, one line per step;
#  - comm_mpi.c's collectives on their own (build/tests/test_comm --mpi under mpirun -np 3,
#    also with every payload in pieces of 7 bytes, the way one over 2 GiB goes in 1 GiB ones):
#    reduce-scatter (uneven chunks, n < k, subgroups) with the bits of the all-reduce's
#    chunk, all-gather of 4- and 8-byte elements, the float64 all-reduce in rank order, and
#    a message that crosses collectives of the same ranks;
#  - --mpi without mpirun runs a one-rank job (an MPI singleton);
#  - processes started with different settings (--steps) are refused at the start;
#  - a wrong -np is refused with a message naming the right one; a rank that fails
#    (a missing --init file) ends the whole job: non-zero exit, no hang;
#  - jobs of other rank counts side by side, and one --init path naming other bytes on
#    each process, are refused once; an error every process meets (--devices cpu:1, a
#    diverging run) is said once; --inspect under mpirun prints once;
#  - a rank killed with SIGKILL in the middle of training ends the whole job within
#    15 s: mpirun exits non-zero (not timeout's 124), names the dead rank, and leaves
#    no rank process behind.
# Every mpirun runs under `timeout 60`: a hang is a failure (exit 124), not a stuck test.
# Without mpirun, or with an mplrun built without MPI, the script says so and counts nothing.
cd "$(dirname "$0")/../.."
source tests/tools/e2e_lib.sh
finish() { echo "$pass passed, $fail failed"; [ $fail = 0 ]; exit; }

if ! command -v mpirun > /dev/null 2>&1; then echo "skip: mpirun is not installed (no MPI tests run)"; finish; fi
if ! ldd "$MPLRUN" 2>/dev/null | grep -q libmpi; then echo "skip: $MPLRUN was built without MPI (no MPI tests run)"; finish; fi
# root needs --allow-run-as-root; a small machine needs --oversubscribe (8 ranks on 2 cores)
MPIRUN=(timeout -k 5 60 mpirun --oversubscribe) # -k: an mpirun stuck in its own finalize ignores SIGTERM
[ "$(id -u)" = 0 ] && MPIRUN+=(--allow-run-as-root)

compile() { # job name, mplc args...
  local name=$1; shift
  "$MPLC" "$@" -o "$tmp/$name.job" > "$tmp/$name.mplc.log" 2>&1 || { bad "mplc $*: $(head -n 3 "$tmp/$name.mplc.log")"; return 1; }
}
threads() { # log name, job, mplrun args...
  local log=$tmp/$1.log; shift
  "$MPLRUN" "$@" --threads 1 > "$log" 2>&1 || { bad "mplrun $*: $(tail -n 3 "$log")"; return 1; }
}
mpi() { # log name, np, job, mplrun args...
  local log=$tmp/$1.log np=$2; shift 2
  "${MPIRUN[@]}" -np "$np" "$MPLRUN" "$@" --threads 1 > "$log" 2>&1
  local rc=$?
  [ $rc = 0 ] && return 0
  [ $rc = 124 ] && bad "mpirun -np $np mplrun $*: timed out (a hang)" || bad "mpirun -np $np mplrun $*: $(grep -m 3 error "$log")"
  return 1
}
same() { # label, file a, file b
  if cmp -s "$2" "$3"; then ok "$1"; else bad "$1: $2 and $3 differ"; fi
}
losses() { grep -o '^step [0-9]*/[0-9]* | loss [^ ]*' "$1"; }
# the worst tensor of a stcompare.py output: "NAME REL_ERR"
worst() { awk '/max rel err/ { if ($NF + 0 >= w) { w = $NF + 0; n = $2 } } END { sub(/:$/, "", n); printf "%s %.2g", n, w }' "$1"; }
near() { # label, file a, reference b: within 1e-5 relative error per tensor
  if "$PY" tests/tools/stcompare.py "$2" "$3" 1e-5 > "$2.cmp"; then ok "$1 within 1e-5 (worst $(worst "$2.cmp"))"
  else bad "$1: $(grep FAIL "$2.cmp" | head -n 3 | tr '\n' ' ')"; fi
}

# ---- the communicator's collectives on their own (the unit test's MPI mode) ----
if [ -x "$BUILD/tests/test_comm" ]; then
  "${MPIRUN[@]}" -np 3 "$BUILD/tests/test_comm" --mpi > "$tmp/test_comm.log" 2>&1
  rc=$?
  n=$(sed -n 's/^mpi: \([0-9]*\) passed, 0 failed$/\1/p' "$tmp/test_comm.log")
  if [ $rc = 0 ] && [ -n "$n" ]; then ok "comm_mpi.c's collectives under mpirun -np 3: all $n checks of test_comm --mpi"
  else bad "test_comm --mpi (exit $rc): $(grep -m 3 -e FAIL -e error "$tmp/test_comm.log" | tr '\n' ' ')"; fi
  # each payload in pieces of 7 bytes, as one over 2 GiB goes in pieces of 1 GiB (a message
  # over INT_MAX bytes was refused: "too large for MPI")
  MPL_MPI_PIECE=7 "${MPIRUN[@]}" -x MPL_MPI_PIECE -np 3 "$BUILD/tests/test_comm" --mpi > "$tmp/test_comm7.log" 2>&1
  rc=$?
  n=$(sed -n 's/^mpi: \([0-9]*\) passed, 0 failed$/\1/p' "$tmp/test_comm7.log")
  if [ $rc = 0 ] && [ -n "$n" ]; then ok "the same with every payload sent in pieces of 7 bytes (MPL_MPI_PIECE=7)"
  else bad "test_comm --mpi, MPL_MPI_PIECE=7 (exit $rc): $(grep -m 3 -e FAIL -e error "$tmp/test_comm7.log" | tr '\n' ' ')"; fi
else echo "note: $BUILD/tests/test_comm is not built (make $BUILD/tests/test_comm): comm_mpi.c's collectives not checked on their own"; fi

# ---- threads vs processes: params and losses ----
report_rows() { grep -E '^rank [0-9]+: busy' "$1" | sed -E 's/busy [0-9.]+ ms \| bubble [0-9.]+/busy - | bubble -/'; }
check_mesh() { # name, np, single-rank params to match within 1e-5 (or -), model, mplc args...
  local name=$1 np=$2 base=$3; shift 3
  compile "$name" "$@" || return
  threads "$name.t" "$tmp/$name.job" --save "$tmp/$name.t.st" || return
  mpi "$name.m" "$np" "$tmp/$name.job" --save "$tmp/$name.m.st" || return
  same "$name: mpirun -np $np gives the threads' params (bitwise)" "$tmp/$name.t.st" "$tmp/$name.m.st"
  [ "$base" = - ] || near "$name: mpirun -np $np matches one rank on threads" "$tmp/$name.m.st" "$base"
  if [ -n "$(losses "$tmp/$name.t.log")" ] && [ "$(losses "$tmp/$name.t.log")" = "$(losses "$tmp/$name.m.log")" ]; then
    ok "$name: the same loss lines ($(losses "$tmp/$name.m.log" | tail -n 1))"
  else bad "$name: loss lines differ: $(losses "$tmp/$name.t.log" | tr '\n' ' ') vs $(losses "$tmp/$name.m.log" | tr '\n' ' ')"; fi
  # the closing report's row of every rank, gathered to rank 0 (pass 118: rank 0's own row,
  # or the last rank's, left at zeros passed): arena and update state as the threads'
  local tr mr; tr=$(report_rows "$tmp/$name.t.log") mr=$(report_rows "$tmp/$name.m.log")
  if [ "$(echo "$tr" | grep -c '^rank')" = "$np" ] && [ "$tr" = "$mr" ]; then
    ok "$name: the report's $np rank rows (arena, update state) are the threads run's"
  else bad "$name: report rows differ: $(echo "$mr" | tr '\n' ' ') vs threads $(echo "$tr" | tr '\n' ' ')"; fi
  local lines; lines=$(grep -c '^step ' "$tmp/$name.m.log")
  if [ "$lines" = "$(grep -c '^step ' "$tmp/$name.t.log")" ]; then ok "$name: progress printed once (world rank 0 only)"
  else bad "$name: $lines progress lines under MPI"; fi
}
check_mesh small_pp2 2 - tests/e2e/small_gpt.mpl --mesh pp=2
if compile one tests/e2e/parallel_gpt.mpl && threads one.t "$tmp/one.job" -q --save "$tmp/one.t.st"; then
  check_mesh par_dp2 2 "$tmp/one.t.st" tests/e2e/parallel_gpt.mpl --mesh dp=2
  check_mesh par_tp2 2 "$tmp/one.t.st" tests/e2e/parallel_gpt.mpl --mesh tp=2
  check_mesh par_tp4 4 "$tmp/one.t.st" tests/e2e/parallel_gpt.mpl --mesh tp=4
  check_mesh par_dp2_pp2 4 "$tmp/one.t.st" tests/e2e/parallel_gpt.mpl --mesh dp=2,pp=2
  check_mesh par_dp2_pp2_tp2 8 "$tmp/one.t.st" tests/e2e/parallel_gpt.mpl --mesh dp=2,pp=2,tp=2
  # activations, gradients and all-reduces in pieces of 1000 bytes: the same params, bitwise
  MPL_MPI_PIECE=1000 "${MPIRUN[@]}" -x MPL_MPI_PIECE -np 8 "$MPLRUN" "$tmp/par_dp2_pp2_tp2.job" --threads 1 \
    --save "$tmp/piece.st" > "$tmp/piece.log" 2>&1
  same "dp=2,pp=2,tp=2 with every MPI payload in pieces of 1000 bytes: the params of one piece (bitwise)" \
    "$tmp/par_dp2_pp2_tp2.m.st" "$tmp/piece.st"
fi

# ---- checkpoint and resume under MPI (token data, AdamW, cosine lr, grad clip) ----
"$BUILD/mpltok" examples/data/tiny.txt "$tmp/tiny.bin" > /dev/null || { bad "mpltok"; finish; }
D=(--data "$tmp/tiny.bin" -q)

# ---- the GPT example at tp = 2 and dp = 2 under mpirun (params with SGD, 3 steps) ----
rewrite examples/gpt_tiny.mpl "$tmp/gpt_sgd.mpl" 's/optimizer = adamw([^)]*)/optimizer = sgd(lr = 0.1, momentum = 0.9)/'
if compile gs1 "$tmp/gpt_sgd.mpl" && threads gs1 "$tmp/gs1.job" "${D[@]}" --steps 3 --save "$tmp/gs1.st"; then
  for mesh in tp=2 dp=2; do
    name=gs_${mesh/=/}
    compile "$name" "$tmp/gpt_sgd.mpl" --mesh "$mesh" &&
      mpi "$name" 4 "$tmp/$name.job" "${D[@]}" --steps 3 --save "$tmp/$name.st" &&
      near "gpt_tiny (SGD) at $mesh under mpirun -np 4 matches tp = dp = 1 on threads" "$tmp/$name.st" "$tmp/gs1.st"
  done
fi
if compile lm tests/e2e/tiny_lm.mpl &&
   threads lm6 "$tmp/lm.job" "${D[@]}" --steps 6 --save "$tmp/lm6.st" &&
   threads lm3t "$tmp/lm.job" "${D[@]}" --steps 3 --checkpoint "$tmp/ck_t" &&
   mpi lm3 2 "$tmp/lm.job" "${D[@]}" --steps 3 --checkpoint "$tmp/ck_m" &&
   mpi lm33 2 "$tmp/lm.job" "${D[@]}" --steps 6 --resume "$tmp/ck_m" --save "$tmp/lm33.st"; then
  same "tiny_lm: 3 steps + checkpoint + resume under MPI == 6 threads steps (bitwise)" "$tmp/lm6.st" "$tmp/lm33.st"
  for f in model.safetensors optim.safetensors state.json; do
    same "tiny_lm: the MPI checkpoint's $f equals the threads one" "$tmp/ck_t/$f" "$tmp/ck_m/$f"
  done
fi

# processes that read different checkpoints (a relative --resume from other working
# folders; as a folder swapped between their reads) are refused, not left waiting forever
mkdir -p "$tmp/wa" "$tmp/wb"
if [ -f "$tmp/ck_m/state.json" ] && cp -r "$tmp/ck_m" "$tmp/wa/ck" &&
   threads lm2 "$tmp/lm.job" "${D[@]}" --steps 2 --checkpoint "$tmp/wb/ck"; then
  run=$(realpath "$MPLRUN") # (each process starts in its folder)
  "${MPIRUN[@]}" -np 1 --wdir "$tmp/wa" "$run" "$tmp/lm.job" "${D[@]}" --steps 6 --resume ck --threads 1 : \
    -np 1 --wdir "$tmp/wb" "$run" "$tmp/lm.job" "${D[@]}" --steps 6 --resume ck --threads 1 > "$tmp/split.log" 2>&1
  rc=$?
  if [ $rc != 0 ] && [ $rc != 124 ] && grep -q 'resume ck: process 1 read another checkpoint than process 0' "$tmp/split.log"; then
    ok "processes resumed from different checkpoints (step 3 and step 2) are refused (exit $rc, no hang)"
  else bad "processes resumed from different checkpoints: exit $rc: $(grep -m 2 error "$tmp/split.log")"; fi
fi

rewrite tests/e2e/parallel_gpt.mpl "$tmp/zero.mpl" 's/^  steps = 3/  steps = 3\n  zero = 1/' 's/sgd(lr = 0.5, momentum = 0.9)/adamw(lr = 1e-2)/'
if compile zero "$tmp/zero.mpl" --mesh dp=2,pp=2,tp=2 &&
   threads z6 "$tmp/zero.job" -q --steps 6 --save "$tmp/z6.st" &&
   mpi z3 8 "$tmp/zero.job" -q --steps 3 --checkpoint "$tmp/ck_z" &&
   mpi z33 8 "$tmp/zero.job" -q --steps 6 --resume "$tmp/ck_z" --save "$tmp/z33.st"; then
  same "dp x tp x pp, ZeRO-1, AdamW: 3 + resume + 3 under MPI == 6 threads steps (bitwise)" "$tmp/z6.st" "$tmp/z33.st"
fi

# ---- trace and metrics ----
if mpi obs 2 "$tmp/lm.job" "${D[@]}" --steps 3 --trace "$tmp/t.json" --metrics "$tmp/m.jsonl"; then
  if "$PY" - "$tmp/t.json" "$tmp/m.jsonl" > "$tmp/py.out" 2>&1 <<'EOF'
import json, sys
ev = json.load(open(sys.argv[1]))
tids = {e["tid"] for e in ev if e.get("ph") == "X"}
assert tids == {0, 1}, tids
cats = {e["cat"] for e in ev if e.get("ph") == "X" and e["tid"] == 1}
assert {"fwd", "send", "recv", "optimizer"} <= cats, cats
lines = [json.loads(l) for l in open(sys.argv[2])]
assert [l["step"] for l in lines] == [1, 2, 3], lines
# one time base: a message's recv ends after its send begins (pass 73: each process counted
# from its own start, and 11 of 24 receives ended before their sends)
sends, recvs = {}, {}
for e in sorted((e for e in ev if e.get("ph") == "X"), key=lambda e: e["ts"]):
    if e["cat"] in ("send", "recv") and " " in e["name"]:
        (sends if e["cat"] == "send" else recvs).setdefault(e["name"].split(" ", 1)[1], []).append(e)
pairs = [(s, r) for k in sends for s, r in zip(sends[k], recvs.get(k, []))]
early = [k for s, r in pairs for k in [s["name"]] if r["ts"] + r["dur"] < s["ts"]]
assert pairs and not early, (len(pairs), early[:3])
print("trace rows", sorted(tids), "metrics steps", len(lines), "messages", len(pairs), "each received after it was sent")
EOF
  then ok "--trace and --metrics under MPI: $(tail -n 1 "$tmp/py.out")"; else bad "trace/metrics under MPI: $(tail -n 2 "$tmp/py.out")"; fi
  # every event of every process reaches rank 0's file: the same slices, by rank, kind and
  # name, as the threads run's (pass 118: each other process's last event dropped passed)
  if threads obs_t "$tmp/lm.job" "${D[@]}" --steps 3 --trace "$tmp/t_thr.json" &&
     "$PY" - "$tmp/t.json" "$tmp/t_thr.json" > "$tmp/py2.out" 2>&1 <<'EOF'
import collections, json, sys
def slices(path):
    ev = json.load(open(path))
    ev = ev["traceEvents"] if isinstance(ev, dict) else ev
    return collections.Counter((e["tid"], e["cat"], e["name"]) for e in ev if e.get("ph") == "X")
m, t = slices(sys.argv[1]), slices(sys.argv[2])
print(sum(m.values()), "slices under MPI,", sum(t.values()), "on threads; differing:", list((m - t) + (t - m))[:4])
sys.exit(0 if m == t and m else 1)
EOF
  then ok "--trace under MPI holds the threads run's slices: $(cat "$tmp/py2.out")"; else bad "trace under MPI: $(tail -n 2 "$tmp/py2.out")"; fi
fi

# ---- a signal under mpirun: every process stops after the same step, rank 0 writes ----
# (pass 73: only mpirun's handling applied: SIGTERM to mpirun lost everything since the last
# --checkpoint-every, and a stop cut rank 0's --save short by MPI_Abort)
if [ -f "$tmp/lm.job" ]; then
  rm -rf "$tmp/sig_ck" "$tmp/sig.st"
  "${MPIRUN[@]}" -np 2 "$MPLRUN" "$tmp/lm.job" "${D[@]}" --threads 1 --steps 1000000 --checkpoint "$tmp/sig_ck" \
    --checkpoint-every 50 --save "$tmp/sig.st" > "$tmp/sig.log" 2>&1 &
  spid=$!
  # training has begun once a checkpoint is there (a signal during MPI_Init, before the
  # handlers, would end the processes: pass 84)
  for _ in $(seq 200); do [ -f "$tmp/sig_ck/state.json" ] && break; sleep 0.1; done
  pkill -USR1 -P "$spid" -x mpirun # (this run's: timeout's child; other suites may run mpirun too)
  wait $spid
  rc=$?
  s=$(sed -n 's/.*"step": \([0-9]*\),.*/\1/p' "$tmp/sig_ck/state.json" 2> /dev/null)
  if [ $rc != 124 ] && [ "$(grep -c 'stopped by signal 10 after step' "$tmp/sig.log")" = 1 ] && [ -n "$s" ] && [ -f "$tmp/sig.st" ] &&
     [ ! -e "$tmp/sig_ck.lock" ] && ! compgen -G "$tmp/sig.st.tmp*" > /dev/null &&
     mpi sigr 2 "$tmp/lm.job" "${D[@]}" --steps $((s + 2)) --resume "$tmp/sig_ck"; then
    ok "SIGUSR1 to mpirun: every process stopped after step $s, the checkpoint and --save written once, resumed (exit $rc)"
  else bad "SIGUSR1 to mpirun: exit $rc, step '$s': $(grep -v '^step' "$tmp/sig.log" | head -n 3)"; fi
fi

# ---- ... and one while the processes sample: they stop after the same token, exit 128 + 10
# (pass 84: the stop was taken for a failure: MPI_Abort, exit 1) ----
if [ -f "$tmp/lm.job" ]; then
  "${MPIRUN[@]}" -np 2 "$MPLRUN" "$tmp/lm.job" --threads 1 --steps 0 --sample 5000000 --prompt a > "$tmp/sigs.out" 2> "$tmp/sigs.log" &
  spid=$!
  for _ in $(seq 200); do [ -s "$tmp/sigs.out" ] && break; sleep 0.1; done # sampling has begun
  sleep 0.5
  pkill -USR1 -P "$spid" -x mpirun
  wait $spid
  rc=$?
  if [ $rc = 138 ] && [ "$(grep -c 'stopped by signal 10 after [0-9]* of 5000000 tokens' "$tmp/sigs.log")" = 1 ] &&
     ! grep -q MPI_ABORT "$tmp/sigs.log"; then ok "SIGUSR1 to mpirun while sampling: stopped after a token, exit 138"
  else bad "SIGUSR1 to mpirun while sampling: exit $rc: $(grep -v '^--' "$tmp/sigs.log" | head -n 3)"; fi
fi

# ---- --mpi without mpirun: an MPI singleton runs a one-rank job ----
if [ -f "$tmp/one.t.st" ]; then
  if timeout 60 "$MPLRUN" "$tmp/one.job" -q --threads 1 --mpi --save "$tmp/one.m.st" > "$tmp/one.m.log" 2>&1; then
    same "--mpi outside mpirun (a singleton) trains a one-rank job like threads" "$tmp/one.t.st" "$tmp/one.m.st"
  else bad "--mpi singleton: $(tail -n 3 "$tmp/one.m.log")"; fi
fi

# --mpi outside mpirun on a job of several ranks: named as one process (pass 73: "mpirun
# started 1 processes")
if timeout 60 "$MPLRUN" "$tmp/small_pp2.job" -q --threads 1 --steps 1 --mpi > "$tmp/single2.log" 2>&1; then bad "--mpi singleton on 2 ranks: ran"
elif grep -q -- "--mpi outside mpirun is one process, but the job has 2 ranks" "$tmp/single2.log"; then ok "--mpi outside mpirun on a 2-rank job: $(grep -m1 -o 'run it under.*' "$tmp/single2.log")"
else bad "--mpi singleton on 2 ranks: $(head -n 2 "$tmp/single2.log")"; fi

# ---- errors: a wrong process count, a failing rank ----
"${MPIRUN[@]}" -np 3 "$MPLRUN" "$tmp/small_pp2.job" -q > "$tmp/np.log" 2>&1
rc=$?
if [ $rc = 124 ]; then bad "-np 3 for a 2-rank job hangs"
elif [ $rc = 0 ]; then bad "-np 3 for a 2-rank job was accepted"
elif [ "$(grep -c 'use mpirun -np 2' "$tmp/np.log")" = 1 ]; then ok "-np 3 refused once: $(grep -m1 'mplrun: error' "$tmp/np.log")"
else bad "-np 3: no clear message: $(head -n 3 "$tmp/np.log")"; fi

# processes started with other settings: refused at the start, once, by rank 0.
# differ LABEL "RANK0 ARGS" "RANK1 ARGS"
differ() {
  local log=$tmp/differ.log a0 a1
  read -ra a0 <<< "$2"
  read -ra a1 <<< "$3"
  "${MPIRUN[@]}" -np 1 "$MPLRUN" "$tmp/small_pp2.job" -q --threads 1 "${a0[@]}" : \
    -np 1 "$MPLRUN" "$tmp/small_pp2.job" -q --threads 1 "${a1[@]}" > "$log" 2>&1
  local rc=$?
  if [ $rc = 124 ]; then bad "$1: hangs"
  elif [ $rc != 0 ] && [ "$(grep -c 'different jobs or settings' "$log")" = 1 ]; then
    ok "$1: refused once at the start (exit $rc)"
  else bad "$1: exit $rc, $(grep -m 2 -E 'error|step' "$log")"; fi
}
# --steps 3 and 5: rank 1 would wait for step 4 forever
differ "processes with different --steps" "--steps 3" "--steps 5"
# --comm-stats to rank 0 alone (a conformance pass: its gather waited for the other process
# forever)
differ "--comm-stats on one process only" "--steps 2 --comm-stats $tmp/cs.jsonl" "--steps 2"
# jobs of other rank counts side by side (pp = 2 and pp = 4, in both orders): refused once
# by rank 0, no hang (pass 57: each process checked its own count; the one that passed
# waited in the settings' all-reduce for the one that stopped)
if compile small_pp4 tests/e2e/small_gpt.mpl --mesh pp=4; then
  for order in "small_pp2 small_pp4" "small_pp4 small_pp2"; do
    read -r j0 j1 <<< "$order"
    "${MPIRUN[@]}" -np 1 "$MPLRUN" "$tmp/$j0.job" -q --threads 1 --steps 1 : \
      -np 1 "$MPLRUN" "$tmp/$j1.job" -q --threads 1 --steps 1 > "$tmp/counts.log" 2>&1
    rc=$?
    if [ $rc != 0 ] && [ $rc != 124 ] && [ $rc != 137 ] && [ "$(grep -c 'mplrun: error' "$tmp/counts.log")" = 1 ] &&
       grep -q 'different jobs' "$tmp/counts.log"; then ok "jobs of 2 and 4 ranks side by side ($j0 first): refused once (exit $rc)"
    else bad "jobs of 2 and 4 ranks side by side ($j0 first): exit $rc, $(grep -m 2 -E 'error' "$tmp/counts.log")"; fi
  done
fi
# one --init path naming other bytes on each process (other working folders): refused once
mkdir -p "$tmp/wa" "$tmp/wb"
if threads init_a "$tmp/small_pp2.job" --steps 1 -q --save "$tmp/wa/init.st" &&
   threads init_b "$tmp/small_pp2.job" --steps 2 -q --save "$tmp/wb/init.st"; then
  run_abs=$(realpath "$MPLRUN")
  "${MPIRUN[@]}" -np 1 --wdir "$tmp/wa" "$run_abs" "$tmp/small_pp2.job" -q --threads 1 --steps 1 --init init.st : \
    -np 1 --wdir "$tmp/wb" "$run_abs" "$tmp/small_pp2.job" -q --threads 1 --steps 1 --init init.st > "$tmp/wdir.log" 2>&1
  rc=$?
  if [ $rc != 0 ] && [ $rc != 124 ] && [ "$(grep -c 'mplrun: error' "$tmp/wdir.log")" = 1 ] &&
     grep -q -- "--init: 1 of the 2 processes read other bytes" "$tmp/wdir.log"; then
    ok "--init naming other files on the two processes: refused once (exit $rc)"
  else bad "--init naming other files on the two processes: exit $rc, $(head -c 300 "$tmp/wdir.log")"; fi
fi
# one byte apart, between the blocks a sample of the file read (pass 73: 64 blocks of 4 KiB
# spread over it; files are compared whole up to 1 GiB now): refused once
if [ -f "$tmp/lm.job" ]; then
  mkdir -p "$tmp/da" "$tmp/db"
  cp "$tmp/tiny.bin" "$tmp/da/tiny.bin" && cp "$tmp/tiny.bin" "$tmp/db/tiny.bin"
  printf '\x07' | dd of="$tmp/db/tiny.bin" bs=1 seek=4500 conv=notrunc 2> /dev/null
  run_abs=$(realpath "$MPLRUN")
  "${MPIRUN[@]}" -np 1 --wdir "$tmp/da" "$run_abs" "$tmp/lm.job" --data tiny.bin -q --threads 1 --steps 1 : \
    -np 1 --wdir "$tmp/db" "$run_abs" "$tmp/lm.job" --data tiny.bin -q --threads 1 --steps 1 > "$tmp/dbyte.log" 2>&1
  rc=$?
  if [ $rc != 0 ] && [ $rc != 124 ] && [ "$(grep -c 'mplrun: error' "$tmp/dbyte.log")" = 1 ] &&
     grep -q -- "1 of the 2 processes read other bytes than process 0 behind .tiny.bin." "$tmp/dbyte.log"; then
    ok "--data one byte apart on the two processes: refused once (exit $rc)"
  else bad "--data one byte apart on the two processes: exit $rc, $(head -c 300 "$tmp/dbyte.log")"; fi
fi
# an error every process meets (--devices cpu:1 for 2 ranks; a loss that overflows) is said
# once, and names the rank once
"${MPIRUN[@]}" -np 2 "$MPLRUN" "$tmp/small_pp2.job" -q --threads 1 --steps 1 --devices cpu:1 > "$tmp/dev1.log" 2>&1
rc=$?
if [ $rc = 1 ] && [ "$(grep -c 'mplrun: error' "$tmp/dev1.log")" = 1 ]; then ok "--devices cpu:1 under mpirun -np 2: said once"
else bad "--devices cpu:1 under mpirun -np 2: exit $rc, $(grep -c 'mplrun: error' "$tmp/dev1.log") error lines"; fi
sed 's/optimizer = .*/optimizer = sgd(lr = 1e30)/' tests/e2e/small_gpt.mpl > "$tmp/div.mpl"
if compile div "$tmp/div.mpl" --mesh pp=2; then
  "${MPIRUN[@]}" -np 2 "$MPLRUN" "$tmp/div.job" -q --threads 1 --steps 6 --checkpoint "$tmp/div_ck" > "$tmp/div.log" 2>&1
  rc=$?
  n=$(grep -c 'mplrun: error' "$tmp/div.log")
  # (and its --checkpoint lock removed before the abort: pass 73 found DIR.lock left)
  if [ $rc != 0 ] && [ $rc != 124 ] && [ "$n" = 1 ] && ! grep -q 'rank [0-9]*: rank ' "$tmp/div.log" && [ ! -e "$tmp/div_ck.lock" ]; then
    ok "a run diverging on every process: said once (exit $rc), no lock left: $(grep -m1 -o 'step [0-9]*: the [a-z ]* is [a-z]*' "$tmp/div.log")"
  else bad "a run diverging on every process: exit $rc, $n error lines$([ -e "$tmp/div_ck.lock" ] && echo ', div_ck.lock left'): $(head -n 2 "$tmp/div.log")"; fi
fi
# --inspect under mpirun: printed once
"${MPIRUN[@]}" -np 2 "$MPLRUN" "$tmp/small_pp2.job" --inspect > "$tmp/insp.log" 2>&1
if [ "$(grep -c '^job format' "$tmp/insp.log")" = 1 ]; then ok "--inspect under mpirun -np 2: printed once"
else bad "--inspect under mpirun -np 2: $(grep -c '^job format' "$tmp/insp.log") copies"; fi

# MPL_MPI_PIECE on one process only: the pieces would not line up
"${MPIRUN[@]}" -np 1 -x MPL_MPI_PIECE=7 "$MPLRUN" "$tmp/small_pp2.job" -q --threads 1 --steps 2 : \
  -np 1 "$MPLRUN" "$tmp/small_pp2.job" -q --threads 1 --steps 2 > "$tmp/piece_differ.log" 2>&1
rc=$?
if [ $rc != 0 ] && [ $rc != 124 ] && [ "$(grep -c 'different jobs or settings' "$tmp/piece_differ.log")" = 1 ]; then
  ok "MPL_MPI_PIECE on one process only: refused once at the start (exit $rc)"
else bad "MPL_MPI_PIECE on one process only: exit $rc, $(grep -m 2 -E 'error|step' "$tmp/piece_differ.log")"; fi

"${MPIRUN[@]}" -np 2 "$MPLRUN" "$tmp/small_pp2.job" -q --init "$tmp/missing.safetensors" > "$tmp/fail.log" 2>&1
rc=$?
if [ $rc = 124 ]; then bad "a failing rank (missing --init) hangs the job"
elif [ $rc = 0 ]; then bad "a missing --init file was accepted"
elif grep -q 'mplrun: error: rank [01]: .*missing.safetensors' "$tmp/fail.log"; then ok "a failing rank ends the job (exit $rc): $(grep -m1 'mplrun: error' "$tmp/fail.log")"
else bad "missing --init: no clear message: $(head -n 3 "$tmp/fail.log")"; fi

# ---- a rank killed in the middle of training ends the job, naming it ----
# The job would run for hours; once rank 0 has written its first metrics line, the
# process of world rank 1 (OMPI_COMM_WORLD_RANK in its environment) gets SIGKILL.
# mplrun itself says nothing: Open MPI's mpirun ends the other rank and names the dead
# one ("mpirun noticed that process rank 1 with PID ... exited on signal 9 (Killed)").
now() { date +%s.%N; }
"${MPIRUN[@]}" -np 2 "$MPLRUN" "$tmp/small_pp2.job" -q --threads 1 --steps 10000000 --metrics "$tmp/kill.jsonl" > "$tmp/kill.log" 2>&1 &
job=$!
for _ in $(seq 300); do [ -s "$tmp/kill.jsonl" ] && break; kill -0 $job 2> /dev/null || break; sleep 0.1; done
victim=
for pid in $(pgrep -f "^$MPLRUN $tmp/small_pp2.job"); do
  tr '\0' '\n' < "/proc/$pid/environ" 2> /dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=1' && victim=$pid
done
if [ ! -s "$tmp/kill.jsonl" ] || [ -z "$victim" ]; then
  bad "kill a rank: training did not start or rank 1's process was not found: $(tail -n 3 "$tmp/kill.log")"
  kill $job 2> /dev/null; wait $job
else
  t0=$(now); kill -9 "$victim"
  for _ in $(seq 150); do kill -0 $job 2> /dev/null || break; sleep 0.1; done
  secs=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
  if kill -0 $job 2> /dev/null; then
    bad "rank 1 killed: the job still runs $secs s later (a hang): $(tail -n 3 "$tmp/kill.log")"
    kill $job; wait $job
  else
    wait $job; rc=$?
    left=$(pgrep -f "^$MPLRUN $tmp/small_pp2.job" | tr '\n' ' ')
    named=$(grep -m1 -o 'process rank 1 .*exited on signal 9[^.]*' "$tmp/kill.log")
    if [ $rc = 0 ] || [ $rc = 124 ]; then bad "rank 1 killed: mpirun exit $rc after $secs s: $(tail -n 3 "$tmp/kill.log")"
    elif [ -z "$named" ]; then bad "rank 1 killed: exit $rc after $secs s, but the output does not name rank 1: $(tail -n 4 "$tmp/kill.log" | tr '\n' ' ')"
    elif [ -n "$left" ]; then bad "rank 1 killed: processes left running: $left"; kill $left 2> /dev/null
    else ok "rank 1 killed with SIGKILL: the job ends in $secs s, exit $rc, naming it (\"$named\")"; fi
  fi
fi

finish
