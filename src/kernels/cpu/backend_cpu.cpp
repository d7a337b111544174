// The fast CPU backend: matrix products on OpenBLAS (its OpenMP build, so BLAS and these loops
// share one thread pool), everything else OpenMP loops with fixed reduction orders.
#include "kernels/kernels.h"
#include "io/ggml_quants.h"
#include "kernels/host_memory.h"
#include "kernels/vulkan/vulkan.h"

#include "core/dtype.h"
#include "core/rng.h"

#include <algorithm>
#include <cblas.h>
#include <cmath>
#include <cstring>
#include <omp.h>
#include <string>
#include <vector>

namespace lisa {
namespace cpu {

// Loops share their work out dynamically, in chunks: a thread that another program slows down takes
// fewer chunks instead of holding every other thread at the barrier. No result depends on which
// thread ran a chunk (reductions go in fixed blocks), so any thread count gives the same numbers.
static const int64_t kRowChunk = 8;      // rows (or columns) of a matrix
static const int64_t kElemChunk = 8192;  // elements of a flat array

// A per-thread scratch buffer that grows on first use and is reused after (no allocation in
// steady state). `which` separates buffers a kernel needs at the same time.
static float* scratch(int which, size_t n) {
    thread_local std::vector<float> buf[5];
    if (buf[which].size() < n) buf[which].resize(n);
    return buf[which].data();
}

// ============================================================================ matrix products
// C = alpha·op(A)·op(B) + beta·C on a grid of output tiles fixed by the shape alone; each
// tile is one single-threaded OpenBLAS call and the tiles are shared out dynamically. Two things
// follow. The result is the same for any thread count (OpenBLAS's own threading splits C where the
// thread count says, and its edge kernels round differently), so a run does not change with the
// machine's load or core count. And a thread slowed by another program on its core simply takes
// fewer tiles, where an even split would make every step wait for it.
static const int64_t kTile = 256;  // edge of the square output tiles: a multiple of every kernel unroll,
                                   // and large enough that packing the operands costs < 1% (measured
                                   // within noise of OpenBLAS's own threading on 2 cores)

static void sgemm_tiled(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                        const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    const int64_t tm = (M + kTile - 1) / kTile, tn = (N + kTile - 1) / kTile;
    const CBLAS_TRANSPOSE oa = ta ? CblasTrans : CblasNoTrans, ob = tb ? CblasTrans : CblasNoTrans;
    // always a parallel region, even for one tile: OpenBLAS (OpenMP build) runs single-threaded
    // inside one, and would otherwise start a nested team of its own
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t t = 0; t < tm * tn; t++) {
        const int64_t i0 = t / tn * kTile, j0 = t % tn * kTile;
        const int64_t m = std::min(kTile, M - i0), n = std::min(kTile, N - j0);
        const float* a = ta ? A + i0 : A + i0 * lda;  // rows i0.. of op(A)
        const float* b = tb ? B + j0 * ldb : B + j0;  // columns j0.. of op(B)
        cblas_sgemm(CblasRowMajor, oa, ob, (int)m, (int)n, (int)K, alpha, a, (int)lda, b, (int)ldb, beta,
                    C + i0 * ldc + j0, (int)ldc);
    }
}

// ============================================================================ linear
void linear_forward(float* y, const float* x, const float* w, const float* b, int64_t N, int64_t in, int64_t out) {
    if (b) {
#pragma omp parallel for schedule(dynamic, kRowChunk)
        for (int64_t n = 0; n < N; n++) std::memcpy(y + n * out, b, out * sizeof(float));
    }
    sgemm_tiled(false, true, N, out, in, 1.0f, x, in, w, in, b ? 1.0f : 0.0f, y, out);
}

void linear_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w, int64_t N,
                     int64_t in, int64_t out) {
    if (dx)  // dx[N,in] += dy[N,out] · W[out,in]
        sgemm_tiled(false, false, N, in, out, 1.0f, dy, out, w, in, 1.0f, dx, in);
    if (dw)  // dW[out,in] += dyᵀ[out,N] · x[N,in]
        sgemm_tiled(true, false, out, in, N, 1.0f, dy, out, x, in, 1.0f, dw, in);
    if (db) {  // column sums; parallel over columns so the order of additions is fixed
#pragma omp parallel for schedule(dynamic, kRowChunk)
        for (int64_t o = 0; o < out; o++) {
            float s = 0.0f;
            for (int64_t n = 0; n < N; n++) s += dy[n * out + o];
            db[o] += s;
        }
    }
}

// Rows [o0, o1) of a bf16 [out, in] matrix converted into an fp32 scratch block (reused).
static const int64_t kBf16Block = 256;
static float* bf16_block(const uint16_t* w, int64_t o0, int64_t o1, int64_t in) {
    float* dst = scratch(3, (size_t)(kBf16Block * in));
    const int64_t n = (o1 - o0) * in;
    const uint16_t* src = w + o0 * in;
#pragma omp parallel for schedule(dynamic, kElemChunk)
    for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_f32(src[i]);
    return dst;
}

