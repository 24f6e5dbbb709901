#!/usr/bin/env bash
# The compile cache (runtime/kcache.c) through the commands users type: mplc keeps the
# optimised kernels (and NVRTC's PTX) and mplrun the machine code; a second compile and a second run take
# them from the cache (the entry is read, not written again: its inode stays) and give
# the same bytes (the job file) and the same params (bitwise) as without a cache; a
# damaged entry is compiled again and rewritten; MPL_CACHE_DIR= turns it off; the default
# folder is $XDG_CACHE_HOME/mpl, else ~/.cache/mpl; a folder that cannot be used is no
# error. The start of a run with and without the entry is printed (not asserted).
cd "$(dirname "$0")/../.."
source tests/tools/e2e_lib.sh
model=tests/e2e/small_gpt.mpl
c=$tmp/cache
entries() { ls "$1" 2> /dev/null | grep -c "^$2-"; }
inode() { stat -c %i "$(ls -d "$1"/"$2"-* | head -n 1)"; }

# mplc: the optimised module
MPL_CACHE_DIR= "$MPLC" $model -o "$tmp/plain.job" || bad "mplc without a cache"
MPL_CACHE_DIR=$c "$MPLC" $model -o "$tmp/a.job" && [ "$(entries "$c" opt)" = 1 ] &&
  ok "mplc: one optimised module kept" || bad "mplc: $(ls "$c" 2>&1)"
i1=$(inode "$c" opt)
MPL_CACHE_DIR=$c "$MPLC" $model -o "$tmp/b.job"
if cmp -s "$tmp/a.job" "$tmp/b.job" && cmp -s "$tmp/a.job" "$tmp/plain.job" && [ "$(inode "$c" opt)" = "$i1" ]; then
  ok "mplc again: the module from the cache (entry not rewritten), the job file byte for byte the same as without a cache"
else bad "mplc again: jobs differ or the entry was rewritten"; fi

# mplc --gpu-arch: NVRTC's PTX (in a build with CUDA)
if MPL_CACHE_DIR= "$MPLC" $model --gpu-arch sm_90 -o "$tmp/gpu_plain.job" 2> "$tmp/gpu.err"; then
  MPL_CACHE_DIR=$c "$MPLC" $model --gpu-arch sm_90 -o "$tmp/gpu_a.job"
  p1=$(inode "$c" ptx)
  MPL_CACHE_DIR=$c "$MPLC" $model --gpu-arch sm_90 -o "$tmp/gpu_b.job"
  if [ "$(entries "$c" ptx)" = 1 ] && [ "$(inode "$c" ptx)" = "$p1" ] && cmp -s "$tmp/gpu_a.job" "$tmp/gpu_b.job" &&
     cmp -s "$tmp/gpu_a.job" "$tmp/gpu_plain.job"; then
    ok "mplc --gpu-arch: NVRTC's PTX kept, then taken from the cache; the jobs byte for byte the same as without a cache"
  else bad "mplc --gpu-arch with the cache: $(ls "$c")"; fi
elif grep -q "built without CUDA" "$tmp/gpu.err"; then ok "mplc --gpu-arch: built without CUDA (no PTX to keep)"
else bad "mplc --gpu-arch: $(head -n 2 "$tmp/gpu.err")"; fi

# mplrun: the machine code
run() { # NAME, env...: 2 steps, params saved to $tmp/NAME.st; prints the seconds taken
  local name=$1 t0; shift
  t0=$EPOCHREALTIME
  env "$@" "$MPLRUN" "$tmp/a.job" -q --steps 2 --save "$tmp/$name.st" > "$tmp/$name.log" 2>&1 || bad "$name: $(tail -n 2 "$tmp/$name.log")"
  LC_ALL=C printf '%.2f' "$(echo "$EPOCHREALTIME - $t0" | bc)"
}
t_plain=$(run plain MPL_CACHE_DIR=)
t_cold=$(run cold MPL_CACHE_DIR="$c")
[ "$(entries "$c" jit)" = 1 ] && ok "mplrun: the kernels' machine code kept" || bad "mplrun: $(ls "$c")"
j1=$(inode "$c" jit)
t_warm=$(run warm MPL_CACHE_DIR="$c")
if cmp -s "$tmp/cold.st" "$tmp/warm.st" && cmp -s "$tmp/cold.st" "$tmp/plain.st" && [ "$(inode "$c" jit)" = "$j1" ]; then
  ok "mplrun again: the code from the cache (entry not rewritten), params bitwise those without a cache (runs took ${t_plain} s without a cache, ${t_cold} s filling it, ${t_warm} s from it)"
