#!/usr/bin/env bash
# Validation (train keys val, eval_every, eval_batches; mplrun --val), through the commands
# users type:
#  - the val loss is printed ("| val_loss X") and written to --metrics ("val_loss") after
#    every eval_every-th step and after the last one, and only there; without val, nowhere;
#  - it is what a training step reports as its loss (computed before the update) for the
#    same params and batch: with eval_batches = 1, the loss of `--init P --data VAL --steps 1`
#    for the params P saved after the run; with eval_batches = 2, the mean of that and the
#    loss on the val file's second batch (a file starting there); a file of one batch wraps;
#    the same on a dp x tp x pp mesh, under zb, under interleaved(2);
#  - dropout is off: a model with dropout evaluates what it does compiled with -D pdrop=0.0;
#  - validation changes nothing of training: params, optimizer state, losses and the
#    checkpoint's state.json are bitwise the same with and without --val, and a run
#    checkpointed and resumed with validation ends where a straight run without it does;
#  - --val replaces the job's val; a missing, short or out-of-vocabulary val file, --val
#    on a synthetic-data run and --val without a value are refused with messages;
#  - under mpirun (when there is one) world rank 0 reports the val loss of the threads run.
cd "$(dirname "$0")/../.."
source tests/tools/e2e_lib.sh
finish() { echo "$pass passed, $fail failed"; [ $fail = 0 ]; exit; }

# tok OP ...: token files (llm.c format) made from others: slice SRC DST START END | mod SRC DST M
tok() {
  "$PY" - "$@" <<'EOF'
import struct, sys
def load(p):
    b = open(p, "rb").read()
    n = struct.unpack("<3i", b[:12])[2]
    return list(struct.unpack("<%dH" % n, b[1024:1024 + 2 * n]))
def save(p, t):
    h = struct.pack("<3i", 20240520, 1, len(t)) + bytes(1024 - 12)
    open(p, "wb").write(h + struct.pack("<%dH" % len(t), *t))
op, src, dst = sys.argv[1:4]
t = load(src)
if op == "slice": save(dst, t[int(sys.argv[4]):int(sys.argv[5])])
elif op == "mod": save(dst, [x % int(sys.argv[4]) for x in t])
elif op == "put": save(dst, t[:-1] + [int(sys.argv[4])])
EOF
}
# metric FILE STEP KEY: the value of KEY on step STEP's metrics line, as written ("" if none)
metric() { sed -n "s/^{\"step\": $2,.*\"$3\": \([^,}]*\).*/\1/p" "$1"; }
# run NAME JOB ARGS...: mplrun on one thread per rank; log $tmp/NAME.log, metrics $tmp/NAME.jsonl
run() {
  local name=$1; shift
  "$MPLRUN" "$@" --threads 1 --metrics "$tmp/$name.jsonl" > "$tmp/$name.log" 2>&1 && return 0
  bad "mplrun $*: $(tail -n 2 "$tmp/$name.log")"; return 1
}
compile() { # JOB MPL ARGS...
  local job=$1; shift
  "$MPLC" "$@" -o "$job" > "$job.log" 2>&1 && return 0
  bad "mplc $*: $(head -n 3 "$job.log")"; return 1
}
# close LABEL A B TOL: |A - B| <= TOL * |B|
close() {
  if [ -n "$2" ] && [ -n "$3" ] && "$PY" -c "import sys; a, b = float('$2'), float('$3'); sys.exit(not abs(a - b) <= $4 * abs(b))"; then
    ok "$1 ($2 vs $3)"
  else bad "$1: $2 vs $3"; fi
}
equal() { if [ -n "$2" ] && [ "$2" = "$3" ]; then ok "$1 ($2)"; else bad "$1: '$2' vs '$3'"; fi; }

T=$tmp/train.bin V=$tmp/val.bin
"$BUILD/mpltok" examples/data/tiny.txt "$T" > /dev/null || { bad "mpltok"; finish; }
tail -c 6000 examples/data/tiny.txt > "$tmp/val.txt"
"$BUILD/mpltok" "$tmp/val.txt" "$V" > /dev/null || { bad "mpltok (val)"; finish; }
BS=128 # tiny_lm's batch * seq: one batch reads BS + 1 tokens
tok slice "$V" "$tmp/val_b1.bin" $BS 6000   # starts at the val file's second batch
tok slice "$V" "$tmp/val_one.bin" 0 $((BS + 1))   # exactly one batch
tok slice "$V" "$tmp/val_short.bin" 0 $BS   # one token short of a batch
tok put "$V" "$tmp/val_big.bin" 300   # a token outside tiny_lm's vocabulary of 256