void linear_forward_bf16(float* y, const float* x, const uint16_t* w, const float* b, int64_t N, int64_t in,
                         int64_t out) {
    for (int64_t o0 = 0; o0 < out; o0 += kBf16Block) {
        const int64_t o1 = std::min(out, o0 + kBf16Block);
        const float* wb = bf16_block(w, o0, o1, in);
        sgemm_tiled(false, true, N, (o1 - o0), in, 1.0f, x, in, wb, in, 0.0f, y + o0, out);
    }
    if (b) {
#pragma omp parallel for schedule(dynamic, kRowChunk)
        for (int64_t n = 0; n < N; n++)
            for (int64_t o = 0; o < out; o++) y[n * out + o] += b[o];
    }
}

void linear_backward_bf16(float* dx, const float* dy, const uint16_t* w, int64_t N, int64_t in, int64_t out) {
    for (int64_t o0 = 0; o0 < out; o0 += kBf16Block) {
        const int64_t o1 = std::min(out, o0 + kBf16Block);
        const float* wb = bf16_block(w, o0, o1, in);
        // dx[N,in] += dy[:, o0:o1] · W[o0:o1, :]
        sgemm_tiled(false, false, N, in, (o1 - o0), 1.0f, dy + o0, out, wb, in, 1.0f, dx, in);
    }
}

// Rows [o0, o1) of a ggml block-type [out, in] matrix dequantized into the same scratch block.
static float* q_block(const uint8_t* w, uint32_t type, int64_t o0, int64_t o1, int64_t in) {
    float* dst = scratch(3, (size_t)(kBf16Block * in));
    const ggml_type t = (ggml_type)type;
    const size_t row_bytes = ggml_nbytes(t, in);
#pragma omp parallel for schedule(static)
    for (int64_t r = o0; r < o1; r++) ggml_dequantize(t, w + (size_t)r * row_bytes, dst + (r - o0) * in, in);
    return dst;
}

void linear_forward_q(float* y, const float* x, const uint8_t* w, uint32_t type, const float* b, int64_t N, int64_t in,
                      int64_t out) {
    for (int64_t o0 = 0; o0 < out; o0 += kBf16Block) {
        const int64_t o1 = std::min(out, o0 + kBf16Block);
        const float* wb = q_block(w, type, o0, o1, in);
        sgemm_tiled(false, true, N, (o1 - o0), in, 1.0f, x, in, wb, in, 0.0f, y + o0, out);
    }
    if (b) {
#pragma omp parallel for schedule(dynamic, kRowChunk)
        for (int64_t n = 0; n < N; n++)
            for (int64_t o = 0; o < out; o++) y[n * out + o] += b[o];
    }
}

void linear_backward_q(float* dx, const float* dy, const uint8_t* w, uint32_t type, int64_t N, int64_t in, int64_t out) {
    for (int64_t o0 = 0; o0 < out; o0 += kBf16Block) {
        const int64_t o1 = std::min(out, o0 + kBf16Block);
        const float* wb = q_block(w, type, o0, o1, in);
        sgemm_tiled(false, false, N, in, (o1 - o0), 1.0f, dy + o0, out, wb, in, 1.0f, dx, in);
    }
}

// ============================================================================ rmsnorm
void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t N, int64_t D, float eps,
                     float w_offset) {
#pragma omp parallel for schedule(dynamic, kRowChunk)
    for (int64_t n = 0; n < N; n++) {
        const float* xr = x + n * D;
        float ss = 0.0f;
        for (int64_t i = 0; i < D; i++) ss += xr[i] * xr[i];
        float r = 1.0f / std::sqrt(ss / (float)D + eps);
        rstd[n] = r;
        float* yr = y + n * D;
        if (w_offset == 0.0f)
            for (int64_t i = 0; i < D; i++) yr[i] = w[i] * (xr[i] * r);
        else
            for (int64_t i = 0; i < D; i++) yr[i] = (xr[i] * r) * (w_offset + w[i]);
    }
}

void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, const float* rstd,
                      int64_t N, int64_t D, float w_offset) {
    if (dx) {
#pragma omp parallel for schedule(dynamic, kRowChunk)
        for (int64_t n = 0; n < N; n++) {
            const float* xr = x + n * D;
            const float* dyr = dy + n * D;
            float r = rstd[n];
            // xhat = x·r ; dxhat = dy·w ; dx = r·(dxhat - xhat·mean(dxhat·xhat))
            float dot = 0.0f;
            for (int64_t i = 0; i < D; i++) dot += dyr[i] * (w_offset + w[i]) * xr[i] * r;
            dot /= (float)D;
            float* dxr = dx + n * D;
            for (int64_t i = 0; i < D; i++) dxr[i] += r * (dyr[i] * (w_offset + w[i]) - xr[i] * r * dot);
        }
    }
    if (dw) {
        // rows in fixed chunks of 64 (partial sums per chunk, reduced in chunk order): contiguous
        // access, and the same result for any thread count
        const int64_t chunk = 64, nc = (N + chunk - 1) / chunk;
        float* part = scratch(2, (size_t)(nc * D));
        std::memset(part, 0, nc * D * sizeof(float));
#pragma omp parallel for schedule(dynamic, kRowChunk)
        for (int64_t c = 0; c < nc; c++) {
            float* pc = part + c * D;
            for (int64_t n = c * chunk; n < std::min(N, (c + 1) * chunk); n++) {
                const float r = rstd[n];
                const float* dyr = dy + n * D;
                const float* xr = x + n * D;
                for (int64_t i = 0; i < D; i++) pc[i] += dyr[i] * xr[i] * r;
            }
        }
        for (int64_t c = 0; c < nc; c++)
            for (int64_t i = 0; i < D; i++) dw[i] += part[c * D + i];
    }
}

