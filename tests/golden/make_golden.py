#!/usr/bin/env python3
"""Writes the PyTorch golden files the C++ tests compare against.

An independent reference: a plain PyTorch implementation of the Hugging Face Llama-family
decoder (RMSNorm in fp32, rotate-half RoPE with linear/llama3 scaling, causal GQA attention,
SwiGLU MLP, tied or untied head), with gradients from autograd. It shares no code with the C++.
Written from the Hugging Face modeling files' semantics, it also covers Qwen3 (per-head q/k
RMSNorm before RoPE, explicit head_dim), Gemma 3 text (embeddings × sqrt(hidden), RMSNorm with
(1 + w), four norms per layer, query_pre_attn_scalar, GELU-tanh gated MLP, soft-capped scores
and logits, local layers with their own RoPE base) and sliding-window attention (Mistral, Qwen2,
Qwen3, Gemma 3: query i sees keys j with i - window < j <= i).

For each flavour it writes tests/golden/<flavour>/
  model/            a Hugging Face model folder (config.json + safetensors, written here)
  batch.json        input_ids / labels (right-padded, -100 = ignored) and sequence lengths
  golden.safetensors  logits [B,T,V] (zero at padding), loss [1], and grad.<name> for every tensor
Each sequence is computed ALONE at its own length (no padding), so the C++ padded batch must
reproduce "each sequence alone" exactly. Loss = sum of CE over label tokens / their count.

It also writes tests/golden/aidreams_greedy.json: 40 greedy tokens from BOS on the trained
model in ../shared/assets/models/aidreams-260k (if present).

Run with Debian's PyTorch:  scripts/install-deps.sh --golden && /usr/bin/python3 tests/golden/make_golden.py
"""
import json
import math
import os
import struct
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
torch.set_default_dtype(torch.float32)

# ---------------------------------------------------------------- safetensors (minimal writer/reader)
DT = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}
RDT = {v: k for k, v in DT.items()}


