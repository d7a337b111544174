#include "model/llama.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "core/error.h"
#include "core/rng.h"
#include "kernels/cpu/kernels.h"

#include <cblas.h>

namespace lisa {

// ------------------------------------------------------------------ size table and pointers

// Field index of each layer tensor inside llama_layer_weights (its pointer order).
enum {
    F_ATTN_NORM, F_WQ, F_BQ, F_WK, F_BK, F_WV, F_BV, F_WO, F_BO, F_MLP_NORM, F_GATE, F_UP, F_DOWN, F_COUNT
};
static_assert(sizeof(llama_layer_weights) == F_COUNT * sizeof(float*), "llama_layer_weights: one pointer per field");

static void build_table(llama_model* m) {
    const llama_config& c = m->cfg;
    const int64_t D = c.hidden_size, F = c.intermediate_size, Q = c.num_heads * c.head_dim,
                  K = c.num_kv_heads * c.head_dim, V = c.vocab_size;
    size_t off = 0;
    auto add = [&](const std::string& name, std::vector<int64_t> shape, int layer, int field) {
        size_t n = 1;
        for (auto d : shape) n *= (size_t)d;
        bool mat = shape.size() == 2;
        m->tensors.push_back({name, std::move(shape), off, n, layer, mat, field});
        off += n;
    };
    add("model.embed_tokens.weight", {V, D}, -1, kFieldEmbed);
    for (int l = 0; l < (int)c.num_layers; l++) {
        std::string p = "model.layers." + std::to_string(l) + ".";
        add(p + "input_layernorm.weight", {D}, l, F_ATTN_NORM);
        add(p + "self_attn.q_proj.weight", {Q, D}, l, F_WQ);
        if (c.qkv_bias) add(p + "self_attn.q_proj.bias", {Q}, l, F_BQ);
        add(p + "self_attn.k_proj.weight", {K, D}, l, F_WK);
        if (c.qkv_bias) add(p + "self_attn.k_proj.bias", {K}, l, F_BK);
        add(p + "self_attn.v_proj.weight", {K, D}, l, F_WV);
        if (c.qkv_bias) add(p + "self_attn.v_proj.bias", {K}, l, F_BV);
        add(p + "self_attn.o_proj.weight", {D, Q}, l, F_WO);
        if (c.o_bias) add(p + "self_attn.o_proj.bias", {D}, l, F_BO);
        add(p + "post_attention_layernorm.weight", {D}, l, F_MLP_NORM);
        add(p + "mlp.gate_proj.weight", {F, D}, l, F_GATE);
        add(p + "mlp.up_proj.weight", {F, D}, l, F_UP);
        add(p + "mlp.down_proj.weight", {D, F}, l, F_DOWN);
    }
    add("model.norm.weight", {D}, -1, kFieldNorm);
    if (!c.tie_word_embeddings) add("lm_head.weight", {V, D}, -1, kFieldHead);
}

static float** slot_of(llama_weights* w, const llama_tensor_info& t) {
    if (t.field == kFieldEmbed) return &w->embed;
    if (t.field == kFieldNorm) return &w->norm;
    if (t.field == kFieldHead) return &w->lm_head;
    return ((float**)&w->layers[t.layer]) + t.field;
}

// Fills a pointer struct for any buffer laid out like the size table (params or grads).
static llama_weights pointers_into(const llama_model& m, float* base) {
    llama_weights w{};
    w.layers.assign(m.cfg.num_layers, llama_layer_weights{});
    for (const auto& t : m.tensors) *slot_of(&w, t) = base + t.offset;
    if (m.cfg.tie_word_embeddings) w.lm_head = w.embed;
    return w;
}

static const uint16_t** slot16_of(llama_weights16* w, const llama_tensor_info& t) {
    if (t.field == kFieldEmbed) return &w->embed;
    if (t.field == kFieldHead) return &w->lm_head;
    llama_layer_weights16& L = w->layers[t.layer];
    switch (t.field) {
        case F_WQ: return &L.wq;
        case F_WK: return &L.wk;
        case F_WV: return &L.wv;
        case F_WO: return &L.wo;
        case F_GATE: return &L.w_gate;
        case F_UP: return &L.w_up;
        case F_DOWN: return &L.w_down;
    }
    return nullptr;
}

void llama_model_rebind(llama_model* m) {
    m->w = pointers_into(*m, m->params.data());
    m->w16 = llama_weights16{};
    m->w16.layers.assign(m->cfg.num_layers, llama_layer_weights16{});
    if (!m->half) return;
    for (size_t i = 0; i < m->tensors.size(); i++) {
        const auto& t = m->tensors[i];
        if (!t.is_matrix) continue;
        *slot16_of(&m->w16, t) = m->params16.data() + t.offset;
        if (!m->materialized[i]) *slot_of(&m->w, t) = nullptr;  // compute from bf16
    }
    if (m->cfg.tie_word_embeddings) {
        m->w.lm_head = m->w.embed;
        m->w16.lm_head = m->w16.embed;
    }
}

std::unique_ptr<llama_model> llama_model_init(const llama_config& cfg, bool half) {
    auto m = std::make_unique<llama_model>();
    m->cfg = cfg;
    m->stored_dtype = half ? dtype::bf16 : cfg.torch_dtype;
    build_table(m.get());
    const auto& last = m->tensors.back();
    m->params = lazy_array<float>(last.offset + last.numel);
    m->half = half;
    if (half) {
        m->params16.assign(last.offset + last.numel, 0);
        m->materialized.assign(m->tensors.size(), false);
        for (size_t i = 0; i < m->tensors.size(); i++) m->materialized[i] = !m->tensors[i].is_matrix;
    }
    llama_model_rebind(m.get());
    return m;
}

void llama_materialize(llama_model* m, size_t first, size_t last) {
    if (!m->half) return;
    for (size_t i = first; i <= last; i++) {
        if (m->materialized[i]) continue;
        const auto& t = m->tensors[i];
        convert_to_f32(m->params.data() + t.offset, m->params16.data() + t.offset, dtype::bf16, t.numel);
        m->materialized[i] = true;
    }
    llama_model_rebind(m);
}

void llama_dematerialize(llama_model* m, size_t first, size_t last) {
    if (!m->half) return;
    for (size_t i = first; i <= last; i++) {
        const auto& t = m->tensors[i];
        if (!t.is_matrix || !m->materialized[i]) continue;
        convert_from_f32(m->params16.data() + t.offset, m->params.data() + t.offset, dtype::bf16, t.numel);
        m->params.release(t.offset, t.numel);
        m->materialized[i] = false;
    }
    llama_model_rebind(m);
}

std::vector<float> llama_tensor_values(const llama_model& m, size_t i) {
    const auto& t = m.tensors[i];
    std::vector<float> v(t.numel);
    if (m.half && !m.materialized[i]) convert_to_f32(v.data(), m.params16.data() + t.offset, dtype::bf16, t.numel);
    else std::memcpy(v.data(), m.params.data() + t.offset, t.numel * sizeof(float));
    return v;
}

// Normal(0, initializer_range) for matrices, ones for norms, zeros for biases. Values come from
// an RNG seeded per (tensor, block of 2^20 values), so blocks fill in parallel and the result
// does not depend on the thread count.
void llama_model_init_random(llama_model* m, uint64_t seed) {
    const double std = m->cfg.initializer_range;
    const size_t block = (size_t)1 << 20;
    for (size_t ti = 0; ti < m->tensors.size(); ti++) {
        const auto& t = m->tensors[ti];
        float* p = m->params.data() + t.offset;
        if (!t.is_matrix) {
            bool is_norm = t.name.find("norm") != std::string::npos;
            for (size_t i = 0; i < t.numel; i++) p[i] = is_norm ? 1.0f : 0.0f;
            continue;
        }
        const size_t nb = (t.numel + block - 1) / block;
#pragma omp parallel for schedule(dynamic, 1)
        for (size_t b = 0; b < nb; b++) {
            rng r;
            rng_init(&r, seed ^ (0x9e3779b97f4a7c15ull * (ti + 1)) ^ (0xbf58476d1ce4e5b9ull * (b + 1)));
            const size_t i0 = b * block, i1 = std::min(t.numel, i0 + block);
            if (m->half) {  // straight to bf16: a big model never has an fp32 copy
                uint16_t* q = m->params16.data() + t.offset;
                for (size_t i = i0; i < i1; i++) q[i] = f32_to_bf16((float)(rng_normal(&r) * std));
            } else {
                for (size_t i = i0; i < i1; i++) p[i] = (float)(rng_normal(&r) * std);
            }
        }
    }
}

// ------------------------------------------------------------------ gradients

void llama_grads_init(llama_grads* gr, const llama_model& m) {
    gr->buf.assign(m.params.size(), 0.0f);
    gr->g = pointers_into(m, gr->buf.data());
    gr->lora.assign(m.cfg.num_layers, llama_lora_layer{});
}

const char* lora_target_name(int t) {
    static const char* names[LORA_N] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    return names[t];
}

void llama_embed_rows::clear() {
    for (int32_t r : rows) row_of[r] = -1;
    rows.clear();
}

void llama_grads_zero(llama_grads* gr) { std::fill(gr->buf.begin(), gr->buf.end(), 0.0f); }

void llama_grads_freeze_layer(llama_grads* gr, int layer) { gr->g.layers.at(layer) = llama_layer_weights{}; }

float** llama_weight_slot(llama_weights* w, const llama_model& m, size_t i) { return slot_of(w, m.tensors[i]); }

float* llama_grad_of(const llama_grads& gr, const llama_model& m, size_t i) {
    return *slot_of(const_cast<llama_weights*>(&gr.g), m.tensors[i]);
}

// ------------------------------------------------------------------ rope

std::vector<float> llama_rope_inv_freq(const llama_config& c) {
    const int64_t half = c.head_dim / 2;
    std::vector<float> f(half);
    for (int64_t i = 0; i < half; i++) {
        // as Hugging Face: 1 / theta^(2i/d), computed in fp32
        float e = (float)(2 * i) / (float)c.head_dim;
        f[i] = (float)(1.0 / std::pow(c.rope.theta, (double)e));
    }
    if (c.rope.kind == rope_kind::linear) {
        for (auto& x : f) x = (float)(x / c.rope.factor);
    } else if (c.rope.kind == rope_kind::llama3) {
        const double factor = c.rope.factor, lo = c.rope.low_freq_factor, hi = c.rope.high_freq_factor;
        const double old_ctx = (double)c.rope.original_max_position_embeddings;
        const double low_wavelen = old_ctx / lo, high_wavelen = old_ctx / hi;
        for (auto& x : f) {
            double inv = x, wavelen = 2.0 * M_PI / inv;
            if (wavelen < high_wavelen) continue;  // high frequency: kept
            if (wavelen > low_wavelen) {           // low frequency: scaled down by factor
                x = (float)(inv / factor);
                continue;
            }
            double smooth = (old_ctx / wavelen - lo) / (hi - lo);  // medium: interpolate
            x = (float)((1.0 - smooth) * inv / factor + smooth * inv);
        }
    }
    return f;
}

// ------------------------------------------------------------------ activations

void llama_acts_init(llama_acts* a, const llama_model& m, int64_t B, int64_t T, bool checkpoint) {
    const llama_config& c = m.cfg;
    if (B <= 0 || T <= 0) fail(strf("llama_acts_init: batch shape %lld x %lld must be positive", (long long)B, (long long)T));
    if (c.sliding_window > 0 && T > c.sliding_window)
        fail(strf("sequence length %lld exceeds the model's sliding_window %lld (sliding-window attention is not "
                  "implemented); use a block size <= %lld", (long long)T, (long long)c.sliding_window,
                  (long long)c.sliding_window));
    const int64_t N = B * T, D = c.hidden_size, F = c.intermediate_size, Q = c.num_heads * c.head_dim,
                  K = c.num_kv_heads * c.head_dim, V = c.vocab_size, L = c.num_layers, half = c.head_dim / 2;
    a->B = B;
    a->T = T;
    // rows of LM-head logits per chunk: at least 256, more while the chunk stays under 64 MiB
    a->head_chunk = std::min<int64_t>(N, std::max<int64_t>(256, ((int64_t)1 << 24) / V));
    // size table: compute every offset first, then one allocation
    std::vector<std::pair<float**, size_t>> plan;
    a->checkpoint = checkpoint;
    a->layers.assign(checkpoint ? 1 : L, {});  // checkpointing: one scratch set, recomputed per layer
    a->resid.assign(L + 1, nullptr);
    for (int64_t l = 0; l <= L; l++) plan.push_back({&a->resid[l], N * D});
    for (auto& ly : a->layers) {
        plan.push_back({&ly.x_mid, N * D});
        plan.push_back({&ly.rstd1, N});
        plan.push_back({&ly.xn1, N * D});
        plan.push_back({&ly.q, N * Q});
        plan.push_back({&ly.k, N * K});
        plan.push_back({&ly.v, N * K});
        plan.push_back({&ly.att, N * Q});
        plan.push_back({&ly.lse, N * c.num_heads});
        plan.push_back({&ly.rstd2, N});
        plan.push_back({&ly.xn2, N * D});
        plan.push_back({&ly.gate, N * F});
        plan.push_back({&ly.up, N * F});
        plan.push_back({&ly.h, N * F});
    }
    plan.push_back({&a->rstd_f, N});
    plan.push_back({&a->xn_f, N * D});
    plan.push_back({&a->dresid, N * D});
    plan.push_back({&a->dxn, N * D});
    plan.push_back({&a->dq, N * Q});
    plan.push_back({&a->dk, N * K});
    plan.push_back({&a->dv, N * K});
    plan.push_back({&a->datt, N * Q});
    plan.push_back({&a->dh, N * F});
    plan.push_back({&a->dgate, N * F});
    plan.push_back({&a->dup, N * F});
    plan.push_back({&a->head_scratch, a->head_chunk * V + 2 * a->head_chunk * D});
    a->lora_xa.assign(checkpoint ? 1 : L, {});
    const int64_t R = m.lora.r, maxin = std::max({D, F, Q});
    if (R > 0) {
        for (auto& per : a->lora_xa)
            for (auto& p : per) plan.push_back({&p, N * R});
        plan.push_back({&a->lora_dxa, N * R});
        plan.push_back({&a->lora_xdrop, m.lora.dropout > 0 ? N * maxin : 0});
        plan.push_back({&a->lora_dx, N * maxin});
    }
    plan.push_back({&a->rope_cos, T * half});
    plan.push_back({&a->rope_sin, T * half});
    size_t total = 0;
    for (auto& p : plan) total += p.second;
    if (a->buf.size() < total) a->buf.assign(total, 0.0f);  // a smaller batch reuses the allocation
    size_t off = 0;
    for (auto& p : plan) {
        *p.first = a->buf.data() + off;
        off += p.second;
    }
    std::vector<float> inv = llama_rope_inv_freq(c);
    rope_tables(a->rope_cos, a->rope_sin, inv.data(), T, c.head_dim);
    a->tokens.assign(N, 0);
    a->targets.assign(N, -100);
}

// ------------------------------------------------------------------ forward

static void check_ids(const llama_model& m, const int32_t* ids, int64_t n, const char* what, bool allow_ignore) {
    for (int64_t i = 0; i < n; i++) {
        int32_t t = ids[i];
        if (allow_ignore && t == -100) continue;
        if (t < 0 || t >= m.cfg.vocab_size)
            fail(strf("%s[%lld] = %d is outside the vocabulary [0, %lld)", what, (long long)i, t,
                      (long long)m.cfg.vocab_size));
    }
}

// ------------------------------------------------------------------ fp32 or bf16 weights

// y = x·Wᵀ + b from whichever copy of W exists (fp32 when materialised, else bf16)
static void lin_fwd(float* y, const float* x, const float* w, const uint16_t* w16, const float* b, int64_t N,
                    int64_t in, int64_t out) {
    if (w) linear_forward(y, x, w, b, N, in, out);
    else linear_forward_bf16(y, x, w16, b, N, in, out);
}

static void lin_bwd(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                    const uint16_t* w16, int64_t N, int64_t in, int64_t out) {
    if (w) {
        linear_backward(dx, dw, db, dy, x, w, N, in, out);
        return;
    }
    LISA_ASSERT(!dw, "linear backward", "a weight held only in bf16 cannot be trained (materialise it first)");
    if (dx) linear_backward_bf16(dx, dy, w16, N, in, out);
    if (db) linear_backward(nullptr, nullptr, db, dy, x, nullptr, N, in, out);
}

static void embed_fwd(const llama_model& m, float* x, const int32_t* tokens, int64_t N) {
    if (m.w.embed) embedding_forward(x, tokens, m.w.embed, N, m.cfg.hidden_size);
    else embedding_forward_bf16(x, tokens, m.w16.embed, N, m.cfg.hidden_size);
}

// ------------------------------------------------------------------ LoRA (unmerged)

// dropout(x) into out, with a mask regenerated from (seed, layer, target): no mask is stored
static const float* lora_dropped(const llama_model& m, const llama_acts* a, int64_t l, int t, const float* x,
                                 int64_t n) {
    const float p = m.lora.dropout;
    if (p <= 0.0f) return x;
    const uint64_t key = m.lora.dropout_seed ^ ((uint64_t)(l * LORA_N + t + 1) * 0x9e3779b97f4a7c15ull);
    const float keep = 1.0f / (1.0f - p);
    float* out = a->lora_xdrop;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        uint64_t z = key + (uint64_t)i;
        double u = (double)(rng_splitmix(&z) >> 11) * 0x1.0p-53;
        out[i] = u < p ? 0.0f : x[i] * keep;
    }
    return out;
}