// ============================================================================ rope
void rope_tables(float* cos, float* sin, const float* inv_freq, int64_t T, int64_t rot, float scale) {
    int64_t half = rot / 2;
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < half; i++) {
            // the angle is formed in fp32 as PyTorch does (position × inv_freq), then cos/sin in double
            float a = (float)t * inv_freq[i];
            cos[t * half + i] = (float)std::cos((double)a) * scale;
            sin[t * half + i] = (float)std::sin((double)a) * scale;
        }
}

static void rope_apply(float* x, const float* cos, const float* sin, const int32_t* pos, int64_t B, int64_t T,
                       int64_t H, int64_t hd, int64_t rot, float sign) {
    int64_t half = rot / 2;
#pragma omp parallel for collapse(2) schedule(dynamic, kRowChunk)
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            const int64_t at = pos ? pos[b * T + t] : t;
            const float* c = cos + at * half;
            const float* s = sin + at * half;
            for (int64_t h = 0; h < H; h++) {
                float* v = x + ((b * T + t) * H + h) * hd;
                for (int64_t i = 0; i < half; i++) {
                    float x1 = v[i], x2 = v[i + half], si = sign * s[i];
                    v[i] = x1 * c[i] - x2 * si;
                    v[i + half] = x2 * c[i] + x1 * si;
                }
            }
        }
}

void rope_forward(float* x, const float* cos, const float* sin, const int32_t* pos, int64_t B, int64_t T, int64_t H,
                  int64_t hd, int64_t rot) {
    rope_apply(x, cos, sin, pos, B, T, H, hd, rot, 1.0f);
}

void rope_backward(float* dx, const float* cos, const float* sin, const int32_t* pos, int64_t B, int64_t T,
                   int64_t H, int64_t hd, int64_t rot) {
    rope_apply(dx, cos, sin, pos, B, T, H, hd, rot, -1.0f);  // (s·R(θ))ᵀ = s·R(-θ): rotations are orthogonal
}

// ============================================================================ attention
static inline float dotf(const float* a, const float* b, int64_t n) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

// Blocked attention on BLAS: for each (batch, head) and block of kAttnBlock query rows, the scores
// against the keys up to the block's last row are one sgemm, softmax runs row by row, and P·V is
// another sgemm. Only a block × T tile of scores exists at a time (per thread); the backward
// recomputes it from q, k and the saved log-sum-exp. sgemm calls inside the OpenMP loop run
// single-threaded (OpenBLAS's OpenMP build), the loop supplies the parallelism.
static const int64_t kAttnBlock = 64;


