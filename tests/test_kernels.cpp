// Kernel tests: every backward against central finite differences of its forward, and the fast
// kernels against slow, obviously-correct references. Loss for FD: L = Σ r ⊙ forward(x) with a
// fixed random r, so the analytic gradient is backward(dy = r).
// Tolerance: max |analytic - numeric| / max |numeric| <= 5e-3 (fp32 forward, eps = 1e-2; the
// FD truncation error is O(eps²) and fp32 rounding adds ~1e-5 relative).
#include <functional>

#include "core/rng.h"
#include "kernels/cpu/kernels.h"
#include "test_util.h"

using namespace lisa;

static std::vector<float> randv(size_t n, uint64_t seed, float scale = 1.0f) {
    rng r;
    rng_init(&r, seed);
    std::vector<float> v(n);
    for (auto& x : v) x = (float)rng_normal(&r) * scale;
    return v;
}

static double dotd(const std::vector<float>& a, const std::vector<float>& b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); i++) s += (double)a[i] * b[i];
    return s;
}

// Numeric gradient of loss() with respect to every element of x.
static std::vector<float> numeric_grad(std::vector<float>& x, const std::function<double()>& loss, float eps = 1e-2f) {
    std::vector<float> g(x.size());
    for (size_t i = 0; i < x.size(); i++) {
        float old = x[i];
        x[i] = old + eps;
        double lp = loss();
        x[i] = old - eps;
        double lm = loss();
        x[i] = old;
        g[i] = (float)((lp - lm) / (2.0 * eps));
    }
    return g;
}

#define EXPECT_GRAD_NEAR(analytic, numeric, what)                                                          \
    do {                                                                                                   \
        ASSERT_EQ((analytic).size(), (numeric).size());                                                    \
        double e_ = lisa_test::rel_err((analytic).data(), (numeric).data(), (analytic).size());            \
        EXPECT_LT(e_, 5e-3) << what;                                                                       \
    } while (0)

TEST(kernels, linear_backward_matches_finite_differences) {
    const int64_t N = 5, in = 7, out = 6;
    auto x = randv(N * in, 1), w = randv(out * in, 2), b = randv(out, 3), r = randv(N * out, 4);
    std::vector<float> y(N * out);
    auto loss = [&] {
        linear_forward(y.data(), x.data(), w.data(), b.data(), N, in, out);
        return dotd(y, r);
    };
    std::vector<float> dx(N * in, 0.0f), dw(out * in, 0.0f), db(out, 0.0f);
    linear_backward(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(), N, in, out);
    EXPECT_GRAD_NEAR(dx, numeric_grad(x, loss), "linear dx");
    EXPECT_GRAD_NEAR(dw, numeric_grad(w, loss), "linear dw");
    EXPECT_GRAD_NEAR(db, numeric_grad(b, loss), "linear db");
    // backward accumulates: a second call doubles the gradient
    std::vector<float> dw2 = dw;
    linear_backward(nullptr, dw2.data(), nullptr, r.data(), x.data(), w.data(), N, in, out);
    for (size_t i = 0; i < dw.size(); i++) ASSERT_FLOAT_EQ(dw2[i], 2 * dw[i]);
    // forward against the plain triple loop
    linear_forward(y.data(), x.data(), w.data(), b.data(), N, in, out);
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < out; o++) {
            double s = b[o];
            for (int64_t i = 0; i < in; i++) s += (double)x[n * in + i] * w[o * in + i];
            EXPECT_NEAR(y[n * out + o], s, 1e-5);
        }
}

TEST(kernels, rmsnorm_backward_matches_finite_differences) {
    const int64_t N = 4, D = 9;
    auto x = randv(N * D, 5), w = randv(D, 6), r = randv(N * D, 7);
    std::vector<float> y(N * D), rstd(N);
    auto loss = [&] {
        rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, D, 1e-5f);
        return dotd(y, r);
    };
    loss();
    std::vector<float> dx(N * D, 0.0f), dw(D, 0.0f);
    rmsnorm_backward(dx.data(), dw.data(), r.data(), x.data(), w.data(), rstd.data(), N, D);
    EXPECT_GRAD_NEAR(dx, numeric_grad(x, loss), "rmsnorm dx");
    EXPECT_GRAD_NEAR(dw, numeric_grad(w, loss), "rmsnorm dw");
    // forward against the definition
    loss();
    for (int64_t n = 0; n < N; n++) {
        double ss = 0;
        for (int64_t i = 0; i < D; i++) ss += (double)x[n * D + i] * x[n * D + i];
        double rs = 1.0 / std::sqrt(ss / D + 1e-5);
        for (int64_t i = 0; i < D; i++) EXPECT_NEAR(y[n * D + i], w[i] * x[n * D + i] * rs, 1e-5);
    }
}

