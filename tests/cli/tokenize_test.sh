#!/bin/bash
# tokenize as a user runs it, against Debian's spm_encode/spm_decode on
# tokenizers trained here with spm_train on a multi-language text, and every
# bad input of issue 2 with its one-line error.
# usage: tokenize_test.sh BUILD_BIN_DIR SOURCE_DIR
set -u
bin=$1
src=$2
tokenize=$bin/tokenize
text=$src/tests/data/multilingual.txt
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0
ok() { passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
same() {  # same FILE1 FILE2 WHAT
    if cmp -s "$1" "$2"; then ok; else fail "$3"; diff <(head -c 2000 "$1") <(head -c 2000 "$2") | head -10; fi
}
# expect_error STATUS MESSAGE_PART COMMAND...: exit STATUS, one stderr line "tokenize: ...MESSAGE_PART..."
expect_error() {
    local want=$1 part=$2
    shift 2
    "$@" > "$tmp/out" 2> "$tmp/err" < "${stdin:-/dev/null}"
    local status=$? lines
    lines=$(wc -l < "$tmp/err")
    # Usage errors add the usage line and a hint after the message.
    [ "$want" -eq 2 ] && [ "$lines" -eq 3 ] && grep -q "^Usage: tokenize " "$tmp/err" && lines=1
    if [ "$status" -eq "$want" ] && [ "$lines" -eq 1 ] && head -1 "$tmp/err" | grep -q -- "^tokenize: .*$part"; then
        ok
    else
        fail "$* -> status $status, $lines stderr lines: $(head -3 "$tmp/err")"
    fi
}

# Texts: the multi-language text, odd lines (empty, spaces only, invalid
# UTF-8, control bytes, CR), and one line of 10 MB.
cp "$text" "$tmp/text"
printf '\n   \nbad \xff\xfe utf-8 \xc3( here\ncontrol \x01\x02 bytes\r\ntabs\t\tand  spaces  \n' > "$tmp/odd"

# Tokenizers: byte fallback (unigram) and unknown pieces (bpe, no fallback).
spm_train --input="$text" --model_prefix="$tmp/uni" --model_type=unigram --byte_fallback=true \
    --vocab_size=700 --character_coverage=0.98 --hard_vocab_limit=false --minloglevel=2 > /dev/null 2>&1 ||
    fail "spm_train unigram"
spm_train --input="$text" --model_prefix="$tmp/bpe" --model_type=bpe --vocab_size=600 \
    --character_coverage=0.98 --hard_vocab_limit=false --minloglevel=2 > /dev/null 2>&1 || fail "spm_train bpe"

for model in "$tmp/uni.model" "$tmp/bpe.model"; do
    name=$(basename "$model")
    for input in text odd; do
        in=$tmp/$input
        spm_encode --model="$model" --output_format=id < "$in" > "$tmp/spm_ids"
        "$tokenize" -m "$model" --no-bos "$in" > "$tmp/ids" || fail "$name $input: tokenize exit"
        same "$tmp/spm_ids" "$tmp/ids" "$name $input: --no-bos ids == spm_encode"
        spm_encode --model="$model" --output_format=id --extra_options=bos < "$in" > "$tmp/spm_bos"
        "$tokenize" -m "$model" < "$in" > "$tmp/bos"
        same "$tmp/spm_bos" "$tmp/bos" "$name $input: default (BOS) == spm_encode --extra_options=bos"
        "$tokenize" -m "$model" -t 1 < "$in" > "$tmp/bos1"
        same "$tmp/bos" "$tmp/bos1" "$name $input: -t 1 == all threads"
        spm_encode --model="$model" --output_format=id --extra_options=bos:eos < "$in" > "$tmp/spm_eos"
        "$tokenize" -m "$model" --eos "$in" > "$tmp/eos"
        same "$tmp/spm_eos" "$tmp/eos" "$name $input: --eos == spm_encode --extra_options=bos:eos"
        spm_encode --model="$model" --output_format=piece < "$in" > "$tmp/spm_pieces"
        "$tokenize" -m "$model" --no-bos --pieces "$in" > "$tmp/pieces"
        same "$tmp/spm_pieces" "$tmp/pieces" "$name $input: --pieces == spm_encode --output_format=piece"
        spm_decode --model="$model" --input_format=id < "$tmp/spm_bos" > "$tmp/spm_text"
        "$tokenize" -m "$model" -d < "$tmp/bos" > "$tmp/back"
        same "$tmp/spm_text" "$tmp/back" "$name $input: -d == spm_decode"
    done
    # Round trip on plain lines gives the text back.
    printf 'Hello world.\nThe pipe carries bytes.\n' > "$tmp/plain"
    "$tokenize" -m "$model" "$tmp/plain" | "$tokenize" -m "$model" -d > "$tmp/plain_back"
    same "$tmp/plain" "$tmp/plain_back" "$name: text -> ids -> text"
done
model=$tmp/uni.model
vocab=$(spm_export_vocab --model="$model" | wc -l)

# --whole: one id line for the whole input, newlines kept. A tokenizer that
# normalizes nothing (newlines become byte pieces) gives the text back.
spm_train --input="$text" --model_prefix="$tmp/identity" --normalization_rule_name=identity --byte_fallback=true \
    --remove_extra_whitespaces=false --vocab_size=700 --character_coverage=0.98 --hard_vocab_limit=false \
    --minloglevel=2 > /dev/null 2>&1 || fail "spm_train identity"
"$tokenize" -m "$tmp/identity.model" --whole "$tmp/text" > "$tmp/whole"
[ "$(wc -l < "$tmp/whole")" -eq 1 ] && ok || fail "--whole writes one line"
"$tokenize" -m "$tmp/identity.model" -d < "$tmp/whole" > "$tmp/whole_text"
(cat "$tmp/text"; echo) > "$tmp/text_and_newline"
same "$tmp/text_and_newline" "$tmp/whole_text" "--whole | -d gives the text back, newlines kept"
"$tokenize" -m "$model" --whole "$tmp/plain" "$tmp/plain" > "$tmp/whole2"
[ "$(wc -l < "$tmp/whole2")" -eq 1 ] && ok || fail "--whole joins every file"
printf 'one line, no newline' > "$tmp/one_line"
"$tokenize" -m "$model" --whole "$tmp/one_line" > "$tmp/whole_one"
"$tokenize" -m "$model" "$tmp/one_line" > "$tmp/lines_one"
same "$tmp/lines_one" "$tmp/whole_one" "--whole on one line without newline == line mode"

# A directory with tokenizer.model works as -m, and as $HEADS_MODEL.
mkdir "$tmp/dir" && cp "$model" "$tmp/dir/tokenizer.model"
"$tokenize" -m "$tmp/dir" "$tmp/plain" > "$tmp/from_dir"
"$tokenize" -m "$model" "$tmp/plain" > "$tmp/from_file"
same "$tmp/from_file" "$tmp/from_dir" "-m DIR == -m FILE"
HEADS_MODEL=$tmp/dir "$tokenize" "$tmp/plain" > "$tmp/from_env"
same "$tmp/from_file" "$tmp/from_env" "\$HEADS_MODEL"
# -o writes the file; "-" is stdin.
"$tokenize" -m "$model" -o "$tmp/o.txt" - < "$tmp/plain"
same "$tmp/from_file" "$tmp/o.txt" "-o FILE"

# Streaming: decode prints each piece while its line is still arriving.
mkfifo "$tmp/fifo"
"$tokenize" -m "$model" -d < "$tmp/fifo" > "$tmp/streamed" &
decoder=$!
exec 3> "$tmp/fifo"
first=$("$tokenize" -m "$model" --no-bos <<< "Hello world" | cut -d' ' -f1-3)
printf '%s ' "$first" >&3
want=$("$tokenize" -m "$model" -d <<< "$first")
for _ in $(seq 100); do [ -s "$tmp/streamed" ] && [ "$(cat "$tmp/streamed")" = "$want" ] && break; sleep 0.1; done
[ "$(cat "$tmp/streamed")" = "$want" ] && ok || fail "streaming: '$(cat "$tmp/streamed")' before the line ended, want '$want'"
printf '\n' >&3
exec 3>&-
wait $decoder || fail "streaming decode exit"

# Bad input: one clear line, non-zero exit, nothing half-written.
expect_error 1 "/nonexistent: no such model" "$tokenize" -m /nonexistent
mkdir "$tmp/empty_dir"
expect_error 1 "no tokenizer.model in the model directory" "$tokenize" -m "$tmp/empty_dir"
head -c 3000 "$model" > "$tmp/corrupt.model"
expect_error 1 "corrupt.model: not a sentencepiece model" "$tokenize" -m "$tmp/corrupt.model"
# The default model: <exe dir>/../share/heads/models/kjv, as installed.
mkdir -p "$tmp/prefix/bin" && cp "$tokenize" "$tmp/prefix/bin/"
expect_error 1 "no model: give -m DIR or set HEADS_MODEL" env -u HEADS_MODEL "$tmp/prefix/bin/tokenize"
mkdir -p "$tmp/prefix/share/heads/models/kjv" && cp "$model" "$tmp/prefix/share/heads/models/kjv/tokenizer.model"
env -u HEADS_MODEL "$tmp/prefix/bin/tokenize" "$tmp/plain" > "$tmp/from_default"
same "$tmp/from_file" "$tmp/from_default" "the default model beside the executable"
printf '1 2\n3 x 4\n' > "$tmp/bad_id"
expect_error 1 "bad_id:2: bad token id 'x'" "$tokenize" -m "$model" -d "$tmp/bad_id"
printf '5\n1 %d\n' "$vocab" > "$tmp/big_id"
expect_error 1 "big_id:2: token id $vocab is out of range (vocabulary of $vocab)" "$tokenize" -m "$model" -d "$tmp/big_id"
printf '7 -3\n' > "$tmp/negative"
expect_error 1 "negative:1: bad token id '-3'" "$tokenize" -m "$model" -d "$tmp/negative"
expect_error 1 "bad_id:2: bad token id 'x'" "$tokenize" -m "$model" -d -o "$tmp/never" "$tmp/bad_id"
[ ! -e "$tmp/never" ] && [ -z "$(ls "$tmp" | grep never)" ] && ok || fail "-o left a file behind after an error"
expect_error 1 "missing_file: No such file or directory" "$tokenize" -m "$model" "$tmp/missing_file"
expect_error 2 "The following argument was not expected: --bogus" "$tokenize" --bogus
expect_error 2 "-d takes id lines" "$tokenize" -m "$model" -d --whole
# Empty input: no output, success, both ways.
"$tokenize" -m "$model" < /dev/null > "$tmp/none" && [ ! -s "$tmp/none" ] && ok || fail "empty input encodes to nothing"
"$tokenize" -m "$model" -d < /dev/null > "$tmp/none" && [ ! -s "$tmp/none" ] && ok || fail "empty input decodes to nothing"
# Stdout closed early: quiet, status 0.
for i in 1 2 3 4 5 6 7 8; do cat "$tmp/text"; done > "$tmp/big"
for i in 1 2 3 4 5 6 7 8; do cat "$tmp/big"; done > "$tmp/bigger"
"$tokenize" -m "$model" < "$tmp/bigger" 2> "$tmp/err" | head -1 > /dev/null
status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] && [ ! -s "$tmp/err" ] && ok || fail "closed pipe: status $status, stderr '$(cat "$tmp/err")'"
"$tokenize" -m "$model" < "$tmp/bigger" | "$tokenize" -m "$model" -d 2> "$tmp/err" | head -1 > /dev/null
[ "${PIPESTATUS[1]}" -eq 0 ] && [ ! -s "$tmp/err" ] && ok || fail "closed pipe in decode"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
