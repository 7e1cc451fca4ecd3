#!/bin/bash
# tokenize with a real Llama tokenizer (stories260K, from ../shared/models):
# the stored reference ids, spm_encode/spm_decode on the multi-language text
# and on KJV Genesis. Skipped (77) where ../shared/models is absent.
# usage: tokenize_stories260k.sh BUILD_BIN_DIR SOURCE_DIR
set -u
bin=$1
src=$2
models=${HEADS_SHARED_MODELS:-$src/../shared/models}
model=$models/stories260K
if [ ! -f "$model/tokenizer.model" ]; then
    echo "SKIPPED: $model/tokenizer.model is absent (set HEADS_SHARED_MODELS to a shared/models folder)"
    exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0
check() {  # check FILE1 FILE2 WHAT
    if cmp -s "$1" "$2"; then passed=$((passed + 1)); else echo "FAIL: $3"; failed=$((failed + 1)); fi
}

"$bin/tokenize" -m "$model" "$model/reference/prompts.txt" > "$tmp/ids"
check "$model/reference/ids.txt" "$tmp/ids" "reference ids.txt (BOS + sentencepiece)"
"$bin/tokenize" -m "$model" -d "$model/reference/ids.txt" > "$tmp/prompts"
check "$model/reference/prompts.txt" "$tmp/prompts" "reference ids decode to the prompts"
for text in "$src/tests/data/multilingual.txt" "$model/reference/kjv-genesis.txt"; do
    spm_encode --model="$model/tokenizer.model" --output_format=id --extra_options=bos < "$text" > "$tmp/spm"
    "$bin/tokenize" -m "$model" < "$text" > "$tmp/ours"
    check "$tmp/spm" "$tmp/ours" "$(basename "$text"): ids == spm_encode"
    spm_decode --model="$model/tokenizer.model" --input_format=id < "$tmp/spm" > "$tmp/spm_text"
    "$bin/tokenize" -m "$model" -d < "$tmp/ours" > "$tmp/text"
    check "$tmp/spm_text" "$tmp/text" "$(basename "$text"): -d == spm_decode"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
