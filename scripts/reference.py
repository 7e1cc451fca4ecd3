#!/usr/bin/python3
"""The project's numpy reference forward pass of the Llama family: the oracle
the C++ engine is checked against, and a tool to evaluate a model.

Plain numpy, written for readability; float64 math by default, float32 with
dtype=np.float32 (`--dtype float32`), vectorized over whole sequences.

Models
    A Hugging Face directory: config.json, then model.safetensors or shards
    listed in model.safetensors.index.json; weights F32, BF16 or F16.
    LlamaForCausalLM and MistralForCausalLM: RMSNorm (rms_norm_eps), RoPE in
    the rotate-half layout with rope_theta and rope_scaling linear, dynamic
    (dynamic NTK) or llama3; head_dim from the `head_dim` key, else
    d_model / num_attention_heads; SwiGLU MLP; MHA, GQA, MQA; tied or untied
    embeddings; Mistral's sliding_window (a query at position q sees keys at
    positions p with q - sliding_window < p <= q; HF's default 4096 when the
    key is absent, none when it is null). No biases.

The pruned-head extension (a contract shared with the engine)
    config.json may hold
        "head_layout": {"layers": [{"query_heads": [...], "kv_heads": [...],
                                    "kv_head_of": [...]}, ...]}
    with one entry per layer. query_heads are the original ids
    (0 <= id < num_attention_heads, distinct) of the query heads the layer
    keeps, in the order of its weight rows; kv_heads the original ids of its
    KV heads (0 <= id < num_key_value_heads, distinct); kv_head_of[i] the
    index into kv_heads of the KV head that serves query head i. Every KV head
    serves at least one query head. Layer l has n_heads_l = len(query_heads)
    and n_kv_heads_l = len(kv_heads): q_proj [n_heads_l*head_dim, d_model],
    k_proj and v_proj [n_kv_heads_l*head_dim, d_model], o_proj
    [d_model, n_heads_l*head_dim]; head_dim stays the config's. A layer with no
    query heads has no KV heads and none of the four tensors; its attention
    adds nothing (the residual passes through). Without head_layout, every
    layer has num_attention_heads query heads and num_key_value_heads KV
    heads, and query head h is served by KV head h // (n_heads / n_kv_heads).
    Masks and attention tensors name a head by (layer, index of the head in
    the layer), from 0; head tables by (layer, original id), so that the
    tables of a model and of its pruned copy join. The two agree until a
    layer is pruned.

Forward (forward())
    ids [T] at positions start_pos .. start_pos+T-1 (or explicit positions).
    hidden[L], L = 0..n_layers-1: the residual stream after layer L (after its
    attention and MLP residual adds), before any norm: hidden[L] is the input
    of layer L+1. The embeddings are not a hidden state. final_norm:
    RMSNorm(hidden[n_layers-1]) * model.norm.weight, the vector the LM head
    multiplies (HF's last `hidden_states` entry); logits = final_norm @ W^T.
    attention[L]: softmax probabilities [n_heads_l, T, S], S = past slots +
    T, keys in slot order (past slots first, then the new tokens); 0 where
    masked. A head mask zeroes that head's attention output before o_proj.
    kv[L]: KvLayer(k [n_kv_heads_l, S, head_dim] after RoPE, v, pos
    [n_kv_heads_l, S]): the past cache followed by the new tokens.
    received[L], received_recent[L] [n_kv_heads_l, S]: the attention each slot
    received from all T queries of the call (from the last R), summed over the
    query heads its KV head serves (the kv frame's kv.L.received and
    kv.L.received_recent, R = heads.recent_queries).

KV cache continuation
    past = the kv list of an earlier forward (or a kv frame). Slot positions:
    >= 0 a real token at that position (visible to queries at positions >= it,
    within the sliding window), -1 an unused slot (never visible), < -1 a
    synthetic slot (always visible). New tokens get positions
    1 + the largest position in the cache unless start_pos is given. Dynamic
    RoPE (as HF) computes its base for each forward call from
    seq_len = 1 + the largest new position; cached keys keep their rotation.

Per-head statistics (HeadStats, `--head-stats`), from full attention matrices
    Each sequence runs alone from position 0; a = attention[L][h] [T, T].
      entropy    mean over every query t of -sum_j a[t,j] ln a[t,j]  (natural
                 log; 0 ln 0 = 0; t = 0 included, whose entropy is 0)
      sink       mean over every query t of a[t,0]  (t = 0 included)
      prev_token mean over queries t >= 1 of a[t,t-1]
      induction  on repeat sequences only: mean over second-copy queries i of
                 a[i, i-L+1], the token after the earlier occurrence
      echo       on repeat sequences only: mean of a[i, i-L], the earlier
                 occurrence itself
    A repeat sequence has length 2L+1 (L >= 1) with ids[1..L] == ids[L+1..2L]:
    position 0 holds BOS, the first copy x_1..x_L positions 1..L, the second
    copy positions L+1..2L; second-copy queries are i = L+1 .. 2L. Means pool
    all queries of all sequences (sum over sequences / number of queries);
    induction and echo are NaN when no sequence repeats.

Perplexity (perplexity()), llama-perplexity's method (perplexity() in
llama.cpp's tools/perplexity/perplexity.cpp, without --ppl-stride)
    tokens: the whole text's ids with BOS first, taken as given. Needs at
    least 2*n_ctx tokens. n_chunks = len(tokens) // n_ctx (the tail is
    dropped). Chunk c is tokens[c*n_ctx : (c+1)*n_ctx] with its first token
    replaced by BOS (bos_token_id), at positions 0..n_ctx-1 with an empty cache.
    Scored: the predictions of tokens[c*n_ctx + j + 1] from the logits at j,
    for j = n_ctx//2 .. n_ctx-2 (n_ctx - n_ctx//2 - 1 per chunk).
    nll = -log_softmax(logits[j])[target]; PPL = exp(mean nll);
    error = PPL * sqrt((mean(nll^2) - mean(nll)^2) / (count - 1)).

Greedy decoding (greedy()): argmax of the last logits, ties to the lowest id,
    n tokens, through the KV cache; EOS does not stop it unless asked.

Safetensors: read_safetensors / write_safetensors / read_frames, a minimal
    reader and writer (F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL; zero-size
    tensors; the header padded with spaces to 8 bytes, tensors back to back).

Run `reference.py --help` for the command line.
"""

import argparse
import json
import math
import os
import struct
import sys
from dataclasses import dataclass, field

import numpy as np

# ----------------------------------------------------------------------------
# safetensors

_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"), "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
    "BF16": np.dtype("<u2"),  # raw bits; decoded to float32 on reading
}
_MAX_HEADER = 100_000_000


class Bf16:
    """A tensor to be written as BF16 (float32 rounded to nearest even)."""

    def __init__(self, values):
        self.bits = f32_to_bf16_bits(np.asarray(values, dtype=np.float32))
        self.shape = self.bits.shape


