#include "kernels/cpu/kernels.h"

#include <algorithm>
#include <cblas.h>
#include <cmath>
#include <cstring>
#include <vector>

namespace lisa {

// ============================================================================ linear
void linear_forward(float* y, const float* x, const float* w, const float* b, int64_t N, int64_t in, int64_t out) {
    if (b) {
#pragma omp parallel for schedule(static)
        for (int64_t n = 0; n < N; n++) std::memcpy(y + n * out, b, out * sizeof(float));
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)out, (int)in, 1.0f, x, (int)in, w, (int)in,
                b ? 1.0f : 0.0f, y, (int)out);
}

void linear_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w, int64_t N,
                     int64_t in, int64_t out) {
    if (dx)  // dx[N,in] += dy[N,out] · W[out,in]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)in, (int)out, 1.0f, dy, (int)out, w,
                    (int)in, 1.0f, dx, (int)in);
    if (dw)  // dW[out,in] += dyᵀ[out,N] · x[N,in]
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)out, (int)in, (int)N, 1.0f, dy, (int)out, x,
                    (int)in, 1.0f, dw, (int)in);
    if (db) {  // column sums; parallel over columns so the order of additions is fixed
#pragma omp parallel for schedule(static)
        for (int64_t o = 0; o < out; o++) {
            float s = 0.0f;
            for (int64_t n = 0; n < N; n++) s += dy[n * out + o];
            db[o] += s;
        }
    }
}

// ============================================================================ rmsnorm
void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t N, int64_t D, float eps) {
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float* xr = x + n * D;
        float ss = 0.0f;
        for (int64_t i = 0; i < D; i++) ss += xr[i] * xr[i];
        float r = 1.0f / std::sqrt(ss / (float)D + eps);
        rstd[n] = r;
        float* yr = y + n * D;
        for (int64_t i = 0; i < D; i++) yr[i] = w[i] * (xr[i] * r);
    }
}

void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w, const float* rstd,
                      int64_t N, int64_t D) {
    if (dx) {
#pragma omp parallel for schedule(static)
        for (int64_t n = 0; n < N; n++) {
            const float* xr = x + n * D;
            const float* dyr = dy + n * D;
            float r = rstd[n];
            // xhat = x·r ; dxhat = dy·w ; dx = r·(dxhat - xhat·mean(dxhat·xhat))
            float dot = 0.0f;
            for (int64_t i = 0; i < D; i++) dot += dyr[i] * w[i] * xr[i] * r;
            dot /= (float)D;
            float* dxr = dx + n * D;
            for (int64_t i = 0; i < D; i++) dxr[i] += r * (dyr[i] * w[i] - xr[i] * r * dot);
        }
    }
    if (dw) {
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < D; i++) {
            float s = 0.0f;
            for (int64_t n = 0; n < N; n++) s += dy[n * D + i] * x[n * D + i] * rstd[n];
            dw[i] += s;
        }
    }
}

// ============================================================================ rope
void rope_tables(float* cos, float* sin, const float* inv_freq, int64_t T, int64_t hd) {
    int64_t half = hd / 2;
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < half; i++) {
            // the angle is formed in fp32 as PyTorch does (position × inv_freq), then cos/sin in double
            float a = (float)t * inv_freq[i];
            cos[t * half + i] = (float)std::cos((double)a);
            sin[t * half + i] = (float)std::sin((double)a);
        }
}

