#!/bin/sh
# tools/embed.sh FILE — FILE's bytes as the body of a C array initializer, on stdout: one
# line of 0x.. values per 16 bytes, then a 0, so that the array is also a C string:
#
#     const char src[] = {
#     #include "runtime/cuda/optim.cu.inc"
#     };
#
# How the CUDA sources (runtime/cuda/*.cu, compiler/cuda/*.cu) are embedded at build time:
# by the Makefile (every build, `make cuda-only` too, into $(BUILD)/gen/) and by
# tests/gpu/run.sh when it builds without make. The lines at the top of FILE that start
# with "//" document the file and are left out; everything after them is copied byte for
# byte. Plain sh, awk and od: nothing beyond a base system.
set -eu
[ $# = 1 ] || { echo "usage: sh tools/embed.sh FILE.cu > FILE.cu.inc" >&2; exit 2; }
export LC_ALL=C
echo "/* generated from $1 by tools/embed.sh: do not edit */"
awk 'head && /^\/\// { next } { head = 0; print }' head=1 "$1" | od -An -v -tx1 |
  awk '{ line = ""; for (i = 1; i <= NF; i++) line = line "0x" $i ","; print line }'
echo "0"
