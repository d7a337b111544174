#!/usr/bin/env python3
"""The PyTorch baseline of bench/train.sh: the same model (Llama, Mistral, Qwen2/3, Gemma 3 text)
read from the same Hugging Face folder, trained on the same token batches the way Hugging Face
eager + LMFlow do it, in fp32 (eager attention: the T×T scores with a causal / sliding mask):

  full  AdamW over every parameter
  lisa  requires_grad toggled every K steps (embedding, final norm, head and gamma drawn layers
        trainable), torch.optim.AdamW re-created at each switch (LMFlow's callback)
  lora  PEFT-style adapters (r 8, alpha 32) on q,k,v,o,gate,up,down; base frozen

Each step: logits [B,T,V] in full, cross-entropy, backward, clip_grad_norm_(1.0), AdamW step,
zero_grad(set_to_none=True). Prints one JSON line like bench_train.
  python3 bench/torch_baseline.py --model DIR --tokens FILE --method lisa [--threads 2]
"""
import argparse
import json
import math
import os
import random
import resource
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden"))
from make_golden import st_load, inv_freq_of, is_gemma, layer_windows, bias_flags, head_dim_of  # noqa: E402


def rss_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


class RMSNorm(nn.Module):
    def __init__(self, d, eps, offset=0.0):  # Gemma scales by (1 + w)
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d) - offset)
        self.eps, self.offset = eps, offset

    def forward(self, x):
        return (self.offset + self.weight) * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


class LoRALinear(nn.Module):
    def __init__(self, base, r, alpha):
        super().__init__()
        self.base = base
        self.A = nn.Parameter(torch.empty(r, base.in_features))
        self.B = nn.Parameter(torch.zeros(base.out_features, r))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.scale = alpha / r

    def forward(self, x):
        return self.base(x) + (x @ self.A.t() @ self.B.t()) * self.scale