def f32_to_bf16_bits(x):
    """float32 -> bf16 bit patterns (uint16), round to nearest even; NaN kept NaN."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    nan = np.isnan(x)
    return np.where(nan, (u >> np.uint32(16)) | np.uint32(0x40), rounded).astype(np.uint16)


def bf16_bits_to_f32(bits):
    return (np.asarray(bits, dtype=np.uint32) << np.uint32(16)).view(np.float32)


def _parse_frame(buf, offset, where):
    """One frame from buf (bytes-like / uint8 array) at offset -> (tensors, metadata, end)."""
    if len(buf) - offset < 8:
        raise ValueError(f"{where}: truncated header size")
    (n,) = struct.unpack_from("<Q", bytes(buf[offset:offset + 8]))
    if n > _MAX_HEADER or offset + 8 + n > len(buf):
        raise ValueError(f"{where}: header size {n} exceeds the data")
    try:
        header = json.loads(bytes(buf[offset + 8:offset + 8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{where}: bad JSON header: {e}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{where}: header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    base = offset + 8 + n
    entries = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    end = base
    tensors = {}
    for name, info in entries:
        dtype = _DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise ValueError(f"{where}: {name}: unknown dtype {info.get('dtype')!r}")
        shape = tuple(int(s) for s in info["shape"])
        begin, stop = (int(o) for o in info["data_offsets"])
        count = math.prod(shape)
        if begin < 0 or stop < begin or base + stop > len(buf) or stop - begin != count * dtype.itemsize:
            raise ValueError(f"{where}: {name}: data_offsets {begin}..{stop} do not fit shape {list(shape)}")
        if count:
            array = np.frombuffer(buf, dtype=np.uint8, count=stop - begin, offset=base + begin)
            array = array.view(dtype).reshape(shape)
        else:
            array = np.zeros(shape, dtype)
        if info["dtype"] == "BF16":
            array = bf16_bits_to_f32(array)
        tensors[name] = array
        end = max(end, base + stop)
    return tensors, metadata, end


def read_safetensors(path):
    """A .safetensors file -> (tensors {name: array} in data order, metadata {str: str}).
    The arrays are read-only views of a memory map (BF16 is decoded to float32)."""
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path}: empty file")
    buf = np.memmap(path, dtype=np.uint8, mode="r")
    tensors, metadata, end = _parse_frame(buf, 0, path)
    if end != len(buf):
        raise ValueError(f"{path}: {len(buf) - end} bytes after the last tensor")
    return tensors, metadata


def read_frames(path_or_bytes):
    """A stream of frames back to back (as `infer` writes them) -> [(tensors, metadata)]."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        buf, where = bytes(path_or_bytes), "stream"
    else:
        with open(path_or_bytes, "rb") as f:
            buf, where = f.read(), path_or_bytes
    frames, offset = [], 0
    while offset < len(buf):
        tensors, metadata, offset = _parse_frame(buf, offset, f"{where} frame {len(frames)}")
        frames.append((tensors, metadata))
    return frames


def frame_bytes(tensors, metadata=None):
    """One safetensors blob: tensors ({name: ndarray or Bf16}) back to back in the given order."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, value in tensors.items():
        if isinstance(value, Bf16):
            dtype_name, data = "BF16", value.bits
        else:
            data = np.asarray(value)
            dtype_name = next((k for k, dt in _DTYPES.items() if k != "BF16" and dt.kind == data.dtype.kind
                               and dt.itemsize == data.dtype.itemsize), None)
            if dtype_name is None:
                raise ValueError(f"{name}: cannot write dtype {data.dtype}")
            data = data.astype(_DTYPES[dtype_name], copy=False)
        raw = np.ascontiguousarray(data).tobytes()
        header[name] = {"dtype": dtype_name, "shape": list(data.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def write_safetensors(path, tensors, metadata=None):
    """Writes one frame to path atomically (a temporary name, then rename); "-" is stdout."""
    write_bytes(path, frame_bytes(tensors, metadata))


def write_bytes(path, blob):
    """blob to path atomically (a temporary name, then rename); "-" is stdout."""
    if path == "-":
        sys.stdout.buffer.write(blob)
        sys.stdout.buffer.flush()
        return
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(blob)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------
# config and weights


@dataclass
class LayerHeads:
    query_head_ids: list  # original id of each query head, by index in the layer (weight-row order)
    kv_head_ids: list     # original id of each KV head, by index
    kv_head_of: list      # for each query head, the index (into kv_head_ids) of the KV head serving it

    @property
    def n_heads(self):
        return len(self.query_head_ids)

    @property
    def n_kv_heads(self):
        return len(self.kv_head_ids)


@dataclass
class Config:
    arch: str
    d_model: int
    n_layers: int
    n_heads_unpruned: int     # num_attention_heads; a layer's count is layers[l].n_heads
    n_kv_heads_unpruned: int  # num_key_value_heads; a layer's is layers[l].n_kv_heads
    head_dim: int
    d_ff: int
    vocab_size: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict    # None, or {"type": linear|dynamic|llama3, factor, ...}
    max_position_embeddings: int
    sliding_window: int   # None for no window
    tied: bool
    bos_id: int
    eos_id: int
    layers: list          # [LayerHeads] per layer
    pruned: bool          # config.json has head_layout


def _get_int(cfg, key, default=None):
    value = cfg.get(key, default)
    if value is None or isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"config.json: {key} must be an integer, got {value!r}")
    return value


def _first_id(cfg, key, default):
    """A token id key that may be null (the default), an integer or a list (its first)."""
    value = cfg.get(key)
    if isinstance(value, list) and value:
        value = value[0]
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"config.json: {key} must be an integer, got {value!r}")
    return value


def _parse_rope_scaling(rs, where="config.json"):
    if rs is None:
        return None
    kind = rs.get("rope_type", rs.get("type"))
    if kind in (None, "default"):
        return None
    factor = float(rs["factor"]) if "factor" in rs else None
    if kind in ("linear", "dynamic"):
        if factor is None or factor <= 0:
            raise ValueError(f"{where}: rope_scaling {kind} needs a positive factor")
        return {"type": kind, "factor": factor}
    if kind == "llama3":
        try:
            out = {"type": kind, "factor": factor, "low_freq_factor": float(rs["low_freq_factor"]),
                   "high_freq_factor": float(rs["high_freq_factor"]),
                   "original_max_position_embeddings": int(rs["original_max_position_embeddings"])}
        except (KeyError, TypeError) as e:
            raise ValueError(f"{where}: rope_scaling llama3 lacks {e}") from None
        if factor is None or out["high_freq_factor"] <= out["low_freq_factor"]:
            raise ValueError(f"{where}: rope_scaling llama3 needs factor and high_freq_factor > low_freq_factor")
        return out
    raise ValueError(f"{where}: unsupported rope_scaling type {kind!r} (linear, dynamic, llama3)")


def _parse_head_layout(layout, n_layers, n_heads, n_kv_heads):
    if not isinstance(layout, dict) or not isinstance(layout.get("layers"), list):
        raise ValueError("config.json: head_layout must be {\"layers\": [...]}")
    if len(layout["layers"]) != n_layers:
        raise ValueError(f"config.json: head_layout has {len(layout['layers'])} layers, the model {n_layers}")
    layers = []
    for l, entry in enumerate(layout["layers"]):
        where = f"config.json: head_layout layer {l}"
        try:
            q, kv, of = ([int(x) for x in entry[k]] for k in ("query_heads", "kv_heads", "kv_head_of"))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: needs integer lists query_heads, kv_heads, kv_head_of ({e})") from None
        if len(set(q)) != len(q) or any(not 0 <= h < n_heads for h in q):
            raise ValueError(f"{where}: query_heads must be distinct ids in [0, {n_heads})")
        if len(set(kv)) != len(kv) or any(not 0 <= h < n_kv_heads for h in kv):
            raise ValueError(f"{where}: kv_heads must be distinct ids in [0, {n_kv_heads})")
        if len(of) != len(q) or any(not 0 <= g < len(kv) for g in of):
            raise ValueError(f"{where}: kv_head_of needs one index into kv_heads per query head")
        if set(of) != set(range(len(kv))):
            raise ValueError(f"{where}: every KV head must serve at least one query head")
        layers.append(LayerHeads(q, kv, of))
    return layers


def stock_layer_heads(n_heads, n_kv_heads):
    """The layout of an unpruned layer: query head h served by KV head h // (n_heads/n_kv_heads)."""
    group = n_heads // n_kv_heads
    return LayerHeads(list(range(n_heads)), list(range(n_kv_heads)), [h // group for h in range(n_heads)])


def read_config(model_dir):
    """config.json -> Config; raises ValueError naming what is unsupported or wrong."""
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        return read_config_dict(json.load(f))


def read_config_dict(cfg):
    """The parsed config.json object -> Config (see read_config)."""
    archs = cfg.get("architectures") or []
    arch = archs[0] if archs else None
    if arch not in ("LlamaForCausalLM", "MistralForCausalLM"):
        raise ValueError(f"config.json: architecture {arch!r} is not LlamaForCausalLM or MistralForCausalLM")
    for key in ("attention_bias", "mlp_bias"):
        if cfg.get(key):
            raise ValueError(f"config.json: {key} is not supported")
    if cfg.get("hidden_act", "silu") != "silu":
        raise ValueError(f"config.json: hidden_act {cfg['hidden_act']!r} is not silu")
    d_model = _get_int(cfg, "hidden_size")
    n_layers = _get_int(cfg, "num_hidden_layers")
    n_heads = _get_int(cfg, "num_attention_heads")
    n_kv_heads = _get_int(cfg, "num_key_value_heads", n_heads)
    head_dim = cfg.get("head_dim")
    head_dim = _get_int(cfg, "head_dim") if head_dim is not None else d_model // n_heads
    if "head_dim" not in cfg and d_model % n_heads:
        raise ValueError("config.json: hidden_size is not a multiple of num_attention_heads and head_dim is absent")
    if head_dim % 2:
        raise ValueError(f"config.json: head_dim {head_dim} is odd (RoPE needs pairs)")
    if n_kv_heads < 1 or n_heads % n_kv_heads:
        raise ValueError(f"config.json: num_attention_heads {n_heads} is not a multiple of num_key_value_heads {n_kv_heads}")
    mistral = arch == "MistralForCausalLM"
    window = cfg.get("sliding_window", 4096) if mistral else None
    if window is not None and (not isinstance(window, int) or window < 1):
        raise ValueError(f"config.json: sliding_window must be a positive integer or null, got {window!r}")
    pruned = "head_layout" in cfg and cfg["head_layout"] is not None
    layers = (_parse_head_layout(cfg["head_layout"], n_layers, n_heads, n_kv_heads) if pruned
              else [stock_layer_heads(n_heads, n_kv_heads) for _ in range(n_layers)])
    return Config(
        arch=arch, d_model=d_model, n_layers=n_layers, n_heads_unpruned=n_heads, n_kv_heads_unpruned=n_kv_heads,
        head_dim=head_dim, d_ff=_get_int(cfg, "intermediate_size"), vocab_size=_get_int(cfg, "vocab_size"),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)), rope_theta=float(cfg.get("rope_theta", 10000.0)),
        rope_scaling=_parse_rope_scaling(cfg.get("rope_scaling")),
        max_position_embeddings=_get_int(cfg, "max_position_embeddings", 131072 if mistral else 2048),
        sliding_window=window, tied=bool(cfg.get("tie_word_embeddings", False)),
        bos_id=_first_id(cfg, "bos_token_id", 1), eos_id=_first_id(cfg, "eos_token_id", 2),
        layers=layers, pruned=pruned)


