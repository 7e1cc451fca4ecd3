#!/usr/bin/python3
"""decode as a user runs it, on random models (scripts/make-random-model)
checked against the numpy reference (scripts/reference.py). Run by ctest:

  decode_test.py MODE --decode PROG --infer PROG

  greedy        greedy = reference.py's greedy on several model shapes; --mask-heads too
  stories260k   greedy = llama.cpp's stored continuations (skipped without ../shared/models)
  speculative   prompt lookup, lookahead and draft models give exactly greedy's output
  sampling      seeds reproduce across runs and threads; first tokens over many seeds
                follow the processed softmax (chi-square, fixed seed)
  beam          1 beam = greedy; 4 beams find a sequence at least as likely as greedy's
  contrastive   contrastive search = a numpy implementation on reference.py's hidden states
  decore        DeCoRe = a numpy implementation on reference.py's logits, masked and not
  kv            continuing an infer --kv frame = decoding from the ids
  context       the context length: an error, --keep, --kv-policy window
  text          --text and --stop through a tokenizer trained here with spm_train; drafts
                must share the tokenizer
  errors        closed pipes, bad options and bad models: clear messages and exit codes
"""

import argparse
import math
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
SCRIPTS = os.path.join(ROOT, "scripts")
sys.path.insert(0, SCRIPTS)
import reference as ref  # noqa: E402

SKIP = 77
failures = []
DECODE = INFER = None


def check(name, ok, detail=""):
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
    if not ok:
        failures.append(name)


def make(tmp, name, *args, seed=0):
    path = os.path.join(tmp, name)
    subprocess.run([os.path.join(SCRIPTS, "make-random-model"), "-o", path, "--seed", str(seed)] + [str(a) for a in args],
                   check=True, stdout=subprocess.DEVNULL)
    return path


def run(prog, args, stdin="", binary=False):
    # One thread unless a test asks for more: OpenMP threads spin, and on a
    # busy 2-core machine two of them run many times slower than one.
    args = [str(a) for a in args]
    if "-t" not in args:
        args = ["-t", "1"] + args
    p = subprocess.run([prog] + args, input=stdin if binary else stdin.encode(),
                       capture_output=True)
    return p.returncode, (p.stdout if binary else p.stdout.decode()), p.stderr.decode()


def decode(model, args, stdin):
    rc, out, err = run(DECODE, ["-m", model] + list(args), stdin)
    if rc != 0:
        raise RuntimeError(f"decode {' '.join(map(str, args))} failed ({rc}): {err}")
    return out


def ids_text(lines):
    return "".join(" ".join(map(str, ids)) + "\n" for ids in lines)


def parse_lines(text):
    return [[int(t) for t in line.split()] for line in text.splitlines()]


SHAPES = {
    "mha": ["--d-model", "64", "--n-heads", "4", "--n-layers", "2"],
    "gqa-tied-bf16": ["--d-model", "96", "--n-heads", "6", "--n-kv-heads", "2", "--tied", "--dtype", "bf16"],
    "mqa-hd16": ["--d-model", "64", "--n-heads", "8", "--n-kv-heads", "1", "--head-dim", "16", "--n-layers", "3"],
    "pruned": ["--n-layers", "3", "--n-heads", "4", "--n-kv-heads", "2", "--head-layout", "4:2/0:0/3:2:r"],
}

PROMPTS = [[1, 5, 9, 13, 7], [1, 40, 41, 42, 43, 40, 41, 42, 43, 40, 41], [1], [1, 200, 3, 3, 3, 3, 3, 3]]


def greedy_reference(model_dir, prompts, n, mask=()):
    model = ref.load_model(model_dir)
    return [ref.greedy(model, p, n, mask_heads=mask) for p in prompts]


def bf16_arithmetic():
    rc, out, _ = run(DECODE, ["--version"])
    return rc == 0 and "bf16 arithmetic: yes" in out


