#!/usr/bin/python3
"""--kv-type as a user runs it: the KV cache stored in f32, bf16, q8 or q4
from the prompt's first token. Frames hold the slots in that type (bf16 rows
half the bytes of f32); the default follows the arithmetic (f32 for models/kjv,
bf16 for a bf16 model where the CPU computes in bf16); perplexity moves by a small KL, larger
for q4 than for bf16; decode continuing `infer --kv --kv-type T` frames
writes the ids of `decode --kv-type T` from the same ids; a bad type is bad
usage.

    kv_type_test.py BUILD_BIN_DIR SOURCE_DIR
"""
import json
import os
import re
import struct
import subprocess
import sys
import tempfile

bin_dir, src = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(src, "scripts"))
from checks import Checks, run_ok  # noqa: E402

MODEL = os.path.join(src, "models", "kjv")
HELD_OUT = os.path.join(src, "tests", "data", "kjv-heldout.txt")
TOKENIZE, INFER, DECODE = (os.path.join(bin_dir, p) for p in ("tokenize", "infer", "decode"))
report = Checks(show_passes=True)


def frame_header(blob):
    """The safetensors header of the first frame in `blob` (man/heads.7)."""
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + n])


def key_bytes(header):
    return sum(t["data_offsets"][1] - t["data_offsets"][0] for name, t in header.items()
               if re.fullmatch(r"kv\.\d+\.[kv]", name))


def kl(text):
    match = re.search(r"KLD = ([0-9.e+-]+)", text)
    return float(match.group(1)) if match else None


with tempfile.TemporaryDirectory(prefix="heads-kv-type-test-") as tmp:
    lines = open(HELD_OUT).read().splitlines()
    prompt = run_ok([TOKENIZE, "-m", MODEL], ("\n".join(lines[:3]) + "\n").encode()).stdout.splitlines()[0] + b"\n"
    held_out = run_ok([TOKENIZE, "-m", MODEL, "--whole"], ("\n".join(lines[:40]) + "\n").encode()).stdout
    ids = os.path.join(tmp, "held-out.ids")
    open(ids, "wb").write(held_out)

    # --- frames hold the slots in the cache's type ---
    sizes = {}
    for kv_type, dtype in (("auto", "F32"), ("f32", "F32"), ("bf16", "BF16"), ("q8", "I8"), ("q4", "U8")):
        blob = run_ok([INFER, "-m", MODEL, "--kv", "--logits", "none", "--kv-type", kv_type], prompt).stdout
        header = frame_header(blob)
        sizes[kv_type] = key_bytes(header)
        report(header["kv.0.k"]["dtype"] == dtype, f"infer --kv --kv-type {kv_type}: keys stored as {dtype} "
               f"(got {header['kv.0.k']['dtype']}), {sizes[kv_type]} bytes of keys and values")
    report(sizes["bf16"] * 2 == sizes["f32"] and sizes["q8"] * 4 == sizes["f32"],
           f"bf16 rows are half of f32's, q8 a quarter ({sizes})")

    # --- the default follows the arithmetic ---
    bf16_model = os.path.join(tmp, "bf16")
    subprocess.run([sys.executable, os.path.join(src, "scripts", "make-random-model"), "-o", bf16_model, "--vocab",
                    "200", "--d-model", "64", "--n-layers", "2", "--n-heads", "4", "--n-kv-heads", "2", "--dtype",
                    "bf16"], check=True, capture_output=True)
    # bf16 by default only where this CPU path really computes in bf16 (infer --version says so); the AVX2 path
    # widens bf16 weights to f32 and keeps an f32 cache.
    bf16_arithmetic = b"bf16 arithmetic: yes" in run_ok([INFER, "--version"]).stdout
    default = "BF16" if bf16_arithmetic else "F32"
    for args, dtype in (([], default), (["--kv-type", "bf16"], "BF16"), (["--kv-type", "f32"], "F32"),
                        (["--precision", "f32"], "F32")):
        blob = run_ok([INFER, "-m", bf16_model, "--kv", "--logits", "none"] + args, b"1 5 9 33 70 2\n").stdout
        got = frame_header(blob)["kv.0.k"]["dtype"]
        report(got == dtype, f"bf16 weights, infer --kv {' '.join(args) or '(defaults)'}: {dtype} slots (got {got})")

    # --- perplexity: a small KL to the f32 cache, larger for q4 ---
    base = os.path.join(tmp, "base.lp")
    run_ok([INFER, "-m", MODEL, "--ppl", "--ctx", "128", "--save-logits", base, ids])
    kls = {}
    for kv_type in ("bf16", "q8", "q4"):
        done = run_ok([INFER, "-m", MODEL, "--ppl", "--ctx", "128", "--kv-type", kv_type, "--kl-base", base, ids])
        kls[kv_type] = kl(done.stdout.decode() + done.stderr.decode())
    report(all(k is not None for k in kls.values()) and 0 < kls["bf16"] < 1e-3 and 0 < kls["q8"] < 1e-3
           and kls["q4"] > kls["bf16"], f"KL to the f32 cache: bf16 and q8 in (0, 0.001), q4 above bf16 ({kls})")

    # --- decode continues a typed frame as decode from ids runs ---
    for kv_type in ("bf16", "q8", "q4"):
        frame = run_ok([INFER, "-m", MODEL, "--kv", "--logits", "none", "--kv-type", kv_type], prompt).stdout
        continued = run_ok([DECODE, "-m", MODEL, "--kv", "-", "-n", "16"], frame).stdout
        fresh = run_ok([DECODE, "-m", MODEL, "--kv-type", kv_type, "-n", "16"], prompt).stdout
        report(continued == fresh and len(fresh.split()) == 16,
               f"{kv_type}: decode --kv of infer's frame = decode --kv-type {kv_type} ({fresh.decode().strip()[:60]})")

    # --- bad usage ---
    for program in (INFER, DECODE):
        done = subprocess.run([program, "-m", MODEL, "--kv-type", "f16"], input=prompt, capture_output=True)
        report(done.returncode == 2 and b"--kv-type" in done.stderr,
               f"{os.path.basename(program)} --kv-type f16: exit 2 naming the option (got {done.returncode})")

sys.exit(report.status())
