#!/bin/bash
# The pruning experiment's direction, small (scripts/experiments/Makefile with
# two shares kept and a short text): heads ranked by ablation, removed down to
# 75% and 50% of the heads of models/kjv, leave a lower held-out perplexity
# than the mean of three random rankings at the same share (Sixteen Heads).
# usage: pruning_direction.sh BUILD_BIN_DIR SOURCE_DIR
set -euo pipefail
bin=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
make -s -C "$src/scripts/experiments" BIN="$bin" OUT="$out" KEEP="75 50" SEEDS="1 2 3" METHODS="ablation random1 random2 random3" \
    CALIB_LINES=40 EVAL_LINES=120 \
    CTX=128 direction
