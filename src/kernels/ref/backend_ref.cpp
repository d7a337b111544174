// The reference backend: every kernel as the plainest loops that state its math, single-threaded,
// accumulating in double. Slow and obviously correct; the kernel harness (tests/test_kernels.cpp)
// checks every fast backend against it. Deterministic streams (dropout masks, init) follow the
// same key scheme as every backend, since they are part of the interface, not of the numerics.
#include <algorithm>
#include <cmath>
#include <vector>

#include "core/dtype.h"
#include "core/rng.h"
#include "kernels/kernels.h"
#include "io/ggml_quants.h"
#include "kernels/host_memory.h"

namespace lisa {
namespace ref {

static void set_threads(int) {}
static void reserve(const scratch_plan&) {}  // plain loops keep their temporaries on the stack of each call

static void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                 const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++) {
                double a = ta ? A[k * lda + i] : A[i * lda + k];
                double b = tb ? B[j * ldb + k] : B[k * ldb + j];
                s += a * b;
            }
            float& c = C[i * ldc + j];
            c = (float)(alpha * s + (beta == 0.0f ? 0.0 : (double)beta * c));
        }
}

static void linear_forward(float* y, const float* x, const float* w, const float* b, int64_t N, int64_t in,
                           int64_t out) {
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < out; o++) {
            double s = b ? b[o] : 0.0;
            for (int64_t i = 0; i < in; i++) s += (double)x[n * in + i] * w[o * in + i];
            y[n * out + o] = (float)s;
        }
}

static void linear_backward(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                            int64_t N, int64_t in, int64_t out) {
    if (dx)
        for (int64_t n = 0; n < N; n++)
            for (int64_t i = 0; i < in; i++) {
                double s = 0;
                for (int64_t o = 0; o < out; o++) s += (double)dy[n * out + o] * w[o * in + i];
                dx[n * in + i] += (float)s;
            }
    if (dw)
        for (int64_t o = 0; o < out; o++)
            for (int64_t i = 0; i < in; i++) {
                double s = 0;
                for (int64_t n = 0; n < N; n++) s += (double)dy[n * out + o] * x[n * in + i];
                dw[o * in + i] += (float)s;
            }
    if (db)
        for (int64_t o = 0; o < out; o++) {
            double s = 0;
            for (int64_t n = 0; n < N; n++) s += dy[n * out + o];
            db[o] += (float)s;
        }
}

static std::vector<float> widen(const uint16_t* w, int64_t n) {
    std::vector<float> f(n);
    for (int64_t i = 0; i < n; i++) f[i] = bf16_to_f32(w[i]);
    return f;
}

static void linear_forward_bf16(float* y, const float* x, const uint16_t* w, const float* b, int64_t N, int64_t in,
                                int64_t out) {
    linear_forward(y, x, widen(w, out * in).data(), b, N, in, out);
}

static void linear_backward_bf16(float* dx, const float* dy, const uint16_t* w, int64_t N, int64_t in, int64_t out) {
    linear_backward(dx, nullptr, nullptr, dy, nullptr, widen(w, out * in).data(), N, in, out);
}

static std::vector<float> widen_q(const uint8_t* w, uint32_t type, int64_t n) {
    std::vector<float> f(n);
    ggml_dequantize((ggml_type)type, w, f.data(), n);
    return f;
}

static void linear_forward_q(float* y, const float* x, const uint8_t* w, uint32_t type, const float* b, int64_t N,
                             int64_t in, int64_t out) {
    linear_forward(y, x, widen_q(w, type, out * in).data(), b, N, in, out);
}

static void linear_backward_q(float* dx, const float* dy, const uint8_t* w, uint32_t type, int64_t N, int64_t in,
                              int64_t out) {
    linear_backward(dx, nullptr, nullptr, dy, nullptr, widen_q(w, type, out * in).data(), N, in, out);
}

static void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int64_t N, int64_t D, float eps,
                            float w_offset) {
    for (int64_t n = 0; n < N; n++) {
        double ss = 0;
        for (int64_t i = 0; i < D; i++) ss += (double)x[n * D + i] * x[n * D + i];
        double r = 1.0 / std::sqrt(ss / (double)D + eps);
        rstd[n] = (float)r;
        for (int64_t i = 0; i < D; i++) y[n * D + i] = (float)(((double)w_offset + w[i]) * (x[n * D + i] * r));
    }
}

