#!/usr/bin/env bash
# What mplrun shows of a run:
#  - --trace writes valid JSON (Chrome trace format) with one row (tid) per rank, named
#    "rank N", whose slices have the categories fwd, bwd_b, bwd_w, send, recv and
#    optimizer (and do not overlap within a row);
#  - --metrics writes one JSON object per step with step (1, 2, ...) and a finite loss;
#    throughput is in tokens for a token model, in samples for one of feature vectors;
#  - --sample N --prompt TEXT after a few steps prints the prompt and N more tokens,
#    the same twice, and nothing else on stdout (after --resume too), without the job's
#    training data when it trains nothing; dropout is off
#    while sampling (a model with dropout samples what it does with -D pdrop=0.0);
#    an empty --prompt is an error, before training, and so is a prompt byte or a drawn
#    token past the embedding's rows; --top-k near a 50257 vocabulary takes no time;
#  - --trace and --comm-stats that fail to write leave the earlier files as they were;
#  - --inspect prints the manifest: model, mesh, params with shapes, per-rank streams.
# JSON is checked with python3's json module.
cd "$(dirname "$0")/../.."
source tests/tools/e2e_lib.sh
finish() { echo "$pass passed, $fail failed"; [ $fail = 0 ]; exit; }

"$BUILD/mpltok" examples/data/tiny.txt "$tmp/tiny.bin" > /dev/null || { bad "mpltok"; finish; }
job=$tmp/lm.job
for s in 1f1b zb; do
  if ! "$MPLC" tests/e2e/tiny_lm.mpl --schedule $s -o "$tmp/lm_$s.job" 2> "$tmp/mplc.err"; then
    bad "mplc tiny_lm --schedule $s: $(head -n 3 "$tmp/mplc.err")"; finish
  fi
done
cp "$tmp/lm_1f1b.job" "$job"
D=(--data "$tmp/tiny.bin" --threads 1)

# ---- --trace and --metrics ----
for s in 1f1b zb; do
  if ! "$MPLRUN" "$tmp/lm_$s.job" "${D[@]}" --steps 3 -q --trace "$tmp/t_$s.json" --metrics "$tmp/m_$s.jsonl" > "$tmp/run.log" 2>&1; then
    bad "mplrun --trace ($s): $(tail -n 3 "$tmp/run.log")"; continue
  fi
  # python prints one "ok ..." or "FAIL ..." line per check
  "$PY" - "$tmp/t_$s.json" "$tmp/m_$s.jsonl" "$s" > "$tmp/py.out" 2>&1 <<'EOF'
import json, math, sys
trace_path, metrics_path, sched = sys.argv[1], sys.argv[2], sys.argv[3]
def check(cond, what):
    print(("ok   " if cond else "FAIL ") + f"[{sched}] " + what)
try:
    doc = json.load(open(trace_path))
    check(True, "--trace is valid JSON")
except Exception as e:
    check(False, f"--trace is not valid JSON: {e}"); sys.exit(0)
ev = doc["traceEvents"] if isinstance(doc, dict) else doc
check(isinstance(ev, list) and len(ev) > 0, f"the trace has events ({len(ev)})")
names = {e["tid"]: e["args"]["name"] for e in ev if e.get("ph") == "M" and e.get("name") == "thread_name"}
check(names == {0: "rank 0", 1: "rank 1"}, f"one named row per rank: {names}")
slices = [e for e in ev if e.get("ph") == "X"]
check({e["tid"] for e in slices} == {0, 1}, "slices on rows 0 and 1 only")
cats_needed = {"fwd", "bwd_b", "bwd_w", "send", "recv", "optimizer"}
for tid in (0, 1):
    comm = [e for e in slices if e["tid"] == tid and e.get("cat") == "comm"]
    row = sorted((e for e in slices if e["tid"] == tid and e.get("cat") != "comm"), key=lambda e: e["ts"])
    inside = sum(1 for c in comm if any(i["ts"] - 1e-3 <= c["ts"] and c["ts"] + c["dur"] <= i["ts"] + i["dur"] + 1e-3 for i in row))
    check(len(comm) > 0 and inside == len(comm), f"rank {tid}: {len(comm)} message slices, each inside its instruction ({inside})")
    cats = {e.get("cat", e["name"].split()[0]) for e in row}
    check(cats_needed <= cats, f"rank {tid} has {sorted(cats_needed)} (has {sorted(cats)})")
    check(all(e["name"].split()[0] == e.get("cat", e["name"].split()[0]) for e in row),
          f"rank {tid}: each slice's name starts with its category")
    check(all(isinstance(e["dur"], (int, float)) and e["dur"] >= 0 for e in row), f"rank {tid}: durations >= 0")
    overlaps = sum(1 for a, b in zip(row, row[1:]) if b["ts"] < a["ts"] + a["dur"] - 1e-3)
    check(overlaps == 0, f"rank {tid}: slices do not overlap ({overlaps} overlaps)")
    nfwd = sum(1 for e in row if e.get("cat") == "fwd")
    check(nfwd == 3 * 4, f"rank {tid}: 3 steps x 4 micro-batches = 12 fwd slices ({nfwd})")
    nopt = sum(1 for e in row if e.get("cat") == "optimizer")
    check(nopt == 3, f"rank {tid}: one optimizer slice per step ({nopt})")