// y[N,out] += s · dropout(x)·Aᵀ·Bᵀ, keeping xa = dropout(x)·Aᵀ for the backward
static void lora_forward(const llama_model& m, llama_acts* a, int64_t l, int t, float* y, const float* x, int64_t N,
                         int64_t in, int64_t out) {
    if (m.lora.r == 0 || !m.lora.layers[l].A[t]) return;
    const int64_t r = m.lora.r;
    float* xa = a->lora_xa[a->checkpoint ? 0 : l][t];
    const float* xd = lora_dropped(m, a, l, t, x, N * in);
    linear_forward(xa, xd, m.lora.layers[l].A[t], nullptr, N, in, r);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)out, (int)r, m.lora.scale, xa, (int)r,
                m.lora.layers[l].B[t], (int)r, 1.0f, y, (int)out);
}

// dx += ∂/∂x, dA, dB += gradients, from dy of y = x·Wᵀ + s·dropout(x)·Aᵀ·Bᵀ
static void lora_backward(const llama_model& m, llama_acts* a, const llama_grads* gr, int64_t l, int t, float* dx,
                          const float* dy, const float* x, int64_t N, int64_t in, int64_t out) {
    if (m.lora.r == 0 || !m.lora.layers[l].A[t]) return;
    const int64_t r = m.lora.r;
    const float s = m.lora.scale;
    const float* A = m.lora.layers[l].A[t];
    const float* B = m.lora.layers[l].B[t];
    const float* xa = a->lora_xa[a->checkpoint ? 0 : l][t];
    float* dA = gr->lora.empty() ? nullptr : gr->lora[l].A[t];
    float* dB = gr->lora.empty() ? nullptr : gr->lora[l].B[t];
    if (dB)  // dB[out,r] += s · dyᵀ · xa
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)out, (int)r, (int)N, s, dy, (int)out, xa, (int)r,
                    1.0f, dB, (int)r);
    // dxa[N,r] = s · dy · B
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)r, (int)out, s, dy, (int)out, B, (int)r, 0.0f,
                a->lora_dxa, (int)r);
    if (dA) {  // dA[r,in] += dxaᵀ · dropout(x)
        const float* xd = lora_dropped(m, a, l, t, x, N * in);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)r, (int)in, (int)N, 1.0f, a->lora_dxa, (int)r, xd,
                    (int)in, 1.0f, dA, (int)in);
    }
    if (!dx) return;
    if (m.lora.dropout <= 0.0f) {  // dx += dxa · A
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)in, (int)r, 1.0f, a->lora_dxa, (int)r, A,
                    (int)in, 1.0f, dx, (int)in);
        return;
    }
    // with dropout: dx += (dxa · A) ⊙ mask / (1-p); the mask is the one lora_dropped applies
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)in, (int)r, 1.0f, a->lora_dxa, (int)r, A,
                (int)in, 0.0f, a->lora_dx, (int)in);
    const float* masked = lora_dropped(m, a, l, t, a->lora_dx, N * in);
    for (int64_t i = 0; i < N * in; i++) dx[i] += masked[i];
}

