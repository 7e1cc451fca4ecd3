#!/usr/bin/python3
"""compress-kv as a user runs it, on the embedded model (models/kjv): frames
that shrink with the budget and hold only what they keep (within 2% plus the
JSON header), read with numpy alone as man/heads.7 shows; every policy keeps
sinks and recent positions and respects each head's budget; full gives the
frame back bit for bit; decode continuing a compressed frame writes the ids
of decode with the same policy from the prompt on, for every policy; the report on stderr and
in --report; bad input, each with one line and its exit status; and the
perplexity under a policy (infer --ppl --kv-policy: full gives plain --ppl's,
a small budget a larger one, and every row is the log-probability decode
gives the same token under the same policy); the copy task in small
(scripts/experiments/README.md has it in full): after 380 tokens of filler,
razor and duo at a 10% budget, keeping the heads of the induction column
whole, copy the list about as well as the full cache, where the uniform
window and snapkv at 30% copy almost none of it.

    compress_kv_test.py BUILD_BIN_DIR SOURCE_DIR
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np

bin_dir, src = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(src, "scripts"))
import reference  # noqa: E402
from checks import Checks, run_ok  # noqa: E402
MODEL = os.path.join(src, "models", "kjv")
TABLE = os.path.join(MODEL, "heads-induction.tsv")
HELD_OUT = os.path.join(src, "tests", "data", "kjv-heldout.txt")
PY = sys.executable
TOKENIZE, INFER, DECODE, COMPRESS = (os.path.join(bin_dir, p) for p in ("tokenize", "infer", "decode", "compress-kv"))
report = Checks(show_passes=True)
run = run_ok


def expect_error(status, text, cmd, stdin=None):
    done = subprocess.run(cmd, input=stdin, capture_output=True)
    err = done.stderr.decode()
    lines = err.strip().splitlines()
    ok = done.returncode == status and text in err and (status == 2 or len(lines) == 1)
    report(ok, f"exit {status} and '{text}': {' '.join(os.path.basename(str(c)) for c in cmd[:3])} ..."
           + ("" if ok else f" (got exit {done.returncode}: {err.strip()[:300]})"))
    return done


def tensors_numpy(blob):
    """A frame read with numpy alone, as man/heads.7 shows; returns (header, meta, tensor(name), header bytes)."""
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = blob[8 + n:]

    def tensor(name):
        t = header[name]
        dtype = {"F32": np.float32, "I32": np.int32, "I8": np.int8, "U8": np.uint8, "BF16": np.uint16}[t["dtype"]]
        return np.frombuffer(data[slice(*t["data_offsets"])], dtype).reshape(t["shape"])
    return header, meta, tensor, 8 + n


def heads_of(tensor, l):
    """man/heads.7's reading of a layer: [(k, v, pos)] per KV head."""
    slots = tensor(f"kv.{l}.slots")
    ends = np.cumsum(slots)
    k, v, pos = tensor(f"kv.{l}.k"), tensor(f"kv.{l}.v"), tensor(f"kv.{l}.pos")
    return [(k[e - n:e], v[e - n:e], pos[e - n:e]) for n, e in zip(slots, ends)]


def numbers(header, tensor, name, layer):
    """man/heads.7's reading of quantized keys or values back as numbers."""
    t, x = header[name], tensor(name)
    if t["dtype"] == "F32":
        return x
    if t["dtype"] == "BF16":
        return (x.astype(np.uint32) << 16).view(np.float32)
    if t["dtype"] == "U8":  # q4: two a byte, low half first
        x = np.stack([x & 15, x >> 4], axis=-1).reshape(len(x), -1).astype(np.int8) - 8
    scale = tensor(f"kv.{layer}.{name.split('.')[-1]}_scale")
    return x.astype(np.float32) * scale[:, None]