def check_greedy_bf16(name, model_dir, n):
    """decode's bf16 arithmetic against reference.py's emulation of it
    (--bf16-math): equal tokens for as long as the reference's best token
    leads the next by more than twice the logits' bound; after the first
    step that does not, the engine's token may be either, and the rest of
    that line follows from it, so the comparison stops there."""
    model = ref.load_model(model_dir)
    got = parse_lines(decode(model_dir, ["-n", n, "--ignore-eos"], ids_text(PROMPTS)))
    compared = equal = 0
    for prompt, tokens in zip(PROMPTS, got):
        decided = []
        expected = ref.greedy(model, prompt, n, bf16=True, decided=decided)
        steps = next((i for i, d in enumerate(decided) if not d), n)
        ok = tokens[:steps] == expected[:steps]
        check(f"greedy = reference.py --bf16-math ({name}, {steps} decided steps)", ok,
              "" if ok else f"{tokens} vs {expected}")
        compared += steps
        equal += next((i for i, (a, b) in enumerate(zip(tokens, expected)) if a != b), n)
    print(f"     {equal} of {len(PROMPTS) * n} tokens equal before the first difference, {compared} decided")
    check(f"greedy bf16 ({name}): a whole line decided, so the comparison is not empty", compared >= n)


def test_greedy(tmp):
    for i, (name, args) in enumerate(SHAPES.items()):
        m = make(tmp, name, *args, seed=10 + i)
        if "bf16" in args and bf16_arithmetic():
            check_greedy_bf16(name, m, 20)
            f32 = parse_lines(decode(m, ["-n", 20, "--ignore-eos", "--precision", "f32"], ids_text(PROMPTS)))
            check(f"greedy --precision f32 = reference.py ({name})", f32 == greedy_reference(m, PROMPTS, 20))
            continue
        expected = greedy_reference(m, PROMPTS, 20)
        got = parse_lines(decode(m, ["-n", 20, "--ignore-eos"], ids_text(PROMPTS)))
        check(f"greedy = reference.py ({name})", got == expected, f"{got} vs {expected}" if got != expected else "")
    m = os.path.join(tmp, "mha")
    masked = greedy_reference(m, PROMPTS[:2], 16, mask=[(0, 1), (1, 3)])
    got = parse_lines(decode(m, ["-n", 16, "--ignore-eos", "--mask-heads", "0.1,1.3"], ids_text(PROMPTS[:2])))
    check("--mask-heads greedy = reference.py --mask-heads", got == masked)
    plain = parse_lines(decode(m, ["-n", 16, "--ignore-eos"], ids_text(PROMPTS[:2])))
    check("--mask-heads changes the output", got != plain)
    with open(os.path.join(tmp, "heads.txt"), "w") as f:
        f.write("# two heads\n0.1\n1.3\n")
    from_file = parse_lines(decode(m, ["-n", 16, "--ignore-eos", "--mask-heads", "@" + os.path.join(tmp, "heads.txt")],
                                   ids_text(PROMPTS[:2])))
    check("--mask-heads @FILE", from_file == masked)


def shared_models():
    path = os.environ.get("HEADS_SHARED_MODELS") or os.path.join(ROOT, "..", "shared", "models")
    return os.path.realpath(path)


def test_stories260k(tmp):
    model = os.path.join(shared_models(), "stories260K")
    if not os.path.isdir(model):
        print(f"SKIP: {model} is absent (set HEADS_SHARED_MODELS)")
        sys.exit(SKIP)
    ids = open(os.path.join(model, "reference", "ids.txt")).read()
    expected = open(os.path.join(model, "reference", "greedy64.txt")).read()
    check("stories260K greedy = llama.cpp's greedy64.txt", decode(model, ["-n", 64], ids) == expected)
    for args in (["--prompt-lookup", 5], ["--lookahead", "5,4,5"], ["--draft", model, "--draft-max", 4]):
        check(f"stories260K {args[0]} = greedy64.txt", decode(model, ["-n", 64] + args, ids) == expected)


