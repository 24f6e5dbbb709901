#!/usr/bin/env bash
# ab.sh A_FLAGS B_FLAGS [THREADS...]: an A/B of two mplc flag sets on make bench's
# transformer models (gpt-384, gpt-768, llama), one rank each: the two jobs alternated twice
# per thread count, median ms of steps 3-6 of each run (--metrics). Prints one line per model
# and thread count: a=... b=... a=... b=.... Not a test; run it on a quiet machine.
#   tests/bench/ab.sh "--precision bf16 --no-bf16-storage" "--precision bf16" 1 2
set -e
cd "$(dirname "$0")/../.."
[ $# -ge 2 ] || { echo "usage: tests/bench/ab.sh A_FLAGS B_FLAGS [THREADS...]" >&2; exit 2; }
a=$1 b=$2; shift 2
threads=${*:-1}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
median() { python3 -c '
import json, sys
ms = sorted(json.loads(l)["ms"] for l in list(open(sys.argv[1]))[2:] if "\"ms\"" in l)
print(ms[len(ms) // 2])' "$1"; }
for cfg in "gpt-384|tests/bench/gpt.mpl" \
           "gpt-768|tests/bench/gpt.mpl -D d=768 -D layers=4 -D heads=12 -D ctx=512 -D batch=4" \
           "llama|tests/bench/llama.mpl"; do
  name=${cfg%%|*} args=${cfg#*|}
  # shellcheck disable=SC2086
  build/mplc $args $a -o "$tmp/a.job" && build/mplc $args $b -o "$tmp/b.job"
  for t in $threads; do
    line=""
    for rep in 1 2; do
      for j in a b; do
        build/mplrun "$tmp/$j.job" --steps 6 --threads "$t" --metrics "$tmp/$j.m" -q > /dev/null
        line="$line $j=$(median "$tmp/$j.m")"
      done
    done
    echo "$name threads $t:$line"
  done
done