// The keys query t sees: window > 0 limits them to the last `window` positions (t-window+1..t),
// as Hugging Face's sliding-window mask and llama.cpp do.
static inline int64_t first_key(int64_t t, int64_t window) { return window > 0 ? std::max<int64_t>(0, t - window + 1) : 0; }
// ... and, in a row of several samples (ap.pos), only the keys of its own sample. Non-decreasing
// in t within a row, so a block's first row has the block's first key.
static inline int64_t first_key(const int32_t* row_pos, int64_t t, int64_t window) {
    const int64_t lo = first_key(t, window);
    return row_pos ? std::max<int64_t>(lo, t - row_pos[t]) : lo;
}

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, int64_t B, int64_t T,
                       int64_t Hq, int64_t Hkv, int64_t hd, const attn_params& ap) {
    const int64_t group = Hq / Hkv, ldq = Hq * hd, ldk = Hkv * hd;
    const float scale = ap.scale, cap = ap.softcap;
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < Hq; h++) {
            float* S = scratch(0, (size_t)kAttnBlock * T);
            const float* Q = q + (b * T * Hq + h) * hd;
            const float* K = k + (b * T * Hkv + h / group) * hd;
            const float* Vv = v + (b * T * Hkv + h / group) * hd;
            float* O = out + (b * T * Hq + h) * hd;
            const int32_t* rp = ap.pos ? ap.pos + b * T : nullptr;
            for (int64_t r0 = 0; r0 < T; r0 += kAttnBlock) {
                // the block's keys: from the first one its first row sees to its last row
                const int64_t r1 = std::min(T, r0 + kAttnBlock), M = r1 - r0, k0 = first_key(rp, r0, ap.window),
                              Nk = r1 - k0;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)Nk, (int)hd, scale, Q + r0 * ldq,
                            (int)ldq, K + k0 * ldk, (int)ldk, 0.0f, S, (int)Nk);
                for (int64_t i = 0; i < M; i++) {
                    float* row = S + i * Nk;
                    const int64_t t = r0 + i, lo = first_key(rp, t, ap.window) - k0, hi = t - k0;  // keys lo..hi
                    if (cap > 0)
                        for (int64_t j = lo; j <= hi; j++) row[j] = cap * std::tanh(row[j] / cap);
                    float m = -INFINITY;
                    for (int64_t j = lo; j <= hi; j++) m = std::max(m, row[j]);
                    float l = 0.0f;
                    for (int64_t j = lo; j <= hi; j++) l += (row[j] = std::exp(row[j] - m));
                    const float inv = 1.0f / l;
                    for (int64_t j = 0; j < lo; j++) row[j] = 0.0f;
                    for (int64_t j = lo; j <= hi; j++) row[j] *= inv;
                    for (int64_t j = hi + 1; j < Nk; j++) row[j] = 0.0f;
                    lse[(b * Hq + h) * T + t] = m + std::log(l);
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)hd, (int)Nk, 1.0f, S, (int)Nk,
                            Vv + k0 * ldk, (int)ldk, 0.0f, O + r0 * ldq, (int)ldq);
            }
        }
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out, const float* lse,
                        const float* q, const float* k, const float* v, int64_t B, int64_t T, int64_t Hq,
                        int64_t Hkv, int64_t hd, const attn_params& ap) {
    const int64_t group = Hq / Hkv, ldq = Hq * hd, ldk = Hkv * hd;
    const float scale = ap.scale, cap = ap.softcap;
    // One task per (batch, kv head): it owns dk/dv of that head, so no two threads write the same
    // row and the summation order is fixed (deterministic for any thread count).
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int64_t b = 0; b < B; b++)
        for (int64_t kh = 0; kh < Hkv; kh++) {
            float* P = scratch(0, (size_t)kAttnBlock * T);
            float* dP = scratch(1, (size_t)kAttnBlock * T);
            float* Th = cap > 0 ? scratch(4, (size_t)kAttnBlock * T) : nullptr;  // tanh of the capped scores
            const float* K = k + (b * T * Hkv + kh) * hd;
            const float* Vv = v + (b * T * Hkv + kh) * hd;
            float* dK = dk + (b * T * Hkv + kh) * hd;
            float* dV = dv + (b * T * Hkv + kh) * hd;
            for (int64_t h = kh * group; h < (kh + 1) * group; h++) {
                const float* Q = q + (b * T * Hq + h) * hd;
                const float* O = out + (b * T * Hq + h) * hd;
                const float* dO = dout + (b * T * Hq + h) * hd;
                float* dQ = dq + (b * T * Hq + h) * hd;
                const float* L = lse + (b * Hq + h) * T;
                const int32_t* rp = ap.pos ? ap.pos + b * T : nullptr;
                for (int64_t r0 = 0; r0 < T; r0 += kAttnBlock) {
                    const int64_t r1 = std::min(T, r0 + kAttnBlock), M = r1 - r0, k0 = first_key(rp, r0, ap.window),
                                  Nk = r1 - k0;
                    // P = softmax(cap(scale·Q·Kᵀ)) from the saved log-sum-exp
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)Nk, (int)hd, scale, Q + r0 * ldq,
                                (int)ldq, K + k0 * ldk, (int)ldk, 0.0f, P, (int)Nk);
                    for (int64_t i = 0; i < M; i++) {
                        float* row = P + i * Nk;
                        const int64_t t = r0 + i, lo = first_key(rp, t, ap.window) - k0, hi = t - k0;
                        const float li = L[t];
                        if (cap > 0)
                            for (int64_t j = lo; j <= hi; j++) {
                                const float th = std::tanh(row[j] / cap);
                                Th[i * Nk + j] = th;
                                row[j] = cap * th;
                            }
                        for (int64_t j = 0; j < lo; j++) row[j] = 0.0f;
                        for (int64_t j = lo; j <= hi; j++) row[j] = std::exp(row[j] - li);
                        for (int64_t j = hi + 1; j < Nk; j++) row[j] = 0.0f;
                    }
                    // dV += Pᵀ·dO ; dP = dO·Vᵀ
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)Nk, (int)hd, (int)M, 1.0f, P, (int)Nk,
                                dO + r0 * ldq, (int)ldq, 1.0f, dV + k0 * ldk, (int)ldk);
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)Nk, (int)hd, 1.0f, dO + r0 * ldq,
                                (int)ldq, Vv + k0 * ldk, (int)ldk, 0.0f, dP, (int)Nk);
                    // dS = P ⊙ (dP - Σ_j P·dP) · scale, with Σ_j P·dP = dO·O (row-wise); through the
                    // cap: d/ds cap·tanh(s/cap) = 1 - tanh²
                    for (int64_t i = 0; i < M; i++) {
                        const float Di = dotf(dO + (r0 + i) * ldq, O + (r0 + i) * ldq, hd);
                        float* pr = P + i * Nk;
                        const float* dpr = dP + i * Nk;
                        const int64_t lo = first_key(rp, r0 + i, ap.window) - k0, hi = r0 + i - k0;
                        for (int64_t j = lo; j <= hi; j++) pr[j] = pr[j] * (dpr[j] - Di) * scale;
                        if (cap > 0)
                            for (int64_t j = lo; j <= hi; j++) pr[j] *= 1.0f - Th[i * Nk + j] * Th[i * Nk + j];
                    }
                    // dQ += dS·K ; dK += dSᵀ·Q
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)hd, (int)Nk, 1.0f, P, (int)Nk,
                                K + k0 * ldk, (int)ldk, 1.0f, dQ + r0 * ldq, (int)ldq);
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)Nk, (int)hd, (int)M, 1.0f, P, (int)Nk,
                                Q + r0 * ldq, (int)ldq, 1.0f, dK + k0 * ldk, (int)ldk);
                }
            }
        }
}