# tiny_lm with validation keys: KEYS is inserted after its seed line
variant() { # MPL KEYS...
  local dst=$1 keys; shift
  keys=$(printf '\\n  %s' "$@")
  rewrite tests/e2e/tiny_lm.mpl "$dst" "s|^  seed = 11\$|  seed = 11$keys|"
}
variant "$tmp/every.mpl" "val = tokens(\"$V\")" "eval_every = 2" "eval_batches = 1" &&
  compile "$tmp/every.job" "$tmp/every.mpl" || finish
variant "$tmp/k2.mpl" "eval_batches = 2" && compile "$tmp/k2.job" "$tmp/k2.mpl" || finish
variant "$tmp/e1.mpl" "eval_every = 1" "eval_batches = 3" && compile "$tmp/e1.job" "$tmp/e1.mpl" || finish
# the same under SGD with momentum, whose state is its buffers and a first-step flag
sed 's|^  optimizer = adamw(.*|  optimizer = sgd(lr = 0.05, momentum = 0.9)|' "$tmp/e1.mpl" > "$tmp/e1_sgd.mpl" &&
  grep -q "optimizer = sgd" "$tmp/e1_sgd.mpl" && compile "$tmp/e1_sgd.job" "$tmp/e1_sgd.mpl" || finish
variant "$tmp/missing.mpl" "val = tokens(\"$tmp/nosuch.bin\")" "eval_every = 2" "eval_batches = 1" &&
  compile "$tmp/missing.job" "$tmp/missing.mpl" || finish
compile "$tmp/lm.job" tests/e2e/tiny_lm.mpl || finish

# ---- when it is evaluated: the progress lines and --metrics ----
if run every "$tmp/every.job" --data "$T" --steps 5 --save "$tmp/every.st"; then
  got=$(grep -o '^step [0-9]*/5 .*| val_loss [0-9.]*$' "$tmp/every.log" | sed 's|^step \([0-9]*\)/.*|\1|' | tr '\n' ' ')
  if [ "$got" = "2 4 5 " ]; then ok "eval_every = 2 over 5 steps: '| val_loss X' ends the progress lines of steps 2, 4, 5"
  else bad "eval_every = 2: progress lines with val_loss at steps '$got' (want 2 4 5): $(head -n 5 "$tmp/every.log")"; fi
  got=$(for s in 1 2 3 4 5; do [ -n "$(metric "$tmp/every.jsonl" $s val_loss)" ] && echo -n "$s "; done)
  if [ "$got" = "2 4 5 " ]; then ok "--metrics has val_loss on the lines of steps 2, 4, 5 only"
  else bad "--metrics val_loss at steps '$got': $(cat "$tmp/every.jsonl")"; fi
  if "$PY" -c "import json, math, sys; sys.exit(not all(math.isfinite(json.loads(l).get('val_loss', 1)) for l in open('$tmp/every.jsonl')))"; then
    ok "the metrics lines are JSON with a finite val_loss"
  else bad "the metrics lines: $(cat "$tmp/every.jsonl")"; fi
fi
if run dflt "$tmp/lm.job" --data "$T" --val "$V" --steps 3; then
  got=$(grep -c 'val_loss' "$tmp/dflt.log"); last=$(grep -c '^step 3/3 .*| val_loss [0-9.]*$' "$tmp/dflt.log")
  if [ "$got" = 1 ] && [ "$last" = 1 ] && [ -n "$(metric "$tmp/dflt.jsonl" 3 val_loss)" ]; then
    ok "without eval_every: evaluated after the last step only"
  else bad "default cadence: $(cat "$tmp/dflt.log" | head -n 4)"; fi
fi
if run noval "$tmp/lm.job" --data "$T" --steps 3 && ! grep -q val_loss "$tmp/noval.log" "$tmp/noval.jsonl"; then
  ok "without val: no val_loss printed or in --metrics"
else bad "a run without val shows a val_loss"; fi

# ---- the value: a training step's loss on the same batch with the same params ----
if [ -s "$tmp/every.st" ] && run ref1 "$tmp/every.job" --data "$V" --init "$tmp/every.st" --steps 1; then
  equal "eval_batches = 1: val_loss after step 5 = the loss of a step on the val file from the saved params" \
    "$(metric "$tmp/every.jsonl" 5 val_loss)" "$(metric "$tmp/ref1.jsonl" 1 loss)"