static void rmsnorm_backward(float* dx, float* dw, const float* dy, const float* x, const float* w,
                             const float* rstd, int64_t N, int64_t D, float w_offset) {
    for (int64_t n = 0; n < N; n++) {
        const double r = rstd[n];
        // y_i = s_i x_i r with s = offset + w, r = (mean x² + eps)^-1/2:
        // dx_j = r (dy_j s_j) - r³ x_j mean_i(dy_i s_i x_i)
        double dot = 0;
        for (int64_t i = 0; i < D; i++) dot += (double)dy[n * D + i] * ((double)w_offset + w[i]) * x[n * D + i];
        dot /= (double)D;
        for (int64_t i = 0; i < D; i++) {
            if (dx)
                dx[n * D + i] += (float)(r * dy[n * D + i] * ((double)w_offset + w[i]) - r * r * r * x[n * D + i] * dot);
        }
    }
    if (dw)
        for (int64_t i = 0; i < D; i++) {
            double s = 0;
            for (int64_t n = 0; n < N; n++) s += (double)dy[n * D + i] * x[n * D + i] * rstd[n];
            dw[i] += (float)s;
        }
}

static void rope_tables(float* cos, float* sin, const float* inv_freq, int64_t T, int64_t rot, float scale) {
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < rot / 2; i++) {
            float a = (float)t * inv_freq[i];  // the angle in fp32, as PyTorch forms it
            cos[t * (rot / 2) + i] = (float)std::cos((double)a) * scale;
            sin[t * (rot / 2) + i] = (float)std::sin((double)a) * scale;
        }
}

static void rope_rotate(float* x, const float* cos, const float* sin, const int32_t* pos, int64_t B, int64_t T,
                        int64_t H, int64_t hd, int64_t rot, double sign) {
    const int64_t half = rot / 2;
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t h = 0; h < H; h++) {
                float* v = x + ((b * T + t) * H + h) * hd;
                const int64_t at = pos ? pos[b * T + t] : t;
                for (int64_t i = 0; i < half; i++) {
                    double c = cos[at * half + i], s = sign * sin[at * half + i], x1 = v[i], x2 = v[i + half];
                    v[i] = (float)(x1 * c - x2 * s);
                    v[i + half] = (float)(x2 * c + x1 * s);
                }
            }
}

static void rope_forward(float* x, const float* cos, const float* sin, const int32_t* pos, int64_t B, int64_t T,
                         int64_t H, int64_t hd, int64_t rot) {
    rope_rotate(x, cos, sin, pos, B, T, H, hd, rot, 1.0);
}
static void rope_backward(float* dx, const float* cos, const float* sin, const int32_t* pos, int64_t B, int64_t T,
                          int64_t H, int64_t hd, int64_t rot) {
    rope_rotate(dx, cos, sin, pos, B, T, H, hd, rot, -1.0);
}

// The first key query t of row b sees: its sample's first token, and within a sliding window.
static int64_t first_key(int64_t b, int64_t t, int64_t T, const attn_params& ap) {
    int64_t lo = ap.pos ? t - ap.pos[b * T + t] : 0;
    if (ap.window > 0) lo = std::max<int64_t>(lo, t - ap.window + 1);
    return lo;
}
// The first key of a cached query (one sequence: the window only).
static int64_t first_key(int64_t t, const attn_params& ap) { return ap.window > 0 ? std::max<int64_t>(0, t - ap.window + 1) : 0; }
static double capped(double s, const attn_params& ap) { return ap.softcap > 0 ? ap.softcap * std::tanh(s / ap.softcap) : s; }

// softmax probabilities of query (b, h, t) over keys 0..t (zero outside its window), and their
// log-sum-exp; raw[j] = the score before the cap
static double attn_probs(std::vector<double>& p, std::vector<double>& raw, const float* q, const float* k, int64_t b,
                         int64_t t, int64_t h, int64_t T, int64_t Hq, int64_t Hkv, int64_t hd, const attn_params& ap) {
    const int64_t kh = h / (Hq / Hkv), lo = first_key(b, t, T, ap);
    p.assign(t + 1, 0.0);
    raw.assign(t + 1, 0.0);
    double m = -INFINITY;
    for (int64_t j = lo; j <= t; j++) {
        double s = 0;
        for (int64_t d = 0; d < hd; d++) s += (double)q[((b * T + t) * Hq + h) * hd + d] * k[((b * T + j) * Hkv + kh) * hd + d];
        raw[j] = s * ap.scale;
        p[j] = capped(raw[j], ap);
        m = std::max(m, p[j]);
    }
    double z = 0;
    for (int64_t j = lo; j <= t; j++) z += (p[j] = std::exp(p[j] - m));
    for (int64_t j = lo; j <= t; j++) p[j] /= z;
    return m + std::log(z);
}