void attention_forward_kv(float* out, const float* q, const float* kc, const float* vc, int64_t n, int64_t pos0,
                          int64_t Hq, int64_t Hkv, int64_t hd, const attn_params& ap) {
    const int64_t group = Hq / Hkv;
    const float scale = ap.scale, cap = ap.softcap;
#pragma omp parallel
    {
        float* p = scratch(0, (size_t)(pos0 + n));
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int64_t i = 0; i < n; i++)
            for (int64_t h = 0; h < Hq; h++) {
                const int64_t kh = h / group, t = pos0 + i, lo = first_key(t, ap.window);
                const float* qt = q + (i * Hq + h) * hd;
                float m = -INFINITY;
                for (int64_t j = lo; j <= t; j++) {
                    float sc = dotf(qt, kc + (j * Hkv + kh) * hd, hd) * scale;
                    if (cap > 0) sc = cap * std::tanh(sc / cap);
                    p[j] = sc;
                    m = std::max(m, sc);
                }
                float l = 0.0f;
                for (int64_t j = lo; j <= t; j++) l += (p[j] = std::exp(p[j] - m));
                float* o = out + (i * Hq + h) * hd;
                std::fill(o, o + hd, 0.0f);
                for (int64_t j = lo; j <= t; j++) {
                    const float* vj = vc + (j * Hkv + kh) * hd;
                    float pj = p[j] / l;
                    for (int64_t d = 0; d < hd; d++) o[d] += pj * vj[d];
                }
            }
    }
}

// ============================================================================ swiglu
void swiglu_forward(float* h, const float* g, const float* u, int64_t n) {
#pragma omp parallel for schedule(dynamic, kElemChunk)
    for (int64_t i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + std::exp(-g[i]));
        h[i] = g[i] * s * u[i];
    }
}

void swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n) {
#pragma omp parallel for schedule(dynamic, kElemChunk)
    for (int64_t i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + std::exp(-g[i]));
        float silu = g[i] * s;
        du[i] += dh[i] * silu;
        dg[i] += dh[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
    }
}

// GeGLU with the tanh approximation of GELU (Gemma's gelu_pytorch_tanh):
// h = 0.5·g·(1 + tanh(c·(g + 0.044715·g³)))·u, c = sqrt(2/π)
static const float kGeluC = 0.7978845608028654f;
void geglu_forward(float* h, const float* g, const float* u, int64_t n) {
#pragma omp parallel for schedule(dynamic, kElemChunk)
    for (int64_t i = 0; i < n; i++) {
        const float x = g[i], th = std::tanh(kGeluC * (x + 0.044715f * x * x * x));
        h[i] = 0.5f * x * (1.0f + th) * u[i];
    }
}

void geglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n) {
#pragma omp parallel for schedule(dynamic, kElemChunk)
    for (int64_t i = 0; i < n; i++) {
        const float x = g[i], th = std::tanh(kGeluC * (x + 0.044715f * x * x * x));
        const float gelu = 0.5f * x * (1.0f + th);
        const float dgelu = 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * kGeluC * (1.0f + 3.0f * 0.044715f * x * x);
        du[i] += dh[i] * gelu;
        dg[i] += dh[i] * u[i] * dgelu;
    }
}

// ============================================================================ embedding
void embedding_forward(float* x, const int32_t* tokens, const float* table, int64_t N, int64_t D) {
#pragma omp parallel for schedule(dynamic, kRowChunk)
    for (int64_t n = 0; n < N; n++) std::memcpy(x + n * D, table + (int64_t)tokens[n] * D, D * sizeof(float));
}