lines = open(metrics_path).read().splitlines()
check(len(lines) == 3, f"--metrics has one line per step ({len(lines)})")
steps = []
for i, line in enumerate(lines):
    try:
        m = json.loads(line)
    except Exception as e:
        check(False, f"metrics line {i + 1} is not JSON: {e}: {line!r}"); continue
    steps.append(m.get("step"))
    loss = m.get("loss")
    check(isinstance(loss, (int, float)) and math.isfinite(loss) and loss > 0,
          f"metrics line {i + 1} has a finite loss ({loss})")
check(steps == [1, 2, 3], f"metrics steps are 1, 2, 3 ({steps})")
EOF
  while IFS= read -r line; do
    case $line in
      "ok   "*) ok "${line#ok   }" ;;
      "FAIL "*) bad "${line#FAIL }" ;;
      *) bad "python: $line" ;;
    esac
  done < "$tmp/py.out"
done

# ---- the trace of a dp x tp x pp mesh: every message and collective is a slice named by
# its kind, as many per step as --comm-stats counts ----
if rewrite tests/e2e/tiny_lm.mpl "$tmp/lm_z.mpl" 's/^  seed = 11$/  seed = 11\n  zero = 1/'; then
  for z in 0 1; do
    model=tests/e2e/tiny_lm.mpl; [ $z = 1 ] && model=$tmp/lm_z.mpl
    if "$MPLC" "$model" --mesh dp=2,tp=2 -o "$tmp/mesh$z.job" &&
       "$MPLRUN" "$tmp/mesh$z.job" --data "$tmp/tiny.bin" --steps 2 -q --trace "$tmp/mt$z.json" --comm-stats "$tmp/mc$z.jsonl" > "$tmp/mesh.log" 2>&1; then
      "$PY" - "$tmp/mt$z.json" "$tmp/mc$z.jsonl" "$z" > "$tmp/py.out" 2>&1 <<'EOF'
import json, sys
ev = json.load(open(sys.argv[1]))
ev = ev["traceEvents"] if isinstance(ev, dict) else ev
stats = [json.loads(l) for l in open(sys.argv[2])]
zero = sys.argv[3] == "1"
exact = ["pp_send", "pp_recv", "tp_allreduce", "tp_reduce_scatter", "dp_allreduce", "dp_reduce_scatter", "dp_allgather",
         "tied_send", "tied_recv", "norm_allreduce"]
want = {"pp_send", "pp_recv", "tp_allreduce", "tied_send", "tied_recv", "norm_allreduce"}
want |= {"dp_reduce_scatter", "dp_allgather"} if zero else {"dp_allreduce"}
bad = []
seen = set()
for s in stats:
    names = [e["name"] for e in ev if e.get("ph") == "X" and e.get("cat") == "comm" and e["tid"] == s["rank"]]
    seen |= set(names)
    for k in exact:
        if names.count(k) != 2 * s["calls"].get(k, 0):
            bad.append(f"rank {s['rank']} {k}: {names.count(k)} slices, --comm-stats says {s['calls'].get(k, 0)} per step")
tag = f"[dp=2 tp=2 pp=2 zero={int(zero)}]"
print(("ok   " if not bad else "FAIL ") + f"{tag} comm slices per rank and kind = 2 steps x --comm-stats calls" + ("" if not bad else ": " + "; ".join(bad[:4])))
print(("ok   " if want <= seen else "FAIL ") + f"{tag} the trace names {sorted(want)} (has {sorted(seen)})")
EOF
      while IFS= read -r line; do
        case $line in "ok   "*) ok "${line#ok   }" ;; "FAIL "*) bad "${line#FAIL }" ;; *) bad "python: $line" ;; esac
      done < "$tmp/py.out"
    else
      bad "mesh trace run (zero=$z): $(tail -n 3 "$tmp/mesh.log")"
    fi
  done
fi

# ---- the throughput's unit: tokens for sequences, samples for feature vectors ----
# (examples/layers_on_devices.mpl's input is f32[B, 64], 64 features: the same number as the
# default seq, which made it count as a sequence)
if "$MPLC" examples/layers_on_devices.mpl -o "$tmp/lod.job" 2> "$tmp/lod.err" &&
   "$MPLRUN" "$tmp/lod.job" --steps 1 --threads 1 --metrics "$tmp/lod.jsonl" > "$tmp/lod.out" 2>&1; then
  if grep -q '"samples_s"' "$tmp/lod.jsonl" && ! grep -q '"tok_s"' "$tmp/lod.jsonl" && grep -q 'samples/s' "$tmp/lod.out"; then
    ok "a model of feature vectors [B, 64] reports samples/s (and samples_s in --metrics)"
  else bad "layers_on_devices reports: $(head -c 120 "$tmp/lod.jsonl")"; fi
  if grep -q '"tok_s"' "$tmp/m_1f1b.jsonl" 2>/dev/null; then ok "a token model reports tok_s"
  else bad "tiny_lm's metrics lack tok_s: $(head -c 120 "$tmp/m_1f1b.jsonl")"; fi
