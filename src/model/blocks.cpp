#include "model/blocks.h"

#include <initializer_list>

#include "core/error.h"

namespace lisa {

// ------------------------------------------------------------------ fp32 or bf16 weights

// y = x·Wᵀ + b from whichever copy of W exists (fp32 when materialised, else bf16 or ggml blocks)
static void lin_fwd(const backend& K, float* y, const float* x, const float* w, frozen_ptr w16, const float* b,
                    int64_t N, int64_t in, int64_t out) {
    if (w) K.linear_forward(y, x, w, b, N, in, out);
    else if (w16.is_bf16()) K.linear_forward_bf16(y, x, w16.bf16(), b, N, in, out);
    else K.linear_forward_q(y, x, (const uint8_t*)w16.p, w16.type, b, N, in, out);
}

static void lin_bwd(const backend& K, float* dx, float* dw, float* db, const float* dy, const float* x,
                    const float* w, frozen_ptr w16, int64_t N, int64_t in, int64_t out) {
    if (w) {
        K.linear_backward(dx, dw, db, dy, x, w, N, in, out);
        return;
    }
    LISA_ASSERT(!dw, "linear backward", "a frozen weight (bf16 or blocks) cannot be trained (materialise it first)");
    if (dx && w16.is_bf16()) K.linear_backward_bf16(dx, dy, w16.bf16(), N, in, out);
    else if (dx) K.linear_backward_q(dx, dy, (const uint8_t*)w16.p, w16.type, N, in, out);
    if (db) K.linear_backward(nullptr, nullptr, db, dy, x, nullptr, N, in, out);
}

// ------------------------------------------------------------------ LoRA (unmerged)

// dropout(x) into the activations' scratch, with a mask regenerated from (seed, layer, target)
static const float* lora_dropped(const block_args& b, int64_t l, int t, const float* x, int64_t n) {
    const float p = b.m.lora.dropout;
    if (p <= 0.0f || !b.a || !b.a->training) return x;  // dropout trains; evaluation never applies it
    const uint64_t slot = (uint64_t)(l * kLoraMaskSlots + lora_mask_slot(t) + 1);
    const uint64_t key = b.m.lora.dropout_seed ^ (slot * 0x9e3779b97f4a7c15ull);
    b.K.dropout(b.a->lora_xdrop, x, n, p, key);
    return b.a->lora_xdrop;
}

// One slice of an adapted Linear's output: [N, rows] in its own buffer. A fused projection
// (Phi-3's qkv_proj) writes q, k and v to their buffers; B's rows are split the same way.
struct lora_part {
    float*  y;
    int64_t rows;
};
struct lora_dpart {  // the gradient of a slice
    const float* dy;
    int64_t      rows;
};

// y[N,out] += s · dropout(x)·Aᵀ·Bᵀ over the parts of out, keeping xa = dropout(x)·Aᵀ for the backward
static void lora_forward(const block_args& b, int64_t l, int t, const float* x, int64_t in,
                         std::initializer_list<lora_part> parts) {
    const decoder_lora& lo = b.m.lora;
    if (lo.r == 0 || !lo.layers[l].A[t]) return;
    LISA_ASSERT(b.a, "lora forward", "unmerged adapters need training activations (merge them to decode)");
    const int64_t N = b.B * b.T, r = lo.r;
    float* xa = b.a->lora_xa[b.slot][t];
    b.K.linear_forward(xa, lora_dropped(b, l, t, x, N * in), lo.layers[l].A[t], nullptr, N, in, r);
    int64_t row = 0;
    for (const lora_part& p : parts) {
        b.K.gemm(false, true, N, p.rows, r, lo.scale, xa, r, lo.layers[l].B[t] + row * r, r, 1.0f, p.y, p.rows);
        row += p.rows;
    }
}

// dx += ∂/∂x, dA, dB += gradients, from the parts' dy of y = x·Wᵀ + s·dropout(x)·Aᵀ·Bᵀ
static void lora_backward(const block_args& b, int64_t l, int t, const decoder_lora_layer* lg, float* dx,
                          const float* x, int64_t in, std::initializer_list<lora_dpart> parts) {
    const decoder_lora& lo = b.m.lora;
    if (lo.r == 0 || !lo.layers[l].A[t]) return;
    const backend& K = b.K;
    decoder_acts* a = b.a;
    const int64_t N = b.B * b.T, r = lo.r;
    const float s = lo.scale;
    const float* A = lo.layers[l].A[t];
    const float* B = lo.layers[l].B[t];
    const float* xa = a->lora_xa[b.slot][t];
    float* dA = lg ? lg->A[t] : nullptr;
    float* dB = lg ? lg->B[t] : nullptr;
    int64_t row = 0;
    for (const lora_dpart& p : parts) {
        const float* dy = p.dy;
        if (dB) K.gemm(true, false, p.rows, r, N, s, dy, p.rows, xa, r, 1.0f, dB + row * r, r);  // dB += s·dyᵀ·xa
        // dxa[N,r] = s · Σ_parts dy · B_part
        K.gemm(false, false, N, r, p.rows, s, dy, p.rows, B + row * r, r, row == 0 ? 0.0f : 1.0f, a->lora_dxa, r);
        row += p.rows;
    }
    if (dA) K.gemm(true, false, r, in, N, 1.0f, a->lora_dxa, r, lora_dropped(b, l, t, x, N * in), in, 1.0f, dA, in);
    if (!dx) return;
    if (lo.dropout <= 0.0f || !a->training) {  // dx += dxa · A
        K.gemm(false, false, N, in, r, 1.0f, a->lora_dxa, r, A, in, 1.0f, dx, in);
        return;
    }
    // with dropout: dx += (dxa · A) ⊙ mask / (1-p); the mask is the one lora_dropped applies
    K.gemm(false, false, N, in, r, 1.0f, a->lora_dxa, r, A, in, 0.0f, a->lora_dx, in);
    K.add(dx, lora_dropped(b, l, t, a->lora_dx, N * in), N * in);
}

// ------------------------------------------------------------------ attention block

// Layer l's attention: scale, soft cap and window
static attn_params layer_attn(const model_config& c, int64_t l) {
    attn_params ap;
    ap.scale = config_attn_scale(c);
    ap.softcap = (float)c.attn_logit_softcap;
    ap.window = config_layer_window(c, l);
    return ap;
}

static void norm_fwd(const block_args& b, float* y, float* rstd, const float* x, const float* w, int64_t rows,
                     int64_t width) {
    const model_config& c = b.m.cfg;
    b.K.rmsnorm_forward(y, rstd, x, w, rows, width, (float)c.rms_norm_eps, (float)c.norm_weight_offset);
}

static void norm_bwd(const block_args& b, float* dx, float* dw, const float* dy, const float* x, const float* w,
                     const float* rstd, int64_t rows, int64_t width) {
    b.K.rmsnorm_backward(dx, dw, dy, x, w, rstd, rows, width, (float)b.m.cfg.norm_weight_offset);
}

// Gemma's norm of a block's output, backward: the gradient of the output before the norm (dy
// itself when the architecture has none); x and rstd are what the forward normed.
static const float* post_norm_bwd(const block_args& b, int64_t l, const decoder_layer_weights& G, layer_tensor norm,
                                  const float* dy, const float* x, const float* rstd) {
    const model_config& c = b.m.cfg;
    if (!c.sandwich_norms) return dy;
    const int64_t N = b.B * b.T, D = c.hidden_size;
    b.K.zero(b.a->dpost, N * D);
    norm_bwd(b, b.a->dpost, G[norm], dy, x, b.m.w.layers[l][norm], rstd, N, D);
    return b.a->dpost;
}

void attn_block_forward(const block_args& b, int64_t l, const float* x, decoder_layer_acts& s) {
    const model_config& c = b.m.cfg;
    const backend& K = b.K;
    const int64_t N = b.B * b.T, D = c.hidden_size, hd = c.head_dim, Hq = c.num_heads, Hkv = c.num_kv_heads,
                  Q = Hq * hd, KV = Hkv * hd;
    const decoder_layer_weights& w = b.m.w.layers[l];
    const decoder_layer_weights16& w16 = b.m.w16.layers[l];
    attn_params ap = layer_attn(c, l);
    ap.pos = b.pos;
    norm_fwd(b, s.xn1, s.rstd1, x, w[LT_ATTN_NORM], N, D);
    // projections into q_pre/k_pre (the same buffers as q/k unless a per-head norm follows)
    // (q, k and v may be rows of one fused qkv_proj: each is computed from its rows)
    lin_fwd(K, s.q_pre, s.xn1, w.proj(c, LT_Q), w16.proj(c, LT_Q), w[LT_Q_BIAS], N, D, Q);
    lin_fwd(K, s.k_pre, s.xn1, w.proj(c, LT_K), w16.proj(c, LT_K), w[LT_K_BIAS], N, D, KV);
    lin_fwd(K, s.v, s.xn1, w.proj(c, LT_V), w16.proj(c, LT_V), w[LT_V_BIAS], N, D, KV);
    lora_forward(b, l, LORA_Q, s.xn1, D, {{s.q_pre, Q}});
    lora_forward(b, l, LORA_K, s.xn1, D, {{s.k_pre, KV}});
    lora_forward(b, l, LORA_V, s.xn1, D, {{s.v, KV}});
    lora_forward(b, l, LORA_QKV, s.xn1, D, {{s.q_pre, Q}, {s.k_pre, KV}, {s.v, KV}});
    if (c.qk_norm) {  // Qwen3, Gemma 3: RMSNorm over each head's vector, before RoPE
        norm_fwd(b, s.q, s.rstd_q, s.q_pre, w[LT_Q_NORM], N * Hq, hd);
        norm_fwd(b, s.k, s.rstd_k, s.k_pre, w[LT_K_NORM], N * Hkv, hd);
    }
    if (b.cos) {  // NoPE layers (SmolLM3) attend without positions
        K.rope_forward(s.q, b.cos, b.sin, b.pos, b.B, b.T, Hq, hd, c.rope_dim);
        K.rope_forward(s.k, b.cos, b.sin, b.pos, b.B, b.T, Hkv, hd, c.rope_dim);
    }
    if (b.kc) {  // decode: append this chunk's keys and values, attend over the whole cache
        K.copy(b.kc + b.pos0 * KV, s.k, N * KV);
        K.copy(b.vc + b.pos0 * KV, s.v, N * KV);
        K.attention_forward_kv(s.att, s.q, b.kc, b.vc, N, b.pos0, Hq, Hkv, hd, ap);
    } else {
        K.attention_forward(s.att, s.lse, s.q, s.k, s.v, b.B, b.T, Hq, Hkv, hd, ap);
    }
    // o projection into attn_o (== x_mid unless a sandwich norm follows)
    lin_fwd(K, s.attn_o, s.att, w[LT_O], w16[LT_O], w[LT_O_BIAS], N, Q, D);
    lora_forward(b, l, LORA_O, s.att, Q, {{s.attn_o, D}});
    if (c.sandwich_norms) norm_fwd(b, s.x_mid, s.rstd_ao, s.attn_o, w[LT_POST_ATTN_NORM], N, D);
    K.add(s.x_mid, x, N * D);
}

void attn_block_backward(const block_args& b, int64_t l, const float* x, const decoder_layer_acts& s, float* dresid,
                         const decoder_layer_weights& G, const decoder_lora_layer* lg) {
    const model_config& c = b.m.cfg;
    const backend& K = b.K;
    decoder_acts* a = b.a;
    const int64_t N = b.B * b.T, D = c.hidden_size, hd = c.head_dim, Hq = c.num_heads, Hkv = c.num_kv_heads,
                  Q = Hq * hd, KV = Hkv * hd;
    const decoder_layer_weights& w = b.m.w.layers[l];
    const decoder_layer_weights16& w16 = b.m.w16.layers[l];
    attn_params ap = layer_attn(c, l);
    ap.pos = b.pos;
    // gradient of the o projection's output: dresid itself, or through the post-attention norm
    const float* dout = post_norm_bwd(b, l, G, LT_POST_ATTN_NORM, dresid, s.attn_o, s.rstd_ao);
    K.zero(a->datt, N * Q);
    lin_bwd(K, a->datt, G[LT_O], G[LT_O_BIAS], dout, s.att, w[LT_O], w16[LT_O], N, Q, D);
    lora_backward(b, l, LORA_O, lg, a->datt, s.att, Q, {{dout, D}});
    K.zero(a->dq, N * Q);
    K.zero(a->dk, N * KV);
    K.zero(a->dv, N * KV);
    K.attention_backward(a->dq, a->dk, a->dv, a->datt, s.att, s.lse, s.q, s.k, s.v, b.B, b.T, Hq, Hkv, hd, ap);
    if (b.cos) {
        K.rope_backward(a->dq, b.cos, b.sin, b.pos, b.B, b.T, Hq, hd, c.rope_dim);
        K.rope_backward(a->dk, b.cos, b.sin, b.pos, b.B, b.T, Hkv, hd, c.rope_dim);
    }
    float* dq = a->dq;
    float* dk = a->dk;
    if (c.qk_norm) {  // back through the per-head norms
        K.zero(a->dq_pre, N * Q);
        K.zero(a->dk_pre, N * KV);
        norm_bwd(b, a->dq_pre, G[LT_Q_NORM], a->dq, s.q_pre, w[LT_Q_NORM], s.rstd_q, N * Hq, hd);
        norm_bwd(b, a->dk_pre, G[LT_K_NORM], a->dk, s.k_pre, w[LT_K_NORM], s.rstd_k, N * Hkv, hd);
        dq = a->dq_pre;
        dk = a->dk_pre;
    }
    K.zero(a->dxn, N * D);
    lin_bwd(K, a->dxn, G.proj(c, LT_Q), G[LT_Q_BIAS], dq, s.xn1, w.proj(c, LT_Q), w16.proj(c, LT_Q), N, D, Q);
    lin_bwd(K, a->dxn, G.proj(c, LT_K), G[LT_K_BIAS], dk, s.xn1, w.proj(c, LT_K), w16.proj(c, LT_K), N, D, KV);
    lin_bwd(K, a->dxn, G.proj(c, LT_V), G[LT_V_BIAS], a->dv, s.xn1, w.proj(c, LT_V), w16.proj(c, LT_V), N, D, KV);
    lora_backward(b, l, LORA_Q, lg, a->dxn, s.xn1, D, {{dq, Q}});
    lora_backward(b, l, LORA_K, lg, a->dxn, s.xn1, D, {{dk, KV}});
    lora_backward(b, l, LORA_V, lg, a->dxn, s.xn1, D, {{a->dv, KV}});
    lora_backward(b, l, LORA_QKV, lg, a->dxn, s.xn1, D, {{dq, Q}, {dk, KV}, {a->dv, KV}});
    norm_bwd(b, dresid, G[LT_ATTN_NORM], a->dxn, x, w[LT_ATTN_NORM], s.rstd1, N, D);  // d x
}

// ------------------------------------------------------------------ MLP block

static void glu_fwd(const block_args& b, float* h, const float* g, const float* u, int64_t n) {
    if (b.m.cfg.hidden_act == activation::gelu_tanh) b.K.geglu_forward(h, g, u, n);
    else b.K.swiglu_forward(h, g, u, n);
}

static void glu_bwd(const block_args& b, float* dg, float* du, const float* dh, const float* g, const float* u,
                    int64_t n) {
    if (b.m.cfg.hidden_act == activation::gelu_tanh) b.K.geglu_backward(dg, du, dh, g, u, n);
    else b.K.swiglu_backward(dg, du, dh, g, u, n);
}

void mlp_block_forward(const block_args& b, int64_t l, decoder_layer_acts& s, float* y) {
    const model_config& c = b.m.cfg;
    const backend& K = b.K;
    const int64_t N = b.B * b.T, D = c.hidden_size, F = c.intermediate_size;
    const decoder_layer_weights& w = b.m.w.layers[l];
    const decoder_layer_weights16& w16 = b.m.w16.layers[l];
    const layer_tensor in_norm = mlp_input_norm(c);
    norm_fwd(b, s.xn2, s.rstd2, s.x_mid, w[in_norm], N, D);
    lin_fwd(K, s.gate, s.xn2, w.proj(c, LT_GATE), w16.proj(c, LT_GATE), nullptr, N, D, F);
    lin_fwd(K, s.up, s.xn2, w.proj(c, LT_UP), w16.proj(c, LT_UP), nullptr, N, D, F);
    lora_forward(b, l, LORA_GATE, s.xn2, D, {{s.gate, F}});
    lora_forward(b, l, LORA_UP, s.xn2, D, {{s.up, F}});
    lora_forward(b, l, LORA_GATE_UP, s.xn2, D, {{s.gate, F}, {s.up, F}});
    glu_fwd(b, s.h, s.gate, s.up, N * F);
    float* o = c.sandwich_norms ? s.mlp_o : y;  // the down projection's output, normed after (Gemma)
    lin_fwd(K, o, s.h, w[LT_DOWN], w16[LT_DOWN], nullptr, N, F, D);
    lora_forward(b, l, LORA_DOWN, s.h, F, {{o, D}});
    if (c.sandwich_norms) norm_fwd(b, y, s.rstd_mo, s.mlp_o, w[LT_POST_FF_NORM], N, D);
    K.add(y, s.x_mid, N * D);
}

void mlp_block_backward(const block_args& b, int64_t l, const decoder_layer_acts& s, float* dresid,
                        const decoder_layer_weights& G, const decoder_lora_layer* lg) {
    const model_config& c = b.m.cfg;
    const backend& K = b.K;
    decoder_acts* a = b.a;
    const int64_t N = b.B * b.T, D = c.hidden_size, F = c.intermediate_size;
    const decoder_layer_weights& w = b.m.w.layers[l];
    const decoder_layer_weights16& w16 = b.m.w16.layers[l];
    const layer_tensor in_norm = mlp_input_norm(c);
    const float* dout = post_norm_bwd(b, l, G, LT_POST_FF_NORM, dresid, s.mlp_o, s.rstd_mo);
    K.zero(a->dh, N * F);
    lin_bwd(K, a->dh, G[LT_DOWN], nullptr, dout, s.h, w[LT_DOWN], w16[LT_DOWN], N, F, D);
    lora_backward(b, l, LORA_DOWN, lg, a->dh, s.h, F, {{dout, D}});
    K.zero(a->dgate, N * F);
    K.zero(a->dup, N * F);
    glu_bwd(b, a->dgate, a->dup, a->dh, s.gate, s.up, N * F);
    K.zero(a->dxn, N * D);
    lin_bwd(K, a->dxn, G.proj(c, LT_GATE), nullptr, a->dgate, s.xn2, w.proj(c, LT_GATE), w16.proj(c, LT_GATE), N, D, F);
    lin_bwd(K, a->dxn, G.proj(c, LT_UP), nullptr, a->dup, s.xn2, w.proj(c, LT_UP), w16.proj(c, LT_UP), N, D, F);
    lora_backward(b, l, LORA_GATE, lg, a->dxn, s.xn2, D, {{a->dgate, F}});
    lora_backward(b, l, LORA_UP, lg, a->dxn, s.xn2, D, {{a->dup, F}});
    lora_backward(b, l, LORA_GATE_UP, lg, a->dxn, s.xn2, D, {{a->dgate, F}, {a->dup, F}});
    norm_bwd(b, dresid, G[in_norm], a->dxn, s.x_mid, w[in_norm], s.rstd2, N, D);  // d x_mid
}

}  // namespace lisa