static void rope_apply(float* x, const float* cos, const float* sin, int64_t B, int64_t T, int64_t H, int64_t hd,
                       float sign) {
    int64_t half = hd / 2;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            const float* c = cos + t * half;
            const float* s = sin + t * half;
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

void rope_forward(float* x, const float* cos, const float* sin, int64_t B, int64_t T, int64_t H, int64_t hd) {
    rope_apply(x, cos, sin, B, T, H, hd, 1.0f);
}

void rope_backward(float* dx, const float* cos, const float* sin, int64_t B, int64_t T, int64_t H, int64_t hd) {
    rope_apply(dx, cos, sin, B, T, H, hd, -1.0f);  // rotation matrices are orthogonal: Rᵀ = R(-θ)
}

// ============================================================================ attention
static inline float dotf(const float* a, const float* b, int64_t n) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, int64_t B, int64_t T,
                       int64_t Hq, int64_t Hkv, int64_t hd) {
    const int64_t group = Hq / Hkv;
    const float scale = 1.0f / std::sqrt((float)hd);
#pragma omp parallel
    {
        std::vector<float> p(T);
#pragma omp for collapse(3) schedule(dynamic, 4)
        for (int64_t b = 0; b < B; b++)
            for (int64_t h = 0; h < Hq; h++)
                for (int64_t t = 0; t < T; t++) {
                    const int64_t kh = h / group;
                    const float* qt = q + ((b * T + t) * Hq + h) * hd;
                    float m = -INFINITY;
                    for (int64_t j = 0; j <= t; j++) {
                        p[j] = dotf(qt, k + ((b * T + j) * Hkv + kh) * hd, hd) * scale;
                        m = std::max(m, p[j]);
                    }
                    float l = 0.0f;
                    for (int64_t j = 0; j <= t; j++) {
                        p[j] = std::exp(p[j] - m);
                        l += p[j];
                    }
                    float* o = out + ((b * T + t) * Hq + h) * hd;
                    std::fill(o, o + hd, 0.0f);
                    float inv = 1.0f / l;
                    for (int64_t j = 0; j <= t; j++) {
                        const float* vj = v + ((b * T + j) * Hkv + kh) * hd;
                        float pj = p[j] * inv;
                        for (int64_t i = 0; i < hd; i++) o[i] += pj * vj[i];
                    }
                    lse[(b * Hq + h) * T + t] = m + std::log(l);
                }
    }
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* out, const float* lse,
                        const float* q, const float* k, const float* v, int64_t B, int64_t T, int64_t Hq,
                        int64_t Hkv, int64_t hd) {
    const int64_t group = Hq / Hkv;
    const float scale = 1.0f / std::sqrt((float)hd);
    // One task per (batch, kv head): it owns dk/dv of that head, so no two threads write the same
    // row and the summation order is fixed (deterministic for any thread count).
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int64_t b = 0; b < B; b++)
        for (int64_t kh = 0; kh < Hkv; kh++)
            for (int64_t h = kh * group; h < (kh + 1) * group; h++)
                for (int64_t t = 0; t < T; t++) {
                    const size_t qo = ((b * T + t) * Hq + h) * hd;
                    const float* qt = q + qo;
                    const float* dot = dout + qo;
                    const float Dt = dotf(dot, out + qo, hd);  // Σ_j p_j dp_j
                    const float L = lse[(b * Hq + h) * T + t];
                    float* dqt = dq + qo;
                    for (int64_t j = 0; j <= t; j++) {
                        const size_t ko = ((b * T + j) * Hkv + kh) * hd;
                        const float* kj = k + ko;
                        const float* vj = v + ko;
                        float p = std::exp(dotf(qt, kj, hd) * scale - L);
                        float dp = dotf(dot, vj, hd);
                        float ds = p * (dp - Dt) * scale;
                        float* dkj = dk + ko;
                        float* dvj = dv + ko;
                        for (int64_t i = 0; i < hd; i++) {
                            dqt[i] += ds * kj[i];
                            dkj[i] += ds * qt[i];
                            dvj[i] += p * dot[i];
                        }
                    }
                }
}

void attention_forward_kv(float* out, const float* q, const float* kc, const float* vc, int64_t n, int64_t pos0,
                          int64_t Hq, int64_t Hkv, int64_t hd) {
    const int64_t group = Hq / Hkv;
    const float scale = 1.0f / std::sqrt((float)hd);
#pragma omp parallel
    {
        std::vector<float> p(pos0 + n);
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int64_t i = 0; i < n; i++)
            for (int64_t h = 0; h < Hq; h++) {
                const int64_t kh = h / group, t = pos0 + i;
                const float* qt = q + (i * Hq + h) * hd;
                float m = -INFINITY;
                for (int64_t j = 0; j <= t; j++) {
                    p[j] = dotf(qt, kc + (j * Hkv + kh) * hd, hd) * scale;
                    m = std::max(m, p[j]);
                }
                float l = 0.0f;
                for (int64_t j = 0; j <= t; j++) l += (p[j] = std::exp(p[j] - m));
                float* o = out + (i * Hq + h) * hd;
                std::fill(o, o + hd, 0.0f);
                for (int64_t j = 0; j <= t; j++) {
                    const float* vj = vc + (j * Hkv + kh) * hd;
                    float pj = p[j] / l;
                    for (int64_t d = 0; d < hd; d++) o[d] += pj * vj[d];
                }
            }
    }
}

