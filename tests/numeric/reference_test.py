#!/usr/bin/python3
"""Checks of scripts/reference.py, the project's numpy oracle, and of
scripts/make-random-model. Run by ctest (tests/CMakeLists.txt):

  reference_test.py self            self-consistency on random models (always runs)
  reference_test.py stories260k     against the stored outputs of llama.cpp and an
                                    outside numpy oracle in ../shared/models/stories260K
  reference_test.py stories260k-ppl --tokenize PROG
                                    KJV Genesis perplexity against llama-perplexity's
                                    (tokenized by the project's tokenize --whole)
  reference_test.py oracle          against the outside oracle reference_llama.py on
                                    random stock models

The shared models are found at <repo>/../shared/models, or $HEADS_SHARED_MODELS;
when absent the test says so and exits 77 (ctest: skipped).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
SCRIPTS = os.path.join(ROOT, "scripts")
sys.path.insert(0, SCRIPTS)
import reference as ref  # noqa: E402

MAKE = os.path.join(SCRIPTS, "make-random-model")
PYTHON = sys.executable
SKIP = 77
failures = []


def check(name, ok, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
    if not ok:
        failures.append(name)


def max_diff(a, b):
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


def make(tmp, name, *args, seed=0):
    path = os.path.join(tmp, name)
    subprocess.run([MAKE, "-o", path, "--seed", str(seed)] + list(args), check=True)
    return path


def derive(src, dst, edit_config=None, edit_tensors=None):
    """A copy of model src with its config and tensors edited (single f32 file)."""
    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(src, "config.json")) as f:
        config = json.load(f)
    tensors = {k: np.array(v, dtype=np.float32) for k, v in ref.read_weights(src).items()}
    if edit_config:
        edit_config(config)
    if edit_tensors:
        edit_tensors(tensors)
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(config, f)
    ref.write_safetensors(os.path.join(dst, "model.safetensors"), tensors)
    return dst


def shared_models():
    path = os.environ.get("HEADS_SHARED_MODELS") or os.path.join(ROOT, "..", "shared", "models")
    return os.path.realpath(path)


# ----------------------------------------------------------------------------
# self-consistency


SHAPES = {  # name: make-random-model arguments
    "mha": ["--d-model", "64", "--n-heads", "4", "--n-layers", "2"],
    "gqa-bf16-tied": ["--d-model", "96", "--n-heads", "6", "--n-kv-heads", "2", "--tied", "--dtype", "bf16"],
    "mqa-f16-hd16-sharded": ["--d-model", "64", "--n-heads", "8", "--n-kv-heads", "1", "--head-dim", "16",
                             "--dtype", "f16", "--n-layers", "3", "--shards", "3"],
    "mistral-window": ["--arch", "mistral", "--sliding-window", "5", "--n-kv-heads", "2"],
    "pruned": ["--n-layers", "4", "--n-heads", "4", "--n-kv-heads", "2", "--head-layout", "4:2/0:0/3:2:r/1:1:r"],
    "llama3-rope": ["--rope-scaling", "llama3:8:1:4:64", "--head-dim", "32", "--d-model", "64", "--n-heads", "4"],
    "dynamic-rope": ["--rope-scaling", "dynamic:2", "--max-pos", "16"],
    "linear-rope": ["--rope-scaling", "linear:4"],
}


def test_kv_continuation(tmp):
    rng = np.random.default_rng(1)
    for name, args in SHAPES.items():
        if name == "dynamic-rope":
            continue  # its base depends on the call's length (HF semantics): checked below within max_pos
        model = ref.load_model(make(tmp, name, *args, seed=len(name)))
        ids = [1] + list(rng.integers(3, model.config.vocab_size, 22))
        full = ref.forward(model, ids, kv=True)
        a = ref.forward(model, ids[:9], kv=True)
        b = ref.forward(model, ids[9:10], past=a.kv, kv=True)
        c = ref.forward(model, ids[10:], past=b.kv, kv=True)
        logits = np.concatenate([a.logits, b.logits, c.logits])
        kv_diff = max(max(max_diff(x.k, y.k), max_diff(x.v, y.v)) for x, y in zip(full.kv, c.kv) if x.k.size)
        same_pos = all(np.array_equal(x.pos, y.pos) for x, y in zip(full.kv, c.kv))
        check(f"kv continuation {name}", max_diff(logits, full.logits) < 1e-10 and kv_diff < 1e-12 and same_pos,
              f"logits {max_diff(logits, full.logits):.1e}, kv {kv_diff:.1e}")
    model = ref.load_model(os.path.join(tmp, "dynamic-rope"))
    ids = list(rng.integers(3, 256, 16))  # max position 15 < max_pos 16: no rescaling
    full = ref.forward(model, ids)
    a = ref.forward(model, ids[:7], kv=True)
    b = ref.forward(model, ids[7:], past=a.kv)
    check("kv continuation dynamic-rope within max_pos", max_diff(np.concatenate([a.logits, b.logits]), full.logits) < 1e-10)


def test_ragged_cache(tmp):
    """Unused slots (-1) are invisible; synthetic slots (< -1) are always visible."""
    model = ref.load_model(os.path.join(tmp, "mha"))
    ids = [1, 40, 41, 42, 43, 44]
    a = ref.forward(model, ids[:4], kv=True)
    padded = []
    for layer in a.kv:  # insert an unused slot with junk in the middle of every head
        k = np.concatenate([layer.k[:, :2], np.full_like(layer.k[:, :1], 7.0), layer.k[:, 2:]], axis=1)
        v = np.concatenate([layer.v[:, :2], np.full_like(layer.v[:, :1], -3.0), layer.v[:, 2:]], axis=1)
        pos = np.concatenate([layer.pos[:, :2], np.full_like(layer.pos[:, :1], -1), layer.pos[:, 2:]], axis=1)
        padded.append(ref.KvLayer(k, v, pos))
    plain = ref.forward(model, ids[4:], past=a.kv)
    holed = ref.forward(model, ids[4:], past=padded)
    check("unused slots are ignored", max_diff(plain.logits, holed.logits) < 1e-12)
    for layer in padded:
        layer.pos[:, 2] = -2
    synthetic = ref.forward(model, ids[4:], past=padded, attention=[0])
    check("synthetic slots are attended", synthetic.attention[0][:, :, 2].min() > 0
          and max_diff(plain.logits, synthetic.logits) > 1e-3)


def test_received(tmp):
    """Attention received per slot = column sums of the attention, grouped by KV head."""
    model = ref.load_model(os.path.join(tmp, "pruned"))
    a = ref.forward(model, [1, 5, 9, 13, 17], kv=True)
    out = ref.forward(model, [5, 9, 13, 17, 21, 25, 29], past=a.kv, attention=range(4), received=3,
                      mask_heads=[(0, 1)])
    ok = True
    for l, layer in enumerate(model.layers):
        of = np.asarray(layer.heads.kv_head_of)
        probs = out.attention[l]  # [n_heads_l, 7, 12]
        for g in range(layer.heads.n_kv_heads):
            ok &= max_diff(out.received[l][g], probs[of == g].sum(axis=(0, 1))) < 1e-12
            ok &= max_diff(out.received_recent[l][g], probs[of == g, -3:].sum(axis=(0, 1))) < 1e-12
        ok &= out.received[l].shape == (layer.heads.n_kv_heads, 12)
    check("received attention per slot and KV head", ok and out.received[0].sum() > 0)


def test_head_layout(tmp):
    stock = os.path.join(tmp, "gqa-bf16-tied")  # 6 query heads, 2 KV heads, head_dim 16
    listed = derive(stock, os.path.join(tmp, "listed"),
                    lambda c: c.update(head_layout={"layers": [{"query_heads": list(range(6)), "kv_heads": [0, 1],
                                                                "kv_head_of": [0, 0, 0, 1, 1, 1]}] * 2}))
    ids = [1, 9, 33, 200, 7, 7, 91]
    base = ref.forward(ref.load_model(stock), ids).logits
    check("head_layout listing every head equals the stock model",
          max_diff(ref.forward(ref.load_model(listed), ids).logits, base) == 0)

    # The same heads stored in another order (query heads and KV heads
    # permuted, kv_head_of remapped) compute the same function.
    q_perm, kv_perm, hd = [4, 0, 5, 2, 1, 3], [1, 0], 16

    def permute(t):
        for l in range(2):
            p = f"model.layers.{l}.self_attn."
            q_rows = np.concatenate([np.arange(h * hd, (h + 1) * hd) for h in q_perm])
            kv_rows = np.concatenate([np.arange(g * hd, (g + 1) * hd) for g in kv_perm])
            t[p + "q_proj.weight"] = t[p + "q_proj.weight"][q_rows]
            t[p + "o_proj.weight"] = t[p + "o_proj.weight"][:, q_rows]
            t[p + "k_proj.weight"] = t[p + "k_proj.weight"][kv_rows]
            t[p + "v_proj.weight"] = t[p + "v_proj.weight"][kv_rows]

    layer = {"query_heads": q_perm, "kv_heads": kv_perm,
             "kv_head_of": [kv_perm.index(h // 3) for h in q_perm]}
    permuted = derive(stock, os.path.join(tmp, "permuted"), lambda c: c.update(head_layout={"layers": [layer] * 2}),
                      permute)
    check("permuted head layout equals the stock model",
          max_diff(ref.forward(ref.load_model(permuted), ids).logits, base) < 1e-12)

    # A layer without heads: the residual passes through, as with a zero o_proj.
    src = os.path.join(tmp, "mha")
    zero_o = derive(src, os.path.join(tmp, "zero-o"),
                    edit_tensors=lambda t: t["model.layers.1.self_attn.o_proj.weight"].fill(0))

    def drop(t):
        for x in "qkvo":
            del t[f"model.layers.1.self_attn.{x}_proj.weight"]

    no_heads = derive(src, os.path.join(tmp, "no-heads"), lambda c: c.update(head_layout={"layers": [
        {"query_heads": [0, 1, 2, 3], "kv_heads": [0, 1, 2, 3], "kv_head_of": [0, 1, 2, 3]},
        {"query_heads": [], "kv_heads": [], "kv_head_of": []}]}), drop)
    out = ref.forward(ref.load_model(no_heads), ids, kv=True, attention=[1])
    check("zero-head layer equals a zero o_proj",
          max_diff(out.logits, ref.forward(ref.load_model(zero_o), ids).logits) < 1e-12
          and out.kv[1].k.shape == (0, len(ids), 16) and out.attention[1].shape == (0, len(ids), len(ids)))


def test_mask(tmp):
    model = ref.load_model(os.path.join(tmp, "pruned"))  # layer 2 has 3 heads, randomly mapped
    ids = [1, 5, 200, 31, 5, 200, 31, 77]
    masked = ref.forward(model, ids, mask_heads=[(2, 1), (0, 3)]).logits
    hd = model.config.head_dim
    for l, h in ((2, 1), (0, 3)):
        model.layers[l].wo = model.layers[l].wo.copy()
        model.layers[l].wo[:, h * hd:(h + 1) * hd] = 0
    zeroed = ref.forward(model, ids).logits
    check("masking a head equals zeroing its o_proj input columns", max_diff(masked, zeroed) < 1e-12)
    check("masking a head changes the logits", max_diff(masked, ref.forward(ref.load_model(
        os.path.join(tmp, "pruned")), ids).logits) > 1e-3)
    try:
        ref.forward(model, ids, mask_heads=[(1, 0)])  # layer 1 has no heads
        check("masking a missing head is an error", False)
    except ValueError as e:
        check("masking a missing head is an error", "1.0" in str(e))


def test_rope_scaling(tmp):
    ids = [1, 8, 90, 14, 250, 3, 3, 61, 17, 200, 45, 9, 100, 2, 71, 33, 5, 18, 140, 7]
    stock = derive(os.path.join(tmp, "linear-rope"), os.path.join(tmp, "linear-stock"),
                   lambda c: c.update(rope_scaling=None))
    scaled = ref.forward(ref.load_model(os.path.join(tmp, "linear-rope")), ids).logits
    closed = ref.forward(ref.load_model(stock), ids, positions=np.arange(len(ids)) / 4.0).logits
    check("linear rope scaling equals positions / factor", max_diff(scaled, closed) < 1e-10)
    check("linear rope scaling changes the logits",
          max_diff(scaled, ref.forward(ref.load_model(stock), ids).logits) > 1e-3)

    dyn = os.path.join(tmp, "dynamic-rope")  # factor 2, max_pos 16, head_dim 16, theta 1e4
    plain = derive(dyn, os.path.join(tmp, "dynamic-stock"), lambda c: c.update(rope_scaling=None))
    check("dynamic rope within max_pos equals no scaling",
          max_diff(ref.forward(ref.load_model(dyn), ids[:16]).logits,
                   ref.forward(ref.load_model(plain), ids[:16]).logits) == 0)
    T, d = len(ids), 16
    base = 1e4 * (2 * T / 16 - 1) ** (d / (d - 2))
    rebased = derive(dyn, os.path.join(tmp, "dynamic-rebased"),
                     lambda c: c.update(rope_scaling=None, rope_theta=base))
    check("dynamic rope beyond max_pos equals rope_theta * (f*T/M - (f-1))^(d/(d-2))",
          max_diff(ref.forward(ref.load_model(dyn), ids).logits,
                   ref.forward(ref.load_model(rebased), ids).logits) < 1e-10)

    c = ref.read_config(os.path.join(tmp, "llama3-rope"))  # head_dim 32, factor 8, low 1, high 4, original 64
    inv = ref.rope_inv_freq(c, 10)
    plain_inv = 1e4 ** -(np.arange(0, 32, 2) / 32)
    wavelen = 2 * np.pi / plain_inv
    high, low = wavelen < 64 / 4, wavelen > 64 / 1
    middle = ~high & ~low
    s = (64 / wavelen[middle] - 1) / 3
    ok = (np.allclose(inv[high], plain_inv[high], rtol=1e-15) and np.allclose(inv[low], plain_inv[low] / 8, rtol=1e-15)
          and np.allclose(inv[middle], (1 - s) * plain_inv[middle] / 8 + s * plain_inv[middle], rtol=1e-15))
    check("llama3 rope frequencies: high kept, low / factor, middle interpolated",
          ok and high.any() and low.any() and middle.any(), f"{high.sum()} high, {middle.sum()} middle, {low.sum()} low")


def test_sliding_window(tmp):
    mistral = os.path.join(tmp, "mistral-window")  # window 5
    ids = [1, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120]
    out = ref.forward(ref.load_model(mistral), ids, attention=[0, 1])
    q, k = np.meshgrid(np.arange(len(ids)), np.arange(len(ids)), indexing="ij")
    inside = (k <= q) & (q - k < 5)
    a = out.attention[1]
    check("sliding window: attention only within the window",
          np.all(a[:, ~inside] == 0) and np.all(a[:, inside] > 0) and np.allclose(a.sum(-1), 1))
    wide = derive(mistral, os.path.join(tmp, "mistral-wide"), lambda c: c.update(sliding_window=len(ids)))
    llama = derive(mistral, os.path.join(tmp, "mistral-as-llama"),
                   lambda c: c.update(architectures=["LlamaForCausalLM"], model_type="llama"))
    check("a window as long as the input equals Llama",
          max_diff(ref.forward(ref.load_model(wide), ids).logits, ref.forward(ref.load_model(llama), ids).logits) == 0)
    check("the window changes the logits",
          max_diff(out.logits, ref.forward(ref.load_model(llama), ids).logits) > 1e-3)


def test_dtypes(tmp):
    """bf16 and f16 files hold exactly the rounded f32 weights."""
    f32 = make(tmp, "dt-f32", "--n-layers", "1", seed=9)
    for dtype, rounding in (("bf16", lambda x: ref.bf16_bits_to_f32(ref.f32_to_bf16_bits(x))),
                            ("f16", lambda x: x.astype(np.float16).astype(np.float32))):
        low = ref.read_weights(make(tmp, f"dt-{dtype}", "--n-layers", "1", "--dtype", dtype, seed=9))
        check(f"{dtype} weights are the rounded f32 weights",
              all(np.array_equal(rounding(np.asarray(v)), low[k]) for k, v in ref.read_weights(f32).items()))
    bits = ref.f32_to_bf16_bits(np.array([1 + 2 ** -8, 1 + 3 * 2 ** -8, -2.5, np.inf], np.float32))
    check("bf16 rounds to nearest even", list(bits) == [0x3F80, 0x3F82, 0xC020, 0x7F80], str([hex(b) for b in bits]))


def test_safetensors(tmp):
    tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "empty": np.zeros((0, 5, 4), np.float32),
               "i": np.array([-1, 7], np.int32), "h": np.array([0.5], np.float16), "d": np.array([1e-300]),
               "b": ref.Bf16([1.0, -2.0]), "none": np.zeros((3, 0), np.int32)}
    path = os.path.join(tmp, "t.safetensors")
    ref.write_safetensors(path, tensors, {"heads.kind": "kv"})
    raw = open(path, "rb").read()
    header_len = int.from_bytes(raw[:8], "little")
    back, meta = ref.read_safetensors(path)
    ok = (header_len % 8 == 0 and meta == {"heads.kind": "kv"} and list(back) == list(tensors)
          and back["empty"].shape == (0, 5, 4) and back["none"].shape == (3, 0) and back["none"].dtype == np.int32
          and list(back["b"]) == [1.0, -2.0] and back["d"][0] == 1e-300
          and all(np.array_equal(back[k], v) for k, v in tensors.items() if k != "b"))
    check("safetensors round trip, zero-size tensors included", ok)
    frames = ref.read_frames(raw + ref.frame_bytes({"x": np.ones(2, np.float32)}))
    check("a stream of two frames", len(frames) == 2 and list(frames[1][0]) == ["x"])
    for bad, what in ((raw[:-1], "truncated"), (raw[:8] + b"[" + raw[9:], "not JSON")):
        open(path, "wb").write(bad)
        try:
            ref.read_safetensors(path)
            check(f"a {what} file is an error", False)
        except ValueError:
            check(f"a {what} file is an error", True)


def test_load_errors(tmp):
    src = os.path.join(tmp, "mha")
    cases = {
        "missing tensor": (None, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"), "model.layers.1.mlp.up_proj"),
        "wrong shape": (None, lambda t: t.update({"model.norm.weight": np.ones(3, np.float32)}), "model.norm.weight"),
        "architecture": (lambda c: c.update(architectures=["GPT2LMHeadModel"]), None, "GPT2LMHeadModel"),
        "attention bias": (lambda c: c.update(attention_bias=True), None, "attention_bias"),
        "tensors of a zero-head layer": (lambda c: c.update(head_layout={"layers": [
            {"query_heads": [0, 1, 2, 3], "kv_heads": [0, 1, 2, 3], "kv_head_of": [0, 1, 2, 3]},
            {"query_heads": [], "kv_heads": [], "kv_head_of": []}]}), None, "no heads"),
        "unserved KV head": (lambda c: c.update(head_layout={"layers": [
            {"query_heads": [0, 1], "kv_heads": [0, 1], "kv_head_of": [0, 0]}] * 2}), None, "serve"),
    }
    for name, (edit_config, edit_tensors, needle) in cases.items():
        bad = derive(src, os.path.join(tmp, "bad-" + name.replace(" ", "-")), edit_config, edit_tensors)
        try:
            ref.load_model(bad)
            check(f"load error: {name}", False, "loaded")
        except ValueError as e:
            check(f"load error: {name}", needle in str(e), str(e))
    model = ref.load_model(src)
    for ids, what in (([1, 256], "id >= vocab"), ([], "empty")):
        try:
            ref.forward(model, ids)
            check(f"forward error: {what}", False)
        except ValueError:
            check(f"forward error: {what}", True)


def test_perplexity(tmp):
    model = ref.load_model(os.path.join(tmp, "mha"))
    rng = np.random.default_rng(3)
    tokens = [1] + list(rng.integers(3, 256, 36))  # 37 tokens, n_ctx 8: 4 chunks, the tail of 5 dropped
    result = ref.perplexity(model, tokens, 8)
    nll = []
    for c in range(4):
        chunk = [1] + tokens[c * 8 + 1:(c + 1) * 8]
        logits = ref.forward(model, chunk).logits
        for j in range(4, 7):  # n_ctx/2 .. n_ctx-2
            z = logits[j] - logits[j].max()
            nll.append(np.log(np.exp(z).sum()) - z[chunk[j + 1]])
    nll = np.array(nll)
    expected = np.exp(nll.mean())
    error = expected * np.sqrt((np.mean(nll ** 2) - nll.mean() ** 2) / (len(nll) - 1))
    check("perplexity: llama-perplexity's chunks, BOS, second half, standard error",
          result.count == 12 and result.n_chunks == 4 and abs(result.ppl - expected) < 1e-9 * expected
          and abs(result.error - error) < 1e-9 * error, f"{result.ppl:.6f} vs {expected:.6f}")
    check("perplexity over 2 processes is the same", ref.perplexity(model, tokens, 8, jobs=2) == result)
    try:
        ref.perplexity(model, tokens[:15], 8)
        check("perplexity needs 2*n_ctx tokens", False)
    except ValueError:
        check("perplexity needs 2*n_ctx tokens", True)


def test_greedy(tmp):
    model = ref.load_model(os.path.join(tmp, "pruned"))
    ids = [1, 200, 3, 50, 7]
    tokens = ref.greedy(model, ids, 6)
    again = list(ids)
    for _ in range(6):
        again.append(int(np.argmax(ref.forward(model, again).logits[-1])))
    check("greedy through the cache equals argmax of full recomputation",
          tokens == again[len(ids):] and len(set(tokens)) > 2, str(tokens))
    tie = np.zeros(5)
    tie[[1, 3]] = 1
    check("argmax ties go to the lowest id", int(np.argmax(tie)) == 1)


def test_head_stats(tmp):
    model = ref.load_model(os.path.join(tmp, "mha"))  # 2 layers of 4 heads
    stats = ref.HeadStats(model)
    L = 4
    T = 2 * L + 1
    prev = np.zeros((T, T))
    prev[0, 0] = 1
    prev[np.arange(1, T), np.arange(T - 1)] = 1
    induction = np.zeros((T, T))
    induction[np.arange(T), np.minimum(np.arange(T), np.maximum(0, np.arange(T) - L + 1))] = 1
    uniform = np.tril(np.ones((T, T))) / np.arange(1, T + 1)[:, None]
    sink = np.zeros((T, T))
    sink[:, 0] = 1
    stats.add_attention(0, np.stack([prev, induction, uniform, sink]), L)
    echo = np.zeros((T, T))
    echo[np.arange(T), np.maximum(0, np.arange(T) - L)] = 1
    stats.add_attention(1, np.stack([echo, uniform, uniform, uniform]), L)
    stats.queries, stats.prev_queries, stats.repeat_queries = T, T - 1, L
    m = stats.means()
    ok = (np.allclose([m[c][0][0] for c in ("entropy", "sink", "prev_token")], [0, 2 / T, 1])
          and np.isclose(m["induction"][0][1], 1) and np.isclose(m["echo"][0][1], 0)
          and np.isclose(m["entropy"][0][2], np.mean(np.log(np.arange(1, T + 1))))
          and np.isclose(m["sink"][0][3], 1) and np.isclose(m["prev_token"][0][3], 1 / (T - 1))
          and np.isclose(m["echo"][1][0], 1) and np.isclose(m["induction"][1][0], 0)
          and np.isclose(m["induction"][1][1], np.mean(1 / np.arange(L + 2, 2 * L + 2))))
    check("head statistics of known attention patterns", ok)
    span = [9, 41, 7, 130]
    check("repeat sequences are recognized", ref.repeat_span([1] + span + span) == 4
          and ref.repeat_span([1] + span + span[:3] + [8]) is None)
    stats = ref.HeadStats(model)
    stats.add([1] + span + span)
    stats.add([1, 5, 6])
    table = stats.tsv().splitlines()
    rows = [line.split("\t") for line in table if not line.startswith("#")]
    check("head table: header and one row per head",
          rows[0] == ["layer", "head", "kv_head", "entropy", "sink", "prev_token", "induction", "echo"]
          and len(rows) == 9 and stats.queries == 12 and stats.repeat_queries == 4)


def test_cli(tmp):
    model_dir = os.path.join(tmp, "pruned")
    script = os.path.join(SCRIPTS, "reference.py")
    out, kv_file, cont = (os.path.join(tmp, x) for x in ("out.st", "kv.st", "cont.st"))
    run = lambda *a: subprocess.run([PYTHON, script, model_dir] + list(a), capture_output=True, text=True)  # noqa: E731
    r = run("--ids", "1 5 9 13 5 9", "--logits", "all", "--hidden", "0,3", "--attention", "all", "--kv",
            "--mask-heads", "2.0", "-o", out)
    frames = ref.read_frames(out)
    model = ref.load_model(model_dir)
    api = ref.forward(model, [1, 5, 9, 13, 5, 9], mask_heads=[(2, 0)], hidden=[0, 3], attention=range(4), kv=True)
    kinds = [m["heads.kind"] for _, m in frames]
    ok = (r.returncode == 0 and kinds == ["logits", "hidden", "attention", "kv"]
          and max_diff(frames[0][0]["logits"], api.logits) < 1e-5 and frames[1][0]["hidden.3"].shape == (6, 64)
          and frames[2][0]["attention.1"].shape == (0, 6, 6) and frames[3][0]["kv.2.pos"].dtype == np.int32
          and frames[3][0]["kv.1.received"].shape == (0,) and frames[3][1]["heads.recent_queries"] == "32"
          and max_diff(frames[3][0]["kv.0.received"][:6], api.attention[0][[0, 1]].sum(axis=(0, 1))) < 1e-5
          and frames[0][1]["heads.tokens"] == "1 5 9 13 5 9")
    check("cli: frames of every kind", ok, r.stderr.strip())
    r1 = run("--ids", "1 5 9 13", "--kv", "-o", kv_file)
    r2 = run("--past", kv_file, "--ids", "5 9", "--logits", "all", "-o", cont)
    continued, meta = ref.read_safetensors(cont)
    full = ref.forward(model, [1, 5, 9, 13, 5, 9]).logits[4:]
    check("cli: --kv alone writes one frame, and --past continues it",
          r1.returncode == 0 and r2.returncode == 0 and len(ref.read_frames(kv_file)) == 1
          and max_diff(continued["logits"], full) < 1e-5 and meta["heads.tokens"] == "1 5 9 13 5 9")
    ids_file = os.path.join(tmp, "ppl.ids")
    with open(ids_file, "w") as f:
        f.write("1 " + " ".join(str(t) for t in range(3, 40)) + "\n")
    r = run("--ppl", ids_file, "--ctx", "8", "--json")
    check("cli: --ppl", r.returncode == 0 and json.loads(r.stdout)["n_chunks"] == 4, r.stderr.strip())
    r = run("--head-stats", "--ids", "1 5 6 5 6")
    check("cli: --head-stats", r.returncode == 0 and r.stdout.splitlines()[1].startswith("layer\thead"))
    r = run("--greedy", "3", "--ids", "1 5")
    check("cli: --greedy", r.returncode == 0 and len(r.stdout.split()) == 3)
    r = run("--ids", "1 999")
    check("cli: a bad id exits 1 with one message", r.returncode == 1 and r.stderr.startswith("reference.py: "),
          r.stderr.strip())


def run_self():
    tmp = tempfile.mkdtemp(prefix="reference-test-")
    try:
        for name, args in SHAPES.items():
            if not os.path.exists(os.path.join(tmp, name)):
                make(tmp, name, *args, seed=len(name))
        for test in (test_safetensors, test_dtypes, test_load_errors, test_kv_continuation, test_ragged_cache,
                     test_received, test_head_layout, test_mask, test_rope_scaling, test_sliding_window, test_perplexity,
                     test_greedy, test_head_stats, test_cli):
            test(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------
# against other engines' outputs


def run_stories260k():
    base = os.path.join(shared_models(), "stories260K")
    refdir = os.path.join(base, "reference")
    if not os.path.exists(os.path.join(refdir, "logits.safetensors")):
        print(f"SKIP: {refdir} is absent (set HEADS_SHARED_MODELS to the folder holding stories260K)")
        return SKIP
    model = ref.load_model(base)
    stored, _ = ref.read_safetensors(os.path.join(refdir, "logits.safetensors"))
    prompts = [[int(t) for t in line.split()] for line in open(os.path.join(refdir, "ids.txt"))]
    worst = max(max_diff(ref.forward(model, ids).logits, stored[f"prompt.{k}.logits"]) for k, ids in enumerate(prompts))
    check("stories260K logits within 1e-4 of the stored reference", worst <= 1e-4, f"max |diff| {worst:.2e}")
    greedy = [[int(t) for t in line.split()] for line in open(os.path.join(refdir, "greedy64.txt"))]
    ours = [ref.greedy(model, ids, 64) for ids in prompts]
    check("stories260K greedy 64 ids identical to llama.cpp's", ours == greedy,
          f"{sum(a == b for a, b in zip(ours, greedy))}/{len(greedy)} prompts equal")
    return 0


def run_stories260k_ppl(tokenize):
    """llama-perplexity's figure for KJV Genesis; float32 math (float64 takes twice as long, same 4 digits)."""
    base = os.path.join(shared_models(), "stories260K")
    refdir = os.path.join(base, "reference")
    if not os.path.exists(os.path.join(refdir, "kjv-genesis.txt")):
        print(f"SKIP: {refdir} is absent (set HEADS_SHARED_MODELS to the folder holding stories260K)")
        return SKIP
    if not tokenize or not os.path.exists(tokenize):
        print("SKIP: KJV Genesis perplexity needs the tokenize program, not in this build")
        return SKIP
    text = os.path.join(refdir, "kjv-genesis.txt")
    with open(text, "rb") as f:
        ids = subprocess.run([tokenize, "-m", base, "--whole"], stdin=f, capture_output=True, check=True).stdout
    tokens = ref.parse_ids(ids.decode())
    check("KJV Genesis tokenizes to 106382 ids with BOS", len(tokens) == 106382 and tokens[0] == 1, str(len(tokens)))
    result = ref.perplexity(ref.load_model(base, np.float32), tokens, 512)
    check("KJV Genesis perplexity at ctx 512 within 0.01% of llama-perplexity's 49.1896",
          abs(result.ppl / 49.1896 - 1) < 1e-4, f"{result.ppl:.4f} +/- {result.error:.5f}")
    return 0