else bad "layers_on_devices: $(head -n 2 "$tmp/lod.err" "$tmp/lod.out")"; fi
# the throughput counts what a step trains, every replica's share: tok_s x ms / 1000 is
# batch x seq (tiny_lm: 8 x 16 = 128, the batch being the global one) under dp = 2 and
# pp = 2, and samples_s x ms / 1000 is the batch of 64 (pass 117: tokens of one replica
# alone, half the truth under dp = 2, passed)
per_step() { # JSONL KEY WANT: every line's KEY x ms / 1000 within 1e-4 of WANT
  "$PY" -c 'import json, sys
ls = [json.loads(l) for l in open(sys.argv[1])]
got = [l[sys.argv[2]] * l["ms"] / 1000 for l in ls]
print(" ".join(f"{g:.3f}" for g in got))
sys.exit(not ls or any(abs(g / float(sys.argv[3]) - 1) > 1e-4 for g in got))' "$@"
}
got="" got2=""
if "$MPLC" tests/e2e/tiny_lm.mpl --mesh dp=2,pp=2 -o "$tmp/tput.job" 2> "$tmp/tput.err" &&
   "$MPLRUN" "$tmp/tput.job" "${D[@]}" --steps 3 --metrics "$tmp/tput.jsonl" > "$tmp/tput.out" 2>&1 &&
   got=$(per_step "$tmp/tput.jsonl" tok_s 128) && got2=$(per_step "$tmp/lod.jsonl" samples_s 64)
then ok "tok_s x ms / 1000 = batch x seq = 128 under dp = 2, pp = 2 ($got); samples_s x ms / 1000 = 64 ($got2)"
else bad "throughput's count: tokens $got, samples $got2; $(head -n 2 "$tmp/tput.err" "$tmp/tput.out")"; fi
# the closing report's "slowest: rank N" names a rank of the largest busy time among the
# rank lines above it (pass 117: the least busy one named passed)
slow=$(sed -nE 's/^slowest: rank ([0-9]+), busy ([0-9.]+) ms.*/\1 \2/p' "$tmp/tput.out")
most=$(sed -nE 's/^rank ([0-9]+): busy ([0-9.]+) ms.*/\2/p' "$tmp/tput.out" | sort -g | tail -n 1)
named=$(sed -nE "s/^rank ${slow% *}: busy ([0-9.]+) ms.*/\1/p" "$tmp/tput.out")
if [ -n "$slow" ] && [ "$(grep -c '^rank [0-9]*: busy' "$tmp/tput.out")" = 4 ] && [ "$named" = "$most" ] && [ "${slow#* }" = "$most" ]
then ok "the report's slowest rank (rank ${slow% *}, ${slow#* } ms) has the largest busy time of the 4 rank lines"
else bad "slowest rank: '$slow', rank lines' largest busy '$most': $(grep -E '^(rank|slowest)' "$tmp/tput.out" | tr '\n' ' ')"; fi
# a model of vectors per position [B, seq, d] (no token input) counts tokens too: 4 x 4 a
# step (pass 117: the rule for rank-3 inputs dropped gave samples/s); a loss past 1e6 is
# printed in e-notation with 4 significant digits (LANGUAGE.md), under 1e6 with 4 decimals
cat > "$tmp/vec.mpl" <<'MPL'
model m(x: f32[B, T, 8], y: f32[B, T, 8]) {
  param w: f32[8, 8] = normal(0.5)
  return sum((x @ w - y) * (x @ w - y)) * SCALE
}
train m { data = synthetic(8); batch = 4; seq = 4; optimizer = sgd(lr = 0.0); steps = 2 }
MPL
got=""
if sed 's/SCALE/1.0/' "$tmp/vec.mpl" > "$tmp/vec1.mpl" && sed 's/SCALE/10000.0/' "$tmp/vec.mpl" > "$tmp/vec2.mpl" &&
   "$MPLC" "$tmp/vec1.mpl" -o "$tmp/vec1.job" 2> "$tmp/vec.err" && "$MPLC" "$tmp/vec2.mpl" -o "$tmp/vec2.job" 2>> "$tmp/vec.err" &&
   "$MPLRUN" "$tmp/vec1.job" --threads 1 --metrics "$tmp/vec1.jsonl" > "$tmp/vec1.out" 2>&1 &&
   "$MPLRUN" "$tmp/vec2.job" --threads 1 > "$tmp/vec2.out" 2>&1 &&
   got=$(per_step "$tmp/vec1.jsonl" tok_s 16) && grep -q '^step 2/2 | loss [0-9]*\.[0-9]\{4\} | .* tok/s |' "$tmp/vec1.out" &&
   grep -q '^step 2/2 | loss [0-9]\.[0-9]\{4\}e+[0-9]* | ' "$tmp/vec2.out"
then ok "vectors per position: tok_s x ms / 1000 = batch x seq = 16 ($got); losses $(grep -o 'loss [^ ]*' "$tmp/vec1.out" | tail -n 1) and $(grep -o 'loss [^ ]*' "$tmp/vec2.out" | tail -n 1)"
else bad "vectors per position: tokens $got, $(tail -n 1 "$tmp/vec1.out") / $(tail -n 1 "$tmp/vec2.out") $(head -n 2 "$tmp/vec.err")"; fi