def read_weights(model_dir):
    """All tensors of the model directory (single file or shards) -> {name: array}."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        tensors = {}
        for shard in sorted(set(weight_map.values())):
            part, _ = read_safetensors(os.path.join(model_dir, shard))
            tensors.update(part)
        missing = sorted(set(weight_map) - set(tensors))
        if missing:
            raise ValueError(f"{index}: {missing[0]} is not in its shard")
        return tensors
    single = os.path.join(model_dir, "model.safetensors")
    if not os.path.exists(single):
        raise ValueError(f"{model_dir}: no model.safetensors or model.safetensors.index.json")
    return read_safetensors(single)[0]


@dataclass
class Layer:
    heads: LayerHeads
    attn_norm: np.ndarray   # [d_model]
    wq: np.ndarray          # [n_heads_l*head_dim, d_model]   (None when the layer has no heads)
    wk: np.ndarray          # [n_kv_heads_l*head_dim, d_model]
    wv: np.ndarray          # [n_kv_heads_l*head_dim, d_model]
    wo: np.ndarray          # [d_model, n_heads_l*head_dim]
    mlp_norm: np.ndarray    # [d_model]
    w_gate: np.ndarray      # [d_ff, d_model]
    w_up: np.ndarray        # [d_ff, d_model]
    w_down: np.ndarray      # [d_model, d_ff]


@dataclass
class Model:
    config: Config
    dtype: np.dtype
    embed: np.ndarray       # [vocab_size, d_model]
    layers: list            # [Layer]
    norm: np.ndarray        # [d_model]
    lm_head: np.ndarray     # [vocab_size, d_model] (the embedding when tied)


def load_model(model_dir, dtype=np.float64):
    """Reads config and weights, checks every expected tensor's presence and shape,
    and converts the weights to dtype (np.float64 or np.float32)."""
    config = read_config(model_dir)
    raw = read_weights(model_dir)
    c = config

    def take(name, shape):
        if name not in raw:
            raise ValueError(f"{model_dir}: missing tensor {name}")
        t = raw[name]
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"{model_dir}: tensor {name} has shape {list(t.shape)}, expected {list(shape)}")
        return np.array(t, dtype=dtype)  # an aligned copy: BLAS skips unaligned mmap views

    def absent(name):
        if name in raw:
            raise ValueError(f"{model_dir}: tensor {name} present in a layer with no heads")
        return None

    layers = []
    for l, heads in enumerate(c.layers):
        p = f"model.layers.{l}."
        q_rows, kv_rows = heads.n_heads * c.head_dim, heads.n_kv_heads * c.head_dim
        attn = [p + f"self_attn.{x}_proj.weight" for x in "qkvo"]
        if heads.n_heads:
            wq, wk, wv, wo = (take(attn[0], (q_rows, c.d_model)), take(attn[1], (kv_rows, c.d_model)),
                              take(attn[2], (kv_rows, c.d_model)), take(attn[3], (c.d_model, q_rows)))
        else:
            wq, wk, wv, wo = (absent(n) for n in attn)
        layers.append(Layer(
            heads=heads, attn_norm=take(p + "input_layernorm.weight", (c.d_model,)), wq=wq, wk=wk, wv=wv, wo=wo,
            mlp_norm=take(p + "post_attention_layernorm.weight", (c.d_model,)),
            w_gate=take(p + "mlp.gate_proj.weight", (c.d_ff, c.d_model)),
            w_up=take(p + "mlp.up_proj.weight", (c.d_ff, c.d_model)),
            w_down=take(p + "mlp.down_proj.weight", (c.d_model, c.d_ff))))
    embed = take("model.embed_tokens.weight", (c.vocab_size, c.d_model))
    lm_head = embed if c.tied else take("lm_head.weight", (c.vocab_size, c.d_model))
    return Model(config=c, dtype=np.dtype(dtype), embed=embed, layers=layers,
                 norm=take("model.norm.weight", (c.d_model,)), lm_head=lm_head)


# ----------------------------------------------------------------------------
# RoPE


def rope_inv_freq(config, seq_len):
    """Inverse frequencies [head_dim/2] (float64) for a forward call whose largest
    position is seq_len - 1, with the config's rope_scaling applied as HF does."""
    dim, base = config.head_dim, config.rope_theta
    rs = config.rope_scaling
    exponents = np.arange(0, dim, 2, dtype=np.float64) / dim
    if rs and rs["type"] == "dynamic" and seq_len > config.max_position_embeddings:
        f, m = rs["factor"], config.max_position_embeddings
        base = base * ((f * seq_len / m) - (f - 1)) ** (dim / (dim - 2))
    inv_freq = 1.0 / base ** exponents
    if rs and rs["type"] == "linear":
        inv_freq = inv_freq / rs["factor"]
    elif rs and rs["type"] == "llama3":
        f, old = rs["factor"], rs["original_max_position_embeddings"]
        low, high = rs["low_freq_factor"], rs["high_freq_factor"]
        wavelen = 2 * math.pi / inv_freq
        smooth = (old / wavelen - low) / (high - low)
        medium = (1 - smooth) * inv_freq / f + smooth * inv_freq
        inv_freq = np.where(wavelen > old / low, inv_freq / f, np.where(wavelen < old / high, inv_freq, medium))
    return inv_freq