void embedding_forward_bf16(float* x, const int32_t* tokens, const uint16_t* table, int64_t N, int64_t D) {
#pragma omp parallel for schedule(dynamic, kRowChunk)
    for (int64_t n = 0; n < N; n++) {
        const uint16_t* src = table + (int64_t)tokens[n] * D;
        for (int64_t i = 0; i < D; i++) x[n * D + i] = bf16_to_f32(src[i]);
    }
}

void embedding_forward_q(float* x, const int32_t* tokens, const uint8_t* table, uint32_t type, int64_t N, int64_t D) {
    const size_t row_bytes = ggml_nbytes((ggml_type)type, D);
#pragma omp parallel for schedule(dynamic, kRowChunk)
    for (int64_t n = 0; n < N; n++) ggml_dequantize((ggml_type)type, table + (size_t)tokens[n] * row_bytes, x + n * D, D);
}

void embedding_backward(float* dtable, const float* dx, const int32_t* tokens, int64_t N, int64_t D) {
    // parallel over columns: a token may repeat, so rows would race; columns never do
#pragma omp parallel for schedule(dynamic, kRowChunk)
    for (int64_t i = 0; i < D; i++)
        for (int64_t n = 0; n < N; n++) dtable[(int64_t)tokens[n] * D + i] += dx[n * D + i];
}

// ============================================================================ lm head + cross-entropy
double lmhead_xent(float* dx, float* dw, const float* x, const float* w, const void* w16, uint32_t w16_type, const int32_t* targets,
                   int64_t N, int64_t D, int64_t V, float grad_scale, float* buf, int64_t chunk, float cap) {
    float* logits = buf;                     // [chunk, V]
    float* xs = buf + chunk * V;             // [chunk, D] gathered input rows
    float* dxs = xs + chunk * D;             // [chunk, D] their gradients
    // rows of this chunk with a target, and their losses: per-thread buffers grown once, reached
    // through plain pointers inside the parallel loop (its threads have their own thread_locals)
    thread_local std::vector<int64_t> rows_buf;
    thread_local std::vector<double> loss_buf;
    if ((int64_t)loss_buf.size() < chunk) loss_buf.resize(chunk), rows_buf.resize(chunk);
    int64_t* rows = rows_buf.data();
    double* row_loss = loss_buf.data();
    double total = 0.0;
    int64_t n = 0;
    while (n < N) {
        int64_t R = 0;
        while (n < N && R < chunk) {
            if (targets[n] >= 0) rows[R++] = n;
            n++;
        }
        if (R == 0) continue;
        for (int64_t r = 0; r < R; r++) std::memcpy(xs + r * D, x + rows[r] * D, D * sizeof(float));
        if (w) linear_forward(logits, xs, w, nullptr, R, D, V);
        else if (w16_type == (uint32_t)ggml_type::bf16) linear_forward_bf16(logits, xs, (const uint16_t*)w16, nullptr, R, D, V);
        else linear_forward_q(logits, xs, (const uint8_t*)w16, w16_type, nullptr, R, D, V);
        const bool grad = dx || dw;
#pragma omp parallel for schedule(dynamic, kRowChunk)
        for (int64_t r = 0; r < R; r++) {
            float* lr = logits + r * V;
            float* th = cap > 0 ? scratch(4, (size_t)V) : nullptr;  // tanh of the capped logits
            if (cap > 0)
                for (int64_t i = 0; i < V; i++) lr[i] = cap * (th[i] = std::tanh(lr[i] / cap));
            float m = -INFINITY;
            for (int64_t i = 0; i < V; i++) m = std::max(m, lr[i]);
            const int32_t tgt = targets[rows[r]];
            const float target_logit = lr[tgt];
            // exponentials in fp32 (stored in place when a gradient is wanted), their sum in fp64
            double s = 0.0;
            if (grad) {
                for (int64_t i = 0; i < V; i++) s += (lr[i] = std::exp(lr[i] - m));
            } else {
                for (int64_t i = 0; i < V; i++) s += std::exp(lr[i] - m);
            }
            row_loss[r] = (double)m + std::log(s) - (double)target_logit;
            if (grad) {  // dlogits = (softmax - onehot) · grad_scale, in place
                const float c = (float)(grad_scale / s);
                for (int64_t i = 0; i < V; i++) lr[i] *= c;
                lr[tgt] -= grad_scale;
                if (cap > 0)  // through the cap: d/dz cap·tanh(z/cap) = 1 - tanh²
                    for (int64_t i = 0; i < V; i++) lr[i] *= 1.0f - th[i] * th[i];
            }
        }
        for (int64_t r = 0; r < R; r++) total += row_loss[r];
        if (!grad) continue;
        if (dx) {
            std::memset(dxs, 0, R * D * sizeof(float));
            if (w) linear_backward(dxs, nullptr, nullptr, logits, xs, w, R, D, V);
            else if (w16_type == (uint32_t)ggml_type::bf16) linear_backward_bf16(dxs, logits, (const uint16_t*)w16, R, D, V);
            else linear_backward_q(dxs, logits, (const uint8_t*)w16, w16_type, R, D, V);
            for (int64_t r = 0; r < R; r++) {
                float* d = dx + rows[r] * D;
                for (int64_t i = 0; i < D; i++) d[i] += dxs[r * D + i];
            }
        }
        if (dw) linear_backward(nullptr, dw, nullptr, logits, xs, w, R, D, V);
    }
    return total;
}