def main():
    config = json.load(open(os.path.join(MODEL, "config.json")))
    n_layers, head_dim = config["num_hidden_layers"], config["head_dim"]
    tmp = tempfile.mkdtemp()
    try:
        text = open(HELD_OUT).read().split("\n")
        ids = run([TOKENIZE, "-m", MODEL, "--whole"], "\n".join(text[10:40]).encode()).stdout.decode().split()[:160]
        prompt = (" ".join(ids) + "\n").encode()
        n = len(ids)
        full = os.path.join(tmp, "full.kv")
        open(full, "wb").write(run([INFER, "-m", MODEL, "--kv", "--logits", "none"], prompt).stdout)
        full_blob = open(full, "rb").read()
        # --- the ragged frame, read with numpy alone ---
        header, meta, tensor, full_header = tensors_numpy(full_blob)
        heads = heads_of(tensor, 0)
        report(len(heads) == 8 and all(len(p) == n and list(p) == list(range(n)) for _, _, p in heads)
               and heads[0][0].shape == (n, head_dim), "infer --kv: ragged frame, every head all positions")

        def compress(spec_args, path, extra=()):
            done = run([COMPRESS, "-m", MODEL, *spec_args, "-o", path, *extra, full])
            return done.stderr.decode()

        # --- full is the identity, bit for bit ---
        same = os.path.join(tmp, "same.kv")
        compress(["--policy", "full"], same)
        report(open(same, "rb").read() == full_blob, "--policy full writes the frame back bit for bit")

        # --- every policy: budgets, sinks and recent positions; decode goes on from the frame ---
        specs = [("window", "window:budget=30%", []), ("h2o", "h2o:budget=30%", []), ("snapkv", "snapkv:budget=20%", []),
                 ("pyramid", "pyramid:budget=30%", []), ("adakv", "adakv:budget=30%", []),
                 ("headkv", "headkv:budget=30%:by=induction", ["--scores", TABLE]),
                 ("razor", "razor:budget=30%:by=induction", ["--scores", TABLE]),
                 ("duo", "duo:budget=10%:by=induction", ["--scores", TABLE]),
                 ("sliding window", "window:4:40", [])]
        sizes = {}
        for label, spec, table in specs:
            path = os.path.join(tmp, label + ".kv")
            err = compress(["--policy", spec, *table], path, ["--report", path + ".tsv"])
            blob = open(path, "rb").read()
            header, meta, tensor, header_bytes = tensors_numpy(blob)
            ok = meta["heads.kind"] == "kv" and meta["heads.policy"].startswith(spec.split(":")[0])
            kept = 0
            for l in range(n_layers):
                budget = tensor(f"kv.{l}.budget") if f"kv.{l}.budget" in header else None
                for g, (_, _, pos) in enumerate(heads_of(tensor, l)):
                    kept += len(pos)
                    real = set(int(p) for p in pos if p >= 0)
                    if budget is not None and budget[g] >= 0:
                        ok &= len(pos) <= budget[g] + 1  # + the last token, which decode runs again
                    if budget is not None:  # sinks 0..3 and the last 8 positions before the last token
                        ok &= set(range(4)) <= real and set(range(n - 9, n)) <= real
            # Key, value and position; a policy that ranks by attention also carries each slot's score.
            per_slot = 2 * head_dim * 4 + 4 + (4 if "kv.0.score" in header else 0)
            ok &= len(blob) - header_bytes <= 1.02 * kept * per_slot
            sizes[label] = len(blob)
            lines = err.strip().splitlines()
            ok &= lines[0].startswith("compress-kv: ") and len(lines) == n_layers + 2 and lines[-1].startswith("total:")
            rows = [r.split("\t") for r in open(path + ".tsv").read().splitlines()]
            ok &= rows[0][:3] == ["frame", "layer", "heads"] and len(rows) == n_layers + 2 and rows[-1][1] == "all"
            ok &= int(rows[-1][7]) == len(blob) - header_bytes
            report(ok, f"{label}: budgets, sinks and recent kept; {kept} slots in {len(blob)} bytes (full: "
                       f"{len(full_blob)}), within 2% + header; report on stderr and in TSV")
            cont = run([DECODE, "-m", MODEL, "--kv", path, "-n", "16"]).stdout
            scores = [f"scores={TABLE}"] if table else []
            fresh = run([DECODE, "-m", MODEL, "-n", "16", "--kv-policy", ":".join([spec] + scores)], prompt).stdout
            report(cont == fresh and len(cont.split()) == 16,
                   f"{label}: decode from the compressed frame = decode with the policy from the prompt on")
        # --- quantized slots: stored as such, read back with numpy within half a step ---
        _, _, full_tensor, _ = tensors_numpy(full_blob)
        quantized = [("razor+q8", ["--policy", "razor+q8", "--budget", "30%", "--scores", TABLE, "--by", "induction"],
                      f"razor:budget=30%:by=induction:scores={TABLE}+q8", "I8", 2 * head_dim + 8),
                     ("window+q4", ["--policy", "window+q4", "--budget", "30%"], "window:budget=30%+q4", "U8",
                      head_dim + 8),
                     ("full+q8", ["--policy", "full+q8"], "full+q8", "I8", 2 * head_dim + 8),
                     ("h2o+bf16", ["--policy", "h2o:budget=20%+bf16"], "h2o:budget=20%+bf16", "BF16", 4 * head_dim),
                     ("sliding window+q8", ["--policy", "window:4:40+q8"], "window:4:40+q8", "I8", 2 * head_dim + 8)]
        for label, args, spec, dtype, row_bytes in quantized:
            path = os.path.join(tmp, label + ".kv")
            err = compress(args, path, ["--report", path + ".tsv"])
            blob = open(path, "rb").read()
            header, meta, tensor, header_bytes = tensors_numpy(blob)
            ok = header["kv.0.k"]["dtype"] == dtype and meta["heads.policy"].endswith("+" + spec.rsplit("+", 1)[1])
            kept, worst = 0, 0.0
            for l in range(n_layers):
                k, v = numbers(header, tensor, f"kv.{l}.k", l), numbers(header, tensor, f"kv.{l}.v", l)
                ends = np.cumsum(tensor(f"kv.{l}.slots"))
                pos = tensor(f"kv.{l}.pos")
                full_heads = heads_of(full_tensor, l)
                for g, (count, end) in enumerate(zip(tensor(f"kv.{l}.slots"), ends)):
                    kept += int(count)
                    for s in range(end - count, end):
                        p = int(pos[s])
                        if p < 0 or (label.startswith("sliding") and p < n - 41):
                            continue  # a compensation token or a re-rotated sink: not a slot of the full frame
                        for got, want, what in ((k[s], full_heads[g][0][p], "k"), (v[s], full_heads[g][1][p], "v")):
                            if dtype == "BF16":
                                bound = np.abs(want) * 2.0 ** -8
                            else:
                                bound = tensor(f"kv.{l}.{what}_scale")[s] / 2 * (1 + 1e-5) + np.abs(want) * 2.0 ** -23
                            worst = max(worst, float(np.max(np.abs(got - want) - bound)))
            ok &= worst <= 0
            # Rows, scales and position per slot, plus the slot counts, budgets and scores.
            per_slot = row_bytes + 4 + (4 if "kv.0.score" in header else 0)
            ok &= len(blob) - header_bytes <= 1.02 * kept * per_slot
            rows = [r.split("\t") for r in open(path + ".tsv").read().splitlines()]
            ok &= int(rows[-1][7]) == len(blob) - header_bytes and int(rows[-1][6]) == len(full_blob) - full_header
            total = err.strip().splitlines()[-1]
            ok &= f"bytes {len(full_blob) - full_header} -> {len(blob) - header_bytes} " in total
            report(ok, f"{label}: {dtype} slots{'' if dtype == 'BF16' else ' with their scales'}, within half a step of the full frame's; "
                       f"{kept} slots in {len(blob)} bytes, within 2% + header; bytes in the report ({total})")
            cont = run([DECODE, "-m", MODEL, "--kv", path, "-n", "16"]).stdout
            fresh = run([DECODE, "-m", MODEL, "-n", "16", "--kv-policy", spec], prompt).stdout
            report(cont == fresh and len(cont.split()) == 16,
                   f"{label}: decode from the frame = decode with the policy from the prompt on")
            sizes[label] = len(blob)
        # A q8 slot takes 2 head_dim + 12 bytes against 8 head_dim + 4 in f32 (a third at head_dim 16).
        ratio = (2 * head_dim + 12) / (8 * head_dim + 4)
        report(sizes["razor+q8"] < (ratio + 0.02) * sizes["razor"] and sizes["full+q8"] < (ratio + 0.02) * len(full_blob),
               f"q8 frames take about {ratio:.2f} of their f32 ones (razor {sizes['razor+q8']} against {sizes['razor']}, "
               f"full {sizes['full+q8']} against {len(full_blob)})")

        report(sizes["razor"] < 0.35 * len(full_blob) and sizes["snapkv"] < 0.7 * sizes["h2o"],
               "the frame shrinks with the budget (razor 30% < 35% of the full frame, snapkv 20% < h2o 30%)")
        # DeCoRe's masked copy runs its own instance of the policy.
        decore = run([DECODE, "-m", MODEL, "-n", "8", "--kv-policy", f"razor:budget=30%:by=induction:scores={TABLE}",
                      "--contrast-heads", TABLE, "--by", "induction", "--top", "3"], prompt).stdout
        report(len(decore.split()) == 8, "a budgeted policy with --contrast-heads: each session its own budgets")
        # Compressing a compressed frame with its own policy changes nothing.
        razor = os.path.join(tmp, "razor.kv")
        again = run([COMPRESS, "-m", MODEL, "--policy", "razor:budget=30%:by=induction", razor]).stdout
        report(again == open(razor, "rb").read(), "a frame's own policy applied again keeps it as it is")

        # --- bad input ---
        expect_error(2, "bad 'budget=0'", [COMPRESS, "-m", MODEL, "--policy", "h2o", "--budget", "0", full])
        expect_error(2, "bad 'budget=101%'", [COMPRESS, "-m", MODEL, "--policy", "h2o", "--budget", "101%", full])
        expect_error(2, "unknown KV cache policy 'lru", [COMPRESS, "-m", MODEL, "--policy", "lru", "--budget", "5", full])
        expect_error(2, "needs the head table's column", [COMPRESS, "-m", MODEL, "--policy", "razor", "--budget", "5", full])
        expect_error(1, "no column 'retrieval'", [COMPRESS, "-m", MODEL, "--policy", "razor", "--budget", "30%",
                                                  "--scores", TABLE, "--by", "retrieval", full])
        other_table = os.path.join(tmp, "other.tsv")
        open(other_table, "w").write("# model ffffffffffffffff\n" + open(TABLE).read())
        expect_error(1, "the head table is from model ffffffffffffffff", [
            COMPRESS, "-m", MODEL, "--policy", "razor", "--budget", "30%", "--scores", other_table, "--by", "induction", full])
        expect_error(1, "the KV frame has none (infer --kv writes it)", [COMPRESS, "-m", MODEL, "--policy", "h2o",
                                                                         "--budget", "10%", razor])
        tensors, meta = reference.read_safetensors(full)
        other = os.path.join(tmp, "other.kv")
        reference.write_safetensors(other, tensors, dict(meta, **{"heads.model": "ffffffffffffffff"}))
        expect_error(1, "the KV frame is from model ffffffffffffffff", [COMPRESS, "-m", MODEL, "--policy", "full", other])
        hostile = os.path.join(tmp, "hostile.kv")
        reference.write_safetensors(hostile, dict(tensors, **{"kv.2.slots": np.array([n] * 7 + [n + 1], np.int32)}), meta)
        expect_error(1, "(the sum of kv.2.slots)", [COMPRESS, "-m", MODEL, "--policy", "full", hostile])
        unknown = os.path.join(tmp, "unknown.kv")
        reference.write_safetensors(unknown, tensors, dict(meta, **{"heads.policy": "lru:budget=3"}))
        expect_error(1, "unknown KV cache policy 'lru:budget=3'", [DECODE, "-m", MODEL, "--kv", unknown, "-n", "3"])
        # decode: another model's frame, a bad spec (usage), a head table without the column or of another model.
        never_ids = os.path.join(tmp, "never.ids")
        expect_error(1, "the KV frame is from model ffffffffffffffff",
                     [DECODE, "-m", MODEL, "--kv", other, "-n", "3", "-o", never_ids])
        report(not os.path.exists(never_ids), "decode: nothing written after another model's frame")
        for spec, status, message in (("h2o:budget=0", 2, "bad 'budget=0'"), ("h2o:budget=101%", 2, "bad 'budget=101%'"),
                                   (f"razor:budget=30%:by=retrieval:scores={TABLE}", 1, "no column 'retrieval'"),
                                   (f"razor:budget=30%:by=induction:scores={other_table}", 1,
                                    "the head table is from model ffffffffffffffff")):
            expect_error(status, message, [DECODE, "-m", MODEL, "-n", "3", "--kv-policy", spec], prompt)
        out = os.path.join(tmp, "never.kv")
        expect_error(1, "truncated", [COMPRESS, "-m", MODEL, "--policy", "window", "--budget", "30%", "-o", out],
                     full_blob[:len(full_blob) - 100])
        report(not os.path.exists(out), "nothing half-written after an error")

        # --- a prompt's ids do not depend on the prompts before it (razor's compensation token is per sequence) ---
        razor_spec = f"razor:budget=30%:by=induction:scores={TABLE}"
        lines = [(" ".join(ids[:k]) + "\n").encode() for k in (60, 90, 120)]
        together = run([DECODE, "-m", MODEL, "-n", "12", "--kv-policy", razor_spec], b"".join(lines)).stdout
        alone = b"".join(run([DECODE, "-m", MODEL, "-n", "12", "--kv-policy", razor_spec], line).stdout for line in lines)
        report(together == alone, "razor from ids: three prompts in one run give the ids of each run alone")

        # --- perplexity under a policy, measured as decode runs (infer --ppl --kv-policy) ---
        held = run([TOKENIZE, "-m", MODEL, "--whole"], "\n".join(text[40:120]).encode()).stdout
        held_ids = os.path.join(tmp, "held.ids")
        open(held_ids, "wb").write(held)

        def ppl(*extra):
            out = run([INFER, "-m", MODEL, "--ppl", "--ctx", "128", *extra, held_ids]).stdout.decode()
            return {line.split(" = ")[0]: line.split(" = ")[1] for line in out.splitlines() if " = " in line}
        base = os.path.join(tmp, "full.logprobs")
        plain = ppl()
        whole = ppl("--kv-policy", "full", "--save-logits", base)
        report(whole["PPL"] == plain["PPL"], f"--kv-policy full: the PPL of plain --ppl ({whole['PPL']}, {plain['PPL']})")
        same_full = ppl("--kv-policy", "full", "--kl-base", base)
        report(same_full["KLD"].startswith("0.000000") and same_full["same top token"].startswith("100.000%"),
               f"--kv-policy full against itself: KL {same_full['KLD']}")
        tiny = ppl("--kv-policy", "h2o:budget=12", "--kl-base", base)
        small = ppl("--kv-policy", "h2o:budget=50%", "--kl-base", base)
        p_full, p_small, p_tiny = (float(r["PPL"].split()[0]) for r in (whole, small, tiny))
        kl_small, kl_tiny = (float(r["KLD"].split()[0]) for r in (small, tiny))
        report(p_tiny > p_small > p_full and kl_tiny > kl_small > 0,
               f"h2o: PPL {p_full:.3f} (full) < {p_small:.3f} (50%) < {p_tiny:.3f} (12 slots), KL {kl_small:.4f} < {kl_tiny:.4f}")
        # Each scored row is what decode sees: decode's greedy continuation under the policy, scored again, has
        # decode's own log-probabilities (two identical windows of 64: 33 prompt tokens, 31 generated).
        for spec in (f"razor:budget=30%:by=induction:scores={TABLE}", "snapkv:budget=20%+q8"):
            head_ids = held.decode().split()[:33]
            lp = os.path.join(tmp, "decode.tsv")
            gen = run([DECODE, "-m", MODEL, "-n", "31", "--ignore-eos", "--kv-policy", spec, "--logprobs", "1", lp],
                      (" ".join(head_ids) + "\n").encode()).stdout.decode().split()
            window = head_ids + gen
            forced = os.path.join(tmp, "forced.ids")
            open(forced, "w").write(" ".join(window + window) + "\n")
            saved = os.path.join(tmp, "forced.logprobs")
            run([INFER, "-m", MODEL, "--ppl", "--ctx", "64", "--kv-policy", spec, "--save-logits", saved, forced])
            rows = reference.read_safetensors(saved)[0]["log_probs"][:31]
            theirs = np.array([float(line.split("\t")[3]) for line in open(lp).read().splitlines()[1:]])
            ours = rows[np.arange(31), [int(t) for t in gen]]
            report(len(gen) == 31 and np.abs(ours - theirs).max() <= 1e-5,
                   f"{spec.split(':')[0]}: infer --ppl --kv-policy scores decode's tokens with decode's log-probabilities "
                   f"(largest difference {np.abs(ours - theirs).max():.2e})")
        expect_error(2, "--kv-policy need --ppl", [INFER, "-m", MODEL, "--kv-policy", "full", held_ids])
        expect_error(2, "unknown KV cache policy 'lru'", [INFER, "-m", MODEL, "--ppl", "--ctx", "128", "--kv-policy", "lru",
                                                          held_ids])

        # --- the copy task in small: head-aware against uniform ---
        def copied(policy):
            cmd = [PY, os.path.join(src, "scripts", "copy-test"), "--bin", bin_dir, "--model", MODEL, "--filler", "380",
                   "--lists", "4", "--json"]
            return json.loads(run(cmd + (["--kv-policy", policy] if policy else [])).stdout)["380"]
        full_copy = copied("")
        razor = copied(f"razor:budget=10%:by=induction:scores={TABLE}")
        duo = copied(f"duo:budget=10%:by=induction:protect=25%:scores={TABLE}")
        uniform = max(copied("window:budget=30%"), copied("snapkv:budget=30%"))
        report(full_copy >= 0.75 and min(razor, duo) >= 0.8 * full_copy and uniform <= 0.15,
               f"copy task after 380 tokens: full cache {full_copy:.2f}, at a 10% budget razor {razor:.2f} and duo "
               f"keeping a quarter of the heads whole {duo:.2f}, window/snapkv at 30% at most {uniform:.2f}")
    finally:
        shutil.rmtree(tmp)
    return report.status()


if __name__ == "__main__":
    sys.exit(main())
