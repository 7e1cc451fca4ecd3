#!/usr/bin/python3
"""The engine (`infer`) against the numpy reference (scripts/reference.py, float64)
on random models from scripts/make-random-model: every head layout, head size,
weight dtype, rope scaling and sliding window the engine supports.

    engine_test.py --infer PATH CASE      (CASE: one of CASES below, or "list")

Tolerances, float32 arithmetic:
  logits     max |ours - ref| <= 1e-4 * max |ref|   (the logit scale: the largest logit)
  hidden     max |ours - ref| <= 1e-4 * max |ref|
  attention  max |ours - ref| <= 1e-4                (probabilities)
  kv         k, v as hidden; positions exactly
float32 rounding over a few layers of d_model-long sums lands near 1e-6 of the
scale; 1e-4 leaves room for other summation orders (oneDNN's blocked kernels,
the online softmax) while any wrong index, mask or scaling misses it by far.

bf16 arithmetic (--precision bf16 where `infer --version` says "bf16
arithmetic: yes", i.e. oneDNN's bf16 matmul) rounds every matmul's input to
bf16. It is compared with reference.py --bf16-math, which rounds the same
inputs, within the f32 tolerance above plus the bound.NAME tensors that
reference writes beside each tensor, derived from the rounding of each
product's input to 8 significant bits (reference.py, "bf16 arithmetic"):
M 2^-8 of the scale for a value M matmuls from the input (4 a layer, 1 for
lm_head), and p_i (e^(2e) - 1) for a probability whose scores may move by
e = 2 M 2^-8 |q| |k| / sqrt(head_dim). Until a value lands within f32
rounding of a bf16 boundary the two agree as f32 does; the bound covers what
bf16 rounding does after that. It still fails a wrong engine: the f32-math
run of the same model keeps the 1e-4 tolerance for every index, mask and
layout, and a bf16 kernel that reads misplaced weights or rounds other
values is off by the whole value, or by a bias that adds up over d_model
inputs instead of cancelling. Where bf16 arithmetic is not available
(AVX2), --precision bf16 multiplies bf16 weights in f32 and gets the f32
tolerance. Exit status 0 when every comparison holds.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import reference  # noqa: E402

PYTHON = sys.executable
MAKE_MODEL = os.path.join(ROOT, "scripts", "make-random-model")
REFERENCE = os.path.join(ROOT, "scripts", "reference.py")

# name: (make-random-model arguments, id line lengths, extra checks)
CASES = {
    "mha-hd32-tied": (["--d-model", "64", "--n-layers", "2", "--n-heads", "2", "--tied", "--max-pos", "512"],
                      [1, 7, 33, 300], ["mask:0.1,1.0"]),
    "gqa-hd64": (["--d-model", "256", "--n-layers", "2", "--n-heads", "4", "--n-kv-heads", "2"], [5, 64, 129], []),
    "mqa-hd80": (["--d-model", "160", "--n-layers", "2", "--n-heads", "2", "--n-kv-heads", "1"], [3, 17, 65], ["mask:1.1"]),
    "hd128-wide-q": (["--d-model", "128", "--n-layers", "2", "--n-heads", "4", "--n-kv-heads", "2", "--head-dim", "128"],
                     [9, 40], []),
    "pruned": (["--d-model", "64", "--n-layers", "3", "--n-heads", "4", "--n-kv-heads", "2",
                "--head-layout", "4:2/0:0/3:2:r"], [1, 11, 70], ["mask:0.3,2.0,2.2"]),
    "pruned-odd-map": (["--d-model", "96", "--n-layers", "2", "--n-heads", "6", "--n-kv-heads", "3",
                        "--head-layout", "5:3:r/2:1:r", "--seed", "5"], [13, 31], []),
    "bf16": (["--d-model", "128", "--n-layers", "2", "--n-heads", "4", "--n-kv-heads", "2", "--dtype", "bf16"],
             [7, 50], ["bf16"]),
    "f16-sharded": (["--d-model", "64", "--n-layers", "2", "--n-heads", "4", "--n-kv-heads", "1", "--dtype", "f16",
                     "--shards", "3"], [21], []),
    "rope-linear": (["--d-model", "64", "--n-layers", "1", "--n-heads", "2", "--rope-scaling", "linear:4"], [45], []),
    "rope-dynamic": (["--d-model", "64", "--n-layers", "1", "--n-heads", "2", "--max-pos", "32",
                      "--rope-scaling", "dynamic:2"], [20, 77], ["ctx"]),
    "rope-llama3": (["--d-model", "128", "--n-layers", "1", "--n-heads", "2", "--rope-theta", "500000",
                     "--max-pos", "256", "--rope-scaling", "llama3:8:1:4:64"], [90], []),
    "mistral-window": (["--arch", "mistral", "--d-model", "64", "--n-layers", "2", "--n-heads", "4",
                        "--n-kv-heads", "2", "--sliding-window", "16"], [40, 9], []),
}


def run(cmd, **kw):
    done = subprocess.run(cmd, capture_output=True, **kw)
    if done.returncode != 0:
        sys.stderr.write(done.stderr.decode(errors="replace"))
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}")
    return done.stdout


class Checker:
    def __init__(self):
        self.failed = 0

    def same_shape(self, what, ours, ref):
        """ours and ref as float64 arrays, or None (a failure) when their shapes differ."""
        ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
        if ours.shape == ref.shape:
            return ours, ref
        print(f"FAILED {what}: shape {ours.shape} vs reference {ref.shape}")
        self.failed += 1
        return None

    def close(self, what, ours, ref, bound):
        if (pair := self.same_shape(what, ours, ref)) is None:
            return
        ours, ref = pair
        error = float(np.abs(ours - ref).max()) if ours.size else 0.0
        ok = error <= bound
        print(f"{'ok' if ok else 'FAILED'} {what}: max error {error:.3g} (bound {bound:.3g})")
        self.failed += not ok

    def within(self, what, ours, ref, bound):
        """|ours - ref| <= bound elementwise; reports the largest share of its bound an error uses."""
        if (pair := self.same_shape(what, ours, ref)) is None:
            return
        ours, ref = pair
        error = np.abs(ours - ref)
        share = float((error / bound).max()) if ours.size else 0.0
        worst = np.unravel_index(int(np.argmax(error / bound)), error.shape) if ours.size else ()
        ok = share <= 1.0
        print(f"{'ok' if ok else 'FAILED'} {what}: max error {float(error.max()) if ours.size else 0:.3g}, "
              f"{share:.2g} of its bound (at {tuple(map(int, worst))}: {float(error[worst]) if ours.size else 0:.3g} "
              f"of {float(bound[worst]) if ours.size else 0:.3g})")
        self.failed += not ok

    def equal(self, what, ours, ref):
        ok = np.array_equal(np.asarray(ours), np.asarray(ref))
        print(f"{'ok' if ok else 'FAILED'} {what}: equal")
        self.failed += not ok


def scale(x):
    return float(np.abs(x).max()) if np.size(x) else 1.0


def compare_frames(check, label, ours, ref, rel):
    """Frames of one id line: logits, hidden, attention, kv (in that order in both streams)."""
    for (t_ours, m_ours), (t_ref, m_ref) in zip(ours, ref):
        kind = m_ours.get("heads.kind")
        if kind != m_ref.get("heads.kind") or m_ours.get("heads.tokens") != m_ref.get("heads.tokens"):
            check.equal(f"{label} frame kinds and tokens", (kind, m_ours.get("heads.tokens")),
                        (m_ref.get("heads.kind"), m_ref.get("heads.tokens")))
            continue
        for name, want in t_ref.items():
            if name.startswith("bound."):
                continue
            got, bf16_bound = t_ours.get(name), t_ref.get("bound." + name)
            if got is None:
                check.equal(f"{label} {name} present", False, True)
            elif bf16_bound is not None and want.shape[0]:
                f32 = 1e-4 * (1 if name.startswith("attention.") else scale(want))
                check.within(f"{label} {name}", got, want, np.asarray(bf16_bound, np.float64) + f32)
            elif name.endswith(".pos"):
                if want.shape[0]:
                    check.equal(f"{label} {name}", got, want)
            elif name.startswith("attention.") or ".received" in name:
                if want.shape[0]:
                    check.close(f"{label} {name}", got, want, 1e-4 * (1 if name.startswith("attention.") else scale(want)))
            elif name.startswith("kv.") and not want.shape[0]:
                continue  # a layer without heads: no slots to compare
            else:
                check.close(f"{label} {name}", got, want, rel * scale(want))


def frames_by_line(frames, per_line):
    return [frames[i:i + per_line] for i in range(0, len(frames), per_line)]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--infer", required=True)
    p.add_argument("case")
    args = p.parse_args()
    if args.case == "list":
        print("\n".join(CASES))
        return 0
    model_args, lengths, extras = CASES[args.case]
    check = Checker()
    rng = np.random.default_rng(sum(map(ord, args.case)))
    with tempfile.TemporaryDirectory(prefix="heads-engine-test-") as tmp:
        model = os.path.join(tmp, "model")
        run([PYTHON, MAKE_MODEL, "-o", model, "--vocab", "300"] + model_args)
        ids = os.path.join(tmp, "ids")
        with open(ids, "w") as f:
            for n in lengths:
                f.write(" ".join(str(int(x)) for x in [1] + list(rng.integers(3, 300, n - 1))) + "\n")
        longest = ["--ctx", str(max(lengths))] if "ctx" in extras else []
        what = ["--logits", "all", "--hidden", "all", "--attention", "all", "--kv"]
        variants = [("", [], 1e-4)]
        for extra in extras:
            if extra.startswith("mask:"):
                variants.append((" masked", ["--mask-heads", extra[5:]], 1e-4))
        if "bf16" in extras:
            variants = [(" f32-math", ["--precision", "f32"], 1e-4), (" bf16-math", ["--precision", "bf16"], 1e-4)]
            bf16_arithmetic = "bf16 arithmetic: yes" in run([args.infer, "--version"]).decode()
            print(f"{args.infer}: bf16 arithmetic {'on this CPU path: bf16-math compared with reference.py --bf16-math' if bf16_arithmetic else 'not on this CPU path: bf16 weights multiplied in f32, f32 tolerance'}")
        for label, flags, rel in variants:
            reference_flags = [f for f in flags if f not in ("--precision", "f32", "bf16")] or []
            if "bf16" in flags and bf16_arithmetic:
                reference_flags.append("--bf16-math")
            ours = reference.read_frames(run([args.infer, "-m", model] + what + flags + longest + [ids]))
            ref = reference.read_frames(run([PYTHON, REFERENCE, model, "--ids-file", ids] + what + reference_flags))
            if len(ours) != len(ref):
                check.equal(f"{args.case}{label}: number of frames", len(ours), len(ref))
                continue
            for line, (o, r) in enumerate(zip(frames_by_line(ours, 4), frames_by_line(ref, 4))):
                compare_frames(check, f"{args.case}{label} line {line + 1} ({lengths[line]} tokens)", o, r, rel)
    print(f"{args.case}: {'all ok' if not check.failed else f'{check.failed} FAILED'}")
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
