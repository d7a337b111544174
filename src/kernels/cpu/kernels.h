// CPU compute kernels: free functions over raw fp32 buffers, row-major.
// Each backward sits right under its forward and ACCUMULATES (+=) into the gradient buffers it is
// given, so callers zero gradients once and several paths can add into the same buffer
// (e.g. tied embeddings). A gradient pointer that is nullptr is skipped: that is how frozen
// weights get no weight gradient while their input gradient still flows.
// Matrix products go through OpenBLAS (threaded); the rest uses OpenMP.
#pragma once
#include <cstdint>

namespace lisa {

// ---- linear: y[N,out] = x[N,in] · W[out,in]^T + b[out] (b may be null). HF nn.Linear layout.
void linear_forward(float* y, const float* x, const float* w, const float* b, int64_t N, int64_t in, int64_t out);
// dx += dy·W ; dw += dy^T·x ; db += Σ_rows dy   (each may be null)
void linear_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w, int64_t N,
                     int64_t in, int64_t out);

// ---- linear with a bf16 weight (frozen weights of bf16 models): the weight is converted to fp32
// one block of output rows at a time (a few MiB of scratch) and multiplied with sgemm, so no
// full fp32 copy of it ever exists. No weight gradient (frozen).
void linear_forward_bf16(float* y, const float* x, const uint16_t* w, const float* b, int64_t N, int64_t in,
                         int64_t out);
// dx += dy·W
void linear_backward_bf16(float* dx, const float* dy, const uint16_t* w, int64_t N, int64_t in, int64_t out);

// ---- RMSNorm: y = x / sqrt(mean(x²) + eps) * w, in fp32. Saves rstd[N] for backward.
void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t N, int64_t D, float eps);
// dx += ∂L/∂x ; dw += Σ_rows dy·x·rstd   (dx, dw may be null)
void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, const float* rstd,
                      int64_t N, int64_t D);

// ---- Rotary embedding, rotate-half convention (HF): x is [B, T, H, hd]; cos/sin are [T, hd/2]
// tables for positions 0..T-1. Pair (i, i+hd/2) is rotated by the angle of frequency i. In place.
void rope_forward(float* x, const float* cos, const float* sin, int64_t B, int64_t T, int64_t H, int64_t hd);
// Backward of an in-place rotation is the inverse rotation, also in place on the gradient.
void rope_backward(float* dx, const float* cos, const float* sin, int64_t B, int64_t T, int64_t H, int64_t hd);
// Fills cos/sin [T, hd/2] from per-frequency inverse frequencies inv_freq[hd/2].
void rope_tables(float* cos, float* sin, const float* inv_freq, int64_t T, int64_t hd);

// ---- Causal self-attention with grouped KV heads (GQA): q [B,T,Hq,hd], k,v [B,T,Hkv,hd],
// out [B,T,Hq,hd], lse [B,Hq,T] (log-sum-exp of each query's scaled scores, saved for backward).
// Scores are computed a row at a time and never stored: memory is O(T) per thread.
void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, int64_t B, int64_t T,
                       int64_t Hq, int64_t Hkv, int64_t hd);
// dq, dk, dv += gradients (recomputes probabilities from q, k and lse)
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out, const float* lse,
                        const float* q, const float* k, const float* v, int64_t B, int64_t T, int64_t Hq,
                        int64_t Hkv, int64_t hd);

// Attention of n new queries (positions pos0..pos0+n-1) over a KV cache holding positions
// 0..pos0+n-1: q/out [n,Hq,hd], kc/vc [>= pos0+n, Hkv, hd]. Inference only (no backward).
void attention_forward_kv(float* out, const float* q, const float* kc, const float* vc, int64_t n, int64_t pos0,
                          int64_t Hq, int64_t Hkv, int64_t hd);

// ---- SwiGLU: h = silu(g) * u, elementwise over n
void swiglu_forward(float* h, const float* g, const float* u, int64_t n);
void swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n);

// ---- Embedding lookup: x[N,D] = table[tokens[n], :]
void embedding_forward(float* x, const int32_t* tokens, const float* table, int64_t N, int64_t D);
void embedding_forward_bf16(float* x, const int32_t* tokens, const uint16_t* table, int64_t N, int64_t D);
// dtable[tokens[n]] += dx[n]
void embedding_backward(float* dtable, const float* dx, const int32_t* tokens, int64_t N, int64_t D);

// ---- LM head fused with cross-entropy, in row chunks: never holds more than chunk×V logits.
// For rows n with targets[n] >= 0: loss_n = logsumexp(x_n·Wᵀ) - (x_n·Wᵀ)[target].
// Returns Σ loss_n (double). If dx or dw is non-null, also accumulates the gradients of
// grad_scale · Σ loss_n: dx[N,D] += ..., dw[V,D] += ... Rows with target < 0 are skipped entirely.
// scratch must hold chunk*V + 2*chunk*D floats.
// w16: the head in bf16 when w is null (a frozen head of a bf16 model; then dw must be null).
double lmhead_xent_forward_backward(float* dx, float* dw, const float* x, const float* w, const int32_t* targets,
                                    int64_t N, int64_t D, int64_t V, float grad_scale, float* scratch, int64_t chunk,
                                    const uint16_t* w16 = nullptr);

}  // namespace lisa
