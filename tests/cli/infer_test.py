#!/usr/bin/python3
"""infer as a user runs it, on random models (scripts/make-random-model):
every bad input of issue 4 with its one-line error and status, perplexity and
the head table against scripts/reference.py, --save-logits/--kl-base, KV
frames read with numpy and continued by the reference, thread counts, pipes.

    infer_test.py BUILD_BIN_DIR SOURCE_DIR
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

bin_dir, src = sys.argv[1], sys.argv[2]
sys.path.insert(0, os.path.join(src, "scripts"))
import reference  # noqa: E402
from checks import Checks  # noqa: E402

INFER = os.path.join(bin_dir, "infer")
PY = sys.executable
report = Checks()


def run(cmd, stdin=None):
    return subprocess.run(cmd, input=stdin, capture_output=True)


def expect_error(status, part, cmd, stdin=None):
    """Exit STATUS and a first stderr line 'infer: ...PART...' (usage errors add the usage hint)."""
    done = run(cmd, stdin)
    lines = done.stderr.decode(errors="replace").splitlines()
    ok = done.returncode == status and lines and lines[0].startswith("infer: ") and part in lines[0]
    ok = ok and (len(lines) == 1 or status == 2)
    report(ok, f"{' '.join(cmd[1:])} -> status {done.returncode}, stderr {lines[:3]} (wanted {status}, '{part}')")


def make_model(path, *args):
    subprocess.run([PY, os.path.join(src, "scripts", "make-random-model"), "-o", path, "--vocab", "200"] + list(args),
                   check=True, capture_output=True)


with tempfile.TemporaryDirectory(prefix="heads-infer-test-") as tmp:
    m = os.path.join(tmp, "m")
    make_model(m, "--d-model", "64", "--n-layers", "2", "--n-heads", "4", "--n-kv-heads", "2", "--max-pos", "64")
    ids = os.path.join(tmp, "ids")
    rng = np.random.default_rng(1)
    lines = [[1] + list(rng.integers(3, 200, n)) for n in (5, 20, 40)]
    with open(ids, "w") as f:
        f.writelines(" ".join(map(str, line)) + "\n" for line in lines)

    # --- bad input: one clear line each ---
    def broken_copy(name, edit_config=None, edit_tensors=None):
        path = os.path.join(tmp, name)
        os.makedirs(path)
        with open(os.path.join(m, "config.json")) as f:
            config = json.load(f)
        if edit_config:
            edit_config(config)
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(config, f)
        tensors, meta = reference.read_safetensors(os.path.join(m, "model.safetensors"))
        tensors = dict(tensors)
        if edit_tensors:
            edit_tensors(tensors)
        reference.write_safetensors(os.path.join(path, "model.safetensors"), tensors, meta)
        return path

    expect_error(1, "unsupported architecture", [INFER, "-m", broken_copy("gpt", lambda c: c.update(architectures=["GPT2LMHeadModel"])), ids])
    expect_error(1, "tensor model.layers.1.mlp.up_proj.weight is missing",
                 [INFER, "-m", broken_copy("missing", edit_tensors=lambda t: t.pop("model.layers.1.mlp.up_proj.weight")), ids])
    expect_error(1, "tensor model.layers.0.self_attn.k_proj.weight has shape [16, 64], the config implies [32, 64]",
                 [INFER, "-m", broken_copy("shape", edit_tensors=lambda t: t.update(
                     {"model.layers.0.self_attn.k_proj.weight": t["model.layers.0.self_attn.k_proj.weight"][:16]})), ids])
    expect_error(1, "head_layout has 1 layers, the model 2",
                 [INFER, "-m", broken_copy("layout", lambda c: c.update(head_layout={"layers": [
                     {"query_heads": [0], "kv_heads": [0], "kv_head_of": [0]}]})), ids])
    expect_error(1, "not a model directory (no config.json)", [INFER, "-m", tmp, ids])
    config_only = os.path.join(tmp, "config-only")
    os.makedirs(config_only)
    subprocess.run(["cp", os.path.join(m, "config.json"), config_only], check=True)
    expect_error(1, "no model.safetensors or model.safetensors.index.json", [INFER, "-m", config_only, ids])
    expect_error(1, "token id 200 is out of range (vocabulary of 200)", [INFER, "-m", m], b"1 5 200\n")
    expect_error(1, ":2: bad token id 'x7'", [INFER, "-m", m], b"1 5\n1 x7\n")
    expect_error(1, ":2: empty line", [INFER, "-m", m], b"1 5\n\n1 6\n")
    long_line = (" ".join(["7"] * 65) + "\n").encode()
    expect_error(1, "65 tokens exceed the model's context of 64 (--ctx N allows longer lines)", [INFER, "-m", m], long_line)
    report(run([INFER, "-m", m, "--ctx", "65"], long_line).returncode == 0, "--ctx 65 allows a 65-token line")
    expect_error(2, "--hidden '2': layers are numbered 0 to 1", [INFER, "-m", m, "--hidden", "2", ids])
    expect_error(2, "--attention 'x': 'x' is not a layer number", [INFER, "-m", m, "--attention", "x", ids])
    expect_error(1, "head 1.4 does not exist (layer 1 has 4 heads)", [INFER, "-m", m, "--mask-heads", "0.1,1.4", ids])
    expect_error(2, "bad head '0-1' (want LAYER.HEAD", [INFER, "-m", m, "--mask-heads", "0-1", ids])
    expect_error(2, "--ppl writes no frames", [INFER, "-m", m, "--ppl", "--kv", ids])
    expect_error(2, "--save-logits, --kl-base and --kv-policy need --ppl", [INFER, "-m", m, "--kl-base", "x", ids])
    expect_error(2, "--logits", [INFER, "-m", m, "--logits", "some", ids])
    expect_error(1, "fewer than 2 × ctx (64)", [INFER, "-m", m, "--ppl", ids])

    # --- frames read with numpy, and a KV frame continued by the reference ---
    done = run([INFER, "-m", m, "--logits", "all", "--kv", ids])
    frames = reference.read_frames(done.stdout)
    report(done.returncode == 0 and len(frames) == 6, "--logits all --kv: two frames per line")
    kv_tensors, kv_meta = frames[3]
    report(kv_meta["heads.kind"] == "kv" and kv_meta["heads.policy"] == "full" and kv_meta["heads.recent_queries"] == "32"
           and kv_meta["heads.tokens"] == " ".join(map(str, lines[1])), "kv frame metadata")
    report(kv_tensors["kv.0.k"].shape == (2 * 21, 16) and list(kv_tensors["kv.0.slots"]) == [21, 21]
           and np.array_equal(kv_tensors["kv.1.pos"], np.tile(np.arange(21), 2)), "kv frame shapes (ragged) and positions")
    received = kv_tensors["kv.0.received"]
    report(abs(received.sum() - 4 * 21) < 1e-3, "received mass sums to query heads x queries")
    frame_path = os.path.join(tmp, "kv.safetensors")
    reference.write_safetensors(frame_path, kv_tensors, kv_meta)
    more = list(rng.integers(3, 200, 3))
    cont = run([PY, os.path.join(src, "scripts", "reference.py"), m, "--past", frame_path, "--ids", " ".join(map(str, more)),
                "--logits", "last"])
    whole = run([INFER, "-m", m], (" ".join(map(str, lines[1] + more)) + "\n").encode())
    a = reference.read_frames(cont.stdout)[0][0]["logits"]
    b = reference.read_frames(whole.stdout)[0][0]["logits"]
    report(np.abs(a - b).max() <= 1e-4 * np.abs(a).max(), "the reference continuing infer's KV frame = infer on the whole sequence")

    # --- determinism and threads ---
    outs = [run([INFER, "-m", m, "--logits", "all", "-t", t, ids]).stdout for t in ("1", "1", "2", "2")]
    report(outs[0] == outs[1] and outs[2] == outs[3], "-t N: bit-identical for the same N")
    x1, x2 = (reference.read_frames(o)[2][0]["logits"] for o in (outs[0], outs[2]))
    report(np.abs(x1 - x2).max() <= 1e-5 * np.abs(x1).max(), "-t 1 and -t 2 agree to float tolerance")

    # --- a closed pipe ends quietly ---
    pipe = subprocess.run(f"'{INFER}' -m '{m}' --logits all --ctx 200 '{ids}' '{ids}' '{ids}' | head -c 10 > /dev/null; "
                          f"echo ${{PIPESTATUS[0]}}", shell=True, capture_output=True, executable="/bin/bash")
    report(pipe.stdout.strip() == b"0" and pipe.stderr == b"", f"closed pipe: status {pipe.stdout.strip()}, {pipe.stderr[:80]}")

    # --- perplexity and KL against the reference ---
    text = os.path.join(tmp, "text.ids")
    with open(text, "w") as f:
        f.write(" ".join(map(str, [1] + list(rng.integers(3, 200, 130)))) + "\n")
    ref_ppl = json.loads(run([PY, os.path.join(src, "scripts", "reference.py"), m, "--ppl", text, "--ctx", "32", "--json"]).stdout)
    base = os.path.join(tmp, "base.logprobs")
    done = run([INFER, "-m", m, "--ppl", "--ctx", "32", "--save-logits", base, text])
    first = done.stdout.decode().splitlines()[0].split()
    report(done.returncode == 0 and first[:2] == ["PPL", "="] and abs(float(first[2]) / ref_ppl["ppl"] - 1) < 1e-4,
           f"--ppl {first} vs reference {ref_ppl}")
    report(abs(float(first[4]) / ref_ppl["error"] - 1) < 1e-3 if "error" in ref_ppl else True, "PPL standard error")
    same = run([INFER, "-m", m, "--ppl", "--ctx", "32", "--kl-base", base, text]).stdout.decode()
    report("KLD = 0.000000" in same and "same top token = 100.000%" in same, f"KL against itself: {same}")
    masked = run([INFER, "-m", m, "--ppl", "--ctx", "32", "--kl-base", base, "--mask-heads", "0.0,1.2", text]).stdout.decode()
    kld = [line for line in masked.splitlines() if line.startswith("KLD =")]
    report(kld and float(kld[0].split()[2]) > 0, f"KL with masked heads is positive: {masked}")
    expect_error(1, "the base was scored with ctx 32, this run uses 48", [INFER, "-m", m, "--ppl", "--ctx", "48", "--kl-base", base, text])
    report(not os.path.exists(base + ".tmp"), "no temporary file left")

    # --- head table against the reference, on repeat sequences and plain ones ---
    rep = os.path.join(tmp, "repeats.ids")
    with open(rep, "w") as f:
        for n in (6, 15):
            span = list(rng.integers(3, 200, n))
            f.write(" ".join(map(str, [1] + span + span)) + "\n")
        f.write(" ".join(map(str, lines[2])) + "\n")
    ours = run([INFER, "-m", m, "--head-stats", rep]).stdout.decode().splitlines()
    theirs = run([PY, os.path.join(src, "scripts", "reference.py"), m, "--head-stats", "--ids-file", rep]).stdout.decode().splitlines()
    report(ours[0].startswith("# model ") and ours[2] == theirs[1], f"head table header: {ours[:3]}")
    rows_ours = np.array([[float(x) for x in line.split("\t")] for line in ours[3:]])
    rows_theirs = np.array([[float(x) for x in line.split("\t")] for line in theirs[2:]])
    report(rows_ours.shape == rows_theirs.shape == (8, 8) and np.abs(rows_ours - rows_theirs).max() < 1e-5,
           f"head table values equal the reference's (max difference {np.abs(rows_ours - rows_theirs).max()})")

    # --- a pruned model's head table names heads by original id (so tables join across pruning), as the reference's ---
    pruned = os.path.join(tmp, "pruned")
    layout = {"layers": [{"query_heads": [0, 1, 2, 3], "kv_heads": [0, 1], "kv_head_of": [0, 0, 1, 1]},
                         {"query_heads": [3, 0], "kv_heads": [1], "kv_head_of": [0, 0]}]}
    make_model(pruned, "--d-model", "64", "--n-layers", "2", "--n-heads", "4", "--n-kv-heads", "2", "--max-pos", "64",
               "--head-layout", json.dumps(layout))
    ours = run([INFER, "-m", pruned, "--head-stats", rep]).stdout.decode().splitlines()
    theirs = run([PY, os.path.join(src, "scripts", "reference.py"), pruned, "--head-stats", "--ids-file", rep])
    theirs = theirs.stdout.decode().splitlines()
    names_ours = [line.split("\t")[:3] for line in ours[3:]]
    expected = [[0, 0, 0], [0, 1, 0], [0, 2, 1], [0, 3, 1], [1, 3, 1], [1, 0, 1]]  # layer, original head, original KV head
    report(names_ours == [[str(x) for x in row] for row in expected],
           f"pruned model: head table rows carry original head and KV head ids: {names_ours}")
    rows_ours = np.array([[float(x) for x in line.split("\t")] for line in ours[3:]])
    rows_theirs = np.array([[float(x) for x in line.split("\t")] for line in theirs[2:]])
    report(rows_ours.shape == rows_theirs.shape == (6, 8) and np.abs(rows_ours - rows_theirs).max() < 1e-5,
           "pruned model: head table equals the reference's, ids and values")

    # --- the weight cache: written once, then mapped; stale or broken files are rebuilt ---
    # f32 weights used with bf16 arithmetic are made on every CPU (rounded to bf16 rows, or repacked), so they are
    # cached; lm_head 33000 x 512 in bf16 = 34 MB, past the 32 MiB threshold.
    big = os.path.join(tmp, "big")
    subprocess.run([PY, os.path.join(src, "scripts", "make-random-model"), "-o", big, "--vocab", "33000", "--d-model", "512",
                    "--n-layers", "1", "--n-heads", "4"], check=True, capture_output=True)
    cache_dir = os.path.join(tmp, "cache")
    env = dict(os.environ, HEADS_WEIGHT_CACHE=cache_dir)

    def cached_run():
        done = subprocess.run([INFER, "-m", big, "--precision", "bf16", "--logits", "all", ids], capture_output=True, env=env)
        files = os.listdir(cache_dir) if os.path.isdir(cache_dir) else []
        path = os.path.join(cache_dir, files[0]) if len(files) == 1 else None
        return done.returncode, done.stdout, path, (os.stat(path).st_mtime_ns, os.stat(path).st_size) if path else None

    status, first_out, path, first_stat = cached_run()
    report(status == 0 and path and path.endswith(".weights"), f"the weight cache file is written: {path}")
    status, out, path, stat = cached_run()
    report(status == 0 and out == first_out and stat == first_stat, "a second run maps the cache: same output, file untouched")
    with open(path, "r+b") as f:
        f.truncate(first_stat[1] // 2)
    status, out, path, stat = cached_run()
    report(status == 0 and out == first_out and stat[1] == first_stat[1], "a truncated cache file is rebuilt")
    with open(path, "r+b") as f:
        f.seek(first_stat[1] - 100)
        f.write(b"garbage")
    status, out, path, stat = cached_run()
    report(status == 0 and out == first_out and stat[0] != first_stat[0], "a cache file with damaged data is rebuilt")
    before = stat
    os.utime(os.path.join(big, "model.safetensors"))
    status, out, path, stat = cached_run()
    report(status == 0 and out == first_out and stat[0] != before[0], "a cache file older than the weights is rebuilt")
    cacheless = subprocess.run([INFER, "-m", big, "--precision", "bf16", "--logits", "all", ids], capture_output=True,
                               env=dict(os.environ, HEADS_WEIGHT_CACHE="off"))
    report(cacheless.returncode == 0 and cacheless.stdout == first_out, "the cached runs give the logits of a cacheless run")
    # A cache file in the slot that belongs to another model of the same shape (another seed), first as it was
    # written (another key: a miss), then with its key made this model's, as when two models share a fingerprint
    # (which samples the weights) and their files' sizes and times: valid and in bounds, but other values.
    twin = os.path.join(tmp, "twin")
    subprocess.run([PY, os.path.join(src, "scripts", "make-random-model"), "-o", twin, "--vocab", "33000", "--d-model", "512",
                    "--n-layers", "1", "--n-heads", "4", "--seed", "5"], check=True, capture_output=True)
    twin_cache = os.path.join(tmp, "twin-cache")
    subprocess.run([INFER, "-m", twin, "--precision", "bf16", ids], check=True, capture_output=True,
                   env=dict(os.environ, HEADS_WEIGHT_CACHE=twin_cache))
    [twin_file] = [os.path.join(twin_cache, name) for name in os.listdir(twin_cache)]

    def cache_key(data):
        size = struct.unpack("<Q", data[8:16])[0]
        return json.loads(data[16:16 + size])["key"]

    with open(twin_file, "rb") as f:
        twin_data = f.read()
    with open(path, "rb") as f:
        own_key = cache_key(f.read())
    # The same length: the header keeps its size and the matrices their offsets.
    rekeyed = twin_data.replace(json.dumps(cache_key(twin_data)).encode(), json.dumps(own_key).encode(), 1)
    report(len(rekeyed) == len(twin_data) and cache_key(rekeyed) == own_key, "the twin's cache file takes this model's key")
    for what, data in [("another model's cache file", twin_data),
                       ("another model's cache file under this model's key", rekeyed)]:
        with open(path, "wb") as f:
            f.write(data)
        os.utime(path, ns=(0, 0))  # rewritten if its time changes
        status, out, path, stat = cached_run()
        report(status == 0 and out == first_out and stat[0] != 0,
               f"{what} in this model's slot is rebuilt: the logits of a cacheless run")
    status, out, path, again = cached_run()
    report(status == 0 and out == first_out and again == stat, "the rebuilt cache file is then mapped as it is")
    off = subprocess.run([INFER, "-m", big, "--precision", "bf16", ids], capture_output=True, env=dict(os.environ, HEADS_WEIGHT_CACHE="off",
                                                                                XDG_CACHE_HOME=os.path.join(tmp, "xdg")))
    report(off.returncode == 0 and not os.path.exists(os.path.join(tmp, "xdg")), "HEADS_WEIGHT_CACHE=off writes nothing")

sys.exit(report.status())
