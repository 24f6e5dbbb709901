#!/usr/bin/env bash
# make run: compile an example and train it on CPU devices, then sample from it.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
EXAMPLE=${EXAMPLE:-examples/gpt_tiny.mpl}
STEPS=${STEPS:-200}
mkdir -p "$BUILD/run"
job="$BUILD/run/$(basename "$EXAMPLE" .mpl).job"
echo "== mplc $EXAMPLE -o $job"
"$BUILD/mplc" "$EXAMPLE" -o "$job"
echo "== mplrun $job --steps $STEPS"
"$BUILD/mplrun" "$job" --steps "$STEPS" --save "$BUILD/run/params.safetensors" \
  --sample 200 --prompt "The "