// ============================================================================ the rest
// Scratch ids: 0, 1 attention tiles (every thread); 2 RMSNorm weight-gradient partials and 3 a
// bf16 weight block (the calling thread); 4 tanh of soft-capped scores or logits (every thread).
static void reserve(const scratch_plan& p) {
    const size_t tile = (size_t)(kAttnBlock * p.max_T);
    const size_t capped = std::max(tile, (size_t)p.vocab);
    const int threads = std::max(p.threads, omp_get_max_threads());
#pragma omp parallel num_threads(threads)
    {
        scratch(0, tile);
        scratch(1, tile);
        if (p.softcap) scratch(4, capped);
    }
    scratch(2, (size_t)((p.max_rows + 63) / 64 * p.max_width));
    scratch(3, (size_t)(kBf16Block * p.max_width));
}

static void set_threads(int n) {
    if (n > 0) omp_set_num_threads(n);  // OpenBLAS (OpenMP build) follows OpenMP's count
}

static void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                 const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
    sgemm_tiled(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

static void add(float* y, const float* x, int64_t n) {
#pragma omp parallel for schedule(dynamic, kElemChunk)
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

static void scale(float* x, int64_t n, float s) {
#pragma omp parallel for schedule(dynamic, kElemChunk)
    for (int64_t i = 0; i < n; i++) x[i] *= s;
}

static void softcap(float* x, int64_t n, float cap) {
#pragma omp parallel for schedule(dynamic, kElemChunk)
    for (int64_t i = 0; i < n; i++) x[i] = cap * std::tanh(x[i] / cap);
}

static void zero(float* x, int64_t n) { std::memset(x, 0, n * sizeof(float)); }
static void copy(float* dst, const float* src, int64_t n) { std::memcpy(dst, src, n * sizeof(float)); }

static void dropout(float* out, const float* x, int64_t n, float p, uint64_t key) {
    const float keep = 1.0f / (1.0f - p);
#pragma omp parallel for schedule(dynamic, kElemChunk)
    for (int64_t i = 0; i < n; i++) {
        uint64_t z = key + (uint64_t)i;
        double u = (double)(rng_splitmix(&z) >> 11) * 0x1.0p-53;
        out[i] = u < p ? 0.0f : x[i] * keep;
    }
}

static void embedding_backward_rows(float* grad, const int32_t* row_of, const float* dx, const int32_t* tokens,
                                    int64_t N, int64_t D) {
#pragma omp parallel for schedule(dynamic, kRowChunk)
    for (int64_t i = 0; i < D; i++)  // columns in parallel: repeated tokens never race
        for (int64_t n = 0; n < N; n++) grad[(int64_t)row_of[tokens[n]] * D + i] += dx[n * D + i];
}

static void lora_fold(float* w, const float* A, const float* B, int64_t out, int64_t in, int64_t r, float scale) {
#pragma omp parallel for schedule(dynamic, kRowChunk)
    for (int64_t o = 0; o < out; o++)
        for (int64_t k = 0; k < r; k++) {
            const float b = scale * B[o * r + k];
            const float* a = A + k * in;
            float* wr = w + o * in;
            for (int64_t i = 0; i < in; i++) wr[i] += b * a[i];
        }
}

// One AdamW update of a parameter, its moments and its (scaled) gradient; constants per call.
struct adamw_consts {
    float step_size, bc2_sqrt, b1, b2, eps, shrink;
    adamw_consts(const adamw_hparams& h, int64_t step, bool decay) {
        const double bc1 = 1.0 - std::pow(h.beta1, (double)step), bc2 = 1.0 - std::pow(h.beta2, (double)step);
        step_size = (float)(h.lr / bc1);
        bc2_sqrt = (float)std::sqrt(bc2);
        b1 = (float)h.beta1;
        b2 = (float)h.beta2;
        eps = (float)h.eps;
        shrink = decay ? (float)(1.0 - h.lr * h.weight_decay) : 1.0f;
    }
    inline void apply(float& p, float g, float& m, float& v) const {
        m = b1 * m + (1.0f - b1) * g;
        v = b2 * v + (1.0f - b2) * g * g;
        p = p * shrink - step_size * m / (std::sqrt(v) / bc2_sqrt + eps);
    }
};

static void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const adamw_hparams& h,
                         int64_t step, bool decay, float grad_scale) {
    const adamw_consts c(h, step, decay);
#pragma omp parallel for schedule(dynamic, kElemChunk)
    for (int64_t i = 0; i < n; i++) c.apply(p[i], g[i] * grad_scale, m[i], v[i]);
}

static void adamw_update_rows(float* p, const float* grad, const int32_t* row_of, float* m, float* v, int64_t rows,
                              int64_t width, const adamw_hparams& h, int64_t step, bool decay, float grad_scale) {
    const adamw_consts c(h, step, decay);
#pragma omp parallel for schedule(dynamic, kRowChunk)
    for (int64_t r = 0; r < rows; r++) {
        const float* g = row_of[r] >= 0 ? grad + (int64_t)row_of[r] * width : nullptr;
        const int64_t o = r * width;
        for (int64_t i = 0; i < width; i++) c.apply(p[o + i], g ? g[i] * grad_scale : 0.0f, m[o + i], v[o + i]);
    }
}

static double sum_of_squares(const float* g, int64_t n) {
    const int64_t block = 1 << 16, nb = (n + block - 1) / block;
    thread_local std::vector<double> part_buf;
    if ((int64_t)part_buf.size() < nb) part_buf.resize(nb);
    double* part = part_buf.data();
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t b = 0; b < nb; b++) {
        double s = 0;
        for (int64_t i = b * block; i < std::min(n, (b + 1) * block); i++) s += (double)g[i] * g[i];
        part[b] = s;
    }
    double s = 0;
    for (int64_t b = 0; b < nb; b++) s += part[b];
    return s;
}