def rope_cos_sin(inv_freq, positions):
    """cos, sin [T, head_dim] (float64) in the rotate-half layout: angles repeated twice."""
    angles = np.asarray(positions, dtype=np.float64)[:, None] * inv_freq[None, :]
    angles = np.concatenate([angles, angles], axis=1)
    return np.cos(angles), np.sin(angles)


def apply_rope(x, cos, sin):
    """x [heads, T, head_dim] -> x*cos + rotate_half(x)*sin, rotate_half(x) = [-x2, x1]."""
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


# ----------------------------------------------------------------------------
# forward


@dataclass
class KvLayer:
    k: np.ndarray    # [n_kv_heads_l, slots, head_dim], after RoPE
    v: np.ndarray    # [n_kv_heads_l, slots, head_dim]
    pos: np.ndarray  # [n_kv_heads_l, slots] int32: position; -1 unused; < -1 synthetic


@dataclass
class Output:
    logits: np.ndarray = None                       # [rows, vocab_size]
    hidden: dict = field(default_factory=dict)      # {L: [T, d_model]}
    attention: dict = field(default_factory=dict)   # {L: [n_heads_l, T, slots]}
    kv: list = None                                 # [KvLayer] per layer
    final_norm: np.ndarray = None                   # [T, d_model]
    received: dict = field(default_factory=dict)        # {L: [n_kv_heads_l, slots]}
    received_recent: dict = field(default_factory=dict)  # {L: [n_kv_heads_l, slots]}
    bounds: dict = field(default_factory=dict)  # forward(bf16=True): {frame tensor name: bound, same shape}


def linear(x, w):
    """x [T, in] @ w[out, in]^T -> [T, out]. numpy's einsum loops run 2-8x faster
    than the reference BLAS that Debian's numpy links by default."""
    return np.einsum("ti,oi->to", x, w)


# bf16 arithmetic. On a CPU with bf16 matmul the engine rounds every matmul's
# input (to q/k/v, o, gate/up, down, lm_head) from f32 to bf16, 8 significant
# bits, round to nearest even, and multiplies it by bf16 weights (a bf16
# file's values, exact), products exact and summed in f32. forward(bf16=True)
# rounds the same inputs, so it agrees with such an engine to f32 rounding
# until a value falls within that rounding of a bf16 boundary and the two
# round it one bf16 step apart; from there on the difference is what bf16
# rounding itself does. Bounds for that, derived as the f32 ones are:
#   - rounding moves each input by at most u = 2^-8 of itself; the roundings
#     of a dot product's inputs are independent and partly cancel, so one
#     matmul's output is off by about u of its norm (2-norm, so a few outputs
#     may reach ~2u of the tensor's largest value);
#   - errors of successive matmuls add (RMSNorm rescales, residuals keep them):
#     a value M matmuls from the input is off by <= M u of its scale, with
#     M = 4 per layer (qkv, o, gate/up, down) plus 1 for lm_head. Each term
#     being a typical maximum, not the worst case, the sum leaves the room
#     the f32 bounds' 100x leaves (tests/numeric/engine_test.py);
#   - a score s = q.k / sqrt(head_dim) at layer L has q and k M = 4L + 1
#     matmuls from the input: |ds| <= 2 M u |q| |k| / sqrt(head_dim), and a
#     softmax whose inputs move by <= e moves p_i by <= p_i (e^(2e) - 1).
# The worst case (u times sum |x w| per matmul, compounded) grows past any
# use through softmax and SwiGLU, so these are the bounds tests state.
BF16_UNIT = 2.0 ** -8


def bf16_linear(x, w):
    """linear() as bf16 arithmetic does it: x rounded as the engine rounds an
    f32 matmul input, to f32 and then to bf16 (nearest even); w as given (a
    bf16 file's weights are exact)."""
    rounded = bf16_bits_to_f32(f32_to_bf16_bits(np.asarray(x, dtype=np.float32)))
    return linear(rounded.astype(x.dtype), w)


