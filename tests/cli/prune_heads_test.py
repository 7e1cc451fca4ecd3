#!/usr/bin/python3
"""prune-heads as a user runs it.

    prune_heads_test.py MODE BUILD_BIN_DIR SOURCE_DIR

random: on random models (scripts/make-random-model) of every head layout
  (MHA, GQA with a KV head losing all its query heads, MQA, an already pruned
  layout, a layer losing every head), dtypes F32, BF16, F16 and a sharded
  model, the invariant of man/prune-heads.1: `infer -m small` gives the
  logits of `infer -m original --mask-heads <removed>` within 1e-5 of the
  logit scale (--precision f32); the written shapes, dtypes, shard files and
  index, head_layout (computed here independently) and the heads_edits
  record; pruning a pruned model again; --mask-only; heads chosen from a head
  table (--keep P%, --drop K, --min-per-layer, --reverse, nan) against the
  choice computed here; the source left untouched.
score: prune-heads --score's ablation column against the brute force
  (infer --ppl --mask-heads for each head, its saved log-probabilities
  summed here) on a random GQA model, an already pruned one and models/kjv,
  and its head-statistics columns against infer --head-stats over the same
  windows.
retrieval: the retrieval column of prune-heads --score in [0, 1], the same
  for the same seed (and thread count), another for another seed, and on
  models/kjv its top 3 heads the induction heads of layer 3, well above the
  rest.
gqa: --to-gqa G on random models (MHA, GQA; F32, BF16, F16, sharded): the
  written k_proj and v_proj the means of contiguous groups computed here with
  numpy (to half a unit in the last place of the dtype), every other tensor
  the source's, a stock config.json (num_key_value_heads = G, the edit
  recorded), infer's logits within 1e-4 of the logit scale of
  scripts/reference.py's on the new model, and G equal to the KV heads the
  source's logits bit for bit; G that does not divide, a pruned source.
similarity: --to-gqa G --group-by similarity on random models: G equal to
  the KV heads gives the source's logits bit for bit; the groups recorded in
  config.json a partition of each layer's KV heads into groups of equal
  size, its head_layout serving each query head by its group, k_proj and
  v_proj the group means (numpy), infer's logits those of reference.py; on a
  model whose KV heads are built identical in pairs (not contiguous ones),
  the pairs grouped together and the source's logits kept, where contiguous
  pooling changes them; bad calibration input and usage.
errors: bad input, each with its one stderr line and exit status, and
  nothing left behind; a failed write (a file size limit) and SIGINT while
  writing leave nothing either.
embedded: models/kjv pruned, against the masked run on held-out text, its
  tokenizer copied.
"""
import glob
import hashlib
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

mode, bin_dir, src = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, os.path.join(src, "scripts"))
import reference  # noqa: E402
from checks import Checks, run_ok  # noqa: E402

PRUNE, INFER, TOKENIZE = (os.path.join(bin_dir, p) for p in ("prune-heads", "infer", "tokenize"))
PY = sys.executable
TOLERANCE = 1e-5  # of the logit scale (the largest |logit|), f32 arithmetic
report = Checks()


def run(cmd, stdin=None):
    return run_ok(cmd, stdin).stdout


def make_model(path, *args):
    run([PY, os.path.join(src, "scripts", "make-random-model"), "-o", path, "--vocab", "200"] + list(args))