else bad "mplrun again: params differ or the entry was rewritten"; fi

# a damaged entry (a flipped byte in the machine code, then a cut one): compiled again, rewritten
e=$(ls -d "$c"/jit-* | head -n 1)
size=$(stat -c %s "$e")
printf '\xff' | dd of="$e" bs=1 seek=$((size - 100)) conv=notrunc status=none
run flipped MPL_CACHE_DIR="$c" > /dev/null
if cmp -s "$tmp/cold.st" "$tmp/flipped.st" && [ "$(inode "$c" jit)" != "$j1" ]; then
  ok "a flipped byte in the cached code: compiled again (same params), the entry rewritten"
else bad "a flipped byte in the cached code: params differ or the entry was kept"; fi
j2=$(inode "$c" jit)
truncate -s $((size / 2)) "$e"
run cut MPL_CACHE_DIR="$c" > /dev/null
j3=$(inode "$c" jit)
run after MPL_CACHE_DIR="$c" > /dev/null
if cmp -s "$tmp/cold.st" "$tmp/cut.st" && cmp -s "$tmp/cold.st" "$tmp/after.st" && [ "$j3" != "$j2" ] && [ "$(inode "$c" jit)" = "$j3" ]; then
  ok "a cut entry: compiled again and rewritten, then used"
else bad "a cut entry: params differ or the entry was not rewritten then used"; fi

# where it lives: off with MPL_CACHE_DIR=, else XDG_CACHE_HOME, else HOME
mkdir -p "$tmp/home" "$tmp/xdg"
run off HOME="$tmp/home" MPL_CACHE_DIR= > /dev/null
[ ! -e "$tmp/home/.cache" ] && ok "MPL_CACHE_DIR= : nothing written" || bad "MPL_CACHE_DIR= wrote $(ls -R "$tmp/home")"
run home -u MPL_CACHE_DIR -u XDG_CACHE_HOME HOME="$tmp/home" > /dev/null
run xdg -u MPL_CACHE_DIR HOME="$tmp/home" XDG_CACHE_HOME="$tmp/xdg" > /dev/null
if [ "$(entries "$tmp/home/.cache/mpl" jit)" = 1 ] && [ "$(entries "$tmp/xdg/mpl" jit)" = 1 ] &&
   [ "$(stat -c %a "$tmp/home/.cache/mpl")" = 700 ]; then
  ok "the default folders: ~/.cache/mpl (made, 0700), \$XDG_CACHE_HOME/mpl"
else bad "the default folders: $(ls -R "$tmp/home" "$tmp/xdg" | head -n 8)"; fi

# a folder that cannot be used: a file, one that others may write
echo x > "$tmp/afile"
mkdir -p "$tmp/open" && chmod 0777 "$tmp/open"
run notdir MPL_CACHE_DIR="$tmp/afile/sub" > /dev/null
run open MPL_CACHE_DIR="$tmp/open" > /dev/null
if cmp -s "$tmp/cold.st" "$tmp/notdir.st" && cmp -s "$tmp/cold.st" "$tmp/open.st" && [ -z "$(ls "$tmp/open")" ] &&
   ! [ -s "$tmp/notdir.log" ] && ! [ -s "$tmp/open.log" ]; then
  ok "a cache folder under a file, or one others may write: not used, no message, the same params"
else bad "an unusable cache folder: $(cat "$tmp/notdir.log" "$tmp/open.log" | head -n 3; ls "$tmp/open")"; fi
echo "$pass passed, $fail failed"
[ $fail = 0 ]