static void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v, int64_t B,
                              int64_t T, int64_t Hq, int64_t Hkv, int64_t hd, const attn_params& ap) {
    std::vector<double> p, raw;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < Hq; h++)
            for (int64_t t = 0; t < T; t++) {
                lse[(b * Hq + h) * T + t] = (float)attn_probs(p, raw, q, k, b, t, h, T, Hq, Hkv, hd, ap);
                const int64_t kh = h / (Hq / Hkv);
                for (int64_t d = 0; d < hd; d++) {
                    double s = 0;
                    for (int64_t j = 0; j <= t; j++) s += p[j] * v[((b * T + j) * Hkv + kh) * hd + d];
                    out[((b * T + t) * Hq + h) * hd + d] = (float)s;
                }
            }
}

static void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float*, const float*,
                               const float* q, const float* k, const float* v, int64_t B, int64_t T, int64_t Hq,
                               int64_t Hkv, int64_t hd, const attn_params& ap) {
    std::vector<double> p, raw, dp;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < Hq; h++)
            for (int64_t t = 0; t < T; t++) {
                attn_probs(p, raw, q, k, b, t, h, T, Hq, Hkv, hd, ap);
                const int64_t kh = h / (Hq / Hkv);
                const float* dO = dout + ((b * T + t) * Hq + h) * hd;
                dp.assign(t + 1, 0.0);
                double sum = 0;
                for (int64_t j = 0; j <= t; j++) {
                    const float* vj = v + ((b * T + j) * Hkv + kh) * hd;
                    for (int64_t d = 0; d < hd; d++) dp[j] += (double)dO[d] * vj[d];
                    sum += p[j] * dp[j];
                }
                for (int64_t j = 0; j <= t; j++) {
                    double ds = p[j] * (dp[j] - sum) * ap.scale;  // ∂L/∂(q·k)
                    if (ap.softcap > 0) {
                        const double th = std::tanh(raw[j] / ap.softcap);
                        ds *= 1.0 - th * th;
                    }
                    const int64_t ko = ((b * T + j) * Hkv + kh) * hd, qo = ((b * T + t) * Hq + h) * hd;
                    for (int64_t d = 0; d < hd; d++) {
                        dv[ko + d] += (float)(p[j] * dO[d]);
                        dq[qo + d] += (float)(ds * k[ko + d]);
                        dk[ko + d] += (float)(ds * q[qo + d]);
                    }
                }
            }
}

static void attention_forward_kv(float* out, const float* q, const float* kc, const float* vc, int64_t n,
                                 int64_t pos0, int64_t Hq, int64_t Hkv, int64_t hd, const attn_params& ap) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t h = 0; h < Hq; h++) {
            const int64_t t = pos0 + i, kh = h / (Hq / Hkv), lo = first_key(t, ap);
            std::vector<double> p(t + 1, 0.0);
            double m = -INFINITY, z = 0;
            for (int64_t j = lo; j <= t; j++) {
                double s = 0;
                for (int64_t d = 0; d < hd; d++) s += (double)q[(i * Hq + h) * hd + d] * kc[(j * Hkv + kh) * hd + d];
                m = std::max(m, p[j] = capped(s * ap.scale, ap));
            }
            for (int64_t j = lo; j <= t; j++) z += (p[j] = std::exp(p[j] - m));
            for (int64_t d = 0; d < hd; d++) {
                double s = 0;
                for (int64_t j = lo; j <= t; j++) s += p[j] / z * vc[(j * Hkv + kh) * hd + d];
                out[(i * Hq + h) * hd + d] = (float)s;
            }
        }
}

static void swiglu_forward(float* h, const float* g, const float* u, int64_t n) {
    for (int64_t i = 0; i < n; i++) h[i] = (float)((double)g[i] / (1.0 + std::exp(-(double)g[i])) * u[i]);
}

static void swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const double s = 1.0 / (1.0 + std::exp(-(double)g[i]));
        du[i] += (float)(dh[i] * g[i] * s);
        dg[i] += (float)(dh[i] * u[i] * (s + g[i] * s * (1.0 - s)));  // d/dg g·σ(g) = σ + g σ (1-σ)
    }
}

// gelu_pytorch_tanh(x) = 0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³)))
static double gelu_tanh(double x) { return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x))); }

static void geglu_forward(float* h, const float* g, const float* u, int64_t n) {
    for (int64_t i = 0; i < n; i++) h[i] = (float)(gelu_tanh(g[i]) * u[i]);
}