TEST(kernels, rope_backward_matches_finite_differences) {
    const int64_t B = 2, T = 5, H = 3, hd = 6;
    std::vector<float> inv = {1.0f, 0.3f, 0.05f}, cs(T * hd / 2), sn(T * hd / 2);
    rope_tables(cs.data(), sn.data(), inv.data(), T, hd);
    auto x = randv(B * T * H * hd, 8), r = randv(B * T * H * hd, 9);
    auto loss = [&] {
        std::vector<float> y = x;
        rope_forward(y.data(), cs.data(), sn.data(), B, T, H, hd);
        return dotd(y, r);
    };
    std::vector<float> dx = r;
    rope_backward(dx.data(), cs.data(), sn.data(), B, T, H, hd);
    EXPECT_GRAD_NEAR(dx, numeric_grad(x, loss), "rope dx");
    // rotate-half convention: element i pairs with i + hd/2
    std::vector<float> y = x;
    rope_forward(y.data(), cs.data(), sn.data(), B, T, H, hd);
    int64_t t = 3, i = 1;
    float a = t * inv[i];
    const float* v = x.data() + ((0 * T + t) * H + 0) * hd;
    EXPECT_NEAR(y[((0 * T + t) * H) * hd + i], v[i] * std::cos(a) - v[i + 3] * std::sin(a), 1e-6);
    EXPECT_NEAR(y[((0 * T + t) * H) * hd + i + 3], v[i + 3] * std::cos(a) + v[i] * std::sin(a), 1e-6);
}

// plain reference: full score matrix, causal mask, softmax, weighted sum
static std::vector<float> attention_reference(const std::vector<float>& q, const std::vector<float>& k,
                                              const std::vector<float>& v, int64_t B, int64_t T, int64_t Hq,
                                              int64_t Hkv, int64_t hd) {
    std::vector<float> out(B * T * Hq * hd, 0.0f);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < Hq; h++) {
            int64_t kh = h / (Hq / Hkv);
            for (int64_t t = 0; t < T; t++) {
                std::vector<double> s(t + 1);
                double m = -1e300, z = 0;
                for (int64_t j = 0; j <= t; j++) {
                    double d = 0;
                    for (int64_t i = 0; i < hd; i++)
                        d += (double)q[((b * T + t) * Hq + h) * hd + i] * k[((b * T + j) * Hkv + kh) * hd + i];
                    s[j] = d / std::sqrt((double)hd);
                    m = std::max(m, s[j]);
                }
                for (auto& e : s) z += (e = std::exp(e - m));
                for (int64_t j = 0; j <= t; j++)
                    for (int64_t i = 0; i < hd; i++)
                        out[((b * T + t) * Hq + h) * hd + i] += (float)(s[j] / z * v[((b * T + j) * Hkv + kh) * hd + i]);
            }
        }
    return out;
}

TEST(kernels, attention_matches_reference_and_finite_differences_with_gqa) {
    const int64_t B = 2, T = 5, Hq = 4, Hkv = 2, hd = 4;
    auto q = randv(B * T * Hq * hd, 10), k = randv(B * T * Hkv * hd, 11), v = randv(B * T * Hkv * hd, 12),
         r = randv(B * T * Hq * hd, 13);
    std::vector<float> out(B * T * Hq * hd), lse(B * Hq * T);
    auto loss = [&] {
        attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), B, T, Hq, Hkv, hd);
        return dotd(out, r);
    };
    loss();
    auto ref = attention_reference(q, k, v, B, T, Hq, Hkv, hd);
    EXPECT_LT(lisa_test::rel_err(out.data(), ref.data(), out.size()), 1e-5);
    std::vector<float> dq(q.size(), 0.0f), dk(k.size(), 0.0f), dv(v.size(), 0.0f);
    attention_backward(dq.data(), dk.data(), dv.data(), r.data(), out.data(), lse.data(), q.data(), k.data(), v.data(),
                       B, T, Hq, Hkv, hd);
    EXPECT_GRAD_NEAR(dq, numeric_grad(q, loss), "attention dq");
    EXPECT_GRAD_NEAR(dk, numeric_grad(k, loss), "attention dk");
    EXPECT_GRAD_NEAR(dv, numeric_grad(v, loss), "attention dv");
}

