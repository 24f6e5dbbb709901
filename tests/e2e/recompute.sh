#!/usr/bin/env bash
# @recompute changes memory, not math: tests/e2e/recompute.mpl and the same program
# without its @recompute give bitwise-identical params after 3 steps, under 1f1b and
# zb; and the plan stashes less with it.
cd "$(dirname "$0")/../.."
source tests/tools/e2e_lib.sh

sed 's/ @recompute//' tests/e2e/recompute.mpl > "$tmp/plain.mpl"
if grep -q '@recompute' "$tmp/plain.mpl"; then bad "could not strip @recompute"; fi
for s in 1f1b zb; do
  for v in recompute plain; do
    src=tests/e2e/recompute.mpl; [ $v = plain ] && src=$tmp/plain.mpl
    if ! "$BUILD/mplc" "$src" --schedule $s -o "$tmp/$v.job" 2> "$tmp/err" ||
       ! "$BUILD/mplrun" "$tmp/$v.job" --threads 1 --steps 3 -q --save "$tmp/$v.st" > "$tmp/log" 2>&1; then
      bad "$v $s: $(head -n 3 "$tmp/err") $(tail -n 3 "$tmp/log")"; continue 2
    fi
    "$BUILD/mplc" "$src" --schedule $s --emit=plan > "$tmp/$v.plan" 2>&1
  done
  if cmp -s "$tmp/recompute.st" "$tmp/plain.st"; then ok "$s: @recompute gives bitwise the same params"
  else bad "$s: @recompute changes the params"; fi
  a=$(awk '/stash \(peak\)/ { s += $3 } END { print s + 0 }' "$tmp/recompute.plan")
  b=$(awk '/stash \(peak\)/ { s += $3 } END { print s + 0 }' "$tmp/plain.plan")
  if [ "$a" -lt "$b" ]; then ok "$s: the plan stashes less with @recompute ($a < $b bytes)"
  else bad "$s: stash with @recompute $a bytes, without $b"; fi
done
echo "$pass passed, $fail failed"
[ $fail = 0 ]
