#!/bin/sh
# Runs a test on the AVX2 path: oneDNN limited to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2),
# so heads takes what an AVX2-only CPU takes: f32 arithmetic for bf16 weights
# (its AVX2 row kernels, oneDNN's AVX2 GEMM) where the AVX-512 path computes
# in bf16. Exits 77
# (skipped) when that is this CPU's own path already: the same test without
# "[avx2 path]" ran it, and the AVX-512 path (with bf16 arithmetic where the
# CPU has it) cannot run here.
#   avx2_path.sh INFER COMMAND [ARG...]
set -eu
infer=$1
shift
own=$(env -u ONEDNN_MAX_CPU_ISA "$infer" --version | sed -n 's/^oneDNN .* on \([a-z0-9_]*\),.*/\1/p')
if [ -z "$own" ]; then
    echo "$infer --version names no instruction set (\"oneDNN ... on ISA, ...\")" >&2
    exit 1
fi
case $own in
avx512*|amx*) ;;
*)
    echo "SKIP: this CPU's own path is $own, which the test without [avx2 path] ran;" \
         "the AVX-512 path and its bf16 arithmetic cannot run on this CPU"
    exit 77
    ;;
esac
ONEDNN_MAX_CPU_ISA=AVX2 exec "$@"
