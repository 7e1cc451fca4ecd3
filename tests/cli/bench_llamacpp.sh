#!/bin/bash
# scripts/bench llamacpp as a user runs it, without llama.cpp: it says it is
# skipped when LLAMA_CPP_BIN or BENCH_MODELS is missing, and, pointed at a
# stand-in llama.cpp (llama-bench and llama-simple printing what the real ones
# print) and a small random model (above the 32 MiB weight-cache threshold), writes the table with both engines' figures,
# the ratios, the load, a weight cache used by heads when its weight format needs one, and decode's weight
# stream (bytes per token of both engines, llama.cpp's read from a small GGUF's tensor table, against
# bench/bandwidth's GB/s, probed each round: median (min-max)), and with --depth a second table of decode after a long prompt beside
# llama-batched-bench's. No speed is checked: speed is not a test.
# usage: bench_llamacpp.sh BUILD_BIN_DIR SOURCE_DIR
set -u
bin=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0
check() {  # check WHAT COMMAND...
    local what=$1; shift
    if "$@"; then passed=$((passed + 1)); else echo "FAIL: $what"; failed=$((failed + 1)); fi
}
absent() { ! grep -q -- "$1" "$2"; }
expect() {  # expect WHAT PATTERN FILE
    if grep -q -- "$2" "$3"; then passed=$((passed + 1)); else echo "FAIL: $1 (no '$2' in:)"; cat "$3"; failed=$((failed + 1)); fi
}

env -u LLAMA_CPP_BIN -u BENCH_MODELS -u HEADS_BENCH_MODELS "$src/scripts/bench" llamacpp > "$tmp/skip" 2>&1
status=$?
check "exit 0 without LLAMA_CPP_BIN" [ $status -eq 0 ]
expect "says it is skipped" "skipped: set LLAMA_CPP_BIN" "$tmp/skip"

# A stand-in llama.cpp: llama-bench -o json prints one record per test, as b4748 does.
fake=$tmp/llama.cpp/bin
mkdir -p "$fake"
cat > "$fake/llama-bench" <<'EOF'
#!/bin/bash
echo "$@" >> "$(dirname "$0")/calls"
echo '[{"build_commit": "c0ffee0", "build_number": 4748, "n_prompt": 512, "n_gen": 0, "avg_ts": 100.0},'
echo ' {"build_commit": "c0ffee0", "build_number": 4748, "n_prompt": 0, "n_gen": 64, "avg_ts": 10.0}]'
EOF
printf '#!/bin/bash\necho "$@" >> "$(dirname "$0")/calls"\n' > "$fake/llama-simple"
chmod +x "$fake/llama-bench" "$fake/llama-simple"

models=$tmp/models
/usr/bin/python3 "$src/scripts/make-random-model" -o "$models/tiny/hf-f32" --d-model 256 --n-layers 2 --n-heads 4 \
    --n-kv-heads 2 --vocab 32000 --max-pos 1024 > /dev/null || { echo "FAIL: make-random-model"; exit 1; }
mkdir -p "$models/tiny/gguf"
# A GGUF header as llama.cpp's converter writes it (v3): one string key, one array of strings, and tensors:
# token_embd 256 x 32000 F32 (tied: no output.weight, so decode reads it), blk.0.attn_q 256 x 256 F16, a 1-D
# norm (not a matrix): 32768000 + 131072 bytes = 32.9 MB per token, 0.3 GB/s at the stand-in's 10 tokens/s.
/usr/bin/python3 - "$models/tiny/gguf/model-f32.gguf" <<'EOF' || { echo "FAIL: writing the GGUF"; exit 1; }
import struct, sys
def string(s):
    return struct.pack("<Q", len(s)) + s.encode()