static void fill_normal(float* dst, uint16_t* dst16, int64_t n, double std, uint64_t seed, uint64_t stream) {
    const int64_t block = (int64_t)1 << 20, nb = (n + block - 1) / block;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t b = 0; b < nb; b++) {
        rng r;
        rng_init(&r, seed ^ (0x9e3779b97f4a7c15ull * (stream + 1)) ^ (0xbf58476d1ce4e5b9ull * (uint64_t)(b + 1)));
        const int64_t i0 = b * block, i1 = std::min(n, i0 + block);
        if (dst16) {  // straight to bf16: a big model never has an fp32 copy
            for (int64_t i = i0; i < i1; i++) dst16[i] = f32_to_bf16((float)(rng_normal(&r) * std));
        } else {
            for (int64_t i = i0; i < i1; i++) dst[i] = (float)(rng_normal(&r) * std);
        }
    }
}


static void fill(float* dst, int64_t n, float value) {
    #pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) dst[i] = value;
}

static void bf16_to_f32(float* dst, const uint16_t* src, int64_t n) {
    #pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) dst[i] = lisa::bf16_to_f32(src[i]);
}

static void f32_to_bf16(uint16_t* dst, const float* src, int64_t n) {
    #pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) dst[i] = lisa::f32_to_bf16(src[i]);
}

}  // namespace cpu

const backend& backend_cpu_plain() {
    static const backend b = {
        "cpu",
        cpu::set_threads,
        cpu::reserve,
        cpu::gemm,
        cpu::linear_forward,
        cpu::linear_backward,
        cpu::linear_forward_bf16,
        cpu::linear_backward_bf16,
        cpu::linear_forward_q,
        cpu::linear_backward_q,
        cpu::rmsnorm_forward,
        cpu::rmsnorm_backward,
        cpu::rope_forward,
        cpu::rope_backward,
        cpu::rope_tables,
        cpu::attention_forward,
        cpu::attention_backward,
        cpu::attention_forward_kv,
        cpu::swiglu_forward,
        cpu::swiglu_backward,
        cpu::geglu_forward,
        cpu::geglu_backward,
        cpu::add,
        cpu::scale,
        cpu::softcap,
        cpu::zero,
        cpu::copy,
        cpu::dropout,
        cpu::embedding_forward,
        cpu::embedding_forward_bf16,
        cpu::embedding_forward_q,
        cpu::embedding_backward,
        cpu::embedding_backward_rows,
        cpu::lmhead_xent,
        cpu::lora_fold,
        cpu::adamw_update,
        cpu::adamw_update_rows,
        cpu::sum_of_squares,
        cpu::fill_normal,
        cpu::fill,
        cpu::bf16_to_f32,
        cpu::f32_to_bf16,
        host_memory::alloc,
        host_memory::free,
        host_memory::upload,
        host_memory::download,
        host_memory::copy,
        host_memory::zero,
        host_memory::release,
        host_memory::host,
        host_memory::sync,
    };
    return b;
}

const backend& backend_cpu() {
    static const backend& b = device_memory_checked() ? backend_checked(backend_cpu_plain(), 0) : backend_cpu_plain();
    return b;
}

const backend* backend_by_name(const char* name) {
    const std::string n = name;
    if (n == "cpu") return &backend_cpu();
    if (n == "ref") return &backend_ref();
    if (n == "vulkan") return &backend_vulkan(0);
    if (n.rfind("vulkan:", 0) == 0) {
        char* end = nullptr;
        const long i = std::strtol(n.c_str() + 7, &end, 10);
        if (end != n.c_str() + 7 && *end == '\0' && i >= 0 && i < 1000) return &backend_vulkan((int)i);
    }
    return nullptr;
}

}  // namespace lisa