fi
if run k2 "$tmp/k2.job" --data "$T" --val "$V" --steps 2 --save "$tmp/k2.st" &&
   run ref_b0 "$tmp/k2.job" --data "$V" --init "$tmp/k2.st" --steps 1 &&
   run ref_b1 "$tmp/k2.job" --data "$tmp/val_b1.bin" --init "$tmp/k2.st" --steps 1; then
  want=$("$PY" -c "print(repr(($(metric "$tmp/ref_b0.jsonl" 1 loss) + $(metric "$tmp/ref_b1.jsonl" 1 loss)) / 2))")
  close "eval_batches = 2: val_loss = the mean of the losses of the val file's batches 0 and 1" \
    "$(metric "$tmp/k2.jsonl" 2 val_loss)" "$want" 1e-7
  if run wrap "$tmp/k2.job" --data "$T" --val "$tmp/val_one.bin" --steps 2 &&
     run ref_one "$tmp/k2.job" --data "$tmp/val_one.bin" --init "$tmp/k2.st" --steps 1; then
    equal "a val file of one batch wraps: both batches are its first" \
      "$(metric "$tmp/wrap.jsonl" 2 val_loss)" "$(metric "$tmp/ref_one.jsonl" 1 loss)"
  fi
fi
# every rank takes part: meshes and schedules whose forward parts exchange activations
# and run tp collectives; interleaved(2) on parallel_gpt (vocabulary 64: tokens mod 64)
mesh_check() { # NAME MODEL DATA VAL MPLC-ARGS...
  local name=$1 model=$2 data=$3 val=$4; shift 4
  compile "$tmp/$name.job" "$model" "$@" || return 1
  if run "m_$name" "$tmp/$name.job" --data "$data" --val "$val" --steps 2 --save "$tmp/$name.st" &&
     run "r_$name" "$tmp/$name.job" --data "$val" --init "$tmp/$name.st" --steps 1; then
    equal "$name ($*): val_loss = the loss of a step on the val file from the saved params" \
      "$(metric "$tmp/m_$name.jsonl" 2 val_loss)" "$(metric "$tmp/r_$name.jsonl" 1 loss)"
  fi
}
# two eval batches over two replicas: the second starts where the first ended, over both
# replicas' rows, so the val_loss is the single rank's (pass 118: the loader's batch without
# the replicas passed, every mesh check above evaluating one batch)
if [ -s "$tmp/k2.jsonl" ] && compile "$tmp/k2dp.job" "$tmp/k2.mpl" --mesh dp=2 &&
   run k2dp "$tmp/k2dp.job" --data "$T" --val "$V" --steps 2; then
  close "eval_batches = 2 under dp = 2: the val_loss of one rank" \
    "$(metric "$tmp/k2dp.jsonl" 2 val_loss)" "$(metric "$tmp/k2.jsonl" 2 val_loss)" 1e-6
fi
if variant "$tmp/k1.mpl" "eval_batches = 1"; then
  mesh_check zb "$tmp/k1.mpl" "$T" "$V" --schedule zb
  mesh_check dp2tp2 "$tmp/k1.mpl" "$T" "$V" --mesh dp=2,tp=2
fi
if rewrite tests/e2e/parallel_gpt.mpl "$tmp/pg.mpl" 's/^  seed = 11$/  seed = 11\n  eval_batches = 1/'; then
  tok mod "$T" "$tmp/train64.bin" 64
  tok mod "$V" "$tmp/val64.bin" 64
  mesh_check interleaved "$tmp/pg.mpl" "$tmp/train64.bin" "$tmp/val64.bin" --mesh pp=2 --schedule interleaved:2
fi

# ---- dropout is off: tiny_lm with dropout evaluates what it computes with -D pdrop=0.0 ----
if variant "$tmp/dk.mpl" "eval_batches = 1" &&
   rewrite "$tmp/dk.mpl" "$tmp/drop.mpl" 's/^const layers = 2$/const layers = 2\nconst pdrop = 0.5/' \
     's/^  x = x + embedding(arange(T), ctx, d) as wpe$/  x = dropout(x + embedding(arange(T), ctx, d) as wpe, pdrop)/' &&
   compile "$tmp/drop.job" "$tmp/drop.mpl" && compile "$tmp/nodrop.job" "$tmp/drop.mpl" -D pdrop=0.0 &&
   run drop "$tmp/drop.job" --data "$T" --val "$V" --steps 2 --save "$tmp/drop.st" &&
   run nodrop_ref "$tmp/nodrop.job" --data "$V" --init "$tmp/drop.st" --steps 1 &&
   run drop_ref "$tmp/drop.job" --data "$V" --init "$tmp/drop.st" --steps 1; then
  equal "dropout off: the val_loss of a model with dropout = the step loss of the same params with -D pdrop=0.0" \
    "$(metric "$tmp/drop.jsonl" 2 val_loss)" "$(metric "$tmp/nodrop_ref.jsonl" 1 loss)"
  if [ "$(metric "$tmp/drop_ref.jsonl" 1 loss)" != "$(metric "$tmp/nodrop_ref.jsonl" 1 loss)" ]; then
    ok "(and dropout is on in training: the dropout model's step loss differs)"
  else bad "the dropout model's training loss equals the one without dropout: the check above proves nothing"; fi
