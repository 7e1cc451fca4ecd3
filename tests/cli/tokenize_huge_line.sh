#!/bin/bash
# A 10 MB line (no newline anywhere else) tokenizes as spm_encode does.
# usage: tokenize_huge_line.sh BUILD_BIN_DIR SOURCE_DIR
set -eu
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
spm_train --input="$2/tests/data/multilingual.txt" --model_prefix="$tmp/m" --model_type=bpe --vocab_size=600 \
    --character_coverage=0.98 --hard_vocab_limit=false --minloglevel=2 > /dev/null 2>&1
head -c 10485760 /dev/zero | tr '\0' 'a' > "$tmp/huge"
spm_encode --model="$tmp/m.model" --output_format=id < "$tmp/huge" > "$tmp/spm"
"$1/tokenize" -m "$tmp/m.model" --no-bos < "$tmp/huge" > "$tmp/ours"
if cmp -s "$tmp/spm" "$tmp/ours" && [ "$(wc -l < "$tmp/ours")" -eq 1 ]; then
    echo "1 passed, 0 failed"
else
    echo "FAIL: tokenize on a 10 MB line differs from spm_encode"
    exit 1
fi
