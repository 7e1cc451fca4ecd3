#!/bin/bash
# Runs every command line of the EXAMPLES section (.EX/.EE blocks) of every
# man/*.1 and man/*.7 page, as a user would: with bash -o pipefail, the
# programs of the build first on PATH, no $HEADS_MODEL, in a scratch folder
# holding prompt.txt and book.txt (text files an example may read). Lines of
# one page run in order in one folder, so a line may use what an earlier one
# made. Each must exit 0. A line that fails only because the default model
# is missing is skipped, with a message, while that model is absent; once
# models/kjv exists it must pass.
# usage: man_examples.sh BUILD_BIN_DIR SOURCE_DIR
set -u
bin=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
default_model=$bin/../share/heads/models/kjv
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0
skipped=0

# The command lines of a page's EXAMPLES section, roff escapes undone.
examples() {
    awk '/^\.SH/ { in_examples = ($2 == "EXAMPLES") } 
         in_examples && /^\.EX/ { in_block = 1; next }
         in_examples && /^\.EE/ { in_block = 0; next }
         in_examples && in_block' "$1" |
        sed -e 's/\\-/-/g' -e 's/\\(aq/'"'"'/g' -e 's/\\(dq/"/g' -e 's/\\&//g' -e 's/\\e/\\/g'
}

for page in "$src"/man/*.1 "$src"/man/*.7; do
    [ -e "$page" ] || continue
    name=$(basename "$page")
    work=$tmp/$name
    mkdir -p "$work"
    printf 'In the beginning God created the heaven and the earth.\nAnd the earth was without form, and void.\n' \
        > "$work/prompt.txt"
    cp "$src/tests/data/multilingual.txt" "$work/book.txt"
    count=0
    while IFS= read -r line; do
        [ -z "$line" ] && continue
        count=$((count + 1))
        (cd "$work" && env -u HEADS_MODEL PATH="$bin:$PATH" timeout 300 bash -o pipefail -c "$line") \
            < /dev/null > "$tmp/out" 2> "$tmp/err"
        status=$?
        if [ "$status" -eq 0 ]; then
            passed=$((passed + 1))
        elif [ ! -e "$default_model" ] && grep -q "no model: give -m DIR or set HEADS_MODEL" "$tmp/err"; then
            echo "SKIPPED ($name): needs the default model, absent at $default_model: $line"
            skipped=$((skipped + 1))
        else
            echo "FAIL ($name, exit $status): $line"
            head -5 "$tmp/err"
            failed=$((failed + 1))
        fi
    done < <(examples "$page")
    if [ "$count" -eq 0 ]; then
        echo "FAIL ($name): no EXAMPLES command lines"
        failed=$((failed + 1))
    fi
done
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