fi

# ---- training is untouched: params, optimizer state, losses, data position ----
if run plain "$tmp/e1.job" --data "$T" --steps 5 --save "$tmp/plain.st" &&
   run withval "$tmp/e1.job" --data "$T" --val "$V" --steps 5 --save "$tmp/withval.st"; then
  [ "$(grep -c val_loss "$tmp/withval.jsonl")" = 5 ] && ok "eval_every = 1: evaluated after each of 5 steps" ||
    bad "eval_every = 1: $(grep -c val_loss "$tmp/withval.jsonl") evaluations in 5 steps"
  if cmp -s "$tmp/plain.st" "$tmp/withval.st"; then ok "--save: the params are bitwise the same with and without --val"
  else bad "--val changed the trained params"; fi
  a=$(sed 's/, "tok_s".*//' "$tmp/plain.jsonl"); b=$(sed 's/, "tok_s".*//' "$tmp/withval.jsonl")
  if [ -n "$a" ] && [ "$a" = "$b" ]; then ok "the training losses and lrs are the same with and without --val"
  else bad "the training losses differ with --val"; fi
fi
# (pass 117: an evaluation that restarted SGD's momentum passed every check above, made
# under AdamW)
if run sgd_plain "$tmp/e1_sgd.job" --data "$T" --steps 4 --checkpoint "$tmp/ck_sgd0" &&
   run sgd_val "$tmp/e1_sgd.job" --data "$T" --val "$V" --steps 4 --checkpoint "$tmp/ck_sgd1" &&
   [ "$(grep -c val_loss "$tmp/sgd_val.jsonl")" = 4 ]; then
  if cmp -s "$tmp/ck_sgd0/model.safetensors" "$tmp/ck_sgd1/model.safetensors" &&
     cmp -s "$tmp/ck_sgd0/optim.safetensors" "$tmp/ck_sgd1/optim.safetensors"
  then ok "SGD with momentum, evaluated after each of 4 steps: params and momentum buffers bitwise those without --val"
  else bad "--val changed SGD's params or momentum"; fi
fi
if run ck0 "$tmp/e1.job" --data "$T" --steps 2 --checkpoint "$tmp/ck0" &&
   run ck1 "$tmp/e1.job" --data "$T" --val "$V" --steps 2 --checkpoint "$tmp/ck1"; then
  for f in model.safetensors optim.safetensors state.json; do
    if cmp -s "$tmp/ck0/$f" "$tmp/ck1/$f"; then ok "checkpoint $f is bitwise the same with and without --val"
    else bad "checkpoint $f differs with --val"; fi
  done
  if run resumed "$tmp/e1.job" --data "$T" --val "$V" --steps 5 --resume "$tmp/ck1" --save "$tmp/resumed.st" &&
     cmp -s "$tmp/resumed.st" "$tmp/plain.st"; then
    ok "checkpointed at step 2 and resumed with --val: the params of a straight 5-step run without it"
  else bad "resume with --val does not continue bit for bit"; fi
  if [ "$(metric "$tmp/resumed.jsonl" 5 val_loss)" = "$(metric "$tmp/withval.jsonl" 5 val_loss)" ]; then
    ok "the resumed run's val_loss at step 5 is the straight run's"
  else bad "val_loss after resume: $(metric "$tmp/resumed.jsonl" 5 val_loss) vs $(metric "$tmp/withval.jsonl" 5 val_loss)"; fi
fi

# ---- --val replaces the job's val; bad val inputs ----
if "$MPLRUN" "$tmp/missing.job" --data "$T" --steps 1 -q > /dev/null 2> "$tmp/err.txt"; then
  bad "a job whose val file does not exist runs"