def test_speculative(tmp):
    models = {
        "mha": make(tmp, "mha", *SHAPES["mha"], seed=21),
        "gqa": make(tmp, "gqa", *SHAPES["gqa-tied-bf16"], seed=22),
    }
    # Drafts: the model itself (everything accepted), a pruned copy of it,
    # an unrelated model with the same vocabulary (little accepted).
    drafts = {
        "itself": models["mha"],
        "pruned": make(tmp, "mha-pruned", *SHAPES["mha"], "--head-layout", "2:2/1:1", seed=21),
        "other": make(tmp, "other", "--d-model", "32", "--n-layers", "1", "--n-heads", "2", seed=23),
    }
    repetitive = [1] + [30, 31, 32, 33, 34] * 4
    prompts = PROMPTS + [repetitive]
    for name, m in models.items():
        for n in (1, 40) if name == "mha" else (9,):
            greedy = decode(m, ["-n", n, "--ignore-eos"], ids_text(prompts))
            variants = [["--prompt-lookup", 4], ["--prompt-lookup", 1, "--lookup-ngram", "2,2"],
                        ["--lookahead", "5,4,5"], ["--lookahead", "3,2,2"], ["--lookahead", "1,3,1"]]
            if name == "mha":
                variants += [["--draft", drafts["itself"], "--draft-max", 1]]
                variants += [["--draft", d, "--draft-max", 5] for d in drafts.values()]
                variants += [["--draft", drafts["other"], "--draft-p-min", "0.5"]]
            for args in variants:
                got = decode(m, ["-n", n, "--ignore-eos"] + args, ids_text(prompts))
                check(f"{name} -n {n} {' '.join(map(str, args)).replace(tmp + '/', '')} = greedy", got == greedy)
    # Acceptance and tokens per pass on stderr with -v.
    m = models["mha"]
    rc, out, err = run(DECODE, ["-m", m, "-n", 40, "-v", "--ignore-eos", "--draft", m], ids_text([repetitive]))
    check("-v reports the draft's acceptance", rc == 0 and "acceptance 100.0%" in err and "tokens per pass" in err, err)
    rc, out, err = run(DECODE, ["-m", m, "-n", 40, "-v", "--prompt-lookup", 5, "--ignore-eos"], ids_text([repetitive]))
    check("-v reports prompt lookup's acceptance", rc == 0 and "acceptance" in err, err)
    # Under sampling: reproducible, and a draft of the model itself changes nothing.
    for args in (["--prompt-lookup", 3], ["--lookahead", "4,3,4"], ["--draft", drafts["other"]]):
        a = decode(m, ["-n", 24, "--temp", "0.9", "--seed", 7] + args, ids_text(prompts))
        b = decode(m, ["-n", 24, "--temp", "0.9", "--seed", 7] + args, ids_text(prompts))
        check(f"sampling with {args[0]} is reproducible", a == b)
    sampled = decode(m, ["-n", 24, "--temp", "0.9", "--seed", 7, "--ignore-eos"], ids_text(prompts))
    drafted = decode(m, ["-n", 24, "--temp", "0.9", "--seed", 7, "--ignore-eos", "--draft", m], ids_text(prompts))
    # With q = p every draft is accepted and consumes one uniform per token, so
    # the tokens differ from plain sampling's but are valid draws: check lengths.
    check("sampling with a draft writes -n tokens per prompt",
          [len(l) for l in parse_lines(drafted)] == [len(l) for l in parse_lines(sampled)])


def processed_probs(logits, temp, top_k, top_p):
    """The sampling chain (temperature, top-k, top-p) in numpy, as the man page documents it."""
    z = np.asarray(logits, np.float64) / temp
    order = sorted(range(len(z)), key=lambda i: (-z[i], i))
    keep = order[:top_k]
    p = np.exp(z[keep] - z[keep].max())
    p /= p.sum()
    mass, n = 0.0, 0
    while mass < top_p:
        mass += p[n]
        n += 1
    keep = keep[:n]
    out = np.zeros(len(z))
    e = np.exp(z[keep] - z[keep].max())
    out[keep] = e / e.sum()
    return out