// The per-layer activations a layer writes: its own set, or the one shared scratch set when
// activations are checkpointed (recomputed from the layer input during the backward).
static llama_acts::layer& act_layer(llama_acts* a, int64_t l) { return a->layers[a->checkpoint ? 0 : l]; }

// Decoder layer l: resid[l] -> resid[l+1], saving what its backward needs.
static void layer_forward(const llama_model& m, llama_acts* a, int64_t l) {
    const llama_config& c = m.cfg;
    const int64_t B = a->B, T = a->T, N = B * T, D = c.hidden_size, F = c.intermediate_size, hd = c.head_dim,
                  Hq = c.num_heads, Hkv = c.num_kv_heads, Q = Hq * hd, K = Hkv * hd;
    const float eps = (float)c.rms_norm_eps;
    const llama_layer_weights& w = m.w.layers[l];
    const llama_layer_weights16& w16 = m.w16.layers[l];
    llama_acts::layer& s = act_layer(a, l);
    const float* x = a->resid[l];
    // attention block
    rmsnorm_forward(s.xn1, s.rstd1, x, w.attn_norm, N, D, eps);
    lin_fwd(s.q, s.xn1, w.wq, w16.wq, w.bq, N, D, Q);
    lin_fwd(s.k, s.xn1, w.wk, w16.wk, w.bk, N, D, K);
    lin_fwd(s.v, s.xn1, w.wv, w16.wv, w.bv, N, D, K);
    lora_forward(m, a, l, LORA_Q, s.q, s.xn1, N, D, Q);
    lora_forward(m, a, l, LORA_K, s.k, s.xn1, N, D, K);
    lora_forward(m, a, l, LORA_V, s.v, s.xn1, N, D, K);
    rope_forward(s.q, a->rope_cos, a->rope_sin, B, T, Hq, hd);
    rope_forward(s.k, a->rope_cos, a->rope_sin, B, T, Hkv, hd);
    attention_forward(s.att, s.lse, s.q, s.k, s.v, B, T, Hq, Hkv, hd);
    lin_fwd(s.x_mid, s.att, w.wo, w16.wo, w.bo, N, Q, D);
    lora_forward(m, a, l, LORA_O, s.x_mid, s.att, N, Q, D);
    for (int64_t i = 0; i < N * D; i++) s.x_mid[i] += x[i];
    // MLP block
    rmsnorm_forward(s.xn2, s.rstd2, s.x_mid, w.mlp_norm, N, D, eps);
    lin_fwd(s.gate, s.xn2, w.w_gate, w16.w_gate, nullptr, N, D, F);
    lin_fwd(s.up, s.xn2, w.w_up, w16.w_up, nullptr, N, D, F);
    lora_forward(m, a, l, LORA_GATE, s.gate, s.xn2, N, D, F);
    lora_forward(m, a, l, LORA_UP, s.up, s.xn2, N, D, F);
    swiglu_forward(s.h, s.gate, s.up, N * F);
    float* y = a->resid[l + 1];
    lin_fwd(y, s.h, w.w_down, w16.w_down, nullptr, N, F, D);
    lora_forward(m, a, l, LORA_DOWN, y, s.h, N, F, D);
    for (int64_t i = 0; i < N * D; i++) y[i] += s.x_mid[i];
}

