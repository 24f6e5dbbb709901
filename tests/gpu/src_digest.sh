#!/usr/bin/env bash
# tests/gpu/src_digest.sh — one SHA-256 over the sources a carried job depends on (the
# compiler, the runtime, the grammar, the stdlib, the GPU test models, the benchmark
# models), in path order: prepare.sh writes it into the carry, run.sh compares.
cd "$(dirname "$0")/../.."
find compiler runtime lang stdlib tests/gpu/models tests/bench examples -type f \
  \( -name '*.c' -o -name '*.h' -o -name '*.y' -o -name '*.l' -o -name '*.mpl' -o -name '*.cu' \) |
  LC_ALL=C sort | xargs cat | sha256sum | cut -d' ' -f1
