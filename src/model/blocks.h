// The decoder layer as two blocks, attention and MLP, each a forward/backward pair (backward right
// under forward, accumulating into gradients, like the kernels). Training, evaluation and
// KV-cached decoding all run these same functions; decode differs only in where keys and values
// go (block_args::kc/vc) and in the attention kernel that reads them.
// Internal to src/model: the public API is decoder.h. Below it: blocks use the model and its
// activations (model.h, acts.h), never the decoder that calls them.
#pragma once
#include "model/acts.h"
#include "model/model.h"

namespace lisa {

struct block_args {
    const decoder_model& m;
    const backend&     K;
    int64_t            B, T;        // rows N = B·T
    const float*       cos;         // RoPE tables [T, hd/2] of these rows' positions (null: no RoPE,
    const float*       sin;         // a NoPE layer)
    const int32_t*     pos = nullptr;  // [B·T] positions within each sample when rows hold several
                                       // (padding-free, packed); null: 0..T-1 (attn_params::pos)
    decoder_acts*        a = nullptr;  // training: LoRA activations and the backward's scratch
    int64_t            slot = 0;     // the layer's set in a->lora_xa (0 when checkpointing)
    float*             kc = nullptr; // decode: this layer's cache [max_T, Hkv, hd], written at pos0..
    float*             vc = nullptr;
    int64_t            pos0 = 0;
};

// x_mid = x + o(attention(rope(q(n(x))), rope(k(n(x))), v(n(x)))), keeping what the backward needs in s
void attn_block_forward(const block_args& b, int64_t l, const float* x, decoder_layer_acts& s);
// dresid: in, ∂L/∂x_mid; out, ∂L/∂x. Weight gradients into G (null entries: frozen), LoRA's into lg.
void attn_block_backward(const block_args& b, int64_t l, const float* x, const decoder_layer_acts& s, float* dresid,
                         const decoder_layer_weights& G, const decoder_lora_layer* lg);

// y = x_mid + down(act(gate(n(x_mid))) ⊙ up(n(x_mid)))
void mlp_block_forward(const block_args& b, int64_t l, decoder_layer_acts& s, float* y);
// dresid: in, ∂L/∂y; out, ∂L/∂x_mid
void mlp_block_backward(const block_args& b, int64_t l, const decoder_layer_acts& s, float* dresid,
                        const decoder_layer_weights& G, const decoder_lora_layer* lg);

}  // namespace lisa