head = b"GGUF" + struct.pack("<IQQ", 3, 3, 2)
head += string("general.architecture") + struct.pack("<I", 8) + string("llama")
head += string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2) + string("a") + string("b")
for name, dims, kind in [("token_embd.weight", [256, 32000], 0), ("blk.0.attn_q.weight", [256, 256], 1),
                         ("blk.0.attn_norm.weight", [256], 0)]:
    head += string(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
    head += struct.pack("<IQ", kind, 0)
open(sys.argv[1], "wb").write(head)
EOF
LLAMA_CPP_BIN=$fake BENCH_MODELS=$models "$src/scripts/bench" llamacpp --reps 2 --dtype f32 --dtype bf16 \
    --build "$bin/.." > "$tmp/table" 2> "$tmp/err"
status=$?
[ $status -eq 0 ] || { echo "FAIL: bench llamacpp exited $status:"; cat "$tmp/err"; exit 1; }
expect "title with the date" "^### heads vs llama.cpp, 20" "$tmp/table"
expect "llama.cpp's build from its JSON" "llama.cpp c0ffee0 (b4748)" "$tmp/table"
expect "1 thread by default" ", -t 1, 2 interleaved rounds" "$tmp/table"
expect "a row: heads' figures, llama.cpp's medians" \
    "^| tiny | f32 | \*\*[0-9.]*\*\* ([0-9.]*-[0-9.]*) | \*\*100.0\*\* (100.0-100.0) | [0-9.]*x | " "$tmp/table"
expect "decode beside tg64" "| \*\*10.0\*\* (10.0-10.0) | [0-9.]*x | [0-9]* / [0-9]* | [0-9.]* / [0-9.]* / [0-9.]* | " \
    "$tmp/table"
expect "weight bytes per token: heads' and the GGUF's" "| [0-9.]* / 32.9 | [0-9.]* / 0.3 | [0-9]*% / [0-9]*% of [0-9.]* ([0-9.]*-[0-9.]*) |$" \
    "$tmp/table"
expect "load before and after" "^- tiny f32: heads .*load before: \`.*load average.*after:" "$tmp/table"
expect "the first run's peak RSS" "first infer run (empty weight cache folder) peaked at [0-9]* MiB" "$tmp/table"
expect "a missing dtype is a note" "tiny bf16: skipped" "$tmp/table"
expect "the targets" "prefill >= 1.3x, decode >= 1.1x" "$tmp/table"
expect "llama-bench ran once per round at -t 1" "^-m $models/tiny/gguf/model-f32.gguf -t 1 -p 512 -n 64 -r 1 -o json" \
    "$fake/calls"
check "2 llama-bench rounds" [ "$(grep -c -- '-p 512' "$fake/calls")" -eq 2 ]
check "llama-simple: a warm-up, then 3 timed runs" [ "$(grep -c -- '-n 1 In' "$fake/calls")" -eq 4 ]
# Weights repacked for oneDNN are cached; weights used as the file's rows need no cache, and the table says so.
if grep -q "^- tiny f32: heads load .*weights rows-" "$tmp/table"; then
    expect "rows need no weight cache" "tiny f32: heads uses these weights as the file holds them: no weight cache" "$tmp/table"
else
    check "repacked weights are cached" absent "tiny f32: heads uses these weights as the file holds them" "$tmp/table"
fi

# --depth: decode after a long prompt, beside llama-batched-bench's S_TG (one JSON line per test, as b4748 prints).
cat > "$fake/llama-batched-bench" <<'EOF'
#!/bin/bash
echo "$@" >> "$(dirname "$0")/batched-calls"
echo '{"n_kv_max": 96, "pp": 32, "tg": 64, "pl": 1, "speed_pp": 50.0, "speed_tg": 8.0}'
EOF
chmod +x "$fake/llama-batched-bench"
LLAMA_CPP_BIN=$fake BENCH_MODELS=$models "$src/scripts/bench" llamacpp --reps 2 --dtype f32 --depth 32 \
    --build "$bin/.." > "$tmp/deep" 2> "$tmp/err"
status=$?
[ $status -eq 0 ] || { echo "FAIL: bench llamacpp --depth exited $status:"; cat "$tmp/err"; exit 1; }
expect "--depth: a second table" "^| model | dtype | decode at 32 heads | llama.cpp | ratio |" "$tmp/deep"
expect "--depth: heads' decode beside S_TG" \
    "^| tiny | f32 | \*\*[0-9.]*\*\* ([0-9.]*-[0-9.]*) | \*\*8.0\*\* (8.0-8.0) | [0-9.]*x | [0-9]* / [0-9]* |$" "$tmp/deep"
expect "--depth: llama-batched-bench after 32 positions, 64 tokens, one sequence" \
    "^-m $models/tiny/gguf/model-f32.gguf -t 1 -c 96 .*-npp 32 -ntg 64 -npl 1" "$fake/batched-calls"
check "--depth: one llama-batched-bench run per round" [ "$(wc -l < "$fake/batched-calls")" -eq 2 ]

echo "bench llamacpp: $passed passed, $failed failed"
[ $failed -eq 0 ]
