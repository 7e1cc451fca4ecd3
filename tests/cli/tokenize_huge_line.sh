#!/bin/bash
# Huge single lines tokenize as spm_encode does: 10 MB without a space (one
# piece of text, never cut), and with --whole a 3 MB line of words, which a
# BPE model with per-character normalization encodes in parts: the same ids,
# in memory far below sentencepiece's ~90 bytes per byte of one part.
# usage: tokenize_huge_line.sh BUILD_BIN_DIR SOURCE_DIR
set -eu
bin=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0
check() {  # check FILE1 FILE2 WHAT
    if cmp -s "$1" "$2" && [ "$(wc -l < "$2")" -eq 1 ]; then
        passed=$((passed + 1))
    else
        echo "FAIL: $3"
        failed=$((failed + 1))
    fi
}

spm_train --input="$src/tests/data/multilingual.txt" --model_prefix="$tmp/m" --model_type=bpe --vocab_size=600 \
    --character_coverage=0.98 --hard_vocab_limit=false --minloglevel=2 > /dev/null 2>&1
head -c 10485760 /dev/zero | tr '\0' 'a' > "$tmp/huge"
spm_encode --model="$tmp/m.model" --output_format=id < "$tmp/huge" > "$tmp/spm"
"$bin/tokenize" -m "$tmp/m.model" --no-bos < "$tmp/huge" > "$tmp/ours"
check "$tmp/spm" "$tmp/ours" "tokenize on a 10 MB line differs from spm_encode"

# A Llama-like tokenizer: BPE, identity normalization, spaces kept, bytes.
spm_train --input="$src/tests/data/multilingual.txt" --model_prefix="$tmp/llama" --model_type=bpe \
    --normalization_rule_name=identity --remove_extra_whitespaces=false --byte_fallback=true \
    --allow_whitespace_only_pieces=true --vocab_size=800 --hard_vocab_limit=false --minloglevel=2 > /dev/null 2>&1
line=$(tr '\n' ' ' < "$src/tests/data/multilingual.txt")
for _ in $(seq 800); do printf '%s' "$line"; done | head -c 3000000 > "$tmp/words"
models=${HEADS_SHARED_MODELS:-$src/../shared/models}
for model in "$tmp/llama.model" "$models/stories260K/tokenizer.model"; do
    if [ ! -f "$model" ]; then
        echo "skipped: $model is absent (set HEADS_SHARED_MODELS to a shared/models folder)"
        continue
    fi
    spm_encode --model="$model" --output_format=id < "$tmp/words" > "$tmp/spm"
    "$bin/tokenize" -m "$model" --no-bos --whole "$tmp/words" > "$tmp/ours"
    check "$tmp/spm" "$tmp/ours" "tokenize --whole on a 3 MB line differs from spm_encode ($model)"
done

# Peak memory, where it means something: not under AddressSanitizer, which
# keeps freed memory in quarantine.
if [ -x /usr/bin/time ] && ! ldd "$bin/tokenize" | grep -q libasan; then
    /usr/bin/time -f %M -o "$tmp/rss" "$bin/tokenize" -m "$tmp/llama.model" --whole "$tmp/words" > /dev/null
    kb=$(cat "$tmp/rss")
    echo "peak memory of tokenize --whole on a 3 MB line: $kb KB"
    if [ "$kb" -lt 150000 ]; then  # the whole line at once: about 300 MB
        passed=$((passed + 1))
    else
        echo "FAIL: tokenize --whole on a 3 MB line peaked at $kb KB"
        failed=$((failed + 1))
    fi
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