class Layer(nn.Module):
    def __init__(self, cfg, window):
        super().__init__()
        D, F_, H = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"]
        KV = cfg.get("num_key_value_heads", H)
        hd = head_dim_of(cfg)
        eps, gemma = cfg["rms_norm_eps"], is_gemma(cfg)
        off = 1.0 if gemma else 0.0
        qkv_bias, o_bias = bias_flags(cfg)
        self.H, self.KV, self.hd, self.gemma, self.window = H, KV, hd, gemma, window
        self.scaling = (cfg["query_pre_attn_scalar"] if gemma else hd) ** -0.5
        self.cap = cfg.get("attn_logit_softcapping") if gemma else None
        self.input_layernorm = RMSNorm(D, eps, off)
        self.post_attention_layernorm = RMSNorm(D, eps, off)
        if gemma:
            self.pre_feedforward_layernorm = RMSNorm(D, eps, off)
            self.post_feedforward_layernorm = RMSNorm(D, eps, off)
        if gemma or cfg["model_type"] == "qwen3":
            self.q_norm = RMSNorm(hd, eps, off)
            self.k_norm = RMSNorm(hd, eps, off)
        self.q_proj = nn.Linear(D, H * hd, bias=qkv_bias)
        self.k_proj = nn.Linear(D, KV * hd, bias=qkv_bias)
        self.v_proj = nn.Linear(D, KV * hd, bias=qkv_bias)
        self.o_proj = nn.Linear(H * hd, D, bias=o_bias)
        self.gate_proj = nn.Linear(D, F_, bias=False)
        self.up_proj = nn.Linear(D, F_, bias=False)
        self.down_proj = nn.Linear(F_, D, bias=False)
        self.act = (lambda g: F.gelu(g, approximate="tanh")) if gemma else F.silu

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        h = self.input_layernorm(x)
        q = self.q_proj(h).view(B, T, self.H, self.hd)
        k = self.k_proj(h).view(B, T, self.KV, self.hd)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = self.v_proj(h).view(B, T, self.KV, self.hd).transpose(1, 2)

        def rot(t):
            half = t.shape[-1] // 2
            return torch.cat((-t[..., half:], t[..., :half]), dim=-1)

        q = q * cos + rot(q) * sin
        k = k * cos + rot(k) * sin
        if self.KV != self.H:
            k = k.repeat_interleave(self.H // self.KV, dim=1)
            v = v.repeat_interleave(self.H // self.KV, dim=1)
        s = (q @ k.transpose(2, 3)) * self.scaling
        if self.cap:
            s = torch.tanh(s / self.cap) * self.cap
        a = torch.softmax(s + mask, dim=-1) @ v
        o = self.o_proj(a.transpose(1, 2).reshape(B, T, -1))
        if self.gemma:
            x = x + self.post_attention_layernorm(o)
            h = self.pre_feedforward_layernorm(x)
            return x + self.post_feedforward_layernorm(self.down_proj(self.act(self.gate_proj(h)) * self.up_proj(h)))
        x = x + o
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(self.act(self.gate_proj(h)) * self.up_proj(h))


class Llama(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.gemma = is_gemma(cfg)
        self.windows = layer_windows(cfg)
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList(Layer(cfg, w) for w in self.windows)
        self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"], 1.0 if self.gemma else 0.0)
        self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        self.tied = cfg.get("tie_word_embeddings", self.gemma)
        if self.tied:
            self.lm_head.weight = self.embed_tokens.weight
        self.inv_freq, _ = inv_freq_of(cfg)
        self.inv_freq_local = inv_freq_of(cfg, local=True)[0] if self.gemma else None
        self.fcap = cfg.get("final_logit_softcapping") if self.gemma else None

    def forward(self, ids):
        T = ids.shape[1]

        def tables(inv):
            freqs = torch.outer(torch.arange(T).float(), inv)
            emb = torch.cat((freqs, freqs), -1)
            return emb.cos(), emb.sin()

        rope = tables(self.inv_freq)
        rope_local = tables(self.inv_freq_local) if self.gemma else None
        i, j = torch.arange(T).view(T, 1), torch.arange(T).view(1, T)
        masks = {}
        x = self.embed_tokens(ids)
        if self.gemma:
            x = x * torch.tensor(self.cfg["hidden_size"] ** 0.5)
        for layer, w in zip(self.layers, self.windows):
            if w not in masks:
                allowed = (j <= i) & ((j > i - w) if w else torch.ones(T, T, dtype=torch.bool))
                masks[w] = torch.zeros(T, T).masked_fill(~allowed, float("-inf"))
            cos, sin = rope_local if (self.gemma and w) else rope
            x = layer(x, cos, sin, masks[w])
        logits = self.lm_head(self.norm(x))
        if self.fcap:
            logits = torch.tanh(logits / self.fcap) * self.fcap
        return logits


def load(folder):
    cfg = json.load(open(os.path.join(folder, "config.json")))
    m = Llama(cfg)
    files = [f for f in os.listdir(folder) if f.endswith(".safetensors")]
    state = {}
    for f in files:
        state.update(st_load(os.path.join(folder, f)))
    own = {}
    for name, t in state.items():  # Hugging Face names onto this module's (no self_attn./mlp. level)
        n = name.replace("model.", "", 1) if name.startswith("model.") else name
        own[n.replace("self_attn.", "").replace("mlp.", "")] = t
    missing, unexpected = m.load_state_dict(own, strict=False)
    missing = [k for k in missing if not (m.tied and k == "lm_head.weight")]
    if missing or unexpected:
        raise SystemExit(f"{folder}: weights do not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--method", default="lisa")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gamma", type=int, default=2)
    ap.add_argument("--interval", type=int, default=20)
    ap.add_argument("--lr", type=float, default=1e-5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    raw = open(a.tokens, "rb").read()
    steps, B, T = struct.unpack("<3i", raw[:12])
    toks = torch.from_numpy(np.frombuffer(raw[12:], dtype=np.int32).astype(np.int64).reshape(steps, B, T))
    m = load(a.model)
    L = len(m.layers)
    if a.method == "lora":
        for p in m.parameters():
            p.requires_grad_(False)
        for layer in m.layers:
            for n in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
                setattr(layer, n, LoRALinear(getattr(layer, n), 8, 32))
    rng = random.Random(0)
    opt = None
    times, rss = [], []
    for s in range(steps):
        t0 = time.perf_counter()
        if a.method == "lisa" and s % a.interval == 0:
            active = set(rng.sample(range(L), a.gamma))
            for i, layer in enumerate(m.layers):
                for p in layer.parameters():
                    p.requires_grad_(i in active)
            opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=a.lr)
        elif opt is None:
            opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=a.lr)
        ids = toks[s]
        logits = m(ids)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in m.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        rss.append(rss_mib())
    timed = sorted(times[1:] if len(times) > 1 else times)
    med = timed[len(timed) // 2]
    print(json.dumps({"impl": "pytorch", "method": a.method, "tokens_per_second": B * T / med, "step_seconds": med,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, "rss_mib": rss,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