def test_sampling(tmp):
    m = make(tmp, "mha", *SHAPES["mha"], seed=31)
    prompts = ids_text(PROMPTS)
    a = decode(m, ["-n", 16, "--temp", "0.8", "--top-k", 40, "--seed", 3], prompts)
    check("same seed, same output", a == decode(m, ["-n", 16, "--temp", "0.8", "--top-k", 40, "--seed", 3], prompts))
    check("same seed, other thread count, same output",
          a == decode(m, ["-n", 16, "--temp", "0.8", "--top-k", 40, "--seed", 3, "-t", 2], prompts))
    check("another seed, another output", a != decode(m, ["-n", 16, "--temp", "0.8", "--top-k", 40, "--seed", 4], prompts))
    lines = parse_lines(a)
    check("each prompt line has its own random numbers", lines[0] != lines[2] or PROMPTS[0] == PROMPTS[2])
    for args in (["--top-p", "0.9"], ["--min-p", "0.1"], ["--typical-p", "0.8"], ["--repeat-penalty", "1.3"],
                 ["--presence-penalty", "0.5", "--frequency-penalty", "0.2"], ["--no-repeat-ngram", 2],
                 ["--logit-bias", "7=-inf"]):
        out = decode(m, ["-n", 16, "--temp", "1", "--seed", 1] + args, prompts)
        check(f"sampling with {args[0]} runs", len(parse_lines(out)) == len(PROMPTS))
    # --no-repeat-ngram under greedy never repeats a bigram.
    out = parse_lines(decode(m, ["-n", 60, "--no-repeat-ngram", 2, "--ignore-eos"], ids_text([[1, 4, 4]])))[0]
    seq = [1, 4, 4] + out
    bigrams = list(zip(seq, seq[1:]))
    check("--no-repeat-ngram 2: no bigram twice", len(bigrams) == len(set(bigrams)))
    out = parse_lines(decode(m, ["-n", 30, "--logit-bias", "%d=-inf" % parse_lines(
        decode(m, ["-n", 1], ids_text([PROMPTS[0]])))[0][0]], ids_text([PROMPTS[0]])))[0]
    check("--logit-bias ID=-inf bans the greedy choice", out[0] != parse_lines(decode(m, ["-n", 1], ids_text([PROMPTS[0]])))[0][0])

    # First tokens over many sequences (one seed each) against the processed softmax.
    prompt = [1, 17, 99, 3]
    model = ref.load_model(m)
    logits = ref.forward(model, prompt, logits="last").logits[-1]
    expected = processed_probs(logits, 1.5, 12, 0.95)
    draws = 3000
    out = decode(m, ["-n", 1, "--temp", "1.5", "--top-k", 12, "--top-p", "0.95", "--seed", 2024, "--ignore-eos"],
                 ids_text([prompt] * draws))
    counts = np.bincount([l[0] for l in parse_lines(out)], minlength=len(expected))
    support = expected > 0
    stat = float((((counts - draws * expected) ** 2)[support] / (draws * expected[support])).sum())
    df = int(support.sum()) - 1
    z, a_ = 3.0902, 2.0 / (9 * df)
    critical = df * (1 - a_ + z * math.sqrt(a_)) ** 3
    check("first tokens never fall outside top-k/top-p", counts[~support].sum() == 0)
    check(f"first tokens follow the processed softmax (chi-square {stat:.1f}, df {df}, 0.999 critical {critical:.1f})",
          stat < critical)
    raw = np.exp(logits - logits.max())
    raw /= raw.sum()
    stat_raw = float(((counts - draws * raw) ** 2 / np.maximum(draws * raw, 1e-12)).sum())
    check("... and not the unprocessed softmax (the test can fail)", stat_raw > critical)


def sequence_logprob(model, prompt, tokens):
    lp = ref.log_softmax(ref.forward(model, list(prompt) + list(tokens), logits="all").logits)
    return float(sum(lp[len(prompt) - 1 + i, t] for i, t in enumerate(tokens)))