def run_oracle():
    oracle = os.path.join(shared_models(), "reference_llama.py")
    if not os.path.exists(oracle):
        print(f"SKIP: {oracle} is absent (set HEADS_SHARED_MODELS)")
        return SKIP
    sys.path.insert(0, os.path.dirname(oracle))
    import reference_llama  # noqa: E402
    tmp = tempfile.mkdtemp(prefix="reference-oracle-")
    try:
        rng = np.random.default_rng(11)
        for name in ("mha", "gqa-bf16-tied"):
            path = make(tmp, name, *SHAPES[name], seed=3)
            ids = [1] + list(rng.integers(3, 256, 30))
            ours = ref.forward(ref.load_model(path), ids).logits
            theirs = reference_llama.Llama(path).forward(ids)
            check(f"outside oracle agrees on {name}", max_diff(ours, theirs) < 1e-9, f"{max_diff(ours, theirs):.1e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "self"
    if mode == "self":
        status = run_self() or 0
    elif mode == "stories260k":
        status = run_stories260k()
    elif mode == "stories260k-ppl":
        status = run_stories260k_ppl(sys.argv[3] if len(sys.argv) > 3 and sys.argv[2] == "--tokenize" else None)
    elif mode == "oracle":
        status = run_oracle()
    else:
        print(f"usage: {sys.argv[0]} self|stories260k|stories260k-ppl --tokenize PROG|oracle", file=sys.stderr)
        return 2
    if failures:
        print(f"{len(failures)} check(s) failed: {', '.join(failures)}")
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