static void geglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n) {
    const double c = std::sqrt(2.0 / M_PI);
    for (int64_t i = 0; i < n; i++) {
        const double x = g[i], th = std::tanh(c * (x + 0.044715 * x * x * x));
        const double dgelu = 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * c * (1.0 + 3 * 0.044715 * x * x);
        du[i] += (float)(dh[i] * gelu_tanh(x));
        dg[i] += (float)(dh[i] * u[i] * dgelu);
    }
}

static void scale(float* x, int64_t n, float s) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)((double)x[i] * s);
}

static void softcap(float* x, int64_t n, float cap) {
    for (int64_t i = 0; i < n; i++) x[i] = (float)(cap * std::tanh((double)x[i] / cap));
}

static void add(float* y, const float* x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

static void zero(float* x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = 0.0f;
}
static void copy(float* dst, const float* src, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = src[i];
}

static void dropout(float* out, const float* x, int64_t n, float p, uint64_t key) {
    for (int64_t i = 0; i < n; i++) {
        uint64_t z = key + (uint64_t)i;
        const double u = (double)(rng_splitmix(&z) >> 11) * 0x1.0p-53;
        out[i] = u < p ? 0.0f : (float)((double)x[i] / (1.0 - (double)p));
    }
}

static void embedding_forward(float* x, const int32_t* tokens, const float* table, int64_t N, int64_t D) {
    for (int64_t n = 0; n < N; n++)
        for (int64_t i = 0; i < D; i++) x[n * D + i] = table[(int64_t)tokens[n] * D + i];
}

static void embedding_forward_bf16(float* x, const int32_t* tokens, const uint16_t* table, int64_t N, int64_t D) {
    for (int64_t n = 0; n < N; n++)
        for (int64_t i = 0; i < D; i++) x[n * D + i] = bf16_to_f32(table[(int64_t)tokens[n] * D + i]);
}

static void embedding_forward_q(float* x, const int32_t* tokens, const uint8_t* table, uint32_t type, int64_t N,
                                int64_t D) {
    const size_t row_bytes = ggml_nbytes((ggml_type)type, D);
    for (int64_t n = 0; n < N; n++) ggml_dequantize((ggml_type)type, table + (size_t)tokens[n] * row_bytes, x + n * D, D);
}

static void embedding_backward(float* dtable, const float* dx, const int32_t* tokens, int64_t N, int64_t D) {
    for (int64_t n = 0; n < N; n++)
        for (int64_t i = 0; i < D; i++) dtable[(int64_t)tokens[n] * D + i] += dx[n * D + i];
}

static void embedding_backward_rows(float* grad, const int32_t* row_of, const float* dx, const int32_t* tokens,
                                    int64_t N, int64_t D) {
    for (int64_t n = 0; n < N; n++)
        for (int64_t i = 0; i < D; i++) grad[(int64_t)row_of[tokens[n]] * D + i] += dx[n * D + i];
}

static double lmhead_xent(float* dx, float* dw, const float* x, const float* w, const void* w16, uint32_t w16_type,
                          const int32_t* targets, int64_t N, int64_t D, int64_t V, float grad_scale, float*, int64_t,
                          float cap) {
    std::vector<float> wf;
    if (!w && w16_type == 30) wf = widen((const uint16_t*)w16, V * D), w = wf.data();
    if (!w) wf.resize(V * D), ggml_dequantize((ggml_type)w16_type, (const uint8_t*)w16, wf.data(), V * D), w = wf.data();
    std::vector<double> z(V), th(V);
    double total = 0;
    for (int64_t n = 0; n < N; n++) {
        if (targets[n] < 0) continue;
        double m = -INFINITY, s = 0;
        for (int64_t v = 0; v < V; v++) {
            double acc = 0;
            for (int64_t i = 0; i < D; i++) acc += (double)x[n * D + i] * w[v * D + i];
            th[v] = cap > 0 ? std::tanh(acc / cap) : 0.0;
            m = std::max(m, z[v] = cap > 0 ? cap * th[v] : acc);
        }
        for (int64_t v = 0; v < V; v++) s += std::exp(z[v] - m);
        total += m + std::log(s) - z[targets[n]];
        for (int64_t v = 0; v < V; v++) {
            double d = (std::exp(z[v] - m) / s - (v == targets[n] ? 1.0 : 0.0)) * grad_scale;
            if (cap > 0) d *= 1.0 - th[v] * th[v];
            for (int64_t i = 0; i < D; i++) {
                if (dx) dx[n * D + i] += (float)(d * w[v * D + i]);
                if (dw) dw[v * D + i] += (float)(d * x[n * D + i]);
            }
        }
    }
    return total;
}

static void lora_fold(float* w, const float* A, const float* B, int64_t out, int64_t in, int64_t r, float scale) {
    for (int64_t o = 0; o < out; o++)
        for (int64_t i = 0; i < in; i++) {
            double s = 0;
            for (int64_t k = 0; k < r; k++) s += (double)B[o * r + k] * A[k * in + i];
            w[o * in + i] = (float)(w[o * in + i] + scale * s);
        }
}

static void adamw_one(float& p, double g, float& m, float& v, const adamw_hparams& h, int64_t step, bool decay) {
    const double md = h.beta1 * m + (1 - h.beta1) * g, vd = h.beta2 * v + (1 - h.beta2) * g * g;
    const double mhat = md / (1 - std::pow(h.beta1, (double)step)), vhat = vd / (1 - std::pow(h.beta2, (double)step));
    double pd = p;
    if (decay) pd -= h.lr * h.weight_decay * pd;
    p = (float)(pd - h.lr * mhat / (std::sqrt(vhat) + h.eps));
    m = (float)md;
    v = (float)vd;
}

static void adamw_update(float* p, const float* g, float* m, float* v, int64_t n, const adamw_hparams& h,
                         int64_t step, bool decay, float grad_scale) {
    for (int64_t i = 0; i < n; i++) adamw_one(p[i], (double)g[i] * grad_scale, m[i], v[i], h, step, decay);
}

static void adamw_update_rows(float* p, const float* grad, const int32_t* row_of, float* m, float* v, int64_t rows,
                              int64_t width, const adamw_hparams& h, int64_t step, bool decay, float grad_scale) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < width; i++) {
            const double g = row_of[r] >= 0 ? (double)grad[(int64_t)row_of[r] * width + i] * grad_scale : 0.0;
            adamw_one(p[r * width + i], g, m[r * width + i], v[r * width + i], h, step, decay);
        }
}