TEST(kernels, swiglu_backward_matches_finite_differences) {
    const int64_t n = 23;
    auto g = randv(n, 14, 2.0f), u = randv(n, 15), r = randv(n, 16);
    std::vector<float> h(n);
    auto loss = [&] {
        swiglu_forward(h.data(), g.data(), u.data(), n);
        return dotd(h, r);
    };
    std::vector<float> dg(n, 0.0f), du(n, 0.0f);
    swiglu_backward(dg.data(), du.data(), r.data(), g.data(), u.data(), n);
    EXPECT_GRAD_NEAR(dg, numeric_grad(g, loss), "swiglu dg");
    EXPECT_GRAD_NEAR(du, numeric_grad(u, loss), "swiglu du");
}

TEST(kernels, embedding_backward_matches_finite_differences_with_repeated_tokens) {
    const int64_t N = 6, D = 3, V = 4;
    std::vector<int32_t> tok = {1, 3, 1, 0, 1, 3};
    auto table = randv(V * D, 17), r = randv(N * D, 18);
    std::vector<float> x(N * D);
    auto loss = [&] {
        embedding_forward(x.data(), tok.data(), table.data(), N, D);
        return dotd(x, r);
    };
    std::vector<float> dt(V * D, 0.0f);
    embedding_backward(dt.data(), r.data(), tok.data(), N, D);
    EXPECT_GRAD_NEAR(dt, numeric_grad(table, loss), "embedding dtable");
}

TEST(kernels, lmhead_xent_matches_reference_and_finite_differences) {
    const int64_t N = 7, D = 5, V = 11;
    auto x = randv(N * D, 19), w = randv(V * D, 20);
    std::vector<int32_t> tgt = {3, -100, 10, 0, -100, 7, 3};
    const float scale = 0.37f;
    for (int64_t chunk : {1, 3, 7}) {  // chunking must not change anything
        std::vector<float> scratch(chunk * V + 2 * chunk * D);
        auto loss = [&] {
            return scale * lmhead_xent_forward_backward(nullptr, nullptr, x.data(), w.data(), tgt.data(), N, D, V,
                                                        0.0f, scratch.data(), chunk);
        };
        // reference loss: explicit logits, log-softmax, in double
        double ref = 0;
        for (int64_t n = 0; n < N; n++) {
            if (tgt[n] < 0) continue;
            std::vector<double> lg(V);
            double m = -1e300, z = 0;
            for (int64_t v = 0; v < V; v++) {
                for (int64_t i = 0; i < D; i++) lg[v] += (double)x[n * D + i] * w[v * D + i];
                m = std::max(m, lg[v]);
            }
            for (double l : lg) z += std::exp(l - m);
            ref += m + std::log(z) - lg[tgt[n]];
        }
        EXPECT_NEAR(loss() / scale, ref, 1e-4 * std::fabs(ref)) << "chunk " << chunk;
        std::vector<float> dx(N * D, 0.0f), dw(V * D, 0.0f);
        double l = lmhead_xent_forward_backward(dx.data(), dw.data(), x.data(), w.data(), tgt.data(), N, D, V, scale,
                                                scratch.data(), chunk);
        EXPECT_NEAR(l, ref, 1e-4 * std::fabs(ref));
        EXPECT_GRAD_NEAR(dx, numeric_grad(x, loss), "lmhead dx, chunk " << chunk);
        EXPECT_GRAD_NEAR(dw, numeric_grad(w, loss), "lmhead dw, chunk " << chunk);
        for (int64_t i = 0; i < D; i++) {  // ignored rows get no gradient
            EXPECT_EQ(dx[1 * D + i], 0.0f);
            EXPECT_EQ(dx[4 * D + i], 0.0f);
        }
    }
}