def rms_norm(x, weight, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def silu(x):
    return x * (0.5 * (1 + np.tanh(0.5 * x)))  # x * sigmoid(x), without overflow


_QUERY_BLOCK = 64


def _visible(q_pos, k_pos, window):
    """[n_kv, T, S] bool: may the query at q_pos[t] see the slot k_pos[g, s]."""
    q = q_pos[None, :, None]
    k = k_pos[:, None, :]
    seen = (k >= 0) & (k <= q)
    if window is not None:
        seen &= q - k < window
    return seen | (k < -1)


def _attention(layer, x, q_pos, cos, sin, past, config, mask_heads, want_probs, recent, bf16_matmuls=None):
    """One attention block on normalized x [T, d_model]; returns (out [T, d_model],
    probs [n_heads_l, T, S] or None, KvLayer of past + new, received or None,
    probs_bound or None); received = ([n_kv_heads_l, S] from all queries, the
    same from the last `recent` queries) when recent is not None.
    bf16_matmuls: None, or bf16 arithmetic with x that many matmuls from the
    input (then probs_bound [n_heads_l, T, S], see "bf16 arithmetic")."""
    heads, hd, T = layer.heads, config.head_dim, x.shape[0]
    matmul = linear if bf16_matmuls is None else bf16_linear
    q = matmul(x, layer.wq).reshape(T, heads.n_heads, hd).transpose(1, 0, 2)
    k = matmul(x, layer.wk).reshape(T, heads.n_kv_heads, hd).transpose(1, 0, 2)
    v = matmul(x, layer.wv).reshape(T, heads.n_kv_heads, hd).transpose(1, 0, 2)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    q_pos = np.asarray(q_pos, dtype=np.float64)  # fractional positions only rotate; kept exact for the mask
    k_pos = np.broadcast_to(q_pos, (heads.n_kv_heads, T))
    if past is not None:
        k = np.concatenate([np.asarray(past.k, dtype=x.dtype), k], axis=1)
        v = np.concatenate([np.asarray(past.v, dtype=x.dtype), v], axis=1)
        k_pos = np.concatenate([np.asarray(past.pos, dtype=np.float64), k_pos], axis=1)
    kv = KvLayer(k=k, v=v, pos=np.floor(k_pos).astype(np.int32))
    of = np.asarray(heads.kv_head_of)
    # Per query head. The fastest numpy forms measured here (reference BLAS):
    # QK^T by matmul on [n_heads_l, head_dim, S] for small head_dim, else by
    # einsum on [n_heads_l, S, head_dim]; PV by einsum on [n_heads_l, head_dim, S].
    keys = np.ascontiguousarray(k[of].transpose(0, 2, 1)) if hd < 32 else k[of]
    values_t = np.ascontiguousarray(v[of].transpose(0, 2, 1))
    scale = x.dtype.type(1.0 / math.sqrt(hd))
    past_slots = k.shape[1] - T
    # A synthetic slot at position -(n + 1) stands for n dropped slots: its logit gets + log n (man/heads.7).
    bias = np.log(np.maximum(-k_pos - 1, 1.0)) * (k_pos < -2) if np.any(k_pos < -2) else None
    same_positions = bool(np.all(k_pos == k_pos[:1]))
    probs = np.zeros((heads.n_heads, T, k.shape[1]), x.dtype) if want_probs else None
    heads_out = np.empty((heads.n_heads, T, hd), x.dtype)
    if recent is not None:
        got, got_recent = (np.zeros((heads.n_heads, k.shape[1]), x.dtype) for _ in range(2))
    probs_bound = None if bf16_matmuls is None else np.zeros((heads.n_heads, T, k.shape[1]))
    keys_by_slot = k[of]  # [n_heads_l, S, head_dim]
    # Blocks of queries: new token j (slot past_slots + j) is invisible to
    # queries before it, so a block needs only the slots up to its last query.
    for b0 in range(0, T, _QUERY_BLOCK):
        b1 = min(T, b0 + _QUERY_BLOCK)
        s1 = past_slots + b1
        if hd < 32:
            scores = q[:, b0:b1] @ keys[:, :, :s1]  # [n_heads_l, block, s1]
        else:
            scores = np.einsum("hqd,hkd->hqk", q[:, b0:b1], keys[:, :s1])
        scores *= scale
        if bias is not None:
            scores += bias[of][:, None, :s1].astype(x.dtype)
        if same_positions:  # one mask [block, s1] for every head
            hidden = ~_visible(q_pos[b0:b1], k_pos[:1, :s1], config.sliding_window)
        else:
            hidden = ~_visible(q_pos[b0:b1], k_pos[:, :s1], config.sliding_window)[of]
        np.copyto(scores, -np.inf, where=hidden)
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        heads_out[:, b0:b1] = np.einsum("hqk,hdk->hqd", scores, values_t[:, :, :s1])
        if want_probs:
            probs[:, b0:b1, :s1] = scores
        if probs_bound is not None:  # see "bf16 arithmetic"
            norms = np.linalg.norm(q[:, b0:b1], axis=-1)[:, :, None] * np.linalg.norm(keys_by_slot[:, :s1], axis=-1)[:, None, :]
            qk_matmuls = bf16_matmuls + 1
            score_error = np.where(hidden, 0.0, 2 * qk_matmuls * BF16_UNIT * float(scale) * norms).max(axis=-1,
                                                                                                     keepdims=True)
            probs_bound[:, b0:b1, :s1] = scores * np.expm1(2 * np.minimum(score_error, 30.0))
        if recent is not None:
            got[:, :s1] += scores.sum(axis=1)
            r0 = max(b0, T - recent)
            if r0 < b1:
                got_recent[:, :s1] += scores[:, r0 - b0:].sum(axis=1)
    for h in mask_heads:
        heads_out[h] = 0
    out = matmul(heads_out.transpose(1, 0, 2).reshape(T, heads.n_heads * hd), layer.wo)
    received = None
    if recent is not None:  # per KV head: summed over the query heads it serves
        received = tuple(np.zeros((heads.n_kv_heads, k.shape[1]), x.dtype) for _ in range(2))
        np.add.at(received[0], of, got)
        np.add.at(received[1], of, got_recent)
    return out, probs, kv, received, probs_bound


def _layer_list(spec, n_layers, what):
    layers = sorted(set(spec))
    bad = [l for l in layers if not 0 <= l < n_layers]
    if bad:
        raise ValueError(f"{what} layer {bad[0]} out of range [0, {n_layers})")
    return layers


def check_mask(model, mask_heads):
    """[(layer, head)] -> {layer: [heads]}; raises ValueError on a head the model lacks."""
    by_layer = {}
    for l, h in mask_heads:
        if not 0 <= l < model.config.n_layers or not 0 <= h < model.layers[l].heads.n_heads:
            raise ValueError(f"mask: head {l}.{h} does not exist")
        by_layer.setdefault(l, []).append(h)
    return by_layer


def past_length(past):
    """1 + the largest real position in a KV cache (0 for none)."""
    if not past:
        return 0
    largest = [int(kv.pos.max()) for kv in past if kv.pos.size]
    return max(largest + [-1]) + 1


def forward(model, ids, *, past=None, start_pos=None, positions=None, mask_heads=(), logits="all",
            hidden=(), attention=(), kv=False, final_norm=False, received=None, bf16=False):
    """One forward pass over ids [T] (T >= 1).

    past: a KV cache ([KvLayer] per layer) to continue from; start_pos: the
    position of ids[0] (default past_length(past)); positions: explicit
    positions [T] instead (may be fractional: RoPE angles only, for tests).
    mask_heads: [(layer, head)] zeroed before o_proj. logits: "all", "last",
    None, or a slice / index array of positions. hidden, attention: layer
    lists. kv: return the cache (past + new). final_norm: return it.
    received: R (an int) to return, per layer, the attention each slot of
    the cache (past + new) received, summed over the query heads that read
    its KV head: from every query of this call (received) and from the last
    R queries (received_recent). Masked heads still count (their attention
    is computed, only their output is zeroed).
    bf16: every matmul's input rounded to bf16 first, as an engine's bf16
    arithmetic does (bf16_linear), and Output.bounds (see "bf16 arithmetic").
    Returns Output."""
    c, dt = model.config, model.dtype
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 1 or ids.size == 0:
        raise ValueError("forward: ids must be a non-empty sequence")
    if ids.min() < 0 or ids.max() >= c.vocab_size:
        bad = ids[(ids < 0) | (ids >= c.vocab_size)][0]
        raise ValueError(f"forward: token id {bad} out of range [0, {c.vocab_size})")
    if past is not None and len(past) != c.n_layers:
        raise ValueError(f"forward: past has {len(past)} layers, the model {c.n_layers}")
    T = ids.size
    if positions is None:
        start = past_length(past) if start_pos is None else start_pos
        positions = np.arange(start, start + T)
    positions = np.asarray(positions)
    if positions.shape != ids.shape or np.any(np.diff(positions) <= 0):
        raise ValueError("forward: positions must be one per id, increasing")
    hidden_layers = set(_layer_list(hidden, c.n_layers, "hidden"))
    attention_layers = set(_layer_list(attention, c.n_layers, "attention"))
    masked = check_mask(model, mask_heads)
    inv_freq = rope_inv_freq(c, int(math.floor(positions.max())) + 1)
    cos, sin = (a.astype(dt) for a in rope_cos_sin(inv_freq, positions))

    out = Output(kv=[] if kv else None)
    matmul = bf16_linear if bf16 else linear
    x = model.embed[ids]  # [T, d_model]
    for l, layer in enumerate(model.layers):
        layer_past = past[l] if past is not None else None
        if layer.heads.n_heads:
            a, probs, cache, got, probs_bound = _attention(
                layer, rms_norm(x, layer.attn_norm, c.rms_norm_eps), positions, cos, sin, layer_past, c,
                masked.get(l, ()), l in attention_layers, received, 4 * l if bf16 else None)
            x = x + a
        else:
            slots = 0 if layer_past is None else layer_past.pos.shape[1]
            probs = np.zeros((0, T, slots + T), dtype=dt)
            cache = KvLayer(np.zeros((0, slots + T, c.head_dim), dt), np.zeros((0, slots + T, c.head_dim), dt),
                            np.zeros((0, slots + T), np.int32))
            got = (np.zeros((0, slots + T), dt),) * 2
            probs_bound = np.zeros(probs.shape) if bf16 else None
        if received is not None:
            out.received[l], out.received_recent[l] = got
        h = rms_norm(x, layer.mlp_norm, c.rms_norm_eps)
        x = x + matmul(silu(matmul(h, layer.w_gate)) * matmul(h, layer.w_up), layer.w_down)
        if l in hidden_layers:
            out.hidden[l] = x
        if l in attention_layers:
            out.attention[l] = probs
        if kv:
            out.kv.append(cache)
        if bf16:
            _bf16_layer_bounds(out, l, layer, probs_bound, received)
    rows = None
    if isinstance(logits, str) and logits == "all":
        rows = slice(None)
    elif isinstance(logits, str) and logits == "last":
        rows = slice(T - 1, T)
    elif logits is not None and not isinstance(logits, str):
        rows = logits
    elif logits is not None:
        raise ValueError(f"forward: logits must be 'all', 'last' or None, got {logits!r}")
    if final_norm:
        out.final_norm = rms_norm(x, model.norm, c.rms_norm_eps)
    if rows is not None:
        normed = out.final_norm[rows] if final_norm else rms_norm(x[rows], model.norm, c.rms_norm_eps)
        out.logits = matmul(normed, model.lm_head)
        if bf16:
            out.bounds["logits"] = _bf16_bound(out.logits, 4 * c.n_layers + 1)
    return out


def _bf16_bound(values, matmuls):
    """M u times the scale of values M matmuls from the input, shaped as values (see "bf16 arithmetic")."""
    return np.full(values.shape, matmuls * BF16_UNIT * (float(np.abs(values).max()) if values.size else 0.0))


def _bf16_layer_bounds(out, l, layer, probs_bound, received):
    """Output.bounds for what forward(bf16=True) returned of layer l."""
    if l in out.hidden:
        out.bounds[f"hidden.{l}"] = _bf16_bound(out.hidden[l], 4 * (l + 1))
    if l in out.attention:
        out.bounds[f"attention.{l}"] = probs_bound
    if out.kv is not None:
        out.bounds[f"kv.{l}.k"] = _bf16_bound(out.kv[l].k, 4 * l + 1)
        out.bounds[f"kv.{l}.v"] = _bf16_bound(out.kv[l].v, 4 * l + 1)
    if received is not None:  # per KV head, as received: the bounds of the probabilities summed
        of, n_queries = np.asarray(layer.heads.kv_head_of, dtype=np.int64), probs_bound.shape[1]
        for name, first in ((f"kv.{l}.received", 0), (f"kv.{l}.received_recent", max(0, n_queries - received))):
            summed = np.zeros(out.received[l].shape)
            np.add.at(summed, of, probs_bound[:, first:].sum(axis=1))
            out.bounds[name] = summed


def log_softmax(logits):
    """Row-wise log-softmax, computed in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def token_nll(logits, targets):
    """-log p(targets[t]) under logits[t] -> [len(targets)] float64."""
    lp = log_softmax(logits)
    return -lp[np.arange(len(targets)), np.asarray(targets)]


# ----------------------------------------------------------------------------
# evaluation


@dataclass
class Perplexity:
    ppl: float
    error: float      # standard error of ppl, as llama-perplexity reports it
    mean_nll: float
    count: int        # predictions scored
    n_chunks: int
    n_ctx: int


def _chunk_nll(model, tokens, n_ctx, c, mask_heads):
    """The scored -log p of chunk c (llama-perplexity's method)."""
    first = n_ctx // 2
    chunk = tokens[c * n_ctx:(c + 1) * n_ctx].copy()
    chunk[0] = model.config.bos_id
    out = forward(model, chunk, logits=slice(first, n_ctx - 1), mask_heads=mask_heads)
    return token_nll(out.logits, chunk[first + 1:])


_worker_job = None  # (model, tokens, n_ctx, mask_heads) in a --jobs worker process


def _worker_init(job):
    global _worker_job
    _worker_job = job


def _worker_chunk(c):
    model, tokens, n_ctx, mask_heads = _worker_job
    return _chunk_nll(model, tokens, n_ctx, c, mask_heads)


def perplexity(model, tokens, n_ctx, mask_heads=(), progress=None, jobs=1):
    """llama-perplexity's perplexity of tokens (the whole text, BOS first); see the
    module docstring. jobs > 1 spreads the chunks over that many processes (the
    sums are still taken in chunk order, so the result does not depend on it)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    first = n_ctx // 2
    if n_ctx - first - 1 < 1:
        raise ValueError(f"perplexity: context {n_ctx} is too small (at least 3)")
    if tokens.size < 2 * n_ctx:
        raise ValueError(f"perplexity: need at least {2 * n_ctx} tokens for a context of {n_ctx}, have {tokens.size}")
    n_chunks = tokens.size // n_ctx
    check_mask(model, mask_heads)
    sums = [0.0, 0.0, 0]

    def add(c, nll):
        sums[0] += nll.sum()
        sums[1] += (nll * nll).sum()
        sums[2] += nll.size
        if progress:
            progress(c + 1, n_chunks, math.exp(sums[0] / sums[2]))

    if jobs > 1:
        import multiprocessing
        with multiprocessing.get_context("fork").Pool(
                jobs, _worker_init, ((model, tokens, n_ctx, mask_heads),)) as pool:
            for c, nll in enumerate(pool.imap(_worker_chunk, range(n_chunks))):
                add(c, nll)
    else:
        for c in range(n_chunks):
            add(c, _chunk_nll(model, tokens, n_ctx, c, mask_heads))
    count = sums[2]
    mean = sums[0] / count
    var = sums[1] / count - mean * mean
    ppl = math.exp(mean)
    error = ppl * math.sqrt(var / (count - 1)) if var > 0 and count > 1 else float("nan")
    return Perplexity(ppl=ppl, error=error, mean_nll=mean, count=count, n_chunks=n_chunks, n_ctx=n_ctx)


def greedy(model, ids, n, mask_heads=(), stop_at_eos=False, bf16=False, decided=None):
    """n greedy tokens after ids (argmax, ties to the lowest id), through the
    KV cache; bf16 as forward's. decided: a list to receive, per token, whether
    its logit leads the next best by more than twice the logits' bound (so
    that an engine within the bound must pick it too); always so without bf16."""
    out = forward(model, ids, logits="last", kv=True, mask_heads=mask_heads, bf16=bf16)
    generated = []
    while len(generated) < n:
        token = int(np.argmax(out.logits[-1]))
        generated.append(token)
        if decided is not None:
            gap = float(out.logits[-1][token] - np.partition(out.logits[-1], -2)[-2])
            decided.append(not bf16 or gap > 2 * float(out.bounds["logits"][-1].max()))
        if stop_at_eos and token == model.config.eos_id:
            break
        if len(generated) < n:
            out = forward(model, [token], past=out.kv, logits="last", kv=True, mask_heads=mask_heads, bf16=bf16)
    return generated


def repeat_span(ids):
    """L when ids is a repeat sequence (length 2L+1, ids[1..L] == ids[L+1..2L]), else None."""
    T = len(ids)
    if T < 3 or T % 2 == 0:
        return None
    L = (T - 1) // 2
    return L if list(ids[1:L + 1]) == list(ids[L + 1:]) else None


class HeadStats:
    """Per-head attention statistics accumulated over sequences (see the module docstring)."""

    COLUMNS = ("entropy", "sink", "prev_token", "induction", "echo")

    def __init__(self, model):
        self.model = model
        shape = [layer.heads.n_heads for layer in model.layers]
        self.sums = {name: [np.zeros(n) for n in shape] for name in self.COLUMNS}
        self.queries = 0          # queries seen (entropy, sink)
        self.prev_queries = 0     # queries t >= 1 (prev_token)
        self.repeat_queries = 0   # second-copy queries (induction, echo)
        self.sequences = 0
        self.repeats = 0

    def add_attention(self, layer, probs, span):
        """Adds one layer's probabilities [n_heads_l, T, T] of a sequence run from position 0."""
        s = self.sums
        logp = np.log(np.where(probs > 0, probs, 1.0))
        s["entropy"][layer] += -(probs * logp).sum(axis=(1, 2))
        s["sink"][layer] += probs[:, :, 0].sum(axis=1)
        s["prev_token"][layer] += np.diagonal(probs, offset=-1, axis1=1, axis2=2).sum(axis=1)
        if span:
            i = np.arange(span + 1, 2 * span + 1)
            s["induction"][layer] += probs[:, i, i - span + 1].sum(axis=1)
            s["echo"][layer] += probs[:, i, i - span].sum(axis=1)

    def add(self, ids, mask_heads=()):
        """Runs one sequence and accumulates its statistics."""
        layers = range(self.model.config.n_layers)
        out = forward(self.model, ids, logits=None, attention=layers, mask_heads=mask_heads)
        span = repeat_span(ids)
        for l in layers:
            self.add_attention(l, out.attention[l], span)
        T = len(ids)
        self.queries += T
        self.prev_queries += T - 1
        self.sequences += 1
        if span:
            self.repeats += 1
            self.repeat_queries += span

    def means(self):
        """{column: [array per layer]} of the pooled means (NaN where nothing was seen)."""
        counts = {"entropy": self.queries, "sink": self.queries, "prev_token": self.prev_queries,
                  "induction": self.repeat_queries, "echo": self.repeat_queries}
        return {name: [v / counts[name] if counts[name] else np.full(v.shape, np.nan) for v in self.sums[name]]
                for name in self.COLUMNS}

    def tsv(self):
        """The head table: `layer head kv_head entropy sink prev_token induction echo`, heads by original id."""
        means = self.means()
        lines = [f"# reference.py head-stats: {self.sequences} sequences, {self.queries} queries, "
                 f"{self.repeats} repeat sequences ({self.repeat_queries} second-copy queries)",
                 "\t".join(("layer", "head", "kv_head") + self.COLUMNS)]
        for l, layer in enumerate(self.model.layers):
            for h in range(layer.heads.n_heads):
                values = "\t".join(f"{means[name][l][h]:.6f}" for name in self.COLUMNS)
                heads = layer.heads
                lines.append(f"{l}\t{heads.query_head_ids[h]}\t{heads.kv_head_ids[heads.kv_head_of[h]]}\t{values}")
        return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------
# KV frames


def kv_tensors(kv, received=None, received_recent=None, dtype=np.float32):
    """A KV cache -> the ragged frame tensors of man/heads.7, as the engine's
    `infer --kv` writes them: kv.L.slots (int32, slots per KV head), kv.L.k
    and kv.L.v [slots_l, head_dim] (dtype, heads one after the other),
    kv.L.pos [slots_l] (int32) and, when given ({L: [n_kv_heads_l, slots]}),
    kv.L.received and kv.L.received_recent [slots_l] (float32)."""
    tensors = {}
    for l, layer in enumerate(kv):
        n_kv_heads, slots, head_dim = layer.k.shape
        tensors[f"kv.{l}.slots"] = np.full(n_kv_heads, slots, dtype=np.int32)
        tensors[f"kv.{l}.k"] = np.asarray(layer.k, dtype=dtype).reshape(n_kv_heads * slots, head_dim)
        tensors[f"kv.{l}.v"] = np.asarray(layer.v, dtype=dtype).reshape(n_kv_heads * slots, head_dim)
        tensors[f"kv.{l}.pos"] = np.asarray(layer.pos, dtype=np.int32).reshape(-1)
        if received is not None:
            tensors[f"kv.{l}.received"] = np.asarray(received[l], dtype=np.float32).reshape(-1)
            tensors[f"kv.{l}.received_recent"] = np.asarray(received_recent[l], dtype=np.float32).reshape(-1)
    return tensors


def kv_heads(tensors, l):
    """Layer l of a ragged KV frame -> [(k [slots, head_dim], v, pos [slots])] per KV head."""
    counts = np.asarray(tensors[f"kv.{l}.slots"], dtype=np.int64)
    ends = np.cumsum(counts)
    k, v, pos = (tensors[f"kv.{l}.{x}"] for x in ("k", "v", "pos"))
    if k.ndim != 2 or k.shape != v.shape or k.shape[0] != (ends[-1] if counts.size else 0) or pos.shape != k.shape[:1]:
        raise ValueError(f"kv frame: layer {l}: shapes k {list(k.shape)}, v {list(v.shape)}, pos {list(pos.shape)}"
                         f" for slots {counts.tolist()}")
    return [(k[e - n:e], v[e - n:e], pos[e - n:e]) for n, e in zip(counts, ends)]


def kv_from_tensors(tensors, n_layers):
    """Frame tensors (ragged, or the padded layout of before) -> a KV cache
    [KvLayer], shorter heads padded with position -1."""
    kv = []
    for l in range(n_layers):
        try:
            if f"kv.{l}.slots" not in tensors:
                k, v, pos = (tensors[f"kv.{l}.{x}"] for x in ("k", "v", "pos"))
                if k.shape != v.shape or k.shape[:2] != pos.shape:
                    raise ValueError(f"kv frame: layer {l}: shapes k {list(k.shape)}, v {list(v.shape)}, "
                                     f"pos {list(pos.shape)}")
                kv.append(KvLayer(k=np.asarray(k), v=np.asarray(v), pos=np.asarray(pos, dtype=np.int32)))
                continue
            heads = kv_heads(tensors, l)
        except KeyError as e:
            raise ValueError(f"kv frame: missing tensor {e.args[0]}") from None
        head_dim = tensors[f"kv.{l}.k"].shape[1]
        longest = max([len(p) for _, _, p in heads] + [0])
        k = np.zeros((len(heads), longest, head_dim), np.float32)
        v = np.zeros_like(k)
        pos = np.full((len(heads), longest), -1, np.int32)
        for g, (hk, hv, hp) in enumerate(heads):
            k[g, :len(hp)], v[g, :len(hp)], pos[g, :len(hp)] = hk, hv, hp
        kv.append(KvLayer(k=k, v=v, pos=pos))
    return kv


# ----------------------------------------------------------------------------
# command line


def parse_ids(text, where="ids"):
    ids = []
    for token in text.split():
        if not token.isdigit():
            raise ValueError(f"{where}: bad token id {token!r}")
        ids.append(int(token))
    return ids


def read_id_lines(path):
    """An id file (one sequence per line; "-" is stdin) -> [[ids]]."""
    f = sys.stdin if path == "-" else open(path, encoding="utf-8")
    with f:
        return [parse_ids(line, f"{path}:{n}") for n, line in enumerate(f, 1)]


def parse_layers(spec, n_layers):
    if spec is None:
        return []
    if spec == "all":
        return list(range(n_layers))
    return [int(x) for x in spec.split(",") if x]


def parse_heads(spec):
    """"0.1,2.3" -> [(0, 1), (2, 3)]; "@FILE" reads L.H entries separated by commas or whitespace."""
    if not spec:
        return []
    if spec.startswith("@"):
        with open(spec[1:], encoding="utf-8") as f:
            spec = ",".join(f.read().split())
    heads = []
    for item in spec.split(","):
        if not item:
            continue
        layer, _, head = item.partition(".")
        if not (layer.isdigit() and head.isdigit()):
            raise ValueError(f"--mask-heads: bad head {item!r} (want LAYER.HEAD)")
        heads.append((int(layer), int(head)))
    return heads


def _frames(out, ids, meta, recent_queries):
    """The frames of one sequence, one per kind, in the order logits, hidden, attention, kv;
    after forward(bf16=True), each tensor NAME's bound beside it as bound.NAME."""
    base = dict(meta, **{"heads.tokens": " ".join(map(str, ids))})
    frames = []
    if out.logits is not None:
        frames.append(({"logits": out.logits.astype(np.float32)}, dict(base, **{"heads.kind": "logits"})))
    if out.hidden:
        frames.append(({f"hidden.{l}": h.astype(np.float32) for l, h in sorted(out.hidden.items())},
                       dict(base, **{"heads.kind": "hidden"})))
    if out.attention:
        frames.append(({f"attention.{l}": a.astype(np.float32) for l, a in sorted(out.attention.items())},
                       dict(base, **{"heads.kind": "attention"})))
    if out.kv is not None:
        frames.append((kv_tensors(out.kv, out.received, out.received_recent),
                       dict(base, **{"heads.kind": "kv", "heads.policy": "full",
                                     "heads.recent_queries": str(recent_queries)})))
    for tensors, _ in frames:
        for name in [n for n in tensors if n in out.bounds]:  # shaped as the frame's tensor (kv frames are ragged)
            tensors["bound." + name] = out.bounds[name].astype(np.float32).reshape(tensors[name].shape)
    return frames


def _progress(done, total, ppl):
    sys.stderr.write(f"\rreference.py: chunk {done}/{total}, PPL {ppl:.4f}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="reference.py", description="numpy reference forward pass of Llama-family models (the heads oracle).",
        epilog="examples:\n"
               "  reference.py MODEL --ids '1 2 3' --logits all --hidden 0,1 --attention 0 --kv -o out.safetensors\n"
               "  reference.py MODEL --ppl text.ids --ctx 512 --dtype float32\n"
               "  reference.py MODEL --greedy 16 --ids '1 403 407'\n"
               "  reference.py MODEL --head-stats --ids-file repeats.ids > heads.tsv",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="Hugging Face model directory")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="math precision (float64)")
    p.add_argument("--ids", help="one sequence of ids, space-separated, taken as given (BOS is not added)")
    p.add_argument("--ids-file", help="id lines, one sequence per line ('-' = stdin)")
    p.add_argument("--logits", choices=("all", "last", "none"),
                   help="logits frame rows (default: all, or none when --hidden/--attention/--kv is given)")
    p.add_argument("--hidden", metavar="L,..|all", help="hidden states after these layers")
    p.add_argument("--attention", metavar="L,..|all", help="attention probabilities of these layers")
    p.add_argument("--kv", action="store_true", help="the KV cache frame, with the attention each slot received")
    p.add_argument("--recent-queries", type=int, default=32, metavar="N",
                   help="--kv: kv.L.received_recent sums the last N queries (32)")
    p.add_argument("--mask-heads", metavar="L.H,..|@FILE", help="zero these heads' outputs before o_proj")
    p.add_argument("--past", metavar="KV.safetensors", help="continue from this KV frame")
    p.add_argument("--start-pos", type=int, help="position of the first new token (default: after the cache)")
    p.add_argument("--model-id", help="value for heads.model in the frames (default: the past frame's, or none)")
    p.add_argument("-o", "--out", default="-", help="output file ('-' = stdout)")
    p.add_argument("--ppl", metavar="FILE.ids", help="perplexity of the ids in FILE (all lines, in order)")
    p.add_argument("--ctx", type=int, help="perplexity window (default max_position_embeddings)")
    p.add_argument("--json", action="store_true", help="--ppl: print the result as JSON")
    p.add_argument("-j", "--jobs", type=int, default=1, help="--ppl: processes to spread the chunks over (1)")
    p.add_argument("--greedy", type=int, metavar="N", help="print N greedy ids after each sequence")
    p.add_argument("--stop-at-eos", action="store_true", help="--greedy: stop after EOS")
    p.add_argument("--head-stats", action="store_true", help="print the head table (TSV) over the sequences")
    p.add_argument("--bf16-math", action="store_true",
                   help="round every matmul's input to bf16 first, as an engine's bf16 arithmetic does; frames "
                        "carry bound.NAME beside each tensor NAME, the error such an engine may show")
    args = p.parse_args(argv)

    try:
        model = load_model(args.model, np.float32 if args.dtype == "float32" else np.float64)
        mask = parse_heads(args.mask_heads)
        check_mask(model, mask)
        if args.ppl:
            tokens = [t for line in read_id_lines(args.ppl) for t in line]
            result = perplexity(model, tokens, args.ctx or model.config.max_position_embeddings, mask,
                                _progress if sys.stderr.isatty() else None, args.jobs)
            if args.json:
                print(json.dumps(result.__dict__))
            else:
                print(f"PPL = {result.ppl:.6f} +/- {result.error:.6f} "
                      f"(ctx {result.n_ctx}, {result.n_chunks} chunks, {result.count} scored)")
            return 0
        if (args.ids is None) == (args.ids_file is None):
            p.error("give exactly one of --ids and --ids-file (or --ppl)")
        sequences = [parse_ids(args.ids)] if args.ids is not None else read_id_lines(args.ids_file)
        if args.head_stats:
            stats = HeadStats(model)
            for ids in sequences:
                if ids:
                    stats.add(ids, mask)
            sys.stdout.write(stats.tsv())
            return 0
        if args.greedy is not None:
            for ids in sequences:
                print(" ".join(map(str, greedy(model, ids, args.greedy, mask, args.stop_at_eos, args.bf16_math))),
                      flush=True)
            return 0
        past, meta, prefix = None, {}, ""
        if args.past:
            tensors, past_meta = read_safetensors(args.past)
            past = kv_from_tensors(tensors, model.config.n_layers)
            meta = {k: past_meta[k] for k in ("heads.model",) if k in past_meta}
            prefix = past_meta.get("heads.tokens", "")
        if args.model_id:
            meta["heads.model"] = args.model_id
        # Logits frames by default only when nothing else is asked for, so that
        # `--kv -o cache.safetensors` writes one frame, a valid .safetensors file.
        logits = args.logits or ("none" if args.hidden or args.attention or args.kv else "all")
        frames = []
        for ids in sequences:
            out = forward(model, ids, past=past, start_pos=args.start_pos, mask_heads=mask,
                          logits=None if logits == "none" else logits,
                          hidden=parse_layers(args.hidden, model.config.n_layers),
                          attention=parse_layers(args.attention, model.config.n_layers), kv=args.kv,
                          received=args.recent_queries if args.kv else None, bf16=args.bf16_math)
            tokens = parse_ids(prefix, "--past heads.tokens") + ids
            frames += _frames(out, tokens, meta, args.recent_queries)
        write_bytes(args.out, b"".join(frame_bytes(t, m) for t, m in frames))
        return 0
    except BrokenPipeError:  # a reader that stopped early (| head): not an error
        sys.stderr.close()
        return 0
    except (ValueError, OSError) as e:
        print(f"reference.py: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