def test_beam(tmp):
    m = make(tmp, "mha", *SHAPES["mha"], seed=41)
    model = ref.load_model(m)
    prompts = PROMPTS
    greedy = decode(m, ["-n", 12, "--ignore-eos"], ids_text(prompts))
    check("--beams 1 --n-best 1 = greedy", decode(m, ["-n", 12, "--ignore-eos", "--beams", 1], ids_text(prompts)) == greedy)
    lp = os.path.join(tmp, "beam.tsv")
    beams = decode(m, ["-n", 12, "--ignore-eos", "--beams", 4, "--length-penalty", 0, "--logprobs", 2, lp], ids_text(prompts))
    for p, g, b in zip(prompts, parse_lines(greedy), parse_lines(beams)):
        lg, lb = sequence_logprob(model, p, g), sequence_logprob(model, p, b)
        check(f"4 beams at least as likely as greedy after {p[:3]}...", lb >= lg - 1e-4, f"{lb:.4f} vs greedy {lg:.4f}")
    rows = [l.split("\t") for l in open(lp).read().splitlines()]
    check("--logprobs TSV header", rows[0][:4] == ["seq", "step", "id", "logprob"] and len(rows[0]) == 8)
    first = [r for r in rows[1:] if r[0] == "0"]
    total = sum(float(r[3]) for r in first)
    check("--logprobs sums to the sequence's log-probability",
          abs(total - sequence_logprob(model, prompts[0], parse_lines(beams)[0])) < 1e-3)
    nbest = parse_lines(decode(m, ["-n", 8, "--beams", 3, "--n-best", 3], ids_text(prompts[:2])))
    check("--n-best 3 writes 3 lines per prompt", len(nbest) == 6 and len(set(map(tuple, nbest[:3]))) == 3)


def test_contrastive(tmp):
    m = make(tmp, "mha", *SHAPES["mha"], seed=51)
    model = ref.load_model(m)
    prompts = PROMPTS[:2]
    greedy = decode(m, ["-n", 10, "--ignore-eos"], ids_text(prompts))
    check("contrastive search with alpha 0 = greedy",
          decode(m, ["-n", 10, "--ignore-eos", "--penalty-alpha", 0, "--top-k", 4], ids_text(prompts)) == greedy)
    got = parse_lines(decode(m, ["-n", 10, "--ignore-eos", "--penalty-alpha", "0.6", "--top-k", 4], ids_text(prompts)))
    for p, g in zip(prompts, got):
        seq = list(p)
        for _ in range(10):  # transformers' contrastive search, from scratch at every step
            out = ref.forward(model, seq, logits="last", final_norm=True)
            probs = np.exp(out.logits[-1] - out.logits[-1].max())
            probs /= probs.sum()
            top = sorted(range(len(probs)), key=lambda i: (-probs[i], i))[:4]
            ctx = out.final_norm / np.linalg.norm(out.final_norm, axis=1, keepdims=True)
            scores = []
            for v in top:
                h = ref.forward(model, seq + [v], logits=None, final_norm=True).final_norm[-1]
                h = h / np.linalg.norm(h)
                scores.append(0.4 * probs[v] - 0.6 * float((ctx @ h).max()))
            seq.append(top[int(np.argmax(scores))])
        check(f"contrastive search (0.6, 4) = numpy after {p[:3]}...", g == seq[len(p):], f"{g} vs {seq[len(p):]}")
    check("contrastive search differs from greedy here", got != parse_lines(greedy))