static double sum_of_squares(const float* g, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    return s;
}

static void fill_normal(float* dst, uint16_t* dst16, int64_t n, double std, uint64_t seed, uint64_t stream) {
    const int64_t block = (int64_t)1 << 20;
    rng r;
    for (int64_t i = 0; i < n; i++) {
        if (i % block == 0)
            rng_init(&r, seed ^ (0x9e3779b97f4a7c15ull * (stream + 1)) ^ (0xbf58476d1ce4e5b9ull * (uint64_t)(i / block + 1)));
        const float x = (float)(rng_normal(&r) * std);
        if (dst16) dst16[i] = f32_to_bf16(x);
        else dst[i] = x;
    }
}


static void fill(float* dst, int64_t n, float value) {
    for (int64_t i = 0; i < n; i++) dst[i] = value;
}

static void bf16_to_f32(float* dst, const uint16_t* src, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = lisa::bf16_to_f32(src[i]);
}

static void f32_to_bf16(uint16_t* dst, const float* src, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = lisa::f32_to_bf16(src[i]);
}

}  // namespace ref

const backend& backend_ref() {
    static const backend b = {
        "ref",
        ref::set_threads,
        ref::reserve,
        ref::gemm,
        ref::linear_forward,
        ref::linear_backward,
        ref::linear_forward_bf16,
        ref::linear_backward_bf16,
        ref::linear_forward_q,
        ref::linear_backward_q,
        ref::rmsnorm_forward,
        ref::rmsnorm_backward,
        ref::rope_forward,
        ref::rope_backward,
        ref::rope_tables,
        ref::attention_forward,
        ref::attention_backward,
        ref::attention_forward_kv,
        ref::swiglu_forward,
        ref::swiglu_backward,
        ref::geglu_forward,
        ref::geglu_backward,
        ref::add,
        ref::scale,
        ref::softcap,
        ref::zero,
        ref::copy,
        ref::dropout,
        ref::embedding_forward,
        ref::embedding_forward_bf16,
        ref::embedding_forward_q,
        ref::embedding_backward,
        ref::embedding_backward_rows,
        ref::lmhead_xent,
        ref::lora_fold,
        ref::adamw_update,
        ref::adamw_update_rows,
        ref::sum_of_squares,
        ref::fill_normal,
        ref::fill,
        ref::bf16_to_f32,
        ref::f32_to_bf16,
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
    if (device_memory_checked()) return backend_checked(b, 1);
    return b;
}

}  // namespace lisa