def st_save(path, tensors):
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous()
        raw = t.view(torch.int16).numpy().tobytes() if t.dtype in (torch.bfloat16, torch.float16) else t.numpy().tobytes()
        header[name] = {"dtype": DT[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - (len(h) + 8) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def st_load(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, en = e["data_offsets"]
        dt = RDT[e["dtype"]]
        raw = bytearray(data[b:en])
        if dt == torch.float32:
            t = torch.frombuffer(raw, dtype=torch.float32)
        else:
            t = torch.frombuffer(raw, dtype=torch.int16).view(dt)
        out[name] = t.reshape(e["shape"]).float()
    return out


# ---------------------------------------------------------------- reference model
def head_dim_of(cfg):
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def rope_dim_of(cfg):
    """values of a head that rotate: int(head_dim * partial_rotary_factor) (Phi-3), else head_dim"""
    return int(head_dim_of(cfg) * cfg.get("partial_rotary_factor", 1.0))


def inv_freq_of(cfg, local=False, T=0):
    """local: Gemma 3's sliding layers, rope_local_base_freq and no scaling.
    Returns (inv_freq, scale): scale multiplies cos and sin (longrope's attention factor).
    longrope uses its long factors when the sequence (T positions) passes the pretraining context."""
    hd = rope_dim_of(cfg)
    default_theta = {"smollm3": 2000000.0, "gemma3_text": 1000000.0}.get(cfg["model_type"], 10000.0)  # the config classes' defaults
    base = cfg["rope_local_base_freq"] if local else cfg.get("rope_theta", default_theta)
    inv = 1.0 / (base ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    rs = None if local else cfg.get("rope_scaling")
    scale = 1.0
    if rs:
        kind = rs.get("rope_type", rs.get("type"))
        if kind == "linear":
            inv = inv / rs["factor"]
        elif kind == "llama3":
            factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
            old = rs["original_max_position_embeddings"]
            low_wl, high_wl = old / lo, old / hi
            wavelen = 2 * math.pi / inv
            inv_l = torch.where(wavelen > low_wl, inv / factor, inv)
            smooth = (old / wavelen - lo) / (hi - lo)
            smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
            medium = ~(wavelen < high_wl) * ~(wavelen > low_wl)
            inv = torch.where(medium, smoothed, inv_l)
        elif kind == "longrope":  # Phi-3: config.original_max_position_embeddings is the pretraining context
            old = cfg["original_max_position_embeddings"]
            factor = cfg["max_position_embeddings"] / old
            scale = rs.get("attention_factor") or (math.sqrt(1 + math.log(factor) / math.log(old)) if factor > 1 else 1.0)
            ext = torch.tensor(rs["long_factor"] if T > old else rs["short_factor"], dtype=torch.float32)
            inv = 1.0 / (ext * base ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    return inv, scale


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rmsnorm(x, w, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def gemma_rmsnorm(x, w, eps):
    x = x.float()
    return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)) * (1.0 + w.float())


def is_gemma(cfg):
    return cfg["model_type"] == "gemma3_text"


def rope_layers(cfg):
    """per layer: whether q and k are rotated (SmolLM3: no_rope_layers[l] == 1; 0 is a NoPE layer)"""
    L = cfg["num_hidden_layers"]
    if cfg["model_type"] != "smollm3":
        return [True] * L
    every = cfg.get("no_rope_layer_interval", 4)
    return [bool(x) for x in cfg.get("no_rope_layers") or [int((l + 1) % every != 0) for l in range(L)]]


def layer_windows(cfg):
    """per layer: the sliding window, or None for full attention (as the configs say it)"""
    L, mt = cfg["num_hidden_layers"], cfg["model_type"]
    if mt == "smollm3":  # SmolLM3Attention: only with use_sliding_window; layer_types default to the NoPE layers
        if not cfg.get("use_sliding_window"):
            return [None] * L
        rope = rope_layers(cfg)
        types = cfg.get("layer_types") or ["sliding_attention" if cfg.get("sliding_window") is not None and not rope[l]
                                           else "full_attention" for l in range(L)]
        return [cfg["sliding_window"] if t == "sliding_attention" else None for t in types]
    if "layer_types" in cfg:
        sw = cfg.get("sliding_window")
        return [sw if t == "sliding_attention" else None for t in cfg["layer_types"]]
    if mt in ("mistral", "phi3"):  # Phi3Model is Mistral's: the window on every layer
        return [cfg.get("sliding_window")] * L
    if mt in ("qwen2", "qwen3") and cfg.get("use_sliding_window"):
        return [cfg["sliding_window"] if l >= cfg.get("max_window_layers", 28) else None for l in range(L)]
    return [None] * L


def bias_flags(cfg):
    mt = cfg["model_type"]
    qkv = mt == "qwen2" or (mt != "qwen2" and cfg.get("attention_bias", False) and mt != "mistral")
    o = mt in ("llama", "qwen3", "gemma3_text", "smollm3") and cfg.get("attention_bias", False)
    return qkv, o


def forward(cfg, P, ids, lora=None):
    """ids: LongTensor [T] (one sequence, no padding) -> logits [T, V].
    lora: optional (scale, {module: (A [r,in], B [out,r])}), added unmerged: y += scale·x·Aᵀ·Bᵀ"""
    T = ids.shape[0]
    D, Hq = cfg["hidden_size"], cfg["num_attention_heads"]
    Hkv = cfg.get("num_key_value_heads", Hq)
    eps = cfg["rms_norm_eps"]
    gemma = is_gemma(cfg)
    phi3 = cfg["model_type"] == "phi3"
    qk_norm = gemma or cfg["model_type"] == "qwen3"
    norm = gemma_rmsnorm if gemma else rmsnorm
    hd = head_dim_of(cfg)

    def rope_tables(local):
        inv, scale = inv_freq_of(cfg, local, T)
        freqs = torch.outer(torch.arange(T).float(), inv)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos() * scale, emb.sin() * scale

    rope_global = rope_tables(False)
    rope_local = rope_tables(True) if gemma else None
    x = P["model.embed_tokens.weight"][ids]
    if gemma:
        x = x * torch.tensor(D ** 0.5)  # Gemma3TextScaledWordEmbedding (fp32 here)
    qkv_bias, o_bias = bias_flags(cfg)
    scaling = cfg["query_pre_attn_scalar"] ** -0.5 if gemma else hd ** -0.5
    cap = cfg.get("attn_logit_softcapping") if gemma else None
    windows = layer_windows(cfg)
    rotate = rope_layers(cfg)
    i = torch.arange(T).view(T, 1)
    j = torch.arange(T).view(1, T)
    act = (lambda g: torch.nn.functional.gelu(g, approximate="tanh")) if gemma else torch.nn.functional.silu
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = norm(x, P[p + "input_layernorm.weight"], eps)

        def proj(name, inp, bias):
            y = inp @ P[p + name + ".weight"].T
            if lora and (p + name) in lora[1]:
                A, B = lora[1][p + name]
                y = y + lora[0] * (inp @ A.T) @ B.T
            return y + P[p + name + ".bias"] if bias else y

        if phi3:  # one qkv_proj: q rows, then k, then v
            qkv = proj("self_attn.qkv_proj", h, False)
            q = qkv[:, : Hq * hd].reshape(T, Hq, hd)
            k = qkv[:, Hq * hd: (Hq + Hkv) * hd].reshape(T, Hkv, hd)
            v = qkv[:, (Hq + Hkv) * hd:].reshape(T, Hkv, hd).transpose(0, 1)
        else:
            q = proj("self_attn.q_proj", h, qkv_bias).view(T, Hq, hd)
            k = proj("self_attn.k_proj", h, qkv_bias).view(T, Hkv, hd)
            v = proj("self_attn.v_proj", h, qkv_bias).view(T, Hkv, hd).transpose(0, 1)
        if qk_norm:
            q = norm(q, P[p + "self_attn.q_norm.weight"], eps)
            k = norm(k, P[p + "self_attn.k_norm.weight"], eps)
        q, k = q.transpose(0, 1), k.transpose(0, 1)
        w = windows[l]
        cos, sin = rope_local if (gemma and w is not None) else rope_global
        if rotate[l]:  # the first rd values of each head (partial rotary), the rest pass
            rd = cos.shape[-1]
            q = torch.cat([q[..., :rd] * cos + rotate_half(q[..., :rd]) * sin, q[..., rd:]], dim=-1)
            k = torch.cat([k[..., :rd] * cos + rotate_half(k[..., :rd]) * sin, k[..., rd:]], dim=-1)
        k = k.repeat_interleave(Hq // Hkv, dim=0)
        v = v.repeat_interleave(Hq // Hkv, dim=0)
        s = (q @ k.transpose(1, 2)) * scaling
        if cap:
            s = torch.tanh(s / cap) * cap
        allowed = j <= i
        if w is not None:
            allowed = allowed & (j > i - w)
        s = s.masked_fill(~allowed, float("-inf"))
        a = torch.softmax(s.float(), dim=-1) @ v
        a = a.transpose(0, 1).reshape(T, Hq * hd)
        o = proj("self_attn.o_proj", a, o_bias)
        if gemma:
            o = norm(o, P[p + "post_attention_layernorm.weight"], eps)
            x = x + o
            h = norm(x, P[p + "pre_feedforward_layernorm.weight"], eps)
        else:
            x = x + o
            h = norm(x, P[p + "post_attention_layernorm.weight"], eps)
        if phi3:  # one gate_up_proj: gate rows first
            g, u = proj("mlp.gate_up_proj", h, False).chunk(2, dim=-1)
        else:
            g = proj("mlp.gate_proj", h, False)
            u = proj("mlp.up_proj", h, False)
        m = proj("mlp.down_proj", act(g) * u, False)
        if gemma:
            m = norm(m, P[p + "post_feedforward_layernorm.weight"], eps)
        x = x + m
    x = norm(x, P["model.norm.weight"], eps)
    tied = cfg.get("tie_word_embeddings", gemma)
    head = P["model.embed_tokens.weight"] if tied else P["lm_head.weight"]
    logits = x @ head.T
    fcap = cfg.get("final_logit_softcapping") if gemma else None
    if fcap:
        logits = torch.tanh(logits / fcap) * fcap
    return logits


def param_shapes(cfg):
    D, F, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    Hq = cfg["num_attention_heads"]
    Hkv = cfg.get("num_key_value_heads", Hq)
    hd = head_dim_of(cfg)
    gemma = is_gemma(cfg)
    qk_norm = gemma or cfg["model_type"] == "qwen3"
    qkv_bias, o_bias = bias_flags(cfg)
    s = {"model.embed_tokens.weight": (V, D)}
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        s[p + "input_layernorm.weight"] = (D,)
        if cfg["model_type"] == "phi3":
            s[p + "self_attn.qkv_proj.weight"] = ((Hq + 2 * Hkv) * hd, D)
        for n, o in (("q", Hq * hd), ("k", Hkv * hd), ("v", Hkv * hd)) if cfg["model_type"] != "phi3" else ():
            s[p + f"self_attn.{n}_proj.weight"] = (o, D)
            if qkv_bias:
                s[p + f"self_attn.{n}_proj.bias"] = (o,)
        if qk_norm:
            s[p + "self_attn.q_norm.weight"] = (hd,)
            s[p + "self_attn.k_norm.weight"] = (hd,)
        s[p + "self_attn.o_proj.weight"] = (D, Hq * hd)
        if o_bias:
            s[p + "self_attn.o_proj.bias"] = (D,)
        s[p + "post_attention_layernorm.weight"] = (D,)
        if gemma:
            s[p + "pre_feedforward_layernorm.weight"] = (D,)
            s[p + "post_feedforward_layernorm.weight"] = (D,)
        if cfg["model_type"] == "phi3":
            s[p + "mlp.gate_up_proj.weight"] = (2 * F, D)
        else:
            s[p + "mlp.gate_proj.weight"] = (F, D)
            s[p + "mlp.up_proj.weight"] = (F, D)
        s[p + "mlp.down_proj.weight"] = (D, F)
    s["model.norm.weight"] = (D,)
    if not cfg.get("tie_word_embeddings", gemma):
        s["lm_head.weight"] = (V, D)
    return s


# ---------------------------------------------------------------- flavours
FLAVOURS = {
    # Llama-2 style: multi-head attention, untied head, fp32 storage, attention biases
    "llama2": dict(
        cfg={"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 96, "hidden_size": 32,
             "intermediate_size": 72, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
             "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
             "tie_word_embeddings": False, "attention_bias": True, "torch_dtype": "float32",
             "bos_token_id": 1, "eos_token_id": 2},
        dtype=torch.float32, shards=1, seed=1),
    # Llama-3 style: GQA, llama3 rope scaling, explicit head_dim != hidden/heads, bf16 storage
    "llama3": dict(
        cfg={"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 112, "hidden_size": 32,
             "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "head_dim": 12, "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
             "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                              "original_max_position_embeddings": 16},
             "hidden_act": "silu", "tie_word_embeddings": False, "attention_bias": False,
             "torch_dtype": "bfloat16", "bos_token_id": 100, "eos_token_id": [101, 102]},
        dtype=torch.bfloat16, shards=1, seed=2),
    # Qwen2 style: GQA, q/k/v biases, tied embeddings, two shards with an index, f16 storage
    "qwen2": dict(
        cfg={"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 80, "hidden_size": 48,
             "intermediate_size": 96, "num_hidden_layers": 3, "num_attention_heads": 6, "num_key_value_heads": 2,
             "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
             "hidden_act": "silu", "tie_word_embeddings": True, "use_sliding_window": False,
             "torch_dtype": "float16", "bos_token_id": 70, "eos_token_id": 71},
        dtype=torch.float16, shards=2, seed=3),
    # Mistral with a sliding window shorter than the sequences (every layer), GQA, untied head
    "mistral_window": dict(
        cfg={"architectures": ["MistralForCausalLM"], "model_type": "mistral", "vocab_size": 72, "hidden_size": 32,
             "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "sliding_window": 4,
             "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "float32",
             "bos_token_id": 1, "eos_token_id": 2},
        dtype=torch.float32, shards=1, seed=4),
    # Qwen3: q/k norms, head_dim 12 != 32/4, GQA, attention biases, a window of 5 on layers >= 1
    "qwen3": dict(
        cfg={"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 88, "hidden_size": 32,
             "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
             "head_dim": 12, "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
             "attention_bias": True, "use_sliding_window": True, "sliding_window": 5, "max_window_layers": 1,
             "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "float32",
             "bos_token_id": 80, "eos_token_id": 81},
        dtype=torch.float32, shards=1, seed=5),
    # Gemma 3 text: every Gemma part on, including both soft caps (Gemma 2 style values), a local
    # layer pattern with window 4, a local RoPE base, linear scaling on the global layer, bf16 storage
    "gemma3": dict(
        cfg={"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "vocab_size": 96,
             "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
             "num_key_value_heads": 1, "head_dim": 16, "max_position_embeddings": 64, "rms_norm_eps": 1e-6,
             "rope_theta": 1000000.0, "rope_local_base_freq": 100.0,
             "rope_scaling": {"rope_type": "linear", "factor": 2.0},
             "layer_types": ["sliding_attention", "full_attention", "sliding_attention"], "sliding_window": 4,
             "query_pre_attn_scalar": 24, "attn_logit_softcapping": 3.0, "final_logit_softcapping": 5.0,
             "hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": True, "torch_dtype": "bfloat16",
             "bos_token_id": 2, "eos_token_id": [1, 90], "pad_token_id": 0},
        dtype=torch.bfloat16, shards=1, seed=6),
    # SmolLM3: NoPE on layer 1 (no_rope_layers 0) with a window of 5 there (use_sliding_window, the
    # NoPE layers by default), GQA, tied, no rope_theta given (SmolLM3Config's 2e6), bf16 storage
    "smollm3": dict(
        cfg={"architectures": ["SmolLM3ForCausalLM"], "model_type": "smollm3", "vocab_size": 90, "hidden_size": 32,
             "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
             "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "no_rope_layers": [1, 0, 1],
             "use_sliding_window": True, "sliding_window": 5, "hidden_act": "silu", "tie_word_embeddings": True,
             "attention_bias": False, "torch_dtype": "bfloat16", "bos_token_id": 80, "eos_token_id": 81},
        dtype=torch.bfloat16, shards=1, seed=7),
    # Phi-3 past its pretraining context: fused qkv_proj and gate_up_proj, 6 of 8 values of a head
    # rotated (partial_rotary_factor 0.75), longrope's long factors (every sequence > 4 positions)
    # and its attention factor sqrt(1 + ln 16 / ln 4), a window of 5 on every layer, GQA, fp32
    "phi3": dict(
        cfg={"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "vocab_size": 84, "hidden_size": 32,
             "intermediate_size": 40, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "max_position_embeddings": 64, "original_max_position_embeddings": 4, "rms_norm_eps": 1e-5,
             "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
             "rope_scaling": {"type": "longrope", "short_factor": [1.0, 1.5, 2.0], "long_factor": [2.0, 4.0, 8.0]},
             "sliding_window": 5, "hidden_act": "silu", "tie_word_embeddings": False, "resid_pdrop": 0.0,
             "embd_pdrop": 0.0, "attention_dropout": 0.0, "torch_dtype": "float32",
             "bos_token_id": 1, "eos_token_id": 2},
        dtype=torch.float32, shards=1, seed=8),
    # Phi-4-mini style within its pretraining context: longrope's short factors and attention factor
    # sqrt(1 + ln 2 / ln 32), half of each head rotated, tied embeddings, no window, bf16 storage
    "phi3_short": dict(
        cfg={"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "vocab_size": 76, "hidden_size": 48,
             "intermediate_size": 56, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1,
             "max_position_embeddings": 64, "original_max_position_embeddings": 32, "rms_norm_eps": 1e-5,
             "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
             "rope_scaling": {"type": "longrope", "short_factor": [1.0, 1.25, 1.5], "long_factor": [3.0, 5.0, 7.0]},
             "hidden_act": "silu", "tie_word_embeddings": True, "torch_dtype": "bfloat16",
             "bos_token_id": 1, "eos_token_id": 2},
        dtype=torch.bfloat16, shards=1, seed=9),
}
LENGTHS = [14, 11, 7]  # right-padded to 14


def make_flavour(name, spec):
    out = os.path.join(HERE, name)
    mdir = os.path.join(out, "model")
    os.makedirs(mdir, exist_ok=True)
    cfg = spec["cfg"]
    g = torch.Generator().manual_seed(spec["seed"])
    P = {}
    for n, shp in param_shapes(cfg).items():
        if len(shp) == 2:
            t = torch.randn(shp, generator=g) * 0.2
        elif "norm" in n:
            # not the identity, so norm gradients are exercised (Gemma stores the scale minus 1)
            t = (0.0 if is_gemma(cfg) else 1.0) + 0.1 * torch.randn(shp, generator=g)
        else:
            t = 0.1 * torch.randn(shp, generator=g)
        P[n] = t.to(spec["dtype"])
    with open(os.path.join(mdir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    names = list(P)
    if spec["shards"] == 1:
        st_save(os.path.join(mdir, "model.safetensors"), P)
    else:
        k = (len(names) + 1) // 2
        parts = [names[:k], names[k:]]
        wm, total = {}, 0
        for i, part in enumerate(parts):
            fn = f"model-{i + 1:05d}-of-{len(parts):05d}.safetensors"
            st_save(os.path.join(mdir, fn), {n: P[n] for n in part})
            for n in part:
                wm[n] = fn
                total += P[n].numel() * P[n].element_size()
        with open(os.path.join(mdir, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": wm}, f, indent=2)

    # fp32 compute on the stored values
    P32 = {n: t.float().clone().requires_grad_(True) for n, t in P.items()}
    V, T, B = cfg["vocab_size"], max(LENGTHS), len(LENGTHS)
    gi = torch.Generator().manual_seed(100 + spec["seed"])
    ids = torch.zeros(B, T, dtype=torch.long)
    labels = torch.full((B, T), -100, dtype=torch.long)
    for b, L in enumerate(LENGTHS):
        ids[b, :L] = torch.randint(0, V, (L,), generator=gi)
        labels[b, :L] = ids[b, :L]
    labels[0, :4] = -100  # a "prompt" whose labels are ignored
    labels[1, 6] = -100   # an ignored label in the middle
    logits_all = torch.zeros(B, T, V)
    total, count = 0.0, 0
    for b, L in enumerate(LENGTHS):
        lg = forward(cfg, P32, ids[b, :L])
        logits_all[b, :L] = lg.detach()
        y = labels[b, 1:L]
        keep = y != -100
        total = total + torch.nn.functional.cross_entropy(lg[:-1][keep], y[keep], reduction="sum")
        count += int(keep.sum())
    loss = total / count
    loss.backward()
    gold = {"logits": logits_all, "loss": loss.detach().reshape(1)}
    for n, t in P32.items():
        gold["grad." + n] = t.grad
    # LoRA on every Linear (r 2, scale 1.5), base frozen: loss and the gradients of A and B
    gl = torch.Generator().manual_seed(50 + spec["seed"])
    adapters = {}
    for n, shp in param_shapes(cfg).items():
        if len(shp) == 2 and ".layers." in n:
            mod = n[: -len(".weight")]
            adapters[mod] = (torch.randn(2, shp[1], generator=gl).mul(0.3).requires_grad_(True),
                             torch.randn(shp[0], 2, generator=gl).mul(0.3).requires_grad_(True))
    Pf = {n: t.float() for n, t in P.items()}
    total_l, count_l = 0.0, 0
    for b, L in enumerate(LENGTHS):
        lg = forward(cfg, Pf, ids[b, :L], (1.5, adapters))
        y = labels[b, 1:L]
        keep = y != -100
        total_l = total_l + torch.nn.functional.cross_entropy(lg[:-1][keep], y[keep], reduction="sum")
        count_l += int(keep.sum())
    (total_l / count_l).backward()
    gold["lora.loss"] = (total_l / count_l).detach().reshape(1)
    for mod, (A, B) in adapters.items():
        gold["lora." + mod + ".A"] = A.detach()
        gold["lora." + mod + ".B"] = B.detach()
        gold["lora.grad." + mod + ".A"] = A.grad
        gold["lora.grad." + mod + ".B"] = B.grad
    st_save(os.path.join(out, "golden.safetensors"), gold)
    with open(os.path.join(out, "batch.json"), "w") as f:
        json.dump({"input_ids": ids.tolist(), "labels": labels.tolist(), "lengths": LENGTHS,
                   "label_tokens": count}, f)
    print(f"{name}: loss {loss.item():.6f} over {count} label tokens")


# ---------------------------------------------------------------- preference objectives (issue #30)
# Written from the papers' formulas as TRL's DPOTrainer / ORPOTrainer apply them, independently of
# the C++ (src/train/preference.cpp): per pair the summed log-probabilities of the reply tokens,
# DPO's sigmoid (with label smoothing), hinge and IPO (per-token means) losses against given
# reference sums, and ORPO (per-token means, NLL over the chosen tokens). Mean over pairs.
PREF_VARIANTS = {
    "dpo_sigmoid": dict(objective="dpo", loss_type="sigmoid", beta=0.1, label_smoothing=0.0),
    "dpo_smoothed": dict(objective="dpo", loss_type="sigmoid", beta=0.5, label_smoothing=0.2),
    "dpo_hinge": dict(objective="dpo", loss_type="hinge", beta=0.1, label_smoothing=0.0),
    "dpo_ipo": dict(objective="dpo", loss_type="ipo", beta=0.1, label_smoothing=0.0),
    "orpo": dict(objective="orpo", loss_type="sigmoid", beta=0.1, label_smoothing=0.0),
}


def pref_loss(v, pc, pr, lc, lr, refc, refr):
    """pc, pr: [P] summed log-probs; lc, lr: [P] reply lengths; refc, refr: [P] reference sums."""
    F = torch.nn.functional
    beta = v["beta"]
    if v["objective"] == "orpo":
        ac, ar = pc / lc, pr / lr
        log_odds = (ac - ar) - (torch.log1p(-torch.exp(ac)) - torch.log1p(-torch.exp(ar)))
        ratio = F.logsigmoid(log_odds)
        nll = -pc.sum() / lc.sum()
        loss = nll - beta * ratio.mean()
        return loss, beta * ac.detach(), beta * ar.detach(), ac.detach(), ar.detach()
    if v["loss_type"] == "ipo":
        pc, pr, refc, refr = pc / lc, pr / lr, refc / lc, refr / lr
    h = (pc - pr) - (refc - refr)
    if v["loss_type"] == "sigmoid":
        e = v["label_smoothing"]
        losses = -F.logsigmoid(beta * h) * (1 - e) - F.logsigmoid(-beta * h) * e
    elif v["loss_type"] == "hinge":
        losses = torch.relu(1 - beta * h)
    else:
        losses = (h - 1 / (2 * beta)) ** 2
    return losses.mean(), beta * (pc - refc).detach(), beta * (pr - refr).detach(), pc.detach(), pr.detach()


def make_preference():
    """tests/golden/preference/: pairs on the llama2 flavour's model; for each variant the loss, the
    metrics and every gradient (full), and for dpo_sigmoid and orpo LoRA's A/B gradients too."""
    out = os.path.join(HERE, "preference")
    os.makedirs(out, exist_ok=True)
    cfg = FLAVOURS["llama2"]["cfg"]
    P = st_load(os.path.join(HERE, "llama2", "model", "model.safetensors"))
    V = cfg["vocab_size"]
    g = torch.Generator().manual_seed(7)
    # two pairs: a shared prompt, replies of different lengths (the rejected one longer in one pair)
    pairs = []
    for plen, clen, rlen in ((5, 4, 7), (3, 6, 2)):
        prompt = torch.randint(3, V, (plen,), generator=g).tolist()
        pairs.append({"prompt": prompt, "chosen": torch.randint(3, V, (clen,), generator=g).tolist(),
                      "rejected": torch.randint(3, V, (rlen,), generator=g).tolist()})

    def seq_logps(params, lora=None):
        pcs, prs = [], []
        for p in pairs:
            for key, acc in (("chosen", pcs), ("rejected", prs)):
                ids = torch.tensor(p["prompt"] + p[key])
                lg = forward(cfg, params, ids, lora)
                lp = torch.log_softmax(lg[:-1], dim=-1)
                n = len(p["prompt"])
                tgt = ids[n:]
                acc.append(lp[n - 1:].gather(1, tgt[:, None]).sum())
        return torch.stack(pcs), torch.stack(prs)

    lc = torch.tensor([float(len(p["chosen"])) for p in pairs])
    lr = torch.tensor([float(len(p["rejected"])) for p in pairs])
    with torch.no_grad():
        pc0, pr0 = seq_logps(P)
    # reference sums: near the policy's for pair 0, far for pair 1 (β·h > 1 there: hinge's flat side)
    refc = torch.stack([pc0[0] + 0.3, pc0[1] - 5.0]).detach()
    refr = torch.stack([pr0[0] - 0.2, pr0[1] + 8.0]).detach()
    gold, meta = {}, {"pairs": pairs, "ref_chosen": refc.tolist(), "ref_rejected": refr.tolist(), "variants": {}}
    gl = torch.Generator().manual_seed(51)
    adapters0 = {}
    for n, shp in param_shapes(cfg).items():
        if len(shp) == 2 and ".layers." in n:
            adapters0[n[: -len(".weight")]] = (torch.randn(2, shp[1], generator=gl) * 0.3,
                                               torch.randn(shp[0], 2, generator=gl) * 0.3)
    for mod, (A, B) in adapters0.items():
        gold["lora." + mod + ".A"] = A
        gold["lora." + mod + ".B"] = B
    for name, v in PREF_VARIANTS.items():
        P32 = {n: t.clone().requires_grad_(True) for n, t in P.items()}
        pc, pr = seq_logps(P32)
        loss, rc, rr, lpc, lpr = pref_loss(v, pc, pr, lc, lr, refc, refr)
        loss.backward()
        gold[name + ".loss"] = loss.detach().reshape(1)
        for n, t in P32.items():
            gold[name + ".grad." + n] = t.grad
        meta["variants"][name] = dict(v, rewards_chosen=float(rc.mean()), rewards_rejected=float(rr.mean()),
                                      rewards_accuracy=float((rc > rr).float().mean()),
                                      rewards_margin=float((rc - rr).mean()), logps_chosen=float(lpc.mean()),
                                      logps_rejected=float(lpr.mean()))
        if name in ("dpo_sigmoid", "orpo"):  # LoRA (r 2, scale 1.5) on every Linear, base frozen
            ad = {m: (A.clone().requires_grad_(True), B.clone().requires_grad_(True)) for m, (A, B) in adapters0.items()}
            pc, pr = seq_logps(P, (1.5, ad))
            loss_l = pref_loss(v, pc, pr, lc, lr, refc, refr)[0]
            loss_l.backward()
            gold[name + ".lora.loss"] = loss_l.detach().reshape(1)
            for mod, (A, B) in ad.items():
                gold[name + ".lora.grad." + mod + ".A"] = A.grad
                gold[name + ".lora.grad." + mod + ".B"] = B.grad
        print(f"preference {name}: loss {loss.item():.6f}")
    st_save(os.path.join(out, "golden.safetensors"), gold)
    with open(os.path.join(out, "pairs.json"), "w") as f:
        json.dump(meta, f, indent=1)


def decode_sentencepiece(tok, ids):
    vocab = {i: s for s, i in tok["model"]["vocab"].items()}
    out = bytearray()
    for i in ids:
        s = vocab[i]
        if len(s) == 6 and s.startswith("<0x") and s.endswith(">"):
            out.append(int(s[3:5], 16))
        else:
            out += s.replace("\u2581", " ").encode()
    text = out.decode("utf-8", errors="replace")
    return text[1:] if text.startswith(" ") else text


def load_aidreams(what):
    """(assets, model folder, config, weights) of the trained aidreams-260k asset, or None."""
    assets = os.environ.get("LISA_ASSETS", os.path.join(HERE, "..", "..", "..", "shared", "assets"))
    mdir = os.path.join(assets, "models", "aidreams-260k")
    if not os.path.isdir(mdir):
        print(f"skip {what}: {mdir} not found")
        return None
    cfg = json.load(open(os.path.join(mdir, "config.json")))
    return assets, mdir, cfg, st_load(os.path.join(mdir, "model.safetensors"))


def make_aidreams():
    loaded = load_aidreams("aidreams")
    if not loaded:
        return
    _, mdir, cfg, P = loaded
    ids = [cfg["bos_token_id"]]
    with torch.no_grad():
        for _ in range(40):
            lg = forward(cfg, P, torch.tensor(ids))
            ids.append(int(lg[-1].argmax()))
    tok = json.load(open(os.path.join(mdir, "tokenizer.json")))
    text = decode_sentencepiece(tok, ids[1:])
    with open(os.path.join(HERE, "aidreams_greedy.json"), "w") as f:
        json.dump({"prompt_ids": ids[:1], "generated_ids": ids[1:], "text": text}, f)
    print(f"aidreams: {text!r}")


def aidreams_ids(assets):
    """HF tokenizer ids of the golden strings for aidreams-260k (independent of our tokenizer)."""
    rows = [json.loads(l) for l in open(os.path.join(assets, "tokenizer_golden", "aidreams-260k.jsonl"))]
    return {r["text"]: r for r in rows}


def loss_of(cfg, P, samples):
    """samples: list of (ids, labels) -> (sum CE, label tokens), each sequence alone."""
    total, count = 0.0, 0
    for ids, labels in samples:
        lg = forward(cfg, P, torch.tensor(ids))
        y = torch.tensor(labels[1:])
        keep = y != -100
        total += float(torch.nn.functional.cross_entropy(lg[:-1][keep], y[keep], reduction="sum"))
        count += int(keep.sum())
    return total, count


def make_aidreams_data():
    """Eval datasets for `lisa eval` (text_only and text2text) whose token ids come from the
    Hugging Face tokenizer goldens, the loss PyTorch gives on them, a random PEFT LoRA adapter
    and its loss, and a greedy continuation of a prompt."""
    loaded = load_aidreams("aidreams data")
    if not loaded:
        return
    assets, mdir, cfg, P = loaded
    gold = aidreams_ids(assets)
    eos = cfg["eos_token_id"]
    out = os.path.join(HERE, "aidreams_data")
    texts = ["Hello world", "Hello, world!", "   leading spaces", "Führer", "I'm here, aren't you? We'LL see.",
             "def f(x):\n    return x * 2  # double\n", "Prices: $1,234.56 and 7890123 units", "emoji 😀👍🏽🇺🇸 done"]
    # text_only: ids = encode(text, special) + EOS, loss on every token
    only = [(gold[t]["ids_special"] + [eos], gold[t]["ids_special"] + [eos]) for t in texts]
    # text2text: prompt = encode(input, special); completion = encode(output) + EOS; loss on the completion
    pairs = [(texts[i], texts[i + 1]) for i in range(0, len(texts) - 1, 2)] + [(texts[-1], texts[0])]
    t2t = []
    for a, b in pairs:
        p, c = gold[a]["ids_special"], gold[b]["ids"] + [eos]
        t2t.append((p + c, [-100] * len(p) + c))
    expected = {}
    for name, kind, samples, inst in (
            ("text_only", "text_only", only, [{"text": t} for t in texts]),
            ("text2text", "text2text", t2t, [{"input": a, "output": b} for a, b in pairs])):
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "data.json"), "w") as f:
            json.dump({"type": kind, "instances": inst}, f, ensure_ascii=False, indent=1)
        with torch.no_grad():
            total, count = loss_of(cfg, P, samples)
        expected[name] = {"loss": total / count, "tokens": count, "samples": len(samples),
                          "ids": [s[0] for s in samples], "labels": [s[1] for s in samples]}
    # a PEFT LoRA adapter with random A and B; loss with W + (alpha/r) B A on the text_only data
    g = torch.Generator().manual_seed(7)
    r, alpha = 4, 8.0
    adapter, PL = {}, dict(P)
    for l in range(cfg["num_hidden_layers"]):
        for mod in ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"):
            W = P[f"model.layers.{l}.{mod}.weight"]
            A = torch.randn(r, W.shape[1], generator=g) * 0.1
            B = torch.randn(W.shape[0], r, generator=g) * 0.1
            adapter[f"base_model.model.model.layers.{l}.{mod}.lora_A.weight"] = A
            adapter[f"base_model.model.model.layers.{l}.{mod}.lora_B.weight"] = B
            PL[f"model.layers.{l}.{mod}.weight"] = W + (alpha / r) * (B @ A)
    ad = os.path.join(out, "lora_adapter")
    os.makedirs(ad, exist_ok=True)
    st_save(os.path.join(ad, "adapter_model.safetensors"), adapter)
    with open(os.path.join(ad, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha, "lora_dropout": 0.0,
                   "target_modules": ["q_proj", "v_proj", "down_proj"], "bias": "none", "fan_in_fan_out": False,
                   "base_model_name_or_path": "aidreams-260k"}, f, indent=2)
    with torch.no_grad():
        total, count = loss_of(cfg, PL, only)
    expected["text_only_lora"] = {"loss": total / count, "tokens": count, "samples": len(only)}
    # greedy continuation of "Hello world" (prompt ids with BOS from the HF golden)
    ids = list(gold["Hello world"]["ids_special"])
    n0 = len(ids)
    with torch.no_grad():
        for _ in range(30):
            nxt = int(forward(cfg, P, torch.tensor(ids))[-1].argmax())
            ids.append(nxt)
            if nxt == eos:
                break
    tok = json.load(open(os.path.join(mdir, "tokenizer.json")))
    gen = [i for i in ids[n0:] if i != eos]
    expected["generate_hello_world"] = {"prompt": "Hello world", "max_new_tokens": 30, "ids": ids[n0:],
                                        "text": decode_sentencepiece(tok, gen)}
    # one full fine-tuning step on all 8 text_only samples (one batch): clip to norm 1, AdamW
    # (lr 1e-3, eps 1e-3, weight decay 0.01 on matrices only, as Hugging Face's Trainer groups them)
    P1 = {n: t.clone().requires_grad_(True) for n, t in P.items()}
    total, count = 0.0, 0
    for ids, labels in only:
        lg = forward(cfg, P1, torch.tensor(ids))
        y = torch.tensor(labels[1:])
        keep = y != -100
        total = total + torch.nn.functional.cross_entropy(lg[:-1][keep], y[keep], reduction="sum")
        count += int(keep.sum())
    (total / count).backward()
    params = list(P1.values())
    norm = float(torch.nn.utils.clip_grad_norm_(params, 1.0))
    decay = [t for n, t in P1.items() if t.dim() == 2]
    nodecay = [t for n, t in P1.items() if t.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": nodecay, "weight_decay": 0.0}],
                            lr=1e-3, eps=1e-3, betas=(0.9, 0.999))
    opt.step()
    st_save(os.path.join(out, "full_step_weights.safetensors"), {n: t.detach() for n, t in P1.items()})
    expected["full_step"] = {"grad_norm": norm, "loss": float(total / count), "lr": 1e-3, "eps": 1e-3,
                             "weight_decay": 0.01, "max_grad_norm": 1.0}
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, ensure_ascii=False, indent=1)
    print("aidreams data:", {k: v.get("loss", v.get("text")) for k, v in expected.items()})


if __name__ == "__main__":
    # arguments: the flavours to (re)write; none = everything
    torch.manual_seed(0)
    only = sys.argv[1:]
    for name, spec in FLAVOURS.items():
        if not only or name in only:
            make_flavour(name, spec)
    if not only:
        make_aidreams()
        make_aidreams_data()
    if not only or "preference" in only:
        make_preference()
