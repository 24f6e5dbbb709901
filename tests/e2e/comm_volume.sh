#!/usr/bin/env bash
# The communication the plan predicts is the communication the run does: for the small
# GPT (tests/e2e/parallel_gpt.mpl) at tp=2, dp=2, pp=2 and dp=2,pp=2,tp=2, plain and
# with ZeRO-1, mplrun --comm-stats (the last of 2 steps on CPU threads) gives, for every
# world rank and every kind of message or collective, exactly the calls and payload
# bytes of mplc --emit=plan; the plan lists every world rank once; the trace of the
# full mesh has one row per world rank named with its (dp, pp, tp) coordinates; and
# under mpirun (when there is one) each process's counts reach the file too.
cd "$(dirname "$0")/../.."
source tests/tools/e2e_lib.sh
model=tests/e2e/parallel_gpt.mpl
rewrite "$model" "$tmp/zero.mpl" 's/^  steps = 3/  steps = 3\n  zero = 1/'

# plan.txt stats.jsonl [label] -> "OK <summary>" or "MISMATCH ..." lines
cat > "$tmp/compare.py" <<'EOF'
import json, re, sys
plan, stats = open(sys.argv[1]).read().splitlines(), sys.argv[2]
label = sys.argv[3] if len(sys.argv) > 3 else ""
predicted, cur = {}, None          # world rank -> {kind: (calls, bytes)}
for line in plan:
    m = re.match(r"^ranks? ([\d,]+) \(", line)
    if m:
        cur = [int(w) for w in m.group(1).split(",")]
        for w in cur:
            if w in predicted: print(f"MISMATCH rank {w} listed twice in the plan"); sys.exit(1)
            predicted[w] = {}
        continue
    m = re.match(r"^    (\w+) +(\d+) calls +(\d+) bytes", line)
    if m and cur is not None:
        for w in cur: predicted[w][m.group(1)] = (int(m.group(2)), int(m.group(3)))
measured = {}
for line in open(stats):
    o = json.loads(line)
    measured[o["rank"]] = {k: (o["calls"][k], o["bytes"][k]) for k in o["calls"]}
bad = []
if sorted(predicted) != sorted(measured): bad.append(f"ranks: plan {sorted(predicted)} run {sorted(measured)}")
for w in sorted(measured):
    for k, got in measured[w].items():
        want = predicted.get(w, {}).get(k, (0, 0))
        if want != got: bad.append(f"rank {w} {k}: plan {want[0]} calls {want[1]} bytes, run {got[0]} calls {got[1]} bytes")
    for k in predicted.get(w, {}):
        if k not in measured[w]: bad.append(f"rank {w}: the run has no kind {k}")
for b in bad[:6]: print("MISMATCH " + b)
if bad: sys.exit(1)
r0 = measured[0]
kinds = ", ".join(f"{k} {c}x {b} B" for k, (c, b) in r0.items() if c and k != "total")
tot_p = sum(predicted[w]["total"][1] for w in predicted)
tot_m = sum(measured[w]["total"][1] for w in measured)
print(f"OK {len(measured)} ranks{label}; rank 0: {kinds}; all ranks predicted {tot_p} B, measured {tot_m} B per step")
EOF

check() { # label, model, mesh [, extra mplrun args]
  local label=$1 src=$2 mesh=$3; shift 3
  local name=${label//[^a-z0-9]/_}
  if ! "$BUILD/mplc" "$src" --mesh "$mesh" --emit=plan > "$tmp/$name.plan" 2> "$tmp/$name.log" ||
     ! "$BUILD/mplc" "$src" --mesh "$mesh" -o "$tmp/$name.job" 2>> "$tmp/$name.log" ||
     ! "$BUILD/mplrun" "$tmp/$name.job" -q --threads 1 --steps 2 --comm-stats "$tmp/$name.jsonl" "$@" >> "$tmp/$name.log" 2>&1; then
    bad "$label: $(tail -n 3 "$tmp/$name.log")"; return 1
  fi
  local out
  if out=$("$PY" "$tmp/compare.py" "$tmp/$name.plan" "$tmp/$name.jsonl"); then ok "$label: run = plan per rank and kind (${out#OK })"
  else bad "$label: $(echo "$out" | head -n 6)"; return 1; fi
}

check "tp=2" "$model" tp=2
check "dp=2" "$model" dp=2
check "pp=2" "$model" pp=2
check "dp=2,pp=2,tp=2" "$model" dp=2,pp=2,tp=2 --trace "$tmp/mesh.trace.json"
check "dp=2 with ZeRO-1" "$tmp/zero.mpl" dp=2
check "dp=2,pp=2,tp=2 with ZeRO-1" "$tmp/zero.mpl" dp=2,pp=2,tp=2

# the GPT at tp = 2: the plan's prediction next to the run's measurement, whole step
if [ -f "$tmp/tp_2.jsonl" ]; then
  pred=$(sed -nE 's/^communication per step, all ranks: ([0-9]+) calls, ([0-9]+) payload bytes/\2/p' "$tmp/tp_2.plan")
  meas=$("$PY" -c 'import json,sys; print(sum(json.loads(l)["bytes"]["total"] for l in open(sys.argv[1])))' "$tmp/tp_2.jsonl")
  if [ -n "$pred" ] && [ "$pred" = "$meas" ]; then ok "GPT at tp=2: $pred payload bytes per step predicted, $meas measured (both ranks)"
  else bad "GPT at tp=2: predicted [$pred] measured [$meas] payload bytes per step"; fi
fi

# the trace of the full mesh: one row per world rank, named with its coordinates
if [ -f "$tmp/mesh.trace.json" ]; then
  if out=$("$PY" - "$tmp/mesh.trace.json" <<'EOF'
import json, sys
ev = json.load(open(sys.argv[1]))
names = {e["tid"]: e["args"]["name"] for e in ev if e.get("ph") == "M" and e.get("name") == "thread_name"}
want = {w: f"rank {w} (dp {w // 4}, pp {w % 2}, tp {w // 2 % 2})" for w in range(8)}
rows = {e["tid"] for e in ev if e.get("ph") == "X"}
if names != want or rows != set(range(8)): print(f"rows {sorted(rows)}, names {names}"); sys.exit(1)
print(names[7])
EOF
  ); then ok "trace of dp=2,pp=2,tp=2: 8 rows named with their coordinates ($out)"
  else bad "trace rows: $out"; fi
fi

# under mpirun: every process counts its own rank, world rank 0 writes them all
# (root needs --allow-run-as-root; 8 ranks on a small machine need --oversubscribe)
mpirun=(timeout 60 mpirun --oversubscribe)
[ "$(id -u)" = 0 ] && mpirun+=(--allow-run-as-root)
if command -v mpirun > /dev/null && ldd "$BUILD/mplrun" 2> /dev/null | grep -q libmpi && [ -f "$tmp/dp_2_pp_2_tp_2.job" ]; then
  if "${mpirun[@]}" -np 8 "$BUILD/mplrun" "$tmp/dp_2_pp_2_tp_2.job" -q --threads 1 \
       --steps 2 --comm-stats "$tmp/mpi.jsonl" > "$tmp/mpi.log" 2>&1 &&
     out=$("$PY" "$tmp/compare.py" "$tmp/dp_2_pp_2_tp_2.plan" "$tmp/mpi.jsonl"); then ok "dp=2,pp=2,tp=2 under mpirun -np 8: run = plan (${out#OK })"
  else bad "under mpirun: $(tail -n 3 "$tmp/mpi.log") ${out:-}"; fi
fi
echo "$pass passed, $fail failed"
[ $fail = 0 ]
