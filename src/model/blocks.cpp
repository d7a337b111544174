#include "model/blocks.h"

#include "core/error.h"

namespace lisa {

// ------------------------------------------------------------------ fp32 or bf16 weights

// y = x·Wᵀ + b from whichever copy of W exists (fp32 when materialised, else bf16)
static void lin_fwd(const backend& K, float* y, const float* x, const float* w, const uint16_t* w16, const float* b,
                    int64_t N, int64_t in, int64_t out) {
    if (w) K.linear_forward(y, x, w, b, N, in, out);
    else K.linear_forward_bf16(y, x, w16, b, N, in, out);
}

static void lin_bwd(const backend& K, float* dx, float* dw, float* db, const float* dy, const float* x,
                    const float* w, const uint16_t* w16, int64_t N, int64_t in, int64_t out) {
    if (w) {
        K.linear_backward(dx, dw, db, dy, x, w, N, in, out);
        return;
    }
    LISA_ASSERT(!dw, "linear backward", "a weight held only in bf16 cannot be trained (materialise it first)");
    if (dx) K.linear_backward_bf16(dx, dy, w16, N, in, out);
    if (db) K.linear_backward(nullptr, nullptr, db, dy, x, nullptr, N, in, out);
}

// ------------------------------------------------------------------ LoRA (unmerged)

// dropout(x) into the activations' scratch, with a mask regenerated from (seed, layer, target)
static const float* lora_dropped(const block_args& b, int64_t l, int t, const float* x, int64_t n) {
    const float p = b.m.lora.dropout;
    if (p <= 0.0f) return x;
    const uint64_t key = b.m.lora.dropout_seed ^ ((uint64_t)(l * LORA_N + t + 1) * 0x9e3779b97f4a7c15ull);
    b.K.dropout(b.a->lora_xdrop, x, n, p, key);
    return b.a->lora_xdrop;
}

// y[N,out] += s · dropout(x)·Aᵀ·Bᵀ, keeping xa = dropout(x)·Aᵀ for the backward
static void lora_forward(const block_args& b, int64_t l, int t, float* y, const float* x, int64_t in, int64_t out) {
    const llama_lora& lo = b.m.lora;
    if (lo.r == 0 || !lo.layers[l].A[t]) return;
    LISA_ASSERT(b.a, "lora forward", "unmerged adapters need training activations (merge them to decode)");
    const int64_t N = b.B * b.T, r = lo.r;
    float* xa = b.a->lora_xa[b.slot][t];
    b.K.linear_forward(xa, lora_dropped(b, l, t, x, N * in), lo.layers[l].A[t], nullptr, N, in, r);
    b.K.gemm(false, true, N, out, r, lo.scale, xa, r, lo.layers[l].B[t], r, 1.0f, y, out);
}

// dx += ∂/∂x, dA, dB += gradients, from dy of y = x·Wᵀ + s·dropout(x)·Aᵀ·Bᵀ
static void lora_backward(const block_args& b, int64_t l, int t, const llama_lora_layer* lg, float* dx,
                          const float* dy, const float* x, int64_t in, int64_t out) {
    const llama_lora& lo = b.m.lora;
    if (lo.r == 0 || !lo.layers[l].A[t]) return;
    const backend& K = b.K;
    llama_acts* a = b.a;
    const int64_t N = b.B * b.T, r = lo.r;
    const float s = lo.scale;
    const float* A = lo.layers[l].A[t];
    const float* B = lo.layers[l].B[t];
    const float* xa = a->lora_xa[b.slot][t];
    float* dA = lg ? lg->A[t] : nullptr;
    float* dB = lg ? lg->B[t] : nullptr;
    if (dB) K.gemm(true, false, out, r, N, s, dy, out, xa, r, 1.0f, dB, r);  // dB[out,r] += s · dyᵀ · xa
    K.gemm(false, false, N, r, out, s, dy, out, B, r, 0.0f, a->lora_dxa, r);  // dxa[N,r] = s · dy · B
    if (dA) K.gemm(true, false, r, in, N, 1.0f, a->lora_dxa, r, lora_dropped(b, l, t, x, N * in), in, 1.0f, dA, in);
    if (!dx) return;
    if (lo.dropout <= 0.0f) {  // dx += dxa · A
        K.gemm(false, false, N, in, r, 1.0f, a->lora_dxa, r, A, in, 1.0f, dx, in);
        return;
    }
    // with dropout: dx += (dxa · A) ⊙ mask / (1-p); the mask is the one lora_dropped applies
    K.gemm(false, false, N, in, r, 1.0f, a->lora_dxa, r, A, in, 0.0f, a->lora_dx, in);
    K.add(dx, lora_dropped(b, l, t, a->lora_dx, N * in), N * in);
}

// ------------------------------------------------------------------ attention block

void attn_block_forward(const block_args& b, int64_t l, const float* x, llama_layer_acts& s) {
    const llama_config& c = b.m.cfg;
    const backend& K = b.K;
    const int64_t N = b.B * b.T, D = c.hidden_size, hd = c.head_dim, Hq = c.num_heads, Hkv = c.num_kv_heads,
                  Q = Hq * hd, KV = Hkv * hd;
    const llama_layer_weights& w = b.m.w.layers[l];
    const llama_layer_weights16& w16 = b.m.w16.layers[l];
    K.rmsnorm_forward(s.xn1, s.rstd1, x, w[LT_ATTN_NORM], N, D, (float)c.rms_norm_eps);
    lin_fwd(K, s.q, s.xn1, w[LT_Q], w16[LT_Q], w[LT_Q_BIAS], N, D, Q);
    lin_fwd(K, s.k, s.xn1, w[LT_K], w16[LT_K], w[LT_K_BIAS], N, D, KV);
    lin_fwd(K, s.v, s.xn1, w[LT_V], w16[LT_V], w[LT_V_BIAS], N, D, KV);
    lora_forward(b, l, LORA_Q, s.q, s.xn1, D, Q);
    lora_forward(b, l, LORA_K, s.k, s.xn1, D, KV);
    lora_forward(b, l, LORA_V, s.v, s.xn1, D, KV);
    K.rope_forward(s.q, b.cos, b.sin, b.B, b.T, Hq, hd);
    K.rope_forward(s.k, b.cos, b.sin, b.B, b.T, Hkv, hd);
    if (b.kc) {  // decode: append this chunk's keys and values, attend over the whole cache
        K.copy(b.kc + b.pos0 * KV, s.k, N * KV);
        K.copy(b.vc + b.pos0 * KV, s.v, N * KV);
        K.attention_forward_kv(s.att, s.q, b.kc, b.vc, N, b.pos0, Hq, Hkv, hd);
    } else {
        K.attention_forward(s.att, s.lse, s.q, s.k, s.v, b.B, b.T, Hq, Hkv, hd);
    }
    lin_fwd(K, s.x_mid, s.att, w[LT_O], w16[LT_O], w[LT_O_BIAS], N, Q, D);
    lora_forward(b, l, LORA_O, s.x_mid, s.att, Q, D);
    K.add(s.x_mid, x, N * D);
}

void attn_block_backward(const block_args& b, int64_t l, const float* x, const llama_layer_acts& s, float* dresid,
                         const llama_layer_weights& G, const llama_lora_layer* lg) {
    const llama_config& c = b.m.cfg;
    const backend& K = b.K;
    llama_acts* a = b.a;
    const int64_t N = b.B * b.T, D = c.hidden_size, hd = c.head_dim, Hq = c.num_heads, Hkv = c.num_kv_heads,
                  Q = Hq * hd, KV = Hkv * hd;
    const llama_layer_weights& w = b.m.w.layers[l];
    const llama_layer_weights16& w16 = b.m.w16.layers[l];
    K.zero(a->datt, N * Q);
    lin_bwd(K, a->datt, G[LT_O], G[LT_O_BIAS], dresid, s.att, w[LT_O], w16[LT_O], N, Q, D);
    lora_backward(b, l, LORA_O, lg, a->datt, dresid, s.att, Q, D);
    K.zero(a->dq, N * Q);
    K.zero(a->dk, N * KV);
    K.zero(a->dv, N * KV);
    K.attention_backward(a->dq, a->dk, a->dv, a->datt, s.att, s.lse, s.q, s.k, s.v, b.B, b.T, Hq, Hkv, hd);
    K.rope_backward(a->dq, b.cos, b.sin, b.B, b.T, Hq, hd);
    K.rope_backward(a->dk, b.cos, b.sin, b.B, b.T, Hkv, hd);
    K.zero(a->dxn, N * D);
    lin_bwd(K, a->dxn, G[LT_Q], G[LT_Q_BIAS], a->dq, s.xn1, w[LT_Q], w16[LT_Q], N, D, Q);
    lin_bwd(K, a->dxn, G[LT_K], G[LT_K_BIAS], a->dk, s.xn1, w[LT_K], w16[LT_K], N, D, KV);
    lin_bwd(K, a->dxn, G[LT_V], G[LT_V_BIAS], a->dv, s.xn1, w[LT_V], w16[LT_V], N, D, KV);
    lora_backward(b, l, LORA_Q, lg, a->dxn, a->dq, s.xn1, D, Q);
    lora_backward(b, l, LORA_K, lg, a->dxn, a->dk, s.xn1, D, KV);
    lora_backward(b, l, LORA_V, lg, a->dxn, a->dv, s.xn1, D, KV);
    K.rmsnorm_backward(dresid, G[LT_ATTN_NORM], a->dxn, x, w[LT_ATTN_NORM], s.rstd1, N, D);  // d x
}

// ------------------------------------------------------------------ MLP block

void mlp_block_forward(const block_args& b, int64_t l, llama_layer_acts& s, float* y) {
    const llama_config& c = b.m.cfg;
    const backend& K = b.K;
    const int64_t N = b.B * b.T, D = c.hidden_size, F = c.intermediate_size;
    const llama_layer_weights& w = b.m.w.layers[l];
    const llama_layer_weights16& w16 = b.m.w16.layers[l];
    K.rmsnorm_forward(s.xn2, s.rstd2, s.x_mid, w[LT_MLP_NORM], N, D, (float)c.rms_norm_eps);
    lin_fwd(K, s.gate, s.xn2, w[LT_GATE], w16[LT_GATE], nullptr, N, D, F);
    lin_fwd(K, s.up, s.xn2, w[LT_UP], w16[LT_UP], nullptr, N, D, F);
    lora_forward(b, l, LORA_GATE, s.gate, s.xn2, D, F);
    lora_forward(b, l, LORA_UP, s.up, s.xn2, D, F);
    K.swiglu_forward(s.h, s.gate, s.up, N * F);
    lin_fwd(K, y, s.h, w[LT_DOWN], w16[LT_DOWN], nullptr, N, F, D);
    lora_forward(b, l, LORA_DOWN, y, s.h, F, D);
    K.add(y, s.x_mid, N * D);
}

void mlp_block_backward(const block_args& b, int64_t l, const llama_layer_acts& s, float* dresid,
                        const llama_layer_weights& G, const llama_lora_layer* lg) {
    const llama_config& c = b.m.cfg;
    const backend& K = b.K;
    llama_acts* a = b.a;
    const int64_t N = b.B * b.T, D = c.hidden_size, F = c.intermediate_size;
    const llama_layer_weights& w = b.m.w.layers[l];
    const llama_layer_weights16& w16 = b.m.w16.layers[l];
    K.zero(a->dh, N * F);
    lin_bwd(K, a->dh, G[LT_DOWN], nullptr, dresid, s.h, w[LT_DOWN], w16[LT_DOWN], N, F, D);
    lora_backward(b, l, LORA_DOWN, lg, a->dh, dresid, s.h, F, D);
    K.zero(a->dgate, N * F);
    K.zero(a->dup, N * F);
    K.swiglu_backward(a->dgate, a->dup, a->dh, s.gate, s.up, N * F);
    K.zero(a->dxn, N * D);
    lin_bwd(K, a->dxn, G[LT_GATE], nullptr, a->dgate, s.xn2, w[LT_GATE], w16[LT_GATE], N, D, F);
    lin_bwd(K, a->dxn, G[LT_UP], nullptr, a->dup, s.xn2, w[LT_UP], w16[LT_UP], N, D, F);
    lora_backward(b, l, LORA_GATE, lg, a->dxn, a->dgate, s.xn2, D, F);
    lora_backward(b, l, LORA_UP, lg, a->dxn, a->dup, s.xn2, D, F);
    K.rmsnorm_backward(dresid, G[LT_MLP_NORM], a->dxn, s.x_mid, w[LT_MLP_NORM], s.rstd2, N, D);  // d x_mid
}

}  // namespace lisa