void llama_forward(const llama_model& m, llama_acts* a, const int32_t* tokens) {
    const llama_config& c = m.cfg;
    const int64_t N = a->B * a->T, D = c.hidden_size;
    check_ids(m, tokens, N, "input_ids", false);
    std::memcpy(a->tokens.data(), tokens, N * sizeof(int32_t));
    embed_fwd(m, a->resid[0], tokens, N);
    for (int64_t l = 0; l < c.num_layers; l++) layer_forward(m, a, l);
    rmsnorm_forward(a->xn_f, a->rstd_f, a->resid[c.num_layers], m.w.norm, N, D, (float)c.rms_norm_eps);
}

void llama_logits(const llama_model& m, const llama_acts& a, float* logits) {
    lin_fwd(logits, a.xn_f, m.w.lm_head, m.w16.lm_head, nullptr, a.B * a.T, m.cfg.hidden_size, m.cfg.vocab_size);
}

// ------------------------------------------------------------------ backward

double llama_forward_backward(const llama_model& m, llama_acts* a, llama_grads* gr, const int32_t* tokens,
                              const int32_t* labels, float grad_scale, int64_t* n_tokens) {
    const llama_config& c = m.cfg;
    const int64_t B = a->B, T = a->T, N = B * T, D = c.hidden_size, F = c.intermediate_size, hd = c.head_dim,
                  Hq = c.num_heads, Hkv = c.num_kv_heads, Q = Hq * hd, K = Hkv * hd, V = c.vocab_size;
    check_ids(m, labels, N, "labels", true);
    // shift: position t predicts labels[t+1] of the same sequence
    int64_t count = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            int32_t y = t + 1 < T ? labels[b * T + t + 1] : -100;
            a->targets[b * T + t] = y;
            count += y >= 0;
        }
    if (n_tokens) *n_tokens = count;
    llama_forward(m, a, tokens);
    const llama_weights* g = gr ? &gr->g : nullptr;
    if (!g) {
        return lmhead_xent_forward_backward(nullptr, nullptr, a->xn_f, m.w.lm_head, a->targets.data(), N, D, V, 0.0f,
                                            a->head_scratch, a->head_chunk, m.w16.lm_head);
    }
    // Lowest layer whose backward is needed: below it nothing is trainable.
    int64_t lowest = 0;
    if (!g->embed && !gr->embed_rows) {
        lowest = c.num_layers;
        for (int64_t l = 0; l < c.num_layers; l++) {
            const llama_layer_weights& G = g->layers[l];
            const float* const* gp = (const float* const*)&G;
            bool any = false;
            for (size_t k = 0; k < sizeof(G) / sizeof(float*); k++) any |= gp[k] != nullptr;
            if (!gr->lora.empty())
                for (int t = 0; t < LORA_N; t++) any |= gr->lora[l].A[t] != nullptr || gr->lora[l].B[t] != nullptr;
            if (any) {
                lowest = l;
                break;
            }
        }
    }
    // LM head + cross-entropy: dxn_f into dxn, head weight gradient into g->lm_head
    std::memset(a->dxn, 0, N * D * sizeof(float));
    std::memset(a->dresid, 0, N * D * sizeof(float));
    double loss = lmhead_xent_forward_backward(a->dxn, g->lm_head, a->xn_f, m.w.lm_head, a->targets.data(), N, D, V,
                                               grad_scale, a->head_scratch, a->head_chunk, m.w16.lm_head);
    rmsnorm_backward(a->dresid, g->norm, a->dxn, a->resid[c.num_layers], m.w.norm, a->rstd_f, N, D);
    for (int64_t l = c.num_layers - 1; l >= lowest; l--) {
        const llama_layer_weights& w = m.w.layers[l];
        const llama_layer_weights& G = g->layers[l];
        const llama_layer_weights16& w16 = m.w16.layers[l];
        if (a->checkpoint) layer_forward(m, a, l);  // recompute this layer's activations
        llama_acts::layer& s = act_layer(a, l);
        // MLP block: resid[l+1] = x_mid + down(swiglu(gate(xn2), up(xn2)))
        std::memset(a->dh, 0, N * F * sizeof(float));
        lin_bwd(a->dh, G.w_down, nullptr, a->dresid, s.h, w.w_down, w16.w_down, N, F, D);
        lora_backward(m, a, gr, l, LORA_DOWN, a->dh, a->dresid, s.h, N, F, D);
        std::memset(a->dgate, 0, N * F * sizeof(float));
        std::memset(a->dup, 0, N * F * sizeof(float));
        swiglu_backward(a->dgate, a->dup, a->dh, s.gate, s.up, N * F);
        std::memset(a->dxn, 0, N * D * sizeof(float));
        lin_bwd(a->dxn, G.w_gate, nullptr, a->dgate, s.xn2, w.w_gate, w16.w_gate, N, D, F);
        lin_bwd(a->dxn, G.w_up, nullptr, a->dup, s.xn2, w.w_up, w16.w_up, N, D, F);
        lora_backward(m, a, gr, l, LORA_GATE, a->dxn, a->dgate, s.xn2, N, D, F);
        lora_backward(m, a, gr, l, LORA_UP, a->dxn, a->dup, s.xn2, N, D, F);
        rmsnorm_backward(a->dresid, G.mlp_norm, a->dxn, s.x_mid, w.mlp_norm, s.rstd2, N, D);  // dresid = d x_mid
        // attention block: x_mid = resid[l] + o(attention(rope(q(xn1)), rope(k(xn1)), v(xn1)))
        std::memset(a->datt, 0, N * Q * sizeof(float));
        lin_bwd(a->datt, G.wo, G.bo, a->dresid, s.att, w.wo, w16.wo, N, Q, D);
        lora_backward(m, a, gr, l, LORA_O, a->datt, a->dresid, s.att, N, Q, D);
        std::memset(a->dq, 0, N * Q * sizeof(float));
        std::memset(a->dk, 0, N * K * sizeof(float));
        std::memset(a->dv, 0, N * K * sizeof(float));
        attention_backward(a->dq, a->dk, a->dv, a->datt, s.att, s.lse, s.q, s.k, s.v, B, T, Hq, Hkv, hd);
        rope_backward(a->dq, a->rope_cos, a->rope_sin, B, T, Hq, hd);
        rope_backward(a->dk, a->rope_cos, a->rope_sin, B, T, Hkv, hd);
        std::memset(a->dxn, 0, N * D * sizeof(float));
        lin_bwd(a->dxn, G.wq, G.bq, a->dq, s.xn1, w.wq, w16.wq, N, D, Q);
        lin_bwd(a->dxn, G.wk, G.bk, a->dk, s.xn1, w.wk, w16.wk, N, D, K);
        lin_bwd(a->dxn, G.wv, G.bv, a->dv, s.xn1, w.wv, w16.wv, N, D, K);
        lora_backward(m, a, gr, l, LORA_Q, a->dxn, a->dq, s.xn1, N, D, Q);
        lora_backward(m, a, gr, l, LORA_K, a->dxn, a->dk, s.xn1, N, D, K);
        lora_backward(m, a, gr, l, LORA_V, a->dxn, a->dv, s.xn1, N, D, K);
        rmsnorm_backward(a->dresid, G.attn_norm, a->dxn, a->resid[l], w.attn_norm, s.rstd1, N, D);  // d resid[l]
    }
    if (g->embed && lowest == 0) embedding_backward(g->embed, a->dresid, a->tokens.data(), N, D);
    if (gr->embed_rows && lowest == 0) {  // sparse: accumulate into the touched rows, in token order
        llama_embed_rows& er = *gr->embed_rows;
        if ((int64_t)er.row_of.size() != V) er.row_of.assign(V, -1);
        for (int64_t n = 0; n < N; n++) {
            const int32_t t = a->tokens[n];
            if (er.row_of[t] < 0) {
                er.row_of[t] = (int32_t)er.rows.size();
                er.rows.push_back(t);
                er.grad.resize(er.rows.size() * D, 0.0f);
                std::fill(er.grad.end() - D, er.grad.end(), 0.0f);
            }
        }
        float* eg = er.grad.data();
        const int32_t* row_of = er.row_of.data();
        const int32_t* tok = a->tokens.data();
        const float* dx = a->dresid;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < D; i++)  // columns in parallel: repeated tokens never race
            for (int64_t n = 0; n < N; n++) eg[(int64_t)row_of[tok[n]] * D + i] += dx[n * D + i];
    }
    return loss;
}

}  // namespace lisa