elif grep -q "mplrun: error: .*$tmp/nosuch.bin" "$tmp/err.txt"; then ok "a missing val file is an error naming it: $(head -c 120 "$tmp/err.txt")"
else bad "missing val file: $(head -n 2 "$tmp/err.txt")"; fi
if run override "$tmp/missing.job" --data "$T" --val "$V" --steps 4 &&
   run every4 "$tmp/every.job" --data "$T" --steps 4; then
  equal "--val replaces the job's val (a job naming a missing file, given --val VAL, = a job naming VAL)" \
    "$(metric "$tmp/override.jsonl" 4 val_loss)" "$(metric "$tmp/every4.jsonl" 4 val_loss)"
fi
refused() { # LABEL PATTERN ARGS...: mplrun ARGS exits 1 with one error line matching PATTERN
  local label=$1 pat=$2; shift 2
  "$MPLRUN" --threads 1 -q "$@" > /dev/null 2> "$tmp/err.txt"
  local rc=$?
  if [ $rc = 1 ] && grep -qE -- "^mplrun: error: .*$pat" "$tmp/err.txt"; then ok "$label: $(head -c 140 "$tmp/err.txt")"
  else bad "$label (exit $rc): $(head -n 2 "$tmp/err.txt")"; fi
}
refused "--val FILE one token short of a batch" "val_short.bin.*too few" "$tmp/lm.job" --data "$T" --val "$tmp/val_short.bin" --steps 1
refused "--val FILE with a token outside the vocabulary" "val_big.bin: token 300 \\(at position 5999\\) is out of range" "$tmp/lm.job" --data "$T" --val "$tmp/val_big.bin" --steps 1
refused "--val on a run of synthetic data" "synthetic" "$tmp/interleaved.job" --val "$tmp/val64.bin" --steps 1
refused "--val on a run of synthetic data, --steps 0 (it was accepted)" "synthetic" "$tmp/interleaved.job" --val "$tmp/val64.bin" --steps 0
refused "--val without a value" "--val needs a value" "$tmp/lm.job" --val
# val in the train block with data left synthetic: a warning naming --data (pass 83: refused
# by mplc), the run without --data refused, with --data it validates as the same run with
# data = tokens(...) does
rewrite tests/e2e/tiny_lm.mpl "$tmp/valsyn.mpl" 's|^  data = tokens.*|  val = tokens("'"$V"'")\n  eval_every = 2\n  eval_batches = 1|'
if "$MPLC" "$tmp/valsyn.mpl" -o "$tmp/valsyn.job" > "$tmp/valsyn.log" 2>&1 && grep -q "warning: val needs token data: .*give mplrun --data FILE" "$tmp/valsyn.log"
then ok "val with synthetic data: compiled with a warning naming --data"
else bad "val with synthetic data: $(head -n 2 "$tmp/valsyn.log")"; fi
refused "the job's val on a run of synthetic data" "synthetic" "$tmp/valsyn.job" --steps 2
if run valsyn "$tmp/valsyn.job" --data "$T" --steps 2 && run valtok "$tmp/every.job" --data "$T" --steps 2; then
  equal "the job's val with --data: step 2's val_loss as data = tokens(...) gives" "$(metric "$tmp/valsyn.jsonl" 2 val_loss)" "$(metric "$tmp/valtok.jsonl" 2 val_loss)"
fi

# ---- under mpirun: world rank 0 reports the threads run's val loss ----
if command -v mpirun > /dev/null 2>&1 && ldd "$MPLRUN" 2>/dev/null | grep -q libmpi; then
  MPIRUN=(timeout 60 mpirun --oversubscribe)
  [ "$(id -u)" = 0 ] && MPIRUN+=(--allow-run-as-root)
  if "${MPIRUN[@]}" -np 2 "$MPLRUN" "$tmp/every.job" --data "$T" --steps 4 --threads 1 --metrics "$tmp/mpi.jsonl" > "$tmp/mpi.log" 2>&1; then
    a=$(grep -o 'val_loss [0-9.]*' "$tmp/mpi.log" | tr '\n' ' ')
    b=$(grep -o 'val_loss [0-9.]*' "$tmp/every4.log" | tr '\n' ' ')
    equal "mpirun -np 2: the progress lines' val losses (steps 2, 4) are the threads run's" "$a" "$b"
    equal "mpirun -np 2: --metrics val_loss of step 4 is the threads run's" \
      "$(metric "$tmp/mpi.jsonl" 4 val_loss)" "$(metric "$tmp/every4.jsonl" 4 val_loss)"
  else bad "mpirun -np 2 with validation: $(grep -m 2 error "$tmp/mpi.log")"; fi
else echo "note: no mpirun or an mplrun without MPI: validation under mpirun not checked"; fi

finish