// ============================================================================ swiglu
void swiglu_forward(float* h, const float* g, const float* u, int64_t n) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + std::exp(-g[i]));
        h[i] = g[i] * s * u[i];
    }
}

void swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float s = 1.0f / (1.0f + std::exp(-g[i]));
        float silu = g[i] * s;
        du[i] += dh[i] * silu;
        dg[i] += dh[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
    }
}

// ============================================================================ embedding
void embedding_forward(float* x, const int32_t* tokens, const float* table, int64_t N, int64_t D) {
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) std::memcpy(x + n * D, table + (int64_t)tokens[n] * D, D * sizeof(float));
}

void embedding_backward(float* dtable, const float* dx, const int32_t* tokens, int64_t N, int64_t D) {
    // parallel over columns: a token may repeat, so rows would race; columns never do
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < D; i++)
        for (int64_t n = 0; n < N; n++) dtable[(int64_t)tokens[n] * D + i] += dx[n * D + i];
}

// ============================================================================ lm head + cross-entropy
double lmhead_xent_forward_backward(float* dx, float* dw, const float* x, const float* w, const int32_t* targets,
                                    int64_t N, int64_t D, int64_t V, float grad_scale, float* scratch, int64_t chunk) {
    float* logits = scratch;                 // [chunk, V]
    float* xs = scratch + chunk * V;         // [chunk, D] gathered input rows
    float* dxs = xs + chunk * D;             // [chunk, D] their gradients
    std::vector<int64_t> rows;               // rows of this chunk with a target
    rows.reserve(chunk);
    std::vector<double> row_loss(chunk);
    double total = 0.0;
    int64_t n = 0;
    while (n < N) {
        rows.clear();
        while (n < N && (int64_t)rows.size() < chunk) {
            if (targets[n] >= 0) rows.push_back(n);
            n++;
        }
        const int64_t R = (int64_t)rows.size();
        if (R == 0) continue;
        for (int64_t r = 0; r < R; r++) std::memcpy(xs + r * D, x + rows[r] * D, D * sizeof(float));
        linear_forward(logits, xs, w, nullptr, R, D, V);
        const bool grad = dx || dw;
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < R; r++) {
            float* lr = logits + r * V;
            float m = -INFINITY;
            for (int64_t i = 0; i < V; i++) m = std::max(m, lr[i]);
            double s = 0.0;
            for (int64_t i = 0; i < V; i++) s += std::exp((double)(lr[i] - m));
            const int32_t tgt = targets[rows[r]];
            const double lse = (double)m + std::log(s);
            row_loss[r] = lse - (double)lr[tgt];
            if (grad) {  // dlogits = (softmax - onehot) · grad_scale, in place
                for (int64_t i = 0; i < V; i++) lr[i] = (float)(std::exp((double)lr[i] - lse)) * grad_scale;
                lr[tgt] -= grad_scale;
            }
        }
        for (int64_t r = 0; r < R; r++) total += row_loss[r];
        if (!grad) continue;
        if (dx) {
            std::memset(dxs, 0, R * D * sizeof(float));
            linear_backward(dxs, nullptr, nullptr, logits, xs, w, R, D, V);
            for (int64_t r = 0; r < R; r++) {
                float* d = dx + rows[r] * D;
                for (int64_t i = 0; i < D; i++) d[i] += dxs[r * D + i];
            }
        }
        if (dw) linear_backward(nullptr, dw, nullptr, logits, xs, w, R, D, V);
    }
    return total;
}

}  // namespace lisa