# a token model whose idx no op reads: its tokens are not held to a vocabulary
if "$MPLC" tests/e2e/unused_idx.mpl -o "$tmp/ui.job" 2> "$tmp/ui.err" &&
   "$MPLRUN" "$tmp/ui.job" "${D[@]}" --steps 1 -q > "$tmp/ui.out" 2>&1; then ok "a token model that never reads idx trains on tokens past 2"
else bad "unused idx: $(head -n 2 "$tmp/ui.err" "$tmp/ui.out")"; fi

# ---- --sample ----
if "$MPLRUN" "$job" "${D[@]}" --steps 4 --save "$tmp/p.st" -q > "$tmp/train.log" 2>&1; then
  prompt="The "
  n=24
  if "$MPLRUN" "$job" "${D[@]}" --init "$tmp/p.st" --sample $n --prompt "$prompt" > "$tmp/s1.txt" 2> "$tmp/s.err" &&
     "$MPLRUN" "$job" "${D[@]}" --init "$tmp/p.st" --sample $n --prompt "$prompt" > "$tmp/s2.txt" 2>> "$tmp/s.err"; then
    bytes=$(wc -c < "$tmp/s1.txt")
    want=$(( ${#prompt} + n + 1 ))   # byte tokens, then a newline
    if [ "$(head -c ${#prompt} "$tmp/s1.txt")" = "$prompt" ]; then ok "--sample output starts with the prompt"
    else bad "--sample output does not start with the prompt: $(head -c 60 "$tmp/s1.txt" | od -c | head -n 2)"; fi
    if [ "$bytes" = "$want" ]; then ok "--sample $n prints $n byte tokens after the prompt ($bytes bytes with the newline)"
    else bad "--sample $n printed $bytes bytes, wanted $want"; fi
    if cmp -s "$tmp/s1.txt" "$tmp/s2.txt"; then ok "--sample is deterministic (same seed, same text)"
    else bad "--sample gave two different texts"; fi
  else
    bad "mplrun --sample: $(head -n 3 "$tmp/s.err")"
  fi
  # sampling alone reads no training data: from a folder without the job's data file, the
  # same text as beside it
  if (mplrun=$(realpath "$MPLRUN") && cd "$tmp" && "$mplrun" "$job" --threads 1 --init "$tmp/p.st" --sample $n --prompt "$prompt" > "$tmp/s4.txt" 2> "$tmp/s4.err") &&
     cmp -s "$tmp/s1.txt" "$tmp/s4.txt"; then ok "--sample alone needs no training data (run where the job's data file is not)"
  else bad "--sample away from the job's data: $(head -n 2 "$tmp/s4.err")"; fi
  # training then sampling in one run
  if "$MPLRUN" "$job" "${D[@]}" --steps 2 -q --sample 8 --prompt "ab" > "$tmp/s3.txt" 2> "$tmp/s3.err" &&
     [ "$(head -c 2 "$tmp/s3.txt")" = "ab" ]; then ok "--steps 2 --sample 8 trains then samples"
  else bad "--steps 2 --sample 8: $(head -n 3 "$tmp/s3.err") $(head -c 40 "$tmp/s3.txt")"; fi
else
  bad "mplrun (training for --sample): $(tail -n 3 "$tmp/train.log")"
fi
# --temperature 0 is greedy: the seed does not matter, and it is top-k 1 sampling; at
# temperature 1 another --seed draws another text; bad values are refused
if [ -s "$tmp/p.st" ]; then
  S=("$MPLRUN" "$job" "${D[@]}" --init "$tmp/p.st" --sample 40 --prompt "The ")
  "${S[@]}" --temperature 0 --seed 1 > "$tmp/g1.txt" 2> /dev/null
  "${S[@]}" --temperature 0 --seed 2 > "$tmp/g2.txt" 2> /dev/null
  "${S[@]}" --top-k 1 --seed 3 > "$tmp/k1.txt" 2> /dev/null
  "${S[@]}" --seed 1 > "$tmp/t1.txt" 2> /dev/null
  "${S[@]}" --seed 2 > "$tmp/t2.txt" 2> /dev/null
  if [ -s "$tmp/g1.txt" ] && cmp -s "$tmp/g1.txt" "$tmp/g2.txt" && cmp -s "$tmp/g1.txt" "$tmp/k1.txt"; then
    ok "--temperature 0 is greedy (seeds 1 and 2 agree) and equals --top-k 1"
  else bad "greedy: '$(head -c 50 "$tmp/g1.txt")' / '$(head -c 50 "$tmp/g2.txt")' / top-k 1 '$(head -c 50 "$tmp/k1.txt")'"; fi
  if [ -s "$tmp/t1.txt" ] && ! cmp -s "$tmp/t1.txt" "$tmp/t2.txt"; then ok "--seed 1 and --seed 2 sample different texts"
  else bad "--seed does not change the sampled text"; fi
  # without --seed, the train seed (--inspect's): the same text as --seed it, not --seed 0
  tseed=$("$MPLRUN" "$job" --inspect | sed -n 's/^train: .* seed \([0-9]*\)$/\1/p')
  "${S[@]}" > "$tmp/td.txt" 2> /dev/null
  "${S[@]}" --seed "${tseed:-x}" > "$tmp/ts.txt" 2> /dev/null
  "${S[@]}" --seed 0 > "$tmp/t0.txt" 2> /dev/null
  if [ -n "$tseed" ] && [ "$tseed" != 0 ] && [ -s "$tmp/td.txt" ] && cmp -s "$tmp/td.txt" "$tmp/ts.txt" && ! cmp -s "$tmp/td.txt" "$tmp/t0.txt"
  then ok "--sample without --seed draws with the train seed ($tseed): the text of --seed $tseed, not of --seed 0"
  else bad "--sample's default seed: train seed '$tseed', the text $(cmp -s "$tmp/td.txt" "$tmp/ts.txt" && echo is || echo "is not") --seed $tseed's"; fi
  for bad_opt in "--temperature -1" "--temperature x" "--temperature 1e-400" "--top-k -2"; do
    if "${S[@]}" $bad_opt > /dev/null 2> "$tmp/bo.err"; then bad "mplrun accepts $bad_opt"
    elif grep -q -- "${bad_opt%% *}" "$tmp/bo.err"; then ok "$bad_opt is refused: $(head -c 80 "$tmp/bo.err")"
    else bad "$bad_opt: $(head -n 1 "$tmp/bo.err")"; fi
  done
  if "$MPLRUN" "$job" --temperature 0 > /dev/null 2> "$tmp/bo.err"; then bad "--temperature without --sample is accepted"
  else ok "--temperature without --sample is refused"; fi
  # any finite temperature samples (a large one near-uniformly); inf is refused
  if "${S[@]}" --temperature 1e9 > "$tmp/hot.txt" 2> "$tmp/hot.err" && [ "$(wc -c < "$tmp/hot.txt")" = 45 ] &&
     ! "${S[@]}" --temperature inf > /dev/null 2>&1; then ok "--temperature 1e9 samples 40 tokens; inf is refused"
  else bad "--temperature 1e9: $(head -n 1 "$tmp/hot.err")"; fi
  # a temperature so small that logit / T overflows (a conformance pass: 1e-310 picked the
  # last token, inf - inf made every weight nan) samples greedily, its limit
  if "${S[@]}" --temperature 1e-310 > "$tmp/cold.txt" 2> "$tmp/cold.err" && cmp -s "$tmp/cold.txt" "$tmp/g1.txt"
  then ok "--temperature 1e-310 samples greedily, as --temperature 0"
  else bad "--temperature 1e-310: '$(head -c 50 "$tmp/cold.txt")' against greedy '$(head -c 50 "$tmp/g1.txt")'"; fi
  # a signal while sampling stops after the token in progress, exit 128 + N (it sampled on to
  # the end, exit 0): SIGPIPE when stdout's reader goes away
  "$MPLRUN" "$job" --threads 1 --init "$tmp/p.st" --sample 1000000 --prompt "The " 2> "$tmp/pipe.err" | head -c 3 > /dev/null
  rc=${PIPESTATUS[0]}
  if [ "$rc" = 141 ] && grep -q "stopped by signal 13 after [0-9]* of 1000000 tokens" "$tmp/pipe.err"
  then ok "sampling into a closed pipe stops: exit 141, $(grep -o 'stopped.*tokens' "$tmp/pipe.err")"
  else bad "sampling into a closed pipe: exit $rc, $(tail -n 1 "$tmp/pipe.err")"; fi
  # a refused prompt leaves stdout empty (no stray newline)
  if "$MPLC" tests/e2e/tiny_lm.mpl -D vocab=64 -o "$tmp/v64.job" 2> "$tmp/rp.err" &&
     ! "$MPLRUN" "$tmp/v64.job" --sample 5 --prompt abc > "$tmp/rp.txt" 2> "$tmp/rp.err" && [ ! -s "$tmp/rp.txt" ] &&
     grep -q "outside the vocabulary" "$tmp/rp.err"; then ok "a prompt byte outside the vocabulary: an error, stdout empty"
  else bad "a prompt outside the vocabulary: stdout '$(od -c "$tmp/rp.txt" | head -n 1)', $(head -n 1 "$tmp/rp.err")"; fi
  # the bound itself: byte 64 ('@') of 64 classes is outside the vocabulary, though the
  # embedding has 300 rows; 63 ('?') is not
  printf '%s\n' 'import nn' 'model m(idx: i32[B, T], targets: i32[B, T]) {' '  x = embedding(idx, 300, 16) as wte' \
    '  return cross_entropy(nn.linear(x, 64) as head, targets)' '}' 'train m {' '  batch = 2' '  seq = 8' '}' > "$tmp/v300.mpl"
  if "$MPLC" "$tmp/v300.mpl" -o "$tmp/v300.job" 2> "$tmp/rp.err" &&
     ! "$MPLRUN" "$tmp/v300.job" --sample 2 --prompt "@" > /dev/null 2> "$tmp/rp.err" &&
     grep -q "byte 64 is outside the vocabulary of 64" "$tmp/rp.err" &&
     "$MPLRUN" "$tmp/v300.job" --sample 2 --prompt "?" > /dev/null 2> "$tmp/rp2.err"
  then ok "prompt byte 64 of 64 classes (an embedding of 300 rows) is refused, byte 63 samples"
  else bad "the vocabulary's bound: $(head -n 1 "$tmp/rp.err") / $(head -n 1 "$tmp/rp2.err")"; fi
  # a sample-only run checks a --val file it is given, as --data's (the job's own are not read)
  if ! "${S[@]}" --val "$tmp/nosuch.bin" > /dev/null 2> "$tmp/nv.err" && grep -q "nosuch.bin" "$tmp/nv.err"; then
    ok "--sample with a missing --val file: refused, as a missing --data"
  else bad "--sample --val nosuch.bin: $(head -n 1 "$tmp/nv.err")"; fi
fi
# an output folder that does not exist is refused before training: --comm-stats too
if ! "$MPLRUN" "$job" "${D[@]}" --steps 2 --comm-stats "$tmp/nodir/c.jsonl" > "$tmp/cs.log" 2>&1 &&
   grep -q "comm-stats.*no folder" "$tmp/cs.log" && ! grep -q "^step" "$tmp/cs.log"; then
  ok "--comm-stats into a missing folder is refused before step 1"
else bad "--comm-stats nodir/c.jsonl: $(tail -n 2 "$tmp/cs.log")"; fi
# dropout is off while sampling: the same weights give the same text with and without it
if rewrite tests/e2e/tiny_lm.mpl "$tmp/drop.mpl" 's/^const layers = 2$/const layers = 2\nconst pdrop = 0.5/' \
     's/^  x = x + embedding(arange(T), ctx, d) as wpe$/  x = dropout(x + embedding(arange(T), ctx, d) as wpe, pdrop)/' &&
   "$MPLC" "$tmp/drop.mpl" -o "$tmp/drop.job" && "$MPLC" "$tmp/drop.mpl" -D pdrop=0.0 -o "$tmp/nodrop.job" &&
   "$MPLRUN" "$tmp/drop.job" "${D[@]}" --steps 3 -q --save "$tmp/drop.st" > /dev/null 2>&1; then
  "$MPLRUN" "$tmp/drop.job" "${D[@]}" --init "$tmp/drop.st" --sample 32 --prompt "The " > "$tmp/d1.txt" 2> /dev/null
  "$MPLRUN" "$tmp/nodrop.job" "${D[@]}" --init "$tmp/drop.st" --sample 32 --prompt "The " > "$tmp/d0.txt" 2> /dev/null
  if [ -s "$tmp/d1.txt" ] && cmp -s "$tmp/d1.txt" "$tmp/d0.txt"; then ok "--sample runs with dropout off (same text as -D pdrop=0.0)"
  else bad "--sample with dropout: '$(head -c 40 "$tmp/d1.txt")' vs '$(head -c 40 "$tmp/d0.txt")' without"; fi
else
  bad "the dropout variant of tiny_lm does not compile or train"
fi
# after --resume: stdout holds the text alone (progress, reports and notes go to stderr)
if "$MPLRUN" "$job" "${D[@]}" --steps 2 -q --checkpoint "$tmp/ck" > /dev/null 2>&1 &&
   "$MPLRUN" "$job" "${D[@]}" --resume "$tmp/ck" --sample 10 --prompt "ab" > "$tmp/r.txt" 2> "$tmp/r.err" &&
   "$MPLRUN" "$job" "${D[@]}" --steps 3 --resume "$tmp/ck" --sample 10 --prompt "ab" > "$tmp/r3.txt" 2> "$tmp/r3.err"; then
  for f in r r3; do
    if [ "$(wc -c < "$tmp/$f.txt")" = 13 ] && [ "$(wc -l < "$tmp/$f.txt")" = 1 ] && [ "$(head -c 2 "$tmp/$f.txt")" = ab ]; then
      ok "--resume --sample ($f): stdout is the prompt, 10 tokens and a newline"
    else bad "--resume --sample ($f): stdout is '$(head -c 200 "$tmp/$f.txt")'"; fi
  done
  if grep -q '^step 3/3' "$tmp/r3.err" && grep -q '^rank 0: busy' "$tmp/r3.err"; then ok "progress and report go to stderr when sampling"
  else bad "progress or report missing from stderr: $(head -n 3 "$tmp/r3.err")"; fi
else
  bad "--resume then --sample: $(head -n 3 "$tmp/r.err")"
fi
if "$MPLRUN" "$job" "${D[@]}" --init "$tmp/p.st" --sample 4 --prompt "" > "$tmp/e.txt" 2> "$tmp/e.err"; then
  bad "--sample with an empty --prompt exits 0"
elif grep -q -- "--prompt is empty" "$tmp/e.err" && [ ! -s "$tmp/e.txt" ]; then ok "an empty --prompt is an error, stdout empty"
else bad "an empty --prompt: '$(head -n 2 "$tmp/e.err")'"; fi

# a prompt sampling cannot use is refused before training (it was refused after every step
# had run and --save was written)
if ! "$MPLRUN" "$job" "${D[@]}" --steps 3 --save "$tmp/late.st" --sample 4 --prompt "" > "$tmp/late.txt" 2> "$tmp/late.err" &&
   grep -q -- "--prompt is empty" "$tmp/late.err" && ! grep -q '^step' "$tmp/late.err" && [ ! -e "$tmp/late.st" ]; then
  ok "an empty --prompt with --steps 3 is refused before step 1 (no --save file)"
else bad "--steps 3 --sample --prompt '': $(grep -c '^step' "$tmp/late.err") steps ran, $(tail -n 1 "$tmp/late.err")"; fi
# a token model whose embedding has fewer rows (120) than its logits have classes (256): a
# prompt byte past the rows is refused before training, and so is a drawn token (they were
# clamped to row 119 and fed on)
cat > "$tmp/rows.mpl" <<'EOF'
import nn
model m(idx: i32[B, T], targets: i32[B, T]) {
  x = embedding(idx, 120, 16) as wte
  return cross_entropy(nn.linear(x, 256) as head, targets)
}
train m {
  data = synthetic(64)
  batch = 2
  seq = 8
}
EOF
if "$MPLC" "$tmp/rows.mpl" -o "$tmp/rows.job" 2> "$tmp/rows.err"; then
  if ! "$MPLRUN" "$tmp/rows.job" --steps 2 --sample 4 --prompt "az" > /dev/null 2> "$tmp/rows.err" &&
     grep -q "byte 122 is outside the vocabulary of 120 (input 'idx' takes \[0, 120)" "$tmp/rows.err" &&
     ! grep -q '^step' "$tmp/rows.err"; then ok "a prompt byte past the embedding's 120 rows is refused before training"
  else bad "a prompt byte past the embedding's rows: $(tail -n 1 "$tmp/rows.err")"; fi
  if ! "$MPLRUN" "$tmp/rows.job" --sample 2 --prompt "x" > /dev/null 2> "$tmp/rows.err" &&
     grep -q "byte 120 is outside the vocabulary of 120" "$tmp/rows.err" &&
     { "$MPLRUN" "$tmp/rows.job" --sample 2 --prompt "w" > /dev/null 2> "$tmp/rows2.err"; ! grep -q -- "--prompt" "$tmp/rows2.err"; }
  then ok "prompt byte 120 of the embedding's 120 rows is refused, byte 119 is not"
  else bad "the embedding's bound: $(tail -n 1 "$tmp/rows.err") / $(tail -n 1 "$tmp/rows2.err")"; fi
  "$MPLRUN" "$tmp/rows.job" --sample 40 --prompt "ab" --temperature 1e9 > "$tmp/rows.txt" 2> "$tmp/rows.err"
  rc=$?
  if [ $rc = 1 ] && grep -q "drawn is 1[2-9][0-9]\|drawn is 2[0-9][0-9]" "$tmp/rows.err" &&
     grep -q "which input 'idx' cannot take (it takes \[0, 120)" "$tmp/rows.err"; then
    ok "a drawn token past the embedding's rows stops sampling: $(grep -o 'token [0-9]* drawn is [0-9]*' "$tmp/rows.err")"
  else bad "a drawn token past the embedding's rows: exit $rc, $(tail -n 1 "$tmp/rows.err")"; fi
else bad "mplc rows.mpl: $(head -n 2 "$tmp/rows.err")"; fi
# --top-k ranks the logits once a token: near a 50257-token vocabulary (GPT-2's) it took 15 s
# a token (a scan of the vocabulary for each candidate); 3 tokens now take well under a second
sed 's/^const vocab = 256$/const vocab = 50257/' tests/e2e/bigram_lm.mpl > "$tmp/big_v.mpl"
if grep -q 'const vocab = 50257' "$tmp/big_v.mpl" && "$MPLC" "$tmp/big_v.mpl" -o "$tmp/big_v.job" 2> "$tmp/bv.err"; then
  t0=$(date +%s%N)
  "$MPLRUN" "$tmp/big_v.job" --sample 3 --prompt ab --top-k 50000 --threads 1 > "$tmp/bv.txt" 2> "$tmp/bv.err"
  rc=$? ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  if [ $rc = 0 ] && [ $ms -lt 10000 ]; then ok "--top-k 50000 of 50257: 3 tokens in $ms ms"
  else bad "--top-k 50000 of 50257: exit $rc, $ms ms (over 10 s: a scan per candidate?), $(tail -n 1 "$tmp/bv.err")"; fi
else bad "bigram_lm with vocab 50257: $(head -n 2 "$tmp/bv.err")"; fi
# --trace and --comm-stats are written whole or not at all: a write that fails (a file size
# limit here) leaves the earlier file as it was (each was truncated in place)
if [ -s "$tmp/t_1f1b.json" ] && [ -s "$tmp/mc0.jsonl" ]; then
  cp "$tmp/t_1f1b.json" "$tmp/keep_t.json"; cp "$tmp/mc0.jsonl" "$tmp/keep_c.jsonl"
  cp "$tmp/keep_t.json" "$tmp/old_t.json"; cp "$tmp/keep_c.jsonl" "$tmp/old_c.jsonl"
  (trap '' XFSZ; ulimit -f 0; exec "$MPLRUN" "$tmp/mesh0.job" --data "$tmp/tiny.bin" --steps 2 -q \
     --trace "$tmp/keep_t.json" --comm-stats "$tmp/keep_c.jsonl") 2>&1 | cat > "$tmp/fsz.log"
  if grep -q "keep_t.json.*write error\|keep_c.jsonl.*write error" "$tmp/fsz.log" &&
     cmp -s "$tmp/keep_t.json" "$tmp/old_t.json" && cmp -s "$tmp/keep_c.jsonl" "$tmp/old_c.jsonl" &&
     [ -z "$(ls "$tmp" | grep 'keep_.*tmp')" ]; then
    ok "--trace and --comm-stats that cannot be written leave the earlier files as they were (no temp file left)"
  else bad "a failed --trace or --comm-stats write: $(tail -n 1 "$tmp/fsz.log"); $(cmp "$tmp/keep_t.json" "$tmp/old_t.json"; cmp "$tmp/keep_c.jsonl" "$tmp/old_c.jsonl")"; fi
else bad "no earlier trace or comm-stats file to keep"; fi

# ---- MPL_CPU_PROFILE: the steps after the first (the first faults the arena's pages in) ----
if "$MPLC" tests/e2e/small_gpt.mpl -o "$tmp/prof.job" 2> /dev/null; then
  MPL_CPU_PROFILE=1 "$MPLRUN" "$tmp/prof.job" -q --threads 1 --steps 1 > /dev/null 2> "$tmp/prof1.txt"
  MPL_CPU_PROFILE=1 "$MPLRUN" "$tmp/prof.job" -q --threads 1 --steps 3 > /dev/null 2> "$tmp/prof3.txt"
  c1=$(grep -m1 ' x  sdpa (' "$tmp/prof1.txt" | awk '{print $3}'); c3=$(grep -m1 ' x  sdpa (' "$tmp/prof3.txt" | awk '{print $3}')
  if grep -q 'in kernels and GEMMs (one step' "$tmp/prof1.txt" && grep -q 'in kernels and GEMMs (the steps after the first)' "$tmp/prof3.txt" &&
     [ -n "$c1" ] && [ "$c3" = $((2 * c1)) ]; then ok "MPL_CPU_PROFILE over 3 steps counts the 2 after the first ($c3 sdpa calls, $c1 in one step)"
  else bad "MPL_CPU_PROFILE: one step $c1 sdpa calls, three steps $c3 (want twice): $(grep 'cpu profile, device' "$tmp/prof3.txt")"; fi
else bad "mplc small_gpt for the profile"; fi

# ---- init: uniform(0, 1) stays below 1 (600,000 draws at seed 0 held one 1.0) ----
if "$MPLC" tests/e2e/init_uniform.mpl -o "$tmp/uq.job" 2> /dev/null && "$MPLRUN" "$tmp/uq.job" --steps 0 -q --save "$tmp/uq.st" > /dev/null 2>&1 &&
   top=$("$PY" -c 'import json, struct, sys
b = open(sys.argv[1], "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); a, e = h["w"]["data_offsets"]
print(max(struct.unpack("<%df" % ((e - a) // 4), b[8 + n + a:8 + n + e])))' "$tmp/uq.st") &&
   "$PY" -c "import sys; sys.exit(0 if 0.99 < $top < 1.0 else 1)"; then ok "uniform(0, 1) over 600,000 elements: the largest $top, below 1"
else bad "uniform(0, 1): the largest value ${top:-?} (want below 1)"; fi

# ---- --inspect ----
if "$MPLRUN" "$job" --inspect > "$tmp/inspect.txt" 2> "$tmp/inspect.err"; then
  ok "--inspect exits 0"
  for re in '^job format [0-9]+: model gpt' 'mesh: dp=1 pp=2 tp=1, 2 stages' 'schedule 1f1b' \
            'params \(28\)' 'wte.weight \[256, 32\] uses 2 on stages 0 1' 'h.1.mlp.c_fc.weight \[32, 128\]' \
            'inputs \(2\): idx targets' '^rank 0: [0-9]+ instructions, arena [0-9]+ bytes' \
            '^rank 1: [0-9]+ instructions' 'update\(p[0-9]+\)' 'tied_send\(p[0-9]+,u[0-9]+,r[0-9]+\)' \
            'norm_allreduce' \
            '^optimizer: adamw\(lr=0.003, beta1=0.9, beta2=0.95, eps=1e-08, weight_decay=0.1, on params of 2 or more dims\) lr_schedule=cosine\(3, 0.0003\) grad_clip=1 zero=0$'; do
    if grep -qE -- "$re" "$tmp/inspect.txt"; then ok "--inspect shows /$re/"
    else bad "--inspect lacks /$re/"; fi
  done
  if [ ! -s "$tmp/inspect.err" ]; then ok "--inspect writes nothing to stderr"; else bad "--inspect stderr: $(head -n 2 "$tmp/inspect.err")"; fi
else
  bad "--inspect failed: $(head -n 3 "$tmp/inspect.err")"
fi
# --inspect needs no data file and runs nothing
if "$MPLRUN" "$job" --inspect --data "$tmp/nosuch.bin" > /dev/null 2>&1; then ok "--inspect does not open the data"
else bad "--inspect opened the data file"; fi

finish