def test_decore(tmp):
    m = make(tmp, "mha", *SHAPES["mha"], seed=61)
    model = ref.load_model(m)
    table = os.path.join(tmp, "heads.tsv")
    with open(table, "w") as f:
        f.write("# a made-up table\nlayer\thead\tkv_head\tretrieval\n")
        for l in range(2):
            for h in range(4):
                f.write(f"{l}\t{h}\t{h}\t{[0.1, 0.9, 0.3, 0.2, 0.05, 0.4, 0.8, 0.0][l * 4 + h]}\n")
    masked_heads = [(0, 1), (1, 2)]  # the top 2 by retrieval
    prompts = PROMPTS[:2]
    greedy = decode(m, ["-n", 10, "--ignore-eos"], ids_text(prompts))
    check("DeCoRe with alpha 0 = greedy",
          decode(m, ["-n", 10, "--ignore-eos", "--contrast-heads", table, "--top", 2, "--alpha", 0], ids_text(prompts)) == greedy)
    got = parse_lines(decode(m, ["-n", 10, "--ignore-eos", "--contrast-heads", table, "--top", 2, "--alpha", 4],
                             ids_text(prompts)))
    for p, g in zip(prompts, got):
        seq = list(p)
        for _ in range(10):
            full = ref.forward(model, seq, logits="last").logits[-1]
            masked = ref.forward(model, seq, logits="last", mask_heads=masked_heads).logits[-1]
            q = np.exp(full - full.max())
            q /= q.sum()
            a = 4 * float(-(q * np.log(np.maximum(q, 1e-300))).sum()) / math.log(len(q))
            seq.append(int(np.argmax((1 + a) * full - a * masked)))
        check(f"DeCoRe (top 2, alpha 4) = numpy after {p[:3]}...", g == seq[len(p):], f"{g} vs {seq[len(p):]}")
    check("DeCoRe differs from greedy here", got != parse_lines(greedy))
    rc, _, err = run(DECODE, ["-m", m, "--contrast-heads", table, "--by", "induction"], "1 2\n")
    check("--by an absent column: an error naming the columns", rc == 1 and "retrieval" in err, err)


def test_kv(tmp):
    m = make(tmp, "gqa", *SHAPES["gqa-tied-bf16"], seed=71)
    prompts = PROMPTS[:2] + [PROMPTS[3]]
    kv_path = os.path.join(tmp, "cache.st")
    rc, _, err = run(INFER, ["-m", m, "--kv", "--logits", "none", "-o", kv_path], ids_text(prompts))
    check("infer --kv runs", rc == 0, err)
    for args in ([], ["--temp", "0.7", "--seed", 5], ["--prompt-lookup", 3], ["--beams", 3]):
        from_ids = decode(m, ["-n", 12] + args, ids_text(prompts))
        rc, from_kv, err = run(DECODE, ["-m", m, "-n", 12, "--kv", kv_path] + args)
        check(f"--kv frames = ids {' '.join(map(str, args))}", rc == 0 and from_kv == from_ids, err)
    with open(kv_path, "rb") as f:
        rc, from_stdin, err = run(DECODE, ["-m", m, "-n", 12, "--kv", "-"], f.read(), binary=True)
    check("--kv - reads frames from stdin", rc == 0 and from_stdin.decode() == decode(m, ["-n", 12], ids_text(prompts)), err)
    other = make(tmp, "other", *SHAPES["gqa-tied-bf16"], seed=72)
    rc, _, err = run(DECODE, ["-m", other, "--kv", kv_path])
    check("a frame from another model is refused", rc == 1 and "another model" in err or "not from this model" in err, err)


def test_context(tmp):
    m = make(tmp, "short", *SHAPES["mha"], "--max-pos", 32, seed=81)
    prompt = ids_text([[1, 2, 3, 4, 5, 6, 7, 8]])
    rc, out, err = run(DECODE, ["-m", m, "-n", 40, "--ignore-eos"], prompt)
    check("past the context length: a clear error", rc == 1 and "context length of 32" in err, err)
    check("... after writing what fit (the token after the last position too)", len(out.split()) == 32 - 8 + 1, out)
    full = decode(m, ["-n", 24, "--ignore-eos"], prompt).split()
    for args in (["--keep", 4], ["--kv-policy", "window:4:20"]):
        rc, out, err = run(DECODE, ["-m", m, "-n", 100, "--ignore-eos"] + args, prompt)
        check(f"{args[0]} generates past the context length", rc == 0 and len(out.split()) == 100, err)
        check(f"{args[0]}: the same tokens while the context is not full", out.split()[:11] == full[:11])
    for args in (["--prompt-lookup", 3], ["--lookahead", "4,3,3"], ["--beams", 2]):
        rc, out, err = run(DECODE, ["-m", m, "-n", 60, "--ignore-eos", "--kv-policy", "window:4:20"] + args, prompt)
        check(f"window policy with {args[0]}", rc == 0 and len(out.split()) == 60, err)
    rc, out, err = run(DECODE, ["-m", m, "-n", 60, "--ignore-eos", "--keep", 4, "--prompt-lookup", 3], prompt)
    check("--keep with prompt lookup", rc == 0 and len(out.split()) == 60, err)


