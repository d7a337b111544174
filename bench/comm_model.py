#!/usr/bin/env python3
"""A model of one data-parallel optimizer step of a Llama-2-7B shape on N nodes: compute (flops at
an assumed sustained rate) plus a ring all-reduce of what trains (fp32 gradients), for LISA
(gamma active layers + embedding rows + norm + head, as lisa.cpp all-reduces them), LoRA and full
fine-tuning. Prints the bytes per step and the step time at 25, 100 and 400 Gb/s, without and
with the all-reduce overlapped with the backward. docs/distributed.md explains the assumptions.

  bench/comm_model.py [--tokens_per_node 16384] [--node_tflops 400] [--gamma 2]"""
import argparse

p = argparse.ArgumentParser()
p.add_argument("--tokens_per_node", type=int, default=16384)  # e.g. 8 sequences of 2048
p.add_argument("--node_tflops", type=float, default=400.0)    # sustained, per node
p.add_argument("--gamma", type=int, default=2)
p.add_argument("--lora_r", type=int, default=8)
a = p.parse_args()

V, D, F, L = 32000, 4096, 11008, 32
layer = 4 * D * D + 3 * D * F + 2 * D          # attention, MLP, two norms
P = V * D * 2 + L * layer + D                  # untied embedding and head
head, emb = V * D, V * D
distinct_tokens = min(V, 4000)                 # rows of the embedding a step touches (all nodes)

def trainable(method):
    if method == "full":
        return P - emb + distinct_tokens * D   # the embedding as touched rows (sparse)
    if method == "lisa":
        return a.gamma * layer + D + head + distinct_tokens * D
    if method == "lora":
        return L * 2 * (D * a.lora_r + a.lora_r * D)  # q_proj and v_proj
    raise ValueError(method)

def flops_per_token(method):
    # forward 2P; backward: activation gradients through every layer (2P) and weight
    # gradients of what trains (2 x trainable)
    t = trainable(method)
    return 2 * P + 2 * P + 2 * t

print("Llama-2-7B shape: %.2fB parameters; %d tokens per node per step; %.0f TFLOP/s per node"
      % (P / 1e9, a.tokens_per_node, a.node_tflops))
print("%-5s %10s %9s" % ("", "GB/step", "compute s"))
for m in ("lisa", "lora", "full"):
    comp = flops_per_token(m) * a.tokens_per_node / (a.node_tflops * 1e12)
    print("%-5s %10.2f %9.2f" % (m, trainable(m) * 4 / 1e9, comp))
print()
print("step seconds (compute + ring all-reduce 2(N-1)/N x bytes; [overlapped: max of the two])")
print("%-4s %-9s %22s %22s %22s %12s" % ("N", "Gb/s", "LISA", "LoRA", "full", "full / LISA"))
for bw in (25, 100, 400):
    for n in (2, 4, 8, 16, 64):
        row = []
        tl = tf = None
        for m in ("lisa", "lora", "full"):
            comp = flops_per_token(m) * a.tokens_per_node / (a.node_tflops * 1e12)
            comm = 2 * (n - 1) / n * trainable(m) * 4 * 8 / (bw * 1e9)
            serial, over = comp + comm, max(comp, comm)
            row.append("%9.2f [%9.2f]" % (serial, over))
            if m == "lisa": tl = serial
            if m == "full": tf = serial
        print("%-4d %-9d %22s %22s %22s %12.2f" % (n, bw, row[0], row[1], row[2], tf / tl))