def header(path):
    """A safetensors file's header: {name: {dtype, shape, data_offsets}} without __metadata__."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return h


def weight_headers(model):
    """{file name: header} of every weight file of a model directory."""
    return {os.path.basename(p): header(p) for p in sorted(glob.glob(os.path.join(model, "*.safetensors")))}


def digest(model):
    h = hashlib.sha256()
    for p in sorted(glob.glob(os.path.join(model, "*"))):
        with open(p, "rb") as f:
            h.update(os.path.basename(p).encode() + f.read())
    return h.hexdigest()


def logits(model, ids, *flags):
    frames = reference.read_frames(run([INFER, "-m", model, "--logits", "all", "--precision", "f32", ids] + list(flags)))
    return [np.asarray(t["logits"], np.float64) for t, _ in frames]


def same_logits(what, ours, masked):
    scale = max(float(np.abs(m).max()) for m in masked)
    error = max(float(np.abs(a - b).max()) for a, b in zip(ours, masked))
    ok = len(ours) == len(masked) and error <= TOLERANCE * scale
    print(f"{'ok' if ok else 'FAIL'}: {what}: max |small - masked| {error:.3g} (logit scale {scale:.3g})")
    report(ok, what)


def config(model):
    with open(os.path.join(model, "config.json")) as f:
        return json.load(f)


def layout(model):
    """[(query ids, kv ids, kv_head_of)] per layer, as reference.py reads it."""
    c = reference.read_config(model)
    return [(list(h.query_head_ids), list(h.kv_head_ids), list(h.kv_head_of)) for h in c.layers]


def expected_layout(before, removed):
    """The layout left when `removed` ({(layer, index)}) go: computed here, apart from lib/heads."""
    after = []
    for l, (q, kv, of) in enumerate(before):
        keep = [i for i in range(len(q)) if (l, i) not in removed]
        used = sorted({of[i] for i in keep})
        after.append(([q[i] for i in keep], [kv[g] for g in used], [used.index(of[i]) for i in keep]))
    return after


def write_ids(path, rng, lengths, vocab=200):
    with open(path, "w") as f:
        for n in lengths:
            f.write(" ".join(map(str, [1] + list(rng.integers(3, vocab, n - 1)))) + "\n")


def check_pruned(label, source, small, removed, mask_list, ids, mask_only=False):
    """small against source with `removed` ({(layer, index)}) masked."""
    before, after = layout(source), layout(small)
    want = before if mask_only else expected_layout(before, removed)
    report(after == want, f"{label}: head_layout {after} (wanted {want})")
    edits = config(small).get("heads_edits", [])
    names = sorted(f"{l}.{before[l][0][i]}" for l, i in removed)
    report(bool(edits) and sorted(edits[-1]["removed_heads"]) == names
           and edits[-1]["method"] == ("mask" if mask_only else "remove"),
           f"{label}: heads_edits {edits} (wanted removed {names})")
    old, new = weight_headers(source), weight_headers(small)
    report(sorted(old) == sorted(new), f"{label}: weight files {sorted(new)} (source {sorted(old)})")
    c = reference.read_config(source)
    for file, tensors in old.items():
        for name, t in tensors.items():
            got = new.get(file, {}).get(name)
            parts = name.split(".")
            projection = parts[3] == "self_attn" if len(parts) > 4 and parts[0] == "model" else False
            if not projection or mask_only:
                ok = got is not None and got["dtype"] == t["dtype"] and got["shape"] == t["shape"]
            else:
                l, which = int(parts[2]), parts[4][0]
                q, kv, _ = want[l]
                rows = (len(kv) if which in "kv" else len(q)) * c.head_dim
                shape = [c.d_model, rows] if which == "o" else [rows, c.d_model]
                ok = (got is None and rows == 0) or (got is not None and got["dtype"] == t["dtype"] and got["shape"] == shape)
            if not ok:
                report(False, f"{label}: {file} {name}: {got} (source {t})")
    index = os.path.join(small, "model.safetensors.index.json")
    if os.path.exists(os.path.join(source, "model.safetensors.index.json")):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        report(weight_map == {name: file for file, h in new.items() for name in h},
               f"{label}: the index's weight_map names every tensor in its file")
    else:
        report(not os.path.exists(index), f"{label}: no index for a single-file model")
    same_logits(label, logits(small, ids), logits(source, ids, "--mask-heads", mask_list))


def head_list(removed):
    return ",".join(f"{l}.{i}" for l, i in sorted(removed))


def random_mode(tmp):
    rng = np.random.default_rng(10)
    ids = os.path.join(tmp, "ids")
    write_ids(ids, rng, [1, 9, 40])
    cases = [  # name, make-random-model args, removed (layer, index)
        ("mha, a layer losing every head", ["--d-model", "64", "--n-layers", "3", "--n-heads", "4"],
         {(0, 1), (1, 0), (1, 1), (1, 2), (1, 3), (2, 2)}),
        ("gqa, a KV head losing its query heads", ["--d-model", "64", "--n-layers", "2", "--n-heads", "4",
                                                    "--n-kv-heads", "2"], {(0, 0), (0, 1), (1, 3)}),
        ("mqa bf16", ["--d-model", "64", "--n-layers", "2", "--n-heads", "4", "--n-kv-heads", "1", "--dtype", "bf16"],
         {(0, 0), (0, 2), (1, 1)}),
        ("already pruned, f16, 3 shards", ["--d-model", "64", "--n-layers", "3", "--n-heads", "4", "--n-kv-heads", "2",
                                           "--head-layout", "4:2/0:0/3:2:r", "--dtype", "f16", "--shards", "3"],
         {(0, 1), (2, 0)}),
        ("odd map, tied, head_dim 24", ["--d-model", "96", "--n-layers", "2", "--n-heads", "6", "--n-kv-heads", "3",
                                        "--head-dim", "24", "--tied", "--head-layout", "5:3:r/2:1:r", "--seed", "5"],
         {(0, 0), (0, 3), (1, 1)}),
    ]
    for n, (label, args, removed) in enumerate(cases):
        source, small = os.path.join(tmp, f"src{n}"), os.path.join(tmp, f"small{n}")
        make_model(source, *(args if "--seed" in args else args + ["--seed", str(n + 1)]))
        before = digest(source)
        run([PRUNE, "-m", source, "--heads", head_list(removed), "-o", small])
        check_pruned(label, source, small, removed, head_list(removed), ids)
        report(digest(source) == before, f"{label}: the source is untouched")
        masked = os.path.join(tmp, f"masked{n}")
        run([PRUNE, "-m", source, "--heads", head_list(removed), "--mask-only", "-o", masked])
        check_pruned(label + ", --mask-only", source, masked, removed, head_list(removed), ids, mask_only=True)
        report(config(masked).get("head_layout") == config(source).get("head_layout"),
               f"{label}, --mask-only: config.json keeps the source's layout")

    # Pruning the pruned model again: its head list names indices in its own layers.
    source, small = os.path.join(tmp, "src1"), os.path.join(tmp, "small1")
    again = os.path.join(tmp, "again")
    run([PRUNE, "-m", small, "--heads", "1.0", "-o", again])
    # small1 layer 1 kept indices 0, 1, 2 of the source; its index 0 is the source's index 0.
    removed = {(0, 0), (0, 1), (1, 3), (1, 0)}
    same_logits("pruned twice", logits(again, ids), logits(source, ids, "--mask-heads", head_list(removed)))
    report(len(config(again)["heads_edits"]) == 2, "pruned twice: both edits recorded")

    # Heads chosen from a head table: the choice computed here.
    source = os.path.join(tmp, "ranked")
    make_model(source, "--d-model", "64", "--n-layers", "3", "--n-heads", "4", "--n-kv-heads", "2", "--seed", "9")
    stats = run([INFER, "-m", source, "--head-stats", ids]).decode().splitlines()
    fingerprint = stats[0].split()[2]
    values = rng.normal(size=12).round(3)
    values[[1, 7]] = values[2]  # ties
    values[5] = np.nan
    table = os.path.join(tmp, "heads.tsv")
    with open(table, "w") as f:
        f.write(f"# model {fingerprint}\nlayer\thead\tkv_head\tscore\n")
        for k, v in enumerate(values):
            f.write(f"{k // 4}\t{k % 4}\t{(k % 4) // 2}\t{'nan' if np.isnan(v) else f'{v:.6f}'}\n")

    def choose(count, min_per_layer=0, reverse=False):
        key = [(np.inf if np.isnan(v) else (-v if reverse else v), k // 4, k % 4) for k, v in enumerate(values)]
        left, out = [4, 4, 4], set()
        for _, l, h in sorted(key):
            if len(out) < count and left[l] > min_per_layer:
                out.add((l, h))
                left[l] -= 1
        return out

    for n, (flags, want) in enumerate([
            (["--keep", "75%"], choose(3)), (["--keep", "50%", "--min-per-layer", "3"], choose(3, 3)),
            (["--drop", "5", "--reverse"], choose(5, reverse=True)), (["--keep", "1"], choose(11)),
            (["--drop", "8", "--min-per-layer", "1"], choose(8, 1)), (["--keep", "100%"], set())]):
        if flags[:2] == ["--keep", "50%"]:
            # 50% of 12 is 6 heads to remove, but a minimum of 3 per layer allows 3: an error.
            done = subprocess.run([PRUNE, "-m", source, "--scores", table, "--by", "score", "-o",
                                   os.path.join(tmp, "nope")] + flags, capture_output=True)
            report(done.returncode == 1 and b"--min-per-layer" in done.stderr and
                   not os.path.exists(os.path.join(tmp, "nope")), f"{flags}: {done.stderr}")
            continue
        out = os.path.join(tmp, f"ranked-small{n}")
        run([PRUNE, "-m", source, "--scores", table, "--by", "score", "-o", out] + flags)
        got = sorted(config(out)["heads_edits"][-1]["removed_heads"])
        report(got == sorted(f"{l}.{h}" for l, h in want), f"--scores {flags}: removed {got}, wanted {sorted(want)}")
        if n == 2:
            check_pruned(f"--scores {flags}", source, out, want, head_list(want), ids)


def embedded_mode(tmp):
    model = os.path.join(src, "models", "kjv")
    with open(os.path.join(src, "tests", "data", "kjv-heldout.txt"), encoding="utf-8") as f:
        text = f.read().splitlines()
    ids = os.path.join(tmp, "ids")
    with open(ids, "wb") as f:
        f.write(run([TOKENIZE, "-m", os.path.join(model, "tokenizer.model")], "\n".join(text[:6]).encode() + b"\n"))
    removed = {(0, 1), (1, 0), (1, 5), (2, 2), (3, 1), (3, 6)}
    small = os.path.join(tmp, "small")
    run([PRUNE, "-m", model, "--heads", head_list(removed), "-o", small])
    check_pruned("models/kjv", model, small, removed, head_list(removed), ids)
    with open(os.path.join(model, "tokenizer.model"), "rb") as a, open(os.path.join(small, "tokenizer.model"), "rb") as b:
        report(a.read() == b.read(), "models/kjv: tokenizer.model copied")
    report(not os.path.exists(os.path.join(small, "MODEL.md")), "models/kjv: only the model's files copied")


def mean_nll(model, ids, ctx, *flags):
    """Mean NLL of infer --ppl's scored predictions, from its saved log-probabilities."""
    saved = os.path.join(os.path.dirname(ids), "logprobs")
    run([INFER, "-m", model, "-t", "1", "--ppl", "--ctx", str(ctx), "--precision", "f32", "--save-logits", saved, ids]
        + list(flags))
    tensors, _ = reference.read_safetensors(saved)
    log_probs, targets = np.asarray(tensors["log_probs"], np.float64), np.asarray(tensors["targets"])
    return -float(log_probs[np.arange(len(targets)), targets].mean())


