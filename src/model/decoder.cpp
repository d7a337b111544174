// The Llama-family decoder: the size table (generated from the layer table), parameters,
// activations, and the model-level forward, backward and KV-cached decode, built from the
// attention and MLP blocks (blocks.cpp). No loop over tensor data lives here: every one is a
// kernel of the model's backend.
#include "model/decoder.h"
#include "io/ggml_quants.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "core/error.h"
#include "model/blocks.h"

namespace lisa {

// ------------------------------------------------------------------ size table and pointers

std::vector<decoder_tensor_info> decoder_tensor_table(const model_config& c) {
    std::vector<decoder_tensor_info> table;
    const int64_t D = c.hidden_size, V = c.vocab_size;
    size_t off = 0;
    auto add = [&](const std::string& name, std::vector<int64_t> shape, int layer, tensor_kind kind, int field) {
        size_t n = 1;
        for (auto d : shape) n *= (size_t)d;
        table.push_back({name, std::move(shape), off, n, layer, kind == tensor_kind::matrix, kind, field});
        off += n;
    };
    add("model.embed_tokens.weight", {V, D}, -1, tensor_kind::matrix, kFieldEmbed);
    for (int l = 0; l < (int)c.num_layers; l++)
        for (int t = 0; t < LT_COUNT; t++)
            if (kLayerTensors[t].present(c))
                add("model.layers." + std::to_string(l) + "." + kLayerTensors[t].key, layer_tensor_shape(c, t), l,
                    kLayerTensors[t].kind, t);
    add("model.norm.weight", {D}, -1, tensor_kind::norm, kFieldNorm);
    if (!c.tie_word_embeddings) add("lm_head.weight", {V, D}, -1, tensor_kind::matrix, kFieldHead);
    return table;
}

float** decoder_weights::slot(const decoder_tensor_info& t) {
    switch (t.field) {
        case kFieldEmbed: return &embed;
        case kFieldNorm: return &norm;
        case kFieldHead: return &lm_head;
        default: return &layers[t.layer][t.field];
    }
}

// a frozen matrix's pointer, bf16 or blocks
static void set16(decoder_weights16* w, const decoder_tensor_info& t, frozen_ptr p) {
    switch (t.field) {
        case kFieldEmbed: w->embed = p; return;
        case kFieldHead: w->lm_head = p; return;
        default: w->layers[t.layer][t.field] = p;
    }
}

bool decoder_tensor_quantized(const decoder_model& m, size_t i) { return i < m.q_type.size() && m.q_type[i] != 0; }

// Fills a pointer struct for any buffer laid out like the size table (params or grads).
static decoder_weights pointers_into(const decoder_model& m, float* base) {
    decoder_weights w{};
    w.layers.assign(m.cfg.num_layers, decoder_layer_weights{});
    for (const auto& t : m.tensors) *w.slot(t) = base + t.offset;
    if (m.cfg.tie_word_embeddings) w.lm_head = w.embed;
    return w;
}

void decoder_model_rebind(decoder_model* m) {
    m->w = pointers_into(*m, m->params.data());
    m->w16 = decoder_weights16{};
    m->w16.layers.assign(m->cfg.num_layers, decoder_layer_weights16{});
    if (!m->half) return;
    for (size_t i = 0; i < m->tensors.size(); i++) {
        const auto& t = m->tensors[i];
        if (!t.is_matrix) continue;
        if (decoder_tensor_quantized(*m, i)) set16(&m->w16, t, frozen_ptr(m->paramsq.data() + m->q_offset[i], m->q_type[i]));
        else set16(&m->w16, t, frozen_ptr(m->params16.data() + t.offset));
        if (!m->materialized[i]) *m->w.slot(t) = nullptr;  // compute from bf16 or blocks
    }
    if (m->cfg.tie_word_embeddings) {
        m->w.lm_head = m->w.embed;
        m->w16.lm_head = m->w16.embed;
    }
}

void decoder_check_supported(const model_config& c) {
    auto refuse = [&](const char* field, const char* expected) {
        fail(strf("config.json: field '%s' of this %s: expected %s", field,
                  c.architecture.empty() ? "model" : c.architecture.c_str(), expected));
    };
    if (!c.layer_window.empty() && (int64_t)c.layer_window.size() != c.num_layers)
        refuse("layer_types", "one entry per layer");
    for (int64_t w : c.layer_window)
        if (w < 0) refuse("sliding_window", "a positive window");
    if (!c.layer_local_rope.empty() && (int64_t)c.layer_local_rope.size() != c.num_layers)
        refuse("layer_types", "one entry per layer");
    if (!c.layer_no_rope.empty() && (int64_t)c.layer_no_rope.size() != c.num_layers)
        refuse("no_rope_layers", "one entry per layer");
    if (c.rope_dim < 2 || c.rope_dim > c.head_dim || c.rope_dim % 2 != 0)
        refuse("partial_rotary_factor", "an even count of rotated values, at most head_dim");
    if (c.rope.kind == rope_kind::longrope &&
        ((int64_t)c.rope.short_factor.size() != c.rope_dim / 2 || (int64_t)c.rope.long_factor.size() != c.rope_dim / 2))
        refuse("rope_scaling", "longrope factors for each of the rope_dim / 2 frequencies");
    if (c.attn_logit_softcap < 0) refuse("attn_logit_softcapping", "a positive number or null");
    if (c.final_logit_softcap < 0) refuse("final_logit_softcapping", "a positive number or null");
}

std::unique_ptr<decoder_model> decoder_model_init(const model_config& cfg, bool half, const backend* be) {
    decoder_check_supported(cfg);
    auto m = std::make_unique<decoder_model>();
    if (be) m->ctx.be = be;
    m->cfg = cfg;
    m->stored_dtype = half ? dtype::bf16 : cfg.torch_dtype;
    m->tensors = decoder_tensor_table(cfg);
    const auto& last = m->tensors.back();
    m->params = device_array<float>(*m->ctx.be, last.offset + last.numel);
    m->half = half;
    if (half) {
        m->params16 = device_array<uint16_t>(*m->ctx.be, last.offset + last.numel);
        m->materialized.assign(m->tensors.size(), false);
        for (size_t i = 0; i < m->tensors.size(); i++) m->materialized[i] = !m->tensors[i].is_matrix;
    }
    decoder_model_rebind(m.get());
    return m;
}

void decoder_materialize(decoder_model* m, size_t first, size_t last) {
    if (!m->half) return;
    for (size_t i = first; i <= last; i++) {
        if (m->materialized[i]) continue;
        const auto& t = m->tensors[i];
        if (decoder_tensor_quantized(*m, i)) {  // its fp32 master from the blocks (through the host)
            const ggml_type qt = (ggml_type)m->q_type[i];
            std::vector<uint8_t> q = m->paramsq.read(m->q_offset[i], ggml_nbytes(qt, (int64_t)t.numel));
            std::vector<float> f(t.numel);
            ggml_dequantize(qt, q.data(), f.data(), (int64_t)t.numel);
            m->params.write(t.offset, f.data(), t.numel);
            // trained from here on: held in bf16 when it leaves, so the blocks are given back now
            m->paramsq.release(m->q_offset[i], ggml_nbytes(qt, (int64_t)t.numel));
            m->q_type[i] = 0;
        } else {
            m->ctx.be->bf16_to_f32(m->params.data() + t.offset, m->params16.data() + t.offset, (int64_t)t.numel);
        }
        m->materialized[i] = true;
    }
    decoder_model_rebind(m);
}

void decoder_dematerialize(decoder_model* m, size_t first, size_t last) {
    if (!m->half) return;
    for (size_t i = first; i <= last; i++) {
        const auto& t = m->tensors[i];
        if (!t.is_matrix || !m->materialized[i]) continue;
        m->ctx.be->f32_to_bf16(m->params16.data() + t.offset, m->params.data() + t.offset, (int64_t)t.numel);
        m->params.release(t.offset, t.numel);
        m->materialized[i] = false;
    }
    decoder_model_rebind(m);
}

void decoder_model_quantize_base(decoder_model* m, uint32_t type, bool embed, bool head) {
    const ggml_type t = (ggml_type)type;
    LISA_ASSERT(ggml_can_quantize(t), "--base_quant", "a type lisa.cpp quantizes to");
    if (m->cfg.fused_qkv || m->cfg.fused_gate_up)
        fail(strf("--base_quant: %s stores fused projections, which are not held in blocks", m->cfg.architecture.c_str()));
    const backend& be = *m->ctx.be;
    const size_t n = m->tensors.size();
    if (!m->half) {  // every tensor's fp32 copy is current; bf16 room for the layers that leave LISA
        const auto& last = m->tensors.back();
        m->params16 = device_array<uint16_t>(be, last.offset + last.numel);
        m->materialized.assign(n, true);
        m->half = true;
    }
    m->q_offset.resize(n, 0);
    m->q_type.resize(n, 0);
    auto quantize = [&](size_t i) {
        const auto& ti = m->tensors[i];
        const bool wanted = ti.layer >= 0 || (ti.field == kFieldEmbed && embed) || (ti.field == kFieldHead && head);
        return ti.is_matrix && wanted && m->q_type[i] == 0 && ti.shape[1] % ggml_block_size(t) == 0;
    };
    // the new blocks after any a GGUF base brought
    std::vector<size_t> off(n, 0);
    size_t bytes = m->paramsq.size();
    for (size_t i = 0; i < n; i++) {
        const auto& ti = m->tensors[i];
        if (!quantize(i)) continue;
        off[i] = bytes;
        bytes += (ggml_nbytes(t, (int64_t)ti.numel) + 63) / 64 * 64;
    }
    if (bytes == m->paramsq.size()) return;
    device_array<uint8_t> q(be, bytes);
    if (m->paramsq.size()) be.mem_copy(q.data(), m->paramsq.data(), m->paramsq.size());
    std::vector<uint8_t> blocks;
    for (size_t i = 0; i < n; i++) {
        const auto& ti = m->tensors[i];
        if (!quantize(i)) continue;
        const std::vector<float> v = decoder_tensor_values(*m, i);
        blocks.resize(ggml_nbytes(t, (int64_t)ti.numel));
        ggml_quantize(t, v.data(), blocks.data(), (int64_t)ti.numel);
        q.write(off[i], blocks.data(), blocks.size());
        if (m->materialized[i]) m->params.release(ti.offset, ti.numel);
        else m->params16.release(ti.offset, ti.numel);
        m->materialized[i] = false;
        m->q_offset[i] = off[i];
        m->q_type[i] = type;
    }
    m->paramsq = std::move(q);
    decoder_model_rebind(m);
}

std::vector<float> decoder_tensor_values(const decoder_model& m, size_t i) {
    const auto& t = m.tensors[i];
    std::vector<float> v(t.numel);
    if (m.half && !m.materialized[i] && decoder_tensor_quantized(m, i))
        ggml_dequantize((ggml_type)m.q_type[i], m.paramsq.read(m.q_offset[i], ggml_nbytes((ggml_type)m.q_type[i], (int64_t)t.numel)).data(),
                        v.data(), (int64_t)t.numel);
    else if (m.half && !m.materialized[i]) convert_to_f32(v.data(), m.params16.read(t.offset, t.numel).data(), dtype::bf16, t.numel);
    else m.params.read(t.offset, v.data(), t.numel);
    return v;
}

// Normal(0, initializer_range) for matrices, identity norms, zero biases. Values come from
// a stream keyed by (seed, tensor), in blocks, so the result does not depend on the thread count.
void decoder_model_init_random(decoder_model* m, uint64_t seed) {
    m->ctx.apply();
    const backend& K = *m->ctx.be;
    for (size_t ti = 0; ti < m->tensors.size(); ti++) {
        const auto& t = m->tensors[ti];
        float* p = m->params.data() + t.offset;
        if (t.kind == tensor_kind::matrix)
            K.fill_normal(m->half ? nullptr : p, m->half ? m->params16.data() + t.offset : nullptr, (int64_t)t.numel,
                          m->cfg.initializer_range, seed, ti);
        else
            // a norm scales by (offset + w): ones for Llama, zeros for Gemma (whose w is stored minus 1)
            K.fill(p, (int64_t)t.numel, t.kind == tensor_kind::norm ? (float)(1.0 - m->cfg.norm_weight_offset) : 0.0f);
    }
}

// ------------------------------------------------------------------ gradients

void decoder_grads_init(decoder_grads* gr, const decoder_model& m) {
    gr->buf = device_array<float>(*m.ctx.be, m.params.size());
    gr->g = pointers_into(m, gr->buf.data());
    gr->lora.assign(m.cfg.num_layers, decoder_lora_layer{});
}

void decoder_embed_rows::init(const backend& be, int64_t vocab, int64_t w, int64_t capacity) {
    width = w;
    row_of.assign(vocab, -1);
    rows.clear();
    rows.reserve(std::min(vocab, capacity));
    grad = device_array<float>(be, (size_t)std::min(vocab, capacity) * w);
    row_of_dev = device_array<int32_t>(be, (size_t)vocab);
    row_of_dev.write(0, row_of.data(), row_of.size());
    synced = true;
}

void decoder_embed_rows::sync() {
    if (synced) return;
    row_of_dev.write(0, row_of.data(), row_of.size());
    synced = true;
}

void decoder_embed_rows::clear() {
    for (int32_t r : rows) row_of[r] = -1;
    if (!rows.empty()) synced = false;
    rows.clear();
}

void decoder_embed_rows_touch(decoder_embed_rows* er, const backend& K, const int32_t* ids, size_t n) {
    const int64_t D = er->width;
    for (size_t i = 0; i < n; i++) {
        const int32_t t = ids[i];
        LISA_ASSERT(t >= 0 && (size_t)t < er->row_of.size(), "sparse embedding rows", "token id outside the vocabulary");
        if (er->row_of[t] >= 0) continue;
        LISA_ASSERT(er->rows.size() < er->grad.size() / D, "sparse embedding rows",
                    "more distinct tokens in a step than the planned capacity");
        er->row_of[t] = (int32_t)er->rows.size();
        K.zero(er->grad.data() + er->rows.size() * D, D);
        er->rows.push_back(t);
        er->synced = false;
    }
}

void decoder_grads_zero(decoder_grads* gr) { gr->buf.zero(); }

void decoder_grads_freeze_layer(decoder_grads* gr, int layer) { gr->g.layers.at(layer) = decoder_layer_weights{}; }

float** decoder_weight_slot(decoder_weights* w, const decoder_model& m, size_t i) { return w->slot(m.tensors[i]); }

float* decoder_grad_of(const decoder_grads& gr, const decoder_model& m, size_t i) {
    return *const_cast<decoder_weights&>(gr.g).slot(m.tensors[i]);
}

// ------------------------------------------------------------------ rope

std::vector<float> decoder_rope_inv_freq(const model_config& c, int64_t T) {
    return decoder_rope_inv_freq(c.rope, c.rope_dim, decoder_rope_long(c, T));
}

bool decoder_rope_long(const model_config& c, int64_t T) {
    return c.rope.kind == rope_kind::longrope && T > c.rope.original_max_position_embeddings;
}

std::vector<float> decoder_rope_inv_freq(const rope_config& rope, int64_t dims, bool long_ctx) {
    const int64_t half = dims / 2;
    std::vector<float> f(half);
    for (int64_t i = 0; i < half; i++) {
        // as Hugging Face: 1 / theta^(2i/d), computed in fp32
        float e = (float)(2 * i) / (float)dims;
        f[i] = (float)(1.0 / std::pow(rope.theta, (double)e));
    }
    if (rope.kind == rope_kind::longrope) {  // 1 / (ext_i · theta^(2i/d))
        const std::vector<float>& ext = long_ctx ? rope.long_factor : rope.short_factor;
        LISA_ASSERT((int64_t)ext.size() == half, "rope inv_freq", "longrope factors must have rope_dim/2 entries");
        for (int64_t i = 0; i < half; i++) {
            const float e = (float)(2 * i) / (float)dims;
            f[i] = (float)(1.0 / ((double)ext[i] * std::pow(rope.theta, (double)e)));
        }
    } else if (rope.kind == rope_kind::linear) {
        for (auto& x : f) x = (float)(x / rope.factor);
    } else if (rope.kind == rope_kind::llama3) {
        const double factor = rope.factor, lo = rope.low_freq_factor, hi = rope.high_freq_factor;
        const double old_ctx = (double)rope.original_max_position_embeddings;
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

namespace {
// Carves consecutive spans from a base, or only counts them when base is null.
struct carver {
    float* base;
    size_t off = 0;
    void take(float** p, int64_t n) {
        if (base) *p = base + off;
        off += (size_t)n;
    }
};
}  // namespace

// What one decoder layer keeps for its backward, for N rows: the one table of these buffers.
// Training lays it out per layer (acts_layout), decoding once in its scratch (decode_acts).
static void layer_acts_carve(carver& cv, decoder_layer_acts& ly, const model_config& c, int64_t N) {
    const int64_t D = c.hidden_size, F = c.intermediate_size, Q = c.num_heads * c.head_dim,
                  K = c.num_kv_heads * c.head_dim;
    cv.take(&ly.x_mid, N * D);
    cv.take(&ly.rstd1, N);
    cv.take(&ly.xn1, N * D);
    cv.take(&ly.q, N * Q);
    cv.take(&ly.k, N * K);
    cv.take(&ly.v, N * K);
    cv.take(&ly.att, N * Q);
    cv.take(&ly.lse, N * c.num_heads);
    cv.take(&ly.rstd2, N);
    cv.take(&ly.xn2, N * D);
    cv.take(&ly.gate, N * F);
    cv.take(&ly.up, N * F);
    cv.take(&ly.h, N * F);
    // the parts only some architectures have alias the ones they stand in for otherwise
    if (c.qk_norm) {
        cv.take(&ly.q_pre, N * Q);
        cv.take(&ly.k_pre, N * K);
        cv.take(&ly.rstd_q, N * c.num_heads);
        cv.take(&ly.rstd_k, N * c.num_kv_heads);
    } else if (cv.base) {
        ly.q_pre = ly.q, ly.k_pre = ly.k, ly.rstd_q = ly.rstd_k = nullptr;
    }
    if (c.sandwich_norms) {
        cv.take(&ly.attn_o, N * D);
        cv.take(&ly.rstd_ao, N);
        cv.take(&ly.mlp_o, N * D);
        cv.take(&ly.rstd_mo, N);
    } else if (cv.base) {
        ly.attn_o = ly.x_mid, ly.rstd_ao = ly.mlp_o = ly.rstd_mo = nullptr;
    }
}

// Lays the activations of N = B·T rows out from `base` (or only counts them when base is null);
// returns the floats used. No allocation: the same walk serves planning and re-pointing.
static size_t acts_layout(decoder_acts* a, const decoder_model& m, int64_t N, int64_t T, float* base) {
    const model_config& c = m.cfg;
    const int64_t D = c.hidden_size, F = c.intermediate_size, Q = c.num_heads * c.head_dim,
                  K = c.num_kv_heads * c.head_dim, V = c.vocab_size, half = c.head_dim / 2;
    carver cv{base};
    auto take = [&](float** p, int64_t n) { cv.take(p, n); };
    const int64_t head_chunk = std::min<int64_t>(N, std::max<int64_t>(256, ((int64_t)1 << 24) / V));
    if (base) a->head_chunk = head_chunk;
    for (float*& r : a->resid) take(&r, N * D);
    for (auto& ly : a->layers) layer_acts_carve(cv, ly, c, N);
    take(&a->rstd_f, N);
    take(&a->xn_f, N * D);
    take(&a->dresid, N * D);
    take(&a->dxn, N * D);
    take(&a->dq, N * Q);
    take(&a->dk, N * K);
    take(&a->dv, N * K);
    take(&a->datt, N * Q);
    take(&a->dh, N * F);
    take(&a->dgate, N * F);
    take(&a->dup, N * F);
    take(&a->dq_pre, c.qk_norm ? N * Q : 0);
    take(&a->dk_pre, c.qk_norm ? N * K : 0);
    take(&a->dpost, c.sandwich_norms ? N * D : 0);
    take(&a->head_scratch, lmhead_scratch_floats(head_chunk, D, V));
    const int64_t R = m.lora.r, maxin = std::max({D, F, Q});
    if (R > 0) {
        for (auto& per : a->lora_xa)
            for (int t = 0; t < LORA_N; t++) take(&per[t], lora_target_present(c, t) ? N * R : 0);
        take(&a->lora_dxa, N * R);
        take(&a->lora_xdrop, m.lora.dropout > 0 ? N * maxin : 0);
        take(&a->lora_dx, N * maxin);
    }
    take(&a->rope_cos, T * half);
    take(&a->rope_sin, T * half);
    const bool local = config_any_local_rope(c);
    take(&a->rope_cos_local, local ? T * half : 0);
    take(&a->rope_sin_local, local ? T * half : 0);
    return cv.off;
}

void decoder_acts_init(decoder_acts* a, const decoder_model& m, int64_t B, int64_t T, bool checkpoint) {
    const model_config& c = m.cfg;
    if (B <= 0 || T <= 0) fail(strf("decoder_acts_init: batch shape %lld x %lld must be positive", (long long)B, (long long)T));
    const int64_t L = c.num_layers;
    a->checkpoint = checkpoint;
    a->layers.assign(checkpoint ? 1 : L, {});  // checkpointing: one scratch set, recomputed per layer
    a->resid.assign(L + 1, nullptr);
    a->lora_xa.assign(checkpoint ? 1 : L, {});
    const backend& be = *m.ctx.be;
    a->inv_freq.assign(be, decoder_rope_inv_freq(c.rope, c.rope_dim, false));
    if (c.rope.kind == rope_kind::longrope) a->inv_freq_long.assign(be, decoder_rope_inv_freq(c.rope, c.rope_dim, true));
    if (config_any_local_rope(c)) a->inv_freq_local.assign(be, decoder_rope_inv_freq(c.rope_local, c.rope_dim));
    a->cap_N = B * T;
    a->cap_T = T;
    const size_t total = acts_layout(a, m, B * T, T, nullptr);
    if (a->buf.size() < total) a->buf = device_array<float>(be, total);  // a smaller plan reuses the allocation
    a->tokens = device_array<int32_t>(be, B * T);
    a->targets = device_array<int32_t>(be, B * T);
    a->pos = device_array<int32_t>(be, B * T);
    a->host_targets.assign(B * T, -100);
    a->host_pos.assign(B * T, 0);
    // the kernels' temporaries for the largest shapes, on every thread, now rather than mid-run
    scratch_plan sp;
    sp.max_T = T;
    sp.max_rows = B * T * std::max<int64_t>(1, c.qk_norm ? c.num_heads : 1);
    sp.max_width = std::max({c.hidden_size, c.intermediate_size, c.num_heads * c.head_dim});
    sp.vocab = c.vocab_size;
    sp.softcap = c.attn_logit_softcap > 0 || c.final_logit_softcap > 0;
    sp.threads = std::max(m.ctx.threads, m.ctx.max_threads);
    m.ctx.apply();
    m.ctx.be->reserve(sp);
    a->B = a->T = 0;
    decoder_acts_shape(a, m, B, T);
}

void decoder_acts_shape(decoder_acts* a, const decoder_model& m, int64_t B, int64_t T, const int32_t* pos) {
    if (B <= 0 || T <= 0 || B * T > a->cap_N || T > a->cap_T)
        fail(strf("decoder_acts_shape: batch %lld x %lld exceeds the planned %lld rows of up to %lld tokens",
                  (long long)B, (long long)T, (long long)a->cap_N, (long long)a->cap_T));
    // the longest sample decides longrope's factors, as Hugging Face decides from the batch's
    // largest position (in a padded batch: the row length)
    int64_t span = T;
    a->has_pos = pos != nullptr;
    if (pos) {
        span = 0;
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < T; t++) {
                const int32_t p = pos[b * T + t];
                LISA_ASSERT(p == 0 ? true : t > 0 && p == pos[b * T + t - 1] + 1, "decoder_acts_shape",
                            "sample positions must start each row at 0 and count up by one within a sample");
                a->host_pos[b * T + t] = p;
                span = std::max<int64_t>(span, (int64_t)p + 1);
            }
        a->pos.write(0, a->host_pos.data(), (size_t)(B * T));
    }
    if (a->B != B || a->T != T) {
        a->B = B;
        a->T = T;
        acts_layout(a, m, B * T, T, a->buf.data());
        a->rope_T = 0;  // the tables moved with the layout
    }
    const model_config& c = m.cfg;
    const int long_ctx = decoder_rope_long(c, span) ? 1 : 0;
    if (a->rope_T == T && a->rope_long == long_ctx) return;
    const float* inv = long_ctx ? a->inv_freq_long.data() : a->inv_freq.data();
    m.ctx.be->rope_tables(a->rope_cos, a->rope_sin, inv, T, c.rope_dim, (float)c.rope.attention_factor);
    if (config_any_local_rope(c))
        m.ctx.be->rope_tables(a->rope_cos_local, a->rope_sin_local, a->inv_freq_local.data(), T, c.rope_dim, 1.0f);
    a->rope_T = T;
    a->rope_long = long_ctx;
}

// ------------------------------------------------------------------ forward

static void check_ids(const decoder_model& m, const int32_t* ids, int64_t n, const char* what, bool allow_ignore) {
    for (int64_t i = 0; i < n; i++) {
        int32_t t = ids[i];
        if (allow_ignore && t == -100) continue;
        if (t < 0 || t >= m.cfg.vocab_size)
            fail(strf("%s[%lld] = %d is outside the vocabulary [0, %lld)", what, (long long)i, t,
                      (long long)m.cfg.vocab_size));
    }
}

// x = embed_scale · embedding rows (Gemma scales by sqrt(hidden_size); the tied head does not)
static void embed_fwd(const decoder_model& m, float* x, const int32_t* tokens, int64_t N) {
    if (m.w.embed) m.ctx.be->embedding_forward(x, tokens, m.w.embed, N, m.cfg.hidden_size);
    else if (m.w16.embed.is_bf16()) m.ctx.be->embedding_forward_bf16(x, tokens, m.w16.embed.bf16(), N, m.cfg.hidden_size);
    else m.ctx.be->embedding_forward_q(x, tokens, (const uint8_t*)m.w16.embed.p, m.w16.embed.type, N, m.cfg.hidden_size);
    if (m.cfg.embed_scale != 1.0) m.ctx.be->scale(x, N * m.cfg.hidden_size, (float)m.cfg.embed_scale);
}

// the final norm, whatever the architecture's norm flavour
static void final_norm(const decoder_model& m, float* y, float* rstd, const float* x, int64_t N) {
    m.ctx.be->rmsnorm_forward(y, rstd, x, m.w.norm, N, m.cfg.hidden_size, (float)m.cfg.rms_norm_eps,
                              (float)m.cfg.norm_weight_offset);
}

// logits [N, V] of normed rows, soft-capped where the model says so
static void head_logits(const decoder_model& m, float* logits, const float* xn, int64_t N) {
    const backend& K = *m.ctx.be;
    const int64_t D = m.cfg.hidden_size, V = m.cfg.vocab_size;
    if (m.w.lm_head) K.linear_forward(logits, xn, m.w.lm_head, nullptr, N, D, V);
    else if (m.w16.lm_head.is_bf16()) K.linear_forward_bf16(logits, xn, m.w16.lm_head.bf16(), nullptr, N, D, V);
    else K.linear_forward_q(logits, xn, (const uint8_t*)m.w16.lm_head.p, m.w16.lm_head.type, nullptr, N, D, V);
    if (m.cfg.final_logit_softcap > 0) K.softcap(logits, N * V, (float)m.cfg.final_logit_softcap);
}

// The per-layer activations a layer writes: its own set, or the one shared scratch set when
// activations are checkpointed (recomputed from the layer input during the backward).
static int64_t act_slot(const decoder_acts* a, int64_t l) { return a->checkpoint ? 0 : l; }

static block_args train_args(const decoder_model& m, decoder_acts* a, int64_t l) {
    const bool local = config_layer_local_rope(m.cfg, l), rope = config_layer_rope(m.cfg, l);
    block_args b{m, *m.ctx.be, a->B, a->T, !rope ? nullptr : local ? a->rope_cos_local : a->rope_cos,
                 !rope ? nullptr : local ? a->rope_sin_local : a->rope_sin};
    b.pos = a->has_pos ? a->pos.data() : nullptr;  // device copy (kernels read it)
    b.a = a;
    b.slot = act_slot(a, l);
    return b;
}

// Decoder layer l: resid[l] -> resid[l+1], saving what its backward needs.
static void layer_forward(const decoder_model& m, decoder_acts* a, int64_t l) {
    const block_args b = train_args(m, a, l);
    decoder_layer_acts& s = a->layers[b.slot];
    attn_block_forward(b, l, a->resid[l], s);
    mlp_block_forward(b, l, s, a->resid[l + 1]);
}

void decoder_forward(const decoder_model& m, decoder_acts* a, const int32_t* tokens) {
    const model_config& c = m.cfg;
    const int64_t N = a->B * a->T, D = c.hidden_size;
    m.ctx.apply();
    check_ids(m, tokens, N, "input_ids", false);
    a->tokens.write(0, tokens, (size_t)N);
    embed_fwd(m, a->resid[0], a->tokens.data(), N);
    for (int64_t l = 0; l < c.num_layers; l++) layer_forward(m, a, l);
    final_norm(m, a->xn_f, a->rstd_f, a->resid[c.num_layers], N);
    (void)D;
}

void decoder_logits(const decoder_model& m, const decoder_acts& a, float* logits) {
    const size_t n = (size_t)(a.B * a.T * m.cfg.vocab_size);
    device_array<float> d(*m.ctx.be, n);
    head_logits(m, d.data(), a.xn_f, a.B * a.T);
    d.read(0, logits, n);
}

// ------------------------------------------------------------------ backward

// targets[n] = the label position n is trained to predict (labels shifted by one inside each
// sample, -100 where none), written to the device; returns how many there are.
static int64_t set_targets(const decoder_model& m, decoder_acts* a, const int32_t* labels) {
    const int64_t B = a->B, T = a->T, N = B * T;
    check_ids(m, labels, N, "labels", true);
    // shift: position t predicts labels[t+1] of the same sample (never the first token of the next
    // sample in a row of several)
    int64_t count = 0;
    const int32_t* pos = a->has_pos ? a->host_pos.data() : nullptr;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            const bool next_in_sample = t + 1 < T && (!pos || pos[b * T + t + 1] != 0);
            int32_t y = next_in_sample ? labels[b * T + t + 1] : -100;
            a->host_targets[b * T + t] = y;
            count += y >= 0;
        }
    a->targets.write(0, a->host_targets.data(), (size_t)N);
    return count;
}

// The backward below the LM head: `head` computes the head's loss and gradients (dxn, and the
// head weight's into g.lm_head) after dxn and dresid are zeroed; then the final norm, the layers
// (from the lowest one that trains) and the embedding. Returns what `head` returned.
template <typename Head>
static double backward_through(const decoder_model& m, decoder_acts* a, decoder_grads* gr, const int32_t* tokens,
                               Head head) {
    const model_config& c = m.cfg;
    const backend& K = *m.ctx.be;
    const int64_t N = a->B * a->T, D = c.hidden_size, V = c.vocab_size;
    const decoder_weights& g = gr->g;
    // Lowest layer whose backward is needed: below it nothing is trainable.
    int64_t lowest = 0;
    if (!g.embed && !gr->embed_rows) {
        lowest = c.num_layers;
        for (int64_t l = 0; l < c.num_layers; l++) {
            bool any = g.layers[l].any();
            if (!gr->lora.empty())
                for (int t = 0; t < LORA_N; t++) any |= gr->lora[l].A[t] != nullptr || gr->lora[l].B[t] != nullptr;
            if (any) {
                lowest = l;
                break;
            }
        }
    }
    K.zero(a->dxn, N * D);
    K.zero(a->dresid, N * D);
    const double loss = head();
    K.rmsnorm_backward(a->dresid, g.norm, a->dxn, a->resid[c.num_layers], m.w.norm, a->rstd_f, N, D,
                       (float)c.norm_weight_offset);
    if (gr->layer_done) gr->layer_done(c.num_layers);
    for (int64_t l = c.num_layers - 1; l >= lowest; l--) {
        if (a->checkpoint) layer_forward(m, a, l);  // recompute this layer's activations
        const block_args b = train_args(m, a, l);
        const decoder_layer_acts& s = a->layers[b.slot];
        const decoder_lora_layer* lg = gr->lora.empty() ? nullptr : &gr->lora[l];
        mlp_block_backward(b, l, s, a->dresid, g.layers[l], lg);             // dresid = d x_mid
        attn_block_backward(b, l, a->resid[l], s, a->dresid, g.layers[l], lg);  // dresid = d resid[l]
        if (gr->layer_done) gr->layer_done(l);
    }
    if (lowest == 0 && (g.embed || gr->embed_rows) && c.embed_scale != 1.0)
        K.scale(a->dresid, N * D, (float)c.embed_scale);  // through x = embed_scale · rows
    if (g.embed && lowest == 0) K.embedding_backward(g.embed, a->dresid, a->tokens.data(), N, D);
    if (gr->embed_rows && lowest == 0) {  // sparse: accumulate into the touched rows, in token order
        decoder_embed_rows& er = *gr->embed_rows;
        LISA_ASSERT((int64_t)er.row_of.size() == V && er.width == D, "sparse embedding gradient",
                    "decoder_embed_rows::init was not called for this model");
        for (int64_t n = 0; n < N; n++) {
            const int32_t t = tokens[n];
            if (er.row_of[t] >= 0) continue;
            LISA_ASSERT(er.rows.size() < er.grad.size() / D, "sparse embedding gradient",
                        "more distinct tokens in a step than the planned capacity");
            er.row_of[t] = (int32_t)er.rows.size();
            K.zero(er.grad.data() + er.rows.size() * D, D);
            er.rows.push_back(t);
            er.synced = false;
        }
        er.sync();
        K.embedding_backward_rows(er.grad.data(), er.row_of_dev.data(), a->dresid, a->tokens.data(), N, D);
    }
    return loss;
}

double decoder_forward_backward(const decoder_model& m, decoder_acts* a, decoder_grads* gr, const int32_t* tokens,
                              const int32_t* labels, float grad_scale, int64_t* n_tokens) {
    const model_config& c = m.cfg;
    const backend& K = *m.ctx.be;
    const int64_t N = a->B * a->T, D = c.hidden_size, V = c.vocab_size;
    const int64_t count = set_targets(m, a, labels);
    if (n_tokens) *n_tokens = count;
    a->training = gr != nullptr;  // loss only (evaluation): no dropout
    decoder_forward(m, a, tokens);
    if (!gr)
        return K.lmhead_xent(nullptr, nullptr, a->xn_f, m.w.lm_head, m.w16.lm_head.p, m.w16.lm_head.type,
                             a->targets.data(), N, D, V, 0.0f, a->head_scratch, a->head_chunk,
                             (float)c.final_logit_softcap);
    // LM head + cross-entropy: dxn_f into dxn, head weight gradient into g.lm_head
    return backward_through(m, a, gr, tokens, [&] {
        return K.lmhead_xent(a->dxn, gr->g.lm_head, a->xn_f, m.w.lm_head, m.w16.lm_head.p, m.w16.lm_head.type,
                             a->targets.data(), N, D, V, grad_scale, a->head_scratch, a->head_chunk,
                             (float)c.final_logit_softcap);
    });
}

void decoder_span_logps(const decoder_model& m, decoder_acts* a, const int32_t* tokens, const int32_t* labels,
                        const decoder_span* spans, size_t n_spans, bool training, double* logp) {
    const model_config& c = m.cfg;
    const backend& K = *m.ctx.be;
    const int64_t N = a->B * a->T, D = c.hidden_size, V = c.vocab_size;
    set_targets(m, a, labels);
    a->training = training;
    decoder_forward(m, a, tokens);
    for (size_t s = 0; s < n_spans; s++) {
        const decoder_span& sp = spans[s];
        LISA_ASSERT(sp.row0 >= 0 && sp.n >= 0 && sp.row0 + sp.n <= N, "decoder_span_logps", "a span inside the batch");
        logp[s] = -K.lmhead_xent(nullptr, nullptr, a->xn_f + sp.row0 * D, m.w.lm_head, m.w16.lm_head.p,
                                 m.w16.lm_head.type, a->targets.data() + sp.row0, sp.n, D, V, 0.0f, a->head_scratch,
                                 a->head_chunk, (float)c.final_logit_softcap);
    }
}

void decoder_span_backward(const decoder_model& m, decoder_acts* a, decoder_grads* gr, const int32_t* tokens,
                           const decoder_span* spans, size_t n_spans, const double* weight) {
    const model_config& c = m.cfg;
    const backend& K = *m.ctx.be;
    const int64_t D = c.hidden_size, V = c.vocab_size;
    backward_through(m, a, gr, tokens, [&] {
        for (size_t s = 0; s < n_spans; s++) {  // d (w · Σ log p) = −w · d Σ CE
            const decoder_span& sp = spans[s];
            if (weight[s] == 0.0 || sp.n == 0) continue;
            K.lmhead_xent(a->dxn + sp.row0 * D, gr->g.lm_head, a->xn_f + sp.row0 * D, m.w.lm_head, m.w16.lm_head.p,
                          m.w16.lm_head.type, a->targets.data() + sp.row0, sp.n, D, V, (float)-weight[s],
                          a->head_scratch, a->head_chunk, (float)c.final_logit_softcap);
        }
        return 0.0;
    });
}

// ------------------------------------------------------------------ generation (KV cache)

void decoder_kv_cache_init(decoder_kv_cache* c, const decoder_model& m, int64_t max_T) {
    const model_config& cfg = m.cfg;
    // every position is kept, also for windowed layers (they read only their window of it)
    c->max_T = max_T;
    c->n_past = 0;
    const size_t per = (size_t)cfg.num_layers * max_T * cfg.num_kv_heads * cfg.head_dim;
    const backend& be = *m.ctx.be;
    c->k = device_array<float>(be, per);
    c->v = device_array<float>(be, per);
    c->rope_cos = device_array<float>(be, max_T * cfg.rope_dim / 2);
    c->rope_sin = device_array<float>(be, max_T * cfg.rope_dim / 2);
    c->logits = device_array<float>(be, (size_t)cfg.vocab_size);
    device_array<float> inv_d;
    // longrope: the long factors when the cache may pass the pretraining context (llama.cpp decides
    // by its context size the same way; Hugging Face switches mid-generation)
    inv_d.assign(be, decoder_rope_inv_freq(cfg, max_T));
    m.ctx.be->rope_tables(c->rope_cos.data(), c->rope_sin.data(), inv_d.data(), max_T, cfg.rope_dim,
                          (float)cfg.rope.attention_factor);
    if (config_any_local_rope(cfg)) {
        c->rope_cos_local = device_array<float>(be, max_T * cfg.rope_dim / 2);
        c->rope_sin_local = device_array<float>(be, max_T * cfg.rope_dim / 2);
        inv_d.assign(be, decoder_rope_inv_freq(cfg.rope_local, cfg.rope_dim));
        m.ctx.be->rope_tables(c->rope_cos_local.data(), c->rope_sin_local.data(), inv_d.data(), max_T, cfg.rope_dim,
                              1.0f);
    }
    c->scratch_rows = 0;
}

// The blocks' activations for n decoded rows, carved from the cache's scratch (grown when a
// larger chunk than before comes, e.g. the prompt).
static decoder_layer_acts decode_acts(const decoder_model& m, decoder_kv_cache* c, int64_t n, float** x) {
    const model_config& cfg = m.cfg;
    const int64_t D = cfg.hidden_size;
    decoder_layer_acts s;
    carver count{nullptr};  // floats per row: the layer's input, then the layer's table
    count.take(x, D);
    layer_acts_carve(count, s, cfg, 1);
    if (n > c->scratch_rows) {
        c->scratch = device_array<float>(*m.ctx.be, count.off * (size_t)n);
        c->tokens = device_array<int32_t>(*m.ctx.be, (size_t)n);
        c->scratch_rows = n;
    }
    carver cv{c->scratch.data()};
    cv.take(x, n * D);
    layer_acts_carve(cv, s, cfg, n);
    return s;
}

void decoder_decode(const decoder_model& m, decoder_kv_cache* c, const int32_t* tokens, int64_t n, float* logits_last) {
    const model_config& cfg = m.cfg;
    const backend& K = *m.ctx.be;
    const int64_t D = cfg.hidden_size, KV = cfg.num_kv_heads * cfg.head_dim, half = cfg.rope_dim / 2,
                  p0 = c->n_past;
    if (n <= 0) return;
    if (p0 + n > c->max_T)
        fail(strf("generation: %lld positions exceed the context of %lld tokens", (long long)(p0 + n),
                  (long long)c->max_T));
    m.ctx.apply();
    check_ids(m, tokens, n, "input_ids", false);
    float* x = nullptr;
    decoder_layer_acts s = decode_acts(m, c, n, &x);
    c->tokens.write(0, tokens, (size_t)n);
    embed_fwd(m, x, c->tokens.data(), n);
    for (int64_t l = 0; l < cfg.num_layers; l++) {
        // a batch of one sequence of n tokens, rotated with the tables of positions p0..
        const bool local = config_layer_local_rope(cfg, l);
        const float* cs = local ? c->rope_cos_local.data() : c->rope_cos.data();
        const float* sn = local ? c->rope_sin_local.data() : c->rope_sin.data();
        const bool rope = config_layer_rope(cfg, l);  // NoPE layers: no rotation
        block_args b{m, K, 1, n, rope ? cs + p0 * half : nullptr, rope ? sn + p0 * half : nullptr};
        b.kc = c->k.data() + (size_t)l * c->max_T * KV;
        b.vc = c->v.data() + (size_t)l * c->max_T * KV;
        b.pos0 = p0;
        attn_block_forward(b, l, x, s);
        mlp_block_forward(b, l, s, x);
    }
    c->n_past += n;
    const float* last = x + (n - 1) * D;
    final_norm(m, s.xn1, s.rstd1, last, 1);
    head_logits(m, c->logits.data(), s.xn1, 1);
    c->logits.read(0, logits_last, (size_t)cfg.vocab_size);
}

}  // namespace lisa