def test_text(tmp):
    corpus = os.path.join(tmp, "corpus.txt")
    words = ("in the beginning god created heaven and earth the light was good and the evening and the morning "
             "were the first day let there be a firmament in the midst of the waters").split()
    rng = np.random.default_rng(5)
    with open(corpus, "w") as f:
        for _ in range(400):
            f.write(" ".join(rng.choice(words, size=12)).capitalize() + ".\n")
    spm = os.path.join(tmp, "spm")
    subprocess.run(["spm_train", f"--input={corpus}", f"--model_prefix={spm}", "--vocab_size=150",
                    "--hard_vocab_limit=false", "--model_type=bpe", "--minloglevel=2"], check=True,
                   capture_output=True)
    import sentencepiece as sp
    tok = sp.SentencePieceProcessor(model_file=spm + ".model")
    m = make(tmp, "m", *SHAPES["mha"], "--vocab", tok.get_piece_size(), seed=91)
    os.replace(spm + ".model", os.path.join(m, "tokenizer.model"))
    prompt = ids_text([[1] + tok.encode("Hello")])
    ids = parse_lines(decode(m, ["-n", 30, "--ignore-eos"], prompt))[0]
    text = decode(m, ["-n", 30, "--ignore-eos", "--text"], prompt)
    check("--text = the ids detokenized", text == tok.decode(ids) + "\n", f"{text!r} vs {tok.decode(ids)!r}")
    full = tok.decode(ids)
    # A stop string taken from the middle of the text.
    stop = next((full[i:i + 3] for i in range(len(full) // 3, len(full) - 3) if full[i:i + 3].isalpha()), None)
    check("the random model writes some letters to stop at", stop is not None, repr(full))
    if stop:
        cut = full[:full.index(stop)]
        got = decode(m, ["-n", 30, "--ignore-eos", "--text", "--stop", stop], prompt)
        check(f"--text --stop {stop!r} cuts the text before it", got == cut + "\n", f"{got!r} vs {cut!r}")
        ids_out = parse_lines(decode(m, ["-n", 30, "--ignore-eos", "--stop", stop], prompt))[0]
        check("--stop ends the ids with the token that completes it",
              ids_out == ids[:len(ids_out)] and stop in tok.decode(ids_out) and stop not in tok.decode(ids_out[:-1]),
              f"{stop!r}: {ids_out} {tok.decode(ids_out)!r} of {ids}")
    rc, _, err = run(DECODE, ["-m", m, "--stop", ""], prompt)
    check("an empty --stop: usage error", rc == 2 and "empty stop" in err, err)

    # Drafts must share the tokenizer: same vocabulary size, other pieces.
    def tokenizer(name, seed):
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
        rng = np.random.default_rng(seed)
        vocab = ["".join(rng.choice(letters, size=rng.integers(2, 7))) for _ in range(300)]
        text = os.path.join(tmp, name + ".txt")
        with open(text, "w") as f:
            for _ in range(2000):
                f.write(" ".join(rng.choice(vocab, size=10)) + "\n")
        subprocess.run(["spm_train", f"--input={text}", f"--model_prefix={os.path.join(tmp, name)}",
                        "--vocab_size=200", "--model_type=bpe", "--minloglevel=2"], check=True, capture_output=True)
        model = make(tmp, name + "-model", *SHAPES["mha"], "--vocab", 200, seed=seed)
        os.replace(os.path.join(tmp, name + ".model"), os.path.join(model, "tokenizer.model"))
        return model
    a, b = tokenizer("tok-a", 1), tokenizer("tok-b", 2)
    rc, _, err = run(DECODE, ["-m", a, "--draft", b], "1 5\n")
    check("a draft with another tokenizer of the same size is refused", rc == 1 and "tokenizer differs" in err, err)
    rc, out, err = run(DECODE, ["-m", a, "-n", 5, "--draft", a], "1 5\n")
    check("... the same tokenizer is accepted", rc == 0 and len(out.split()) == 5, err)
    rc, _, err = run(DECODE, ["-m", a, "--draft", make(tmp, "no-tokenizer", "--vocab", 200, seed=3)], "1 5\n")
    check("... and a draft without one is refused", rc == 1 and "tokenizer" in err, err)


def test_errors(tmp):
    m = make(tmp, "mha", *SHAPES["mha"], seed=101)
    p = subprocess.run(f"{DECODE} -t 1 -m {m} -n 500 --ignore-eos | head -c 20", shell=True, input=b"1 2 3\n",
                       capture_output=True)
    check("decode | head -c 20: exit 0, nothing on stderr", p.returncode == 0 and p.stderr == b"", p.stderr.decode())
    p = subprocess.run(["bash", "-c", f"set -o pipefail; {DECODE} -t 1 -m {m} -n 500 --ignore-eos | head -c 20"],
                       input=b"1 2 3\n", capture_output=True)
    check("... decode's own status is 0", p.returncode == 0, p.stderr.decode())
    cases = [
        (["--temp", "x"], "1\n", 2, "--temp"),
        (["-n", "-5"], "1\n", 2, "--max-tokens"),
        (["--top-p", "0"], "1\n", 2, "--top-p"),
        (["--stop", ""], "1\n", 1, "tokenizer.model"),  # this model has no tokenizer
        (["--text"], "1\n", 1, "tokenizer.model"),
        (["--draft", os.path.join(tmp, "missing")], "1\n", 1, "missing"),
        (["--draft", make(tmp, "v512", "--vocab", 512, seed=102)], "1\n", 1, "tokenizer"),
        (["--beams", 2, "--prompt-lookup", 2], "1\n", 2, "one strategy"),
        (["--lookahead", "5,4"], "1\n", 2, "--lookahead"),
        (["--lookahead", "5,1,5"], "1\n", 2, "--lookahead"),
        (["--beams", 2, "--temp", "1"], "1\n", 2, "--temp"),
        (["--penalty-alpha", "0.5"], "1\n", 2, "--top-k"),
        (["--mask-heads", "9.0"], "1\n", 1, "does not exist"),
        (["--mask-heads", "0.x"], "1\n", 2, "bad head"),
        (["--kv-policy", "nope"], "1\n", 2, "unknown KV cache policy"),
        (["--kv-policy", "window:4:4000"], "1\n", 2, "context length"),
        (["--logit-bias", "1=x"], "1\n", 2, "--logit-bias"),
        (["--logit-bias", "999=1"], "1\n", 2, "out of range"),
        ([], "1 x\n", 1, "<stdin>:1: bad token id 'x'"),
        ([], "1 2\n\n", 1, "<stdin>:2: an empty prompt"),
        ([], "1 999\n", 1, "out of range"),
    ]
    for args, stdin, status, needle in cases:
        rc, out, err = run(DECODE, ["-m", m] + args, stdin)
        lines = err.strip().splitlines()
        check(f"decode {' '.join(map(str, args)).replace(tmp + '/', '')} <<< {stdin.strip()!r}: exit {status}",
              rc == status and needle in err and lines and lines[0].startswith("decode: "), f"exit {rc}: {err.strip()}")
    rc, out, err = run(DECODE, ["-m", m, "-n", 0], "1 2\n3\n")
    check("-n 0 writes an empty line per prompt", rc == 0 and out == "\n\n", repr(out))
    rc, out, err = run(DECODE, ["-m", m, "-n", 3, "-o", os.path.join(tmp, "out.txt")], "1 2\n")
    check("-o FILE", rc == 0 and out == "" and len(open(os.path.join(tmp, "out.txt")).read().split()) == 3)


TESTS = {name[5:]: fn for name, fn in globals().items() if name.startswith("test_")}


def main():
    global DECODE, INFER
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=sorted(TESTS))
    parser.add_argument("--decode", required=True)
    parser.add_argument("--infer", required=True)
    args = parser.parse_args()
    DECODE, INFER = args.decode, args.infer
    with tempfile.TemporaryDirectory(prefix="heads-decode-") as tmp:
        TESTS[args.mode](tmp)
    if failures:
        print(f"{len(failures)} failed: {', '.join(failures)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