def read_table(text):
    lines = [line.split("\t") for line in text.splitlines() if not line.startswith("#")]
    return lines[0], {(int(r[0]), int(r[1])): r for r in lines[1:]}


def check_scores(label, model, tokens, ctx, heads=None):
    """--score's ablation against infer --ppl --mask-heads, its other columns against infer --head-stats."""
    tmp = os.path.dirname(model)
    ids = os.path.join(tmp, "calibration")
    with open(ids, "w") as f:
        f.write(" ".join(map(str, tokens)) + "\n")
    columns, rows = read_table(run([PRUNE, "-m", model, "-t", "1", "--score", "--ctx", str(ctx), "--precision", "f32",
                                    ids]).decode())
    report(columns[:5] == ["layer", "head", "kv_head", "ablation", "retrieval"], f"{label}: columns {columns}")
    base = mean_nll(model, ids, ctx)
    worst = 0.0
    for l, (q, _, _) in enumerate(layout(model)):
        for i, original in enumerate(q):
            if heads is not None and (l, i) not in heads:
                continue
            want = mean_nll(model, ids, ctx, "--mask-heads", f"{l}.{i}") - base
            got = float(rows[(l, original)][3])
            worst = max(worst, abs(got - want))
            if abs(got - want) > 2e-6 + 1e-4 * abs(want):
                report(False, f"{label}: ablation of {l}.{i} (original id {original}): {got} vs brute force {want:.7f}")
    print(f"ok: {label}: ablation against infer --ppl --mask-heads, max difference {worst:.2g}")
    windows = os.path.join(tmp, "windows")
    with open(windows, "w") as f:  # the windows of infer --ppl, BOS first
        for w in range(len(tokens) // ctx):
            f.write(" ".join(map(str, [1] + tokens[w * ctx + 1:(w + 1) * ctx])) + "\n")
    stats_columns, stats = read_table(run([INFER, "-m", model, "--head-stats", "--precision", "f32", windows]).decode())
    report(columns[5:] == stats_columns[3:] and all(rows[k][:3] + rows[k][5:] == stats[k] for k in stats)
           and len(rows) == len(stats), f"{label}: the head-statistics columns are infer --head-stats'")


def score_mode(tmp):
    rng = np.random.default_rng(4)
    for n, (label, args) in enumerate([
            ("gqa", ["--d-model", "64", "--n-layers", "3", "--n-heads", "4", "--n-kv-heads", "2"]),
            ("already pruned", ["--d-model", "64", "--n-layers", "3", "--n-heads", "4", "--n-kv-heads", "2",
                                "--head-layout", "3:2:r/0:0/2:1:r", "--seed", "3"])]):
        os.mkdir(os.path.join(tmp, str(n)))
        model = os.path.join(tmp, str(n), "m")
        make_model(model, *args)
        check_scores(label, model, [1] + [int(x) for x in rng.integers(3, 200, 99)], 24)
    model = os.path.join(src, "models", "kjv")
    with open(os.path.join(src, "tests", "data", "kjv-heldout.txt"), encoding="utf-8") as f:
        text = f.read()[:2500]
    tokens = [int(x) for x in run([TOKENIZE, "-m", os.path.join(model, "tokenizer.model"), "--whole"], text.encode()).split()]
    os.mkdir(os.path.join(tmp, "kjv"))
    copy = os.path.join(tmp, "kjv", "m")  # a copy, so the brute force's files land in tmp
    shutil.copytree(model, copy)
    check_scores("models/kjv", copy, tokens, 128, heads={(0, 4), (0, 5), (1, 2), (2, 0), (3, 2), (3, 3), (3, 4), (3, 7)})


def retrieval_column(label, model, ids, *flags, ctx=128, threads=1):
    """{(layer, head): retrieval} of prune-heads --score, checked to lie in [0, 1]."""
    columns, rows = read_table(run([PRUNE, "-m", model, "-t", str(threads), "--score", "--ctx", str(ctx), ids] + list(flags)).decode())
    report(columns[3:5] == ["ablation", "retrieval"], f"{label}: columns {columns}")
    scores = {k: float(r[4]) for k, r in rows.items()}
    report(all(0 <= v <= 1 for v in scores.values()), f"{label}: retrieval in [0, 1]: {sorted(scores.values())}")
    return scores


def retrieval_mode(tmp):
    """The retrieval column: seeded, and on models/kjv led by its induction heads (3.2, 3.3, 3.4)."""
    model = os.path.join(src, "models", "kjv")
    with open(os.path.join(src, "tests", "data", "kjv-heldout.txt"), encoding="utf-8") as f:
        text = f.read()[:2500]
    ids = os.path.join(tmp, "calibration")
    with open(ids, "wb") as f:
        f.write(run([TOKENIZE, "-m", os.path.join(model, "tokenizer.model"), "--whole"], text.encode()))
    first = retrieval_column("models/kjv", model, ids)
    again = retrieval_column("models/kjv, again", model, ids, "--seed", "0")
    other = retrieval_column("models/kjv, --seed 7", model, ids, "--seed", "7")
    report(first == again, "the default seed is 0, and the same seed gives the same column")
    report(first != other, "another seed builds other prompts: another column")
    for label, scores in (("seed 0", first), ("seed 7", other)):
        top = sorted(scores, key=lambda k: (-scores[k], k))[:3]
        rest = max(v for k, v in scores.items() if k not in top)
        print(f"{label}: top 3 {[(k, scores[k]) for k in top]}, the best of the rest {rest}")
        report(all(l == 3 for l, _ in top), f"{label}: the top 3 retrieval heads are in layer 3 (induction): {top}")
        report(min(scores[k] for k in top) > 2 * rest, f"{label}: the top 3 stand out: {top}, the rest <= {rest}")
    # A random model: every head in [0, 1], and the same column at any thread count.
    rng = np.random.default_rng(6)
    small = os.path.join(tmp, "random")
    make_model(small, "--d-model", "64", "--n-layers", "2", "--n-heads", "4", "--n-kv-heads", "2")
    write_ids(os.path.join(tmp, "random-ids"), rng, [100])
    one = retrieval_column("random gqa", small, os.path.join(tmp, "random-ids"), ctx=24)
    two = retrieval_column("random gqa, 2 threads", small, os.path.join(tmp, "random-ids"), ctx=24, threads=2)
    report(one == two, "random gqa: the same column on 1 and 2 threads")


def gqa_mode(tmp):
    """--to-gqa G: the pooled weights against numpy, the logits against scripts/reference.py, G == KV heads exact."""
    rng = np.random.default_rng(8)
    ids = os.path.join(tmp, "ids")
    write_ids(ids, rng, [1, 9, 40])
    eps = {"f32": 2.0 ** -24, "bf16": 2.0 ** -8, "f16": 2.0 ** -11}  # half a unit in the last place, relative
    cases = [  # label, make-random-model args, dtype, G
        ("mha to 2", ["--d-model", "64", "--n-layers", "2", "--n-heads", "4"], "f32", 2),
        ("mha to mqa", ["--d-model", "64", "--n-layers", "2", "--n-heads", "4"], "f32", 1),
        ("gqa 4:2 to 1, bf16", ["--d-model", "64", "--n-layers", "2", "--n-heads", "4", "--n-kv-heads", "2"], "bf16", 1),
        ("mha 6 to 3, f16, 2 shards, head_dim 24", ["--d-model", "96", "--n-layers", "2", "--n-heads", "6",
                                                   "--head-dim", "24", "--shards", "2"], "f16", 3),
    ]
    for n, (label, args, dtype, groups) in enumerate(cases):
        source, gqa = os.path.join(tmp, f"src{n}"), os.path.join(tmp, f"gqa{n}")
        make_model(source, *args, "--dtype", dtype, "--seed", str(n + 1))
        before = digest(source)
        run([PRUNE, "-m", source, "--to-gqa", str(groups), "-o", gqa])
        report(digest(source) == before, f"{label}: the source is untouched")
        c_src, c_out = config(source), config(gqa)
        edit = c_out.get("heads_edits", [{}])[-1]
        report(c_out["num_key_value_heads"] == groups and "head_layout" not in c_out and
               edit.get("method") == "mean-pool" and edit.get("kv_heads") == groups and
               edit.get("selection") == f"--to-gqa {groups}",
               f"{label}: a stock config with num_key_value_heads {groups} and the edit recorded: {edit}")
        report({k: v for k, v in c_out.items() if k not in ("num_key_value_heads", "heads_edits")} ==
               {k: v for k, v in c_src.items() if k != "num_key_value_heads"}, f"{label}: the rest of config.json kept")
        report(sorted(weight_headers(source)) == sorted(weight_headers(gqa)), f"{label}: the same weight files")
        src_w, out_w = reference.read_weights(source), reference.read_weights(gqa)
        hd = reference.read_config(source).head_dim
        worst = 0.0
        for name, t in src_w.items():
            got = np.asarray(out_w.get(name), np.float64)
            pooled = name.endswith(("k_proj.weight", "v_proj.weight"))
            if pooled:
                kv = t.shape[0] // hd
                want = np.asarray(t, np.float64).reshape(groups, kv // groups, hd, -1).mean(axis=1).reshape(groups * hd, -1)
                ok = got.shape == want.shape and bool(np.all(np.abs(got - want) <= 1.01 * eps[dtype] * np.abs(want)))
                worst = max(worst, float((np.abs(got - want) / np.maximum(np.abs(want), 1e-30)).max()))
            else:
                ok = got.shape == t.shape and np.array_equal(got, np.asarray(t, np.float64))
            if not ok:
                report(False, f"{label}: {name} is not the {'group mean' if pooled else 'source'}'s")
        print(f"ok: {label}: k_proj, v_proj the group means (largest relative error {worst:.2g}), the rest the source's")
        ours = logits(gqa, ids)
        model = reference.load_model(gqa)
        with open(ids) as f:
            want = [reference.forward(model, [int(x) for x in line.split()]).logits for line in f.read().splitlines()]
        scale = max(float(np.abs(w).max()) for w in want)
        error = max(float(np.abs(a - b).max()) for a, b in zip(ours, want))
        report(len(ours) == len(want) and error <= 1e-4 * scale,
               f"{label}: infer against scripts/reference.py on the GQA model: {error:.3g} (logit scale {scale:.3g})")
        print(f"ok: {label}: logits within {error:.3g} of reference.py's (scale {scale:.3g})")
        # G equal to the KV heads: every weight copied, the source's logits bit for bit.
        same = os.path.join(tmp, f"same{n}")
        kv_heads = c_src.get("num_key_value_heads", c_src["num_attention_heads"])
        run([PRUNE, "-m", source, "--to-gqa", str(kv_heads), "-o", same])
        report(all(np.array_equal(a, b) for a, b in zip(logits(same, ids), logits(source, ids))),
               f"{label}: --to-gqa {kv_heads} (the KV heads it has) gives the source's logits bit for bit")

    source = os.path.join(tmp, "src0")
    pruned = os.path.join(tmp, "pruned")
    run([PRUNE, "-m", source, "--heads", "0.1", "-o", pruned])
    cases = [  # status, part of the message, arguments
        (1, "4 KV heads per layer do not split into 3 equal groups", ["-m", source, "--to-gqa", "3"]),
        (1, "the model has a head_layout", ["-m", pruned, "--to-gqa", "1"]),
        (2, "--to-gqa: G must be at least 1, not 0", ["-m", source, "--to-gqa", "0"]),
        (2, "it goes with -m, -o, --force and --group-by only", ["-m", source, "--to-gqa", "2", "--heads", "0.1"]),
        (2, "it goes with -m, -o, --force and --group-by only", ["-m", source, "--to-gqa", "2", "--mask-only"]),
        (2, "removes no heads", ["-m", source, "--to-gqa", "2", "--score"]),
    ]
    out = os.path.join(tmp, "out")
    for status, part, args in cases:
        done = subprocess.run([PRUNE] + args + ["-o", out], capture_output=True)
        lines = done.stderr.decode(errors="replace").splitlines()
        ok = done.returncode == status and lines and lines[0].startswith("prune-heads: ") and part in lines[0]
        report(ok and not os.path.exists(out),
               f"{' '.join(args[2:])} -> {done.returncode}, {lines[:2]} (wanted {status}, '{part}')")
    left = [n for n in os.listdir(tmp) if ".tmp." in n]
    report(not left, f"nothing left behind: {left}")


def pool_rows(w, groups, hd):
    """k_proj or v_proj [n_kv·hd, d] with each group's rows averaged, in group order (float64)."""
    w = np.asarray(w, np.float64).reshape(-1, hd, w.shape[1])
    return np.concatenate([w[list(g)].mean(axis=0) for g in groups]).reshape(len(groups) * hd, -1)


def similarity_mode(tmp):
    """--to-gqa G --group-by similarity: partitions, the layout, the weights, the logits, identical pairs grouped."""
    rng = np.random.default_rng(11)
    ids, calib = os.path.join(tmp, "ids"), os.path.join(tmp, "calib")
    write_ids(ids, rng, [1, 9, 40])
    write_ids(calib, rng, [64, 64, 30])
    args = ["--d-model", "64", "--n-layers", "2", "--n-heads", "8"]
    source = os.path.join(tmp, "src")
    make_model(source, *args, "--seed", "5")
    hd = reference.read_config(source).head_dim

    def to_gqa(model, groups, out, *extra):
        run([PRUNE, "-m", model, "--to-gqa", str(groups), "-o", out, "--force"] + list(extra))
        return config(out)

    # G equal to the KV heads: each head its own group, every weight copied, the logits bit for bit.
    same = os.path.join(tmp, "same")
    c = to_gqa(source, 8, same, "--group-by", "similarity", calib)
    edit = c["heads_edits"][-1]
    report("head_layout" not in c and edit.get("group_by") == "similarity" and
           edit.get("kv_groups") == [[[h] for h in range(8)]] * 2, f"--to-gqa 8: each head alone, stock config: {edit}")
    report(all(np.array_equal(a, b) for a, b in zip(logits(same, ids), logits(source, ids))),
           "--to-gqa 8 --group-by similarity gives the source's logits bit for bit")

    for groups in (4, 2):
        out = os.path.join(tmp, f"sim{groups}")
        c = to_gqa(source, groups, out, "--group-by", "similarity", "--ctx", "48", calib)
        edit = c["heads_edits"][-1]
        kv_groups = edit.get("kv_groups", [])
        size = 8 // groups
        partition = len(kv_groups) == 2 and all(
            len(layer) == groups and all(len(g) == size for g in layer) and
            sorted(h for g in layer for h in g) == list(range(8)) for layer in kv_groups)
        report(partition and edit.get("method") == "mean-pool" and edit.get("kv_heads") == groups and
               edit.get("selection") == f"--to-gqa {groups} --group-by similarity" and c["num_key_value_heads"] == groups,
               f"--to-gqa {groups}: a partition into {groups} groups of {size} recorded: {kv_groups}")
        want_layout = [(list(range(8)), list(range(groups)),
                        [next(i for i, g in enumerate(layer) if h in g) for h in range(8)]) for layer in kv_groups]
        contiguous = all(layer == [list(range(i * size, (i + 1) * size)) for i in range(groups)] for layer in kv_groups)
        report(layout(out) == want_layout and (("head_layout" in c) != contiguous),
               f"--to-gqa {groups}: each query head served by its group's KV head: {layout(out)}")
        src_w, out_w = reference.read_weights(source), reference.read_weights(out)
        for name, t in src_w.items():
            got = np.asarray(out_w[name], np.float64)
            if name.endswith(("k_proj.weight", "v_proj.weight")):
                want = pool_rows(t, kv_groups[int(name.split(".")[2])], hd)
                ok = got.shape == want.shape and bool(np.all(np.abs(got - want) <= 1.01 * 2.0 ** -24 * np.abs(want)))
            else:
                ok = np.array_equal(got, np.asarray(t, np.float64))
            report(ok, f"--to-gqa {groups}: {name} is the {'group mean' if 'k_proj' in name or 'v_proj' in name else 'source'}'s")
        ours = logits(out, ids)
        model = reference.load_model(out)
        with open(ids) as f:
            want = [reference.forward(model, [int(x) for x in line.split()]).logits for line in f.read().splitlines()]
        scale = max(float(np.abs(w).max()) for w in want)
        error = max(float(np.abs(a - b).max()) for a, b in zip(ours, want))
        report(error <= 1e-4 * scale, f"--to-gqa {groups}: infer against reference.py: {error:.3g} (scale {scale:.3g})")

    # KV heads identical in pairs, not contiguous ones: the pairs are the groups, and pooling changes nothing.
    pairs = [[[0, 5], [1, 3], [2, 7], [4, 6]], [[0, 6], [1, 2], [3, 4], [5, 7]]]
    twins = os.path.join(tmp, "twins")
    shutil.copytree(source, twins)
    weights = {name: np.array(t) for name, t in reference.read_weights(source).items()}
    for l, layer in enumerate(pairs):
        for which in ("k", "v"):
            w = weights[f"model.layers.{l}.self_attn.{which}_proj.weight"]
            for a, b in layer:
                w[b * hd:(b + 1) * hd] = w[a * hd:(a + 1) * hd]
    reference.write_safetensors(os.path.join(twins, "model.safetensors"), weights)
    paired, blocks = os.path.join(tmp, "paired"), os.path.join(tmp, "blocks")
    c = to_gqa(twins, 4, paired, "--group-by", "similarity", calib)
    report(c["heads_edits"][-1].get("kv_groups") == pairs,
           f"identical pairs grouped together: {c['heads_edits'][-1].get('kv_groups')}")
    same_logits("identical pairs pooled by similarity against the source", logits(paired, ids), logits(twins, ids))
    to_gqa(twins, 4, blocks)
    want, got = logits(twins, ids), logits(blocks, ids)
    scale = max(float(np.abs(w).max()) for w in want)
    error = max(float(np.abs(a - b).max()) for a, b in zip(got, want))
    report(error > 1e-2 * scale, f"contiguous pooling of the same model changes its logits: {error:.3g} (scale {scale:.3g})")

    # Bad input: one stderr line, the status, nothing written.
    empty, one, far = (os.path.join(tmp, n) for n in ("empty", "one", "far"))
    pruned = os.path.join(tmp, "pruned")
    run([PRUNE, "-m", source, "--heads", "0.1", "-o", pruned])
    for path, text in ((empty, ""), (one, "1\n"), (far, "1 5 900\n")):
        with open(path, "w") as f:
            f.write(text)
    cases = [  # status, part of the message, arguments
        (1, "no calibration tokens: the input is empty", ["--to-gqa", "4", "--group-by", "similarity", empty]),
        (1, "grouping heads needs at least 2", ["--to-gqa", "4", "--group-by", "similarity", one]),
        (1, "token id 900 is out of range", ["--to-gqa", "4", "--group-by", "similarity", far]),
        (1, "8 KV heads per layer do not split into 3 equal groups", ["--to-gqa", "3", "--group-by", "similarity", calib]),
        (1, "the model has a head_layout", ["-m", pruned, "--to-gqa", "2", "--group-by", "similarity", calib]),
        (2, "--group-by", ["--to-gqa", "4", "--group-by", "closeness", calib]),
        (2, "--group-by goes with --to-gqa", ["--heads", "0.1", "--group-by", "similarity"]),
        (2, "input files and --ctx go with --group-by similarity", ["--to-gqa", "4", calib]),
        (2, "input files and --ctx go with --group-by similarity", ["--to-gqa", "4", "--group-by", "contiguous",
                                                                    "--ctx", "8"]),
    ]
    target = os.path.join(tmp, "bad")
    for status, part, extra in cases:
        cmd = [PRUNE] + ([] if "-m" in extra else ["-m", source]) + extra + ["-o", target]
        done = subprocess.run(cmd, capture_output=True)
        lines = done.stderr.decode(errors="replace").splitlines()
        ok = (done.returncode == status and lines and lines[0].startswith("prune-heads: ") and part in lines[0] and
              (status == 2 or len(lines) == 1))  # a usage error adds the usage line
        report(ok and not os.path.exists(target), f"{' '.join(extra)} -> {done.returncode}, {lines[:2]} (wanted {status}, '{part}')")
    left = [n for n in os.listdir(tmp) if ".tmp." in n]
    report(not left, f"nothing left behind: {left}")


def errors_mode(tmp):
    source = os.path.join(tmp, "m")
    make_model(source, "--d-model", "64", "--n-layers", "2", "--n-heads", "4", "--n-kv-heads", "2")
    other = os.path.join(tmp, "other")
    make_model(other, "--d-model", "64", "--n-layers", "2", "--n-heads", "4", "--seed", "3")
    ids = os.path.join(tmp, "ids")
    write_ids(ids, np.random.default_rng(2), [12])
    table = os.path.join(tmp, "heads.tsv")
    with open(table, "wb") as f:
        f.write(run([INFER, "-m", source, "--head-stats", ids]))
    other_table = os.path.join(tmp, "other.tsv")
    with open(other_table, "wb") as f:
        f.write(run([INFER, "-m", other, "--head-stats", ids]))
    with open(os.path.join(tmp, "few-pieces"), "w") as f:  # two windows of 8, 11 distinct pieces
        f.write(" ".join(map(str, [1] + list(range(3, 14)) + [3, 4, 5, 6])) + "\n")
    existing = os.path.join(tmp, "existing")
    os.mkdir(existing)
    empty = os.path.join(tmp, "empty")
    open(empty, "w").close()
    out = os.path.join(tmp, "out")
    cases = [  # status, part of the message, arguments
        (2, "--heads LIST or --scores FILE", ["-o", out]),
        (2, "--heads LIST or --scores FILE", ["--heads", "0.1", "--scores", table, "--by", "sink", "--keep", "50%", "-o", out]),
        (2, "--scores needs --by", ["--scores", table, "--keep", "50%", "-o", out]),
        (2, "one of --keep P% and --drop K", ["--scores", table, "--by", "sink", "-o", out]),
        (2, "go with --scores", ["--heads", "0.1", "--keep", "50%", "-o", out]),
        (2, "needs -o DIR", ["--heads", "0.1"]),
        (1, "head 0.4 does not exist (layer 0 has 4 heads)", ["--heads", "0.4", "-o", out]),
        (1, "head 2.0 does not exist", ["--heads", "2.0", "-o", out]),
        (2, "bad head '1x'", ["--heads", "1x", "-o", out]),
        (1, "is from model", ["--scores", other_table, "--by", "sink", "--keep", "50%", "-o", out]),
        (1, "no column 'ablation' (it has entropy, sink, prev_token, induction, echo)",
         ["--scores", table, "--by", "ablation", "--keep", "50%", "-o", out]),
        (2, "--keep: '0%' is not a share", ["--scores", table, "--by", "sink", "--keep", "0%", "-o", out]),
        (2, "--keep: '101%' is not a share", ["--scores", table, "--by", "sink", "--keep", "101%", "-o", out]),
        (1, "--keep: '9' is not a number of heads from 1 to 8", ["--scores", table, "--by", "sink", "--keep", "9", "-o", out]),
        (2, "--keep: 'x' is not a number of heads (N >= 1)", ["--scores", table, "--by", "sink", "--keep", "x", "-o", out]),
        (1, "--drop 9: the model has 8 heads", ["--scores", table, "--by", "sink", "--drop", "9", "-o", out]),
        (1, "already exists (--force replaces it)", ["--heads", "0.1", "-o", existing]),
        (1, "is the source model", ["--heads", "0.1", "-o", source, "--force"]),
        (2, "removes no heads", ["--score", "--heads", "0.1", ids]),
        (2, "input files, --ctx and --seed go with --score", ["--heads", "0.1", "-o", out, ids]),
        (2, "input files, --ctx and --seed go with --score", ["--heads", "0.1", "-o", out, "--seed", "3"]),
        (1, "the calibration tokens hold 11 distinct pieces; its needle needs 20",
         ["--score", "--ctx", "8", os.path.join(tmp, "few-pieces")]),
        (1, "no calibration tokens: the input is empty", ["--score", empty]),
        (1, "--ctx: 12 tokens are fewer than 2 × ctx (8)", ["--score", "--ctx", "8", ids]),
        (1, "cannot read the model's config.json", ["-m", existing, "--heads", "0.1", "-o", out]),
    ]
    for status, part, args in cases:
        cmd = [PRUNE] + (["-m", source] if "-m" not in args else []) + args
        done = subprocess.run(cmd, capture_output=True)
        lines = done.stderr.decode(errors="replace").splitlines()
        ok = done.returncode == status and lines and lines[0].startswith("prune-heads: ") and part in lines[0]
        ok = ok and (len(lines) == 1 or status == 2) and not os.path.exists(out)
        report(ok, f"{' '.join(args)} -> status {done.returncode}, stderr {lines[:3]} (wanted {status}, '{part}')")
    left = [n for n in os.listdir(tmp) if ".tmp." in n or ".old." in n]
    report(not left and os.listdir(existing) == [], f"nothing left behind: {left}, {os.listdir(existing)}")

    # --force replaces a model directory, in full.
    run([PRUNE, "-m", source, "--heads", "0.1", "-o", out])
    run([PRUNE, "-m", source, "--heads", "1.2,1.3", "-o", out, "--force"])
    report(config(out)["heads_edits"][-1]["removed_heads"] == ["1.2", "1.3"], "--force replaced the model")
    left = [n for n in os.listdir(tmp) if ".tmp." in n or ".old." in n]
    report(not left, f"--force: nothing left beside it: {left}")

    # A write that fails (a file size limit stands for a full disk): one line, exit 1, nothing left.
    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    done = subprocess.run([PRUNE, "-m", source, "--heads", "0.1", "-o", os.path.join(tmp, "full")], capture_output=True,
                          preexec_fn=limit_file_size)
    lines = done.stderr.decode(errors="replace").splitlines()
    left = [n for n in os.listdir(tmp) if n.startswith("full")]
    report(done.returncode == 1 and len(lines) == 1 and "File too large" in lines[0] and not left,
           f"a failed write: status {done.returncode}, {lines}, left {left}")

    # SIGINT while the weights are written: it dies of the signal and leaves nothing behind.
    big = os.path.join(tmp, "big")
    make_model(big, "--d-model", "512", "--n-layers", "8", "--n-heads", "8", "--vocab", "4000")
    interrupted = 0
    for attempt in range(5):
        target = os.path.join(tmp, "big-small")
        job = subprocess.Popen([PRUNE, "-m", big, "--heads", "0.1", "-o", target], stderr=subprocess.PIPE)
        while job.poll() is None and not any(n.startswith("big-small.tmp.") for n in os.listdir(tmp)):
            time.sleep(0.001)
        job.send_signal(signal.SIGINT)
        job.communicate()
        left = [n for n in os.listdir(tmp) if n.startswith("big-small")]
        if job.returncode == -signal.SIGINT:
            interrupted += 1
            report(not left, f"SIGINT: left behind {left}")
        else:  # it finished first: a whole model
            report(job.returncode == 0 and left == ["big-small"], f"SIGINT after the end: {job.returncode}, {left}")
            shutil.rmtree(target, ignore_errors=True)
    report(interrupted > 0, "SIGINT: no run was interrupted while writing")

    # A target that cannot be written: an error, nothing left (not as root, who may write anywhere).
    if os.geteuid() != 0:
        locked = os.path.join(tmp, "locked")
        os.mkdir(locked, 0o555)
        done = subprocess.run([PRUNE, "-m", source, "--heads", "0.1", "-o", os.path.join(locked, "m")], capture_output=True)
        report(done.returncode == 1 and os.listdir(locked) == [], f"read-only parent: {done.stderr}")


with tempfile.TemporaryDirectory(prefix="heads-prune-test-") as tmp:
    {"random": random_mode, "errors": errors_mode, "embedded": embedded_mode, "score": score_mode,
     "retrieval": retrieval_mode, "gqa": gqa_mode, "similarity": similarity_mode}[mode](tmp)
sys.exit(report.status())
