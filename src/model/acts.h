// What a decoder's forward keeps for its backward: one activation allocation planned once for the
// largest batch, the per-layer sets carved from it (the blocks in model/blocks.h write them).
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "model/model.h"

namespace lisa {

// What a decoder layer's forward keeps for its backward (pointers into an activation buffer).
struct decoder_layer_acts {
    float *x_mid, *rstd1, *xn1, *q, *k, *v, *att, *lse, *rstd2, *xn2, *gate, *up, *h;
    // qk_norm: q/k projections before their per-head norm, and its rstd [N·H] (else q_pre == q)
    float *q_pre, *k_pre, *rstd_q, *rstd_k;
    // sandwich norms: attention and MLP outputs before their norms, and rstd (else attn_o == x_mid;
    // mlp_o is then the layer's output)
    float *attn_o, *rstd_ao, *mlp_o, *rstd_mo;
};

// Activations: one allocation planned once for the largest batch (decoder_acts_init), re-pointed
// for each smaller batch without allocating (decoder_acts_shape).
struct decoder_acts {
    int64_t B = 0, T = 0;          // the current batch shape
    int64_t cap_N = 0, cap_T = 0;  // the planned capacity (rows, sequence length)
    bool    checkpoint = false;  // gradient checkpointing: keep layer inputs only, recompute the rest
    bool    training = false;    // a backward follows this forward: LoRA dropout is applied (never in
                                 // evaluation or generation); set by decoder_forward_backward
    device_array<float> buf;
    std::vector<decoder_layer_acts> layers;  // per layer (one shared set when checkpointing)
    std::vector<float*> resid;  // num_layers + 1 residual streams: resid[0] = embeddings
    float *rstd_f, *xn_f;       // final norm
    // backward scratch
    float *dresid, *dxn, *dq, *dk, *dv, *datt, *dh, *dgate, *dup;
    float *dq_pre, *dk_pre;     // qk_norm: gradients before the per-head norms
    float *dpost;               // sandwich norms: gradient of a block output before its norm
    float *head_scratch;        // fused LM head + cross-entropy
    // LoRA: per layer and target, xa = dropout(x)·Aᵀ [N, r]; scratch for the backward
    std::vector<std::array<float*, LORA_N>> lora_xa;
    float *lora_dxa, *lora_xdrop, *lora_dx;
    int64_t head_chunk;
    float *rope_cos, *rope_sin; // [T, rope_dim/2] (room for [T, hd/2])
    float *rope_cos_local, *rope_sin_local;  // [T, hd/2] of rope_local (layers that use it; else unused)
    device_array<float>  inv_freq;         // [rope_dim/2] RoPE inverse frequencies of the config
    device_array<float>  inv_freq_long;    // [rope_dim/2] longrope's past the pretraining context (else empty)
    device_array<float>  inv_freq_local;   // [hd/2] of rope_local
    device_array<int32_t> tokens, targets;  // [cap_N] on the device (targets: -100 = no loss)
    std::vector<int32_t>  host_targets;    // [cap_N] the targets as built on the host
    // Rows of several samples (padding-free and packed batches): each token's position in its own
    // sample [B·T], restarting at 0 where a sample starts; RoPE and attention follow it, and no
    // token is trained to predict the next sample's first. has_pos false: one sample per row.
    device_array<int32_t> pos;
    std::vector<int32_t>  host_pos;
    bool                 has_pos = false;
    int64_t              rope_T = 0;       // the rows the RoPE tables were last computed for
    int                  rope_long = -1;   // and whether with longrope's long factors (-1: never)
};
// Plans and allocates activations for batches of up to B sequences of up to T tokens, and sets
// the shape to (B, T). checkpoint: gradient checkpointing — only each layer's input is kept; the
// backward recomputes a layer's activations into one shared set (about a third more compute,
// activations / num_layers).
void decoder_acts_init(decoder_acts* a, const decoder_model& m, int64_t B, int64_t T, bool checkpoint = false);
// Re-points the activations for a batch of B × T within the planned capacity (no allocation).
// pos [B·T]: positions within each sample when rows hold several (see decoder_acts::pos; each
// row starts at 0 and every entry is 0 or one more than the one before); nullptr: 0..T-1.
void decoder_acts_shape(decoder_acts* a, const decoder_model& m, int64_t B, int64_t T, const int32_t* pos = nullptr);

}  // namespace lisa