namespace lisa {

// ------------------------------------------------------------------ generation (KV cache)

void llama_kv_cache_init(llama_kv_cache* c, const llama_model& m, int64_t max_T) {
    const llama_config& cfg = m.cfg;
    if (cfg.sliding_window > 0 && max_T > cfg.sliding_window) max_T = cfg.sliding_window;
    c->max_T = max_T;
    c->n_past = 0;
    const size_t per = (size_t)cfg.num_layers * max_T * cfg.num_kv_heads * cfg.head_dim;
    c->k.assign(per, 0.0f);
    c->v.assign(per, 0.0f);
    c->rope_cos.assign(max_T * cfg.head_dim / 2, 0.0f);
    c->rope_sin.assign(max_T * cfg.head_dim / 2, 0.0f);
    std::vector<float> inv = llama_rope_inv_freq(cfg);
    rope_tables(c->rope_cos.data(), c->rope_sin.data(), inv.data(), max_T, cfg.head_dim);
}

void llama_decode(const llama_model& m, llama_kv_cache* c, const int32_t* tokens, int64_t n, float* logits_last) {
    const llama_config& cfg = m.cfg;
    const int64_t D = cfg.hidden_size, F = cfg.intermediate_size, hd = cfg.head_dim, Hq = cfg.num_heads,
                  Hkv = cfg.num_kv_heads, Q = Hq * hd, K = Hkv * hd, half = hd / 2, p0 = c->n_past;
    if (n <= 0) return;
    if (p0 + n > c->max_T)
        fail(strf("generation: %lld positions exceed the context of %lld tokens", (long long)(p0 + n),
                  (long long)c->max_T));
    check_ids(m, tokens, n, "input_ids", false);
    std::vector<float> x(n * D), xn(n * D), rstd(n), q(n * Q), k(n * K), v(n * K), att(n * Q), tmp(n * D), g(n * F),
        u(n * F), h(n * F);
    embed_fwd(m, x.data(), tokens, n);
    for (int64_t l = 0; l < cfg.num_layers; l++) {
        const llama_layer_weights& w = m.w.layers[l];
        const llama_layer_weights16& w16 = m.w16.layers[l];
        float* kc = c->k.data() + (size_t)l * c->max_T * K;
        float* vc = c->v.data() + (size_t)l * c->max_T * K;
        rmsnorm_forward(xn.data(), rstd.data(), x.data(), w.attn_norm, n, D, (float)cfg.rms_norm_eps);
        lin_fwd(q.data(), xn.data(), w.wq, w16.wq, w.bq, n, D, Q);
        lin_fwd(k.data(), xn.data(), w.wk, w16.wk, w.bk, n, D, K);
        lin_fwd(v.data(), xn.data(), w.wv, w16.wv, w.bv, n, D, K);
        // rotate with the tables of positions p0.. (a batch of one sequence of n tokens)
        rope_forward(q.data(), c->rope_cos.data() + p0 * half, c->rope_sin.data() + p0 * half, 1, n, Hq, hd);
        rope_forward(k.data(), c->rope_cos.data() + p0 * half, c->rope_sin.data() + p0 * half, 1, n, Hkv, hd);
        std::memcpy(kc + p0 * K, k.data(), n * K * sizeof(float));
        std::memcpy(vc + p0 * K, v.data(), n * K * sizeof(float));
        attention_forward_kv(att.data(), q.data(), kc, vc, n, p0, Hq, Hkv, hd);
        lin_fwd(tmp.data(), att.data(), w.wo, w16.wo, w.bo, n, Q, D);
        for (int64_t i = 0; i < n * D; i++) x[i] += tmp[i];
        rmsnorm_forward(xn.data(), rstd.data(), x.data(), w.mlp_norm, n, D, (float)cfg.rms_norm_eps);
        lin_fwd(g.data(), xn.data(), w.w_gate, w16.w_gate, nullptr, n, D, F);
        lin_fwd(u.data(), xn.data(), w.w_up, w16.w_up, nullptr, n, D, F);
        swiglu_forward(h.data(), g.data(), u.data(), n * F);
        lin_fwd(tmp.data(), h.data(), w.w_down, w16.w_down, nullptr, n, F, D);
        for (int64_t i = 0; i < n * D; i++) x[i] += tmp[i];
    }
    c->n_past += n;
    const float* last = x.data() + (n - 1) * D;
    rmsnorm_forward(xn.data(), rstd.data(), last, m.w.norm, 1, D, (float)cfg.rms_norm_eps);
    lin_fwd(logits_last, xn.data(), m.w.lm_head, m.w16.lm_head, nullptr, 1, D, cfg.vocab_size);
}

}  // namespace lisa
