#!/usr/bin/python3
"""Frames written by lib/safetensors read back with numpy (and Python's
safetensors where installed), files laid out as Python's safetensors writes
them read by lib/safetensors, and hostile files refused with one clear line.

usage: safetensors_numpy.py FRAME_TOOL
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

import numpy as np

TOOL = sys.argv[1]
DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64,
          "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
failures = []


def check(condition, what):
    if not condition:
        failures.append(what)
        print("FAIL:", what)


def parse_frames(blob):
    """Frames back to back, parsed from the format's definition alone."""
    frames, at = [], 0
    while at < len(blob):
        (size,) = struct.unpack_from("<Q", blob, at)
        header = json.loads(blob[at + 8:at + 8 + size])
        start = at + 8 + size
        check(size % 8 == 0, "header size is a multiple of 8")
        meta = header.pop("__metadata__", {})
        tensors, end = {}, start
        for name, entry in header.items():
            begin, stop = entry["data_offsets"]
            array = np.frombuffer(blob[start + begin:start + stop], dtype=DTYPES[entry["dtype"]])
            if entry["dtype"] == "BF16":
                array = (array.astype(np.uint32) << 16).view(np.float32)
            tensors[name] = array.reshape(entry["shape"])
            end = max(end, start + stop)
        frames.append((meta, tensors))
        at = end
    return frames


def expected(frame_index, k, dtype, count):
    values = frame_index * 100 + k + np.arange(count) / 4
    if dtype in ("I32", "I64"):
        return np.floor(values)
    if dtype == "I8":
        return np.floor(values) % 128
    if dtype == "U8":
        return np.floor(values) % 256
    return values


def check_sample(meta, tensors, frame_index):
    check(meta == {"heads.kind": "kv", "heads.tokens": f"1 {frame_index} 2"}, f"metadata of frame {frame_index}")
    for k, (name, dtype) in enumerate([("f32", "F32"), ("bf16", "BF16"), ("f16", "F16"), ("i32", "I32"),
                                       ("i8", "I8"), ("u8", "U8"), ("f64", "F64"), ("i64", "I64")]):
        array = tensors[name]
        check(array.shape == (2, 3, k + 1), f"shape of {name}")
        tolerance = {"BF16": 1.0, "F16": 0.1}.get(dtype, 1e-5)  # 8 and 11 significant bits
        check(np.allclose(array.ravel().astype(np.float64), expected(frame_index, k, dtype, array.size),
                          atol=tolerance), f"values of {name} in frame {frame_index}")


def run(*args, stdin=None):
    return subprocess.run([TOOL, *args], input=stdin, capture_output=True)


with tempfile.TemporaryDirectory() as tmp:
    # One frame written to a file: numpy reads it, and so does safetensors if present.
    path = os.path.join(tmp, "one.safetensors")
    check(run("write", path).returncode == 0, "frame_tool write")
    blob = open(path, "rb").read()
    (meta, tensors), = parse_frames(blob)
    check_sample(meta, tensors, 0)
    try:
        from safetensors.numpy import load_file
        loaded = load_file(path)
        check(np.array_equal(loaded["f32"], tensors["f32"]), "Python safetensors reads the file")
    except ImportError:
        print("note: Python's safetensors is not installed; checked with numpy alone")

    # A stream of frames: each one parses on its own, back to back.
    stream = run("stream", "3").stdout
    frames = parse_frames(stream)
    check(len(frames) == 3, "three frames in the stream")
    for index, (meta, tensors) in enumerate(frames):
        check_sample(meta, tensors, index)

    # A file laid out as Python's safetensors lays it out (sorted by dtype
    # size, then name; header padded with spaces), read by lib/safetensors.
    arrays = {"b.weight": np.arange(6, dtype=np.float32).reshape(2, 3) * 0.5,
              "a.bias": np.array([1, -2, 3], dtype=np.int8),
              "c.half": np.linspace(-1, 1, 5).astype(np.float16)}
    names = sorted(arrays, key=lambda n: (-arrays[n].dtype.itemsize, n))
    header, offset, data = {"__metadata__": {"format": "pt"}}, 0, b""
    for name in names:
        raw = arrays[name].tobytes()
        dtype = {np.float32: "F32", np.int8: "I8", np.float16: "F16"}[arrays[name].dtype.type]
        header[name] = {"dtype": dtype, "shape": list(arrays[name].shape), "data_offsets": [offset, offset + len(raw)]}
        offset, data = offset + len(raw), data + raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    py_path = os.path.join(tmp, "py.safetensors")
    open(py_path, "wb").write(struct.pack("<Q", len(text)) + text + data)
    for command in ("dump-file", "dump"):
        result = run(command, py_path)
        check(result.returncode == 0, f"frame_tool {command} reads a numpy-written file: {result.stderr!r}")
        lines = result.stdout.decode().splitlines()
        check("meta format pt" in lines, f"{command}: metadata")
        for name in names:
            array = arrays[name]
            want = f"tensor {name} {header[name]['dtype']} [{', '.join(map(str, array.shape))}] " \
                   f"{float(array.astype(np.float64).sum()):.6f}"
            check(want in lines, f"{command}: {want}")

    # Hostile files: exit 1, one line "frame_tool: FILE: what", no crash.
    good = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}

    def blob_of(header_text, data=b"\0" * 8, size=None):
        header_bytes = header_text.encode() if isinstance(header_text, str) else header_text
        return struct.pack("<Q", len(header_bytes) if size is None else size) + header_bytes + data

    hostile = {
        "header size past the end": (blob_of(json.dumps(good), size=10**6), "past the end"),
        "header not JSON": (blob_of("{not json}"), "the header is not valid JSON"),
        "unknown dtype": (blob_of(json.dumps({"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}})),
                          "unknown dtype 'Q4'"),
        "offset out of range": (blob_of(json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})),
                                "belong to no tensor"),
        "overlapping tensors": (blob_of(json.dumps({"a": good["a"], "b": {"dtype": "F32", "shape": [1],
                                                                         "data_offsets": [4, 8]}})), "overlap"),
        "data past the end": (blob_of(json.dumps(good), data=b"\0" * 4), "truncated"),
        "trailing garbage": (blob_of(json.dumps(good), data=b"\0" * 12), "trailing garbage"),
    }
    for what, (content, message) in hostile.items():
        bad_path = os.path.join(tmp, "bad.safetensors")
        open(bad_path, "wb").write(content)
        result = run("dump-file", bad_path)
        err = result.stderr.decode()
        check(result.returncode == 1 and err.count("\n") == 1 and err.startswith(f"frame_tool: {bad_path}: ")
              and message in err, f"{what}: {err!r}")

    # A truncated frame in a stream names the frame.
    truncated = stream[:len(stream) - 5]
    result = run("dump", "-", stdin=truncated)
    err = result.stderr.decode()
    check(result.returncode == 1 and err.startswith("frame_tool: <stdin>: frame 3: truncated"), f"truncated: {err!r}")
    check(result.stdout.decode().count("frame ") == 2, "the two whole frames were dumped before the error")

print(f"{'0 failed' if not failures else f'{len(failures)} failed'}")
sys.exit(1 if failures else 0)
