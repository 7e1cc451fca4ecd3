#!/bin/bash
# The retrieval-head finding's direction, small (scripts/experiments/Makefile's
# copy targets with a short calibration text and fewer lists): on models/kjv,
# masking the top 3 heads of prune-heads --score's retrieval column copies
# less than masking 3 random heads (the mean of 5 seeds), which copies less
# than the model with nothing masked (Wu et al.).
# usage: retrieval_direction.sh BUILD_BIN_DIR SOURCE_DIR
set -euo pipefail
bin=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
make -s -C "$src/scripts/experiments" BIN="$bin" OUT="$out" CALIB_LINES=40 CTX=128 \
    COPY_SEEDS="1 2 3 4 5" COPY_LISTS=4 COPY_FILLER=50 copy-direction
