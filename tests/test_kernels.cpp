// The kernel harness (in the spirit of ggml's test-backend-ops): every kernel of the backend
// interface (src/kernels/kernels.h)
//   1. of every backend, backward against central finite differences of its forward, and
//      forward against independent spot checks (the definition, in double);
//   2. of every fast backend, against the reference backend on random shapes (seeded), including
//      shapes that cross the fast kernels' block sizes.
// FD loss: L = Σ r ⊙ forward(x) with a fixed random r, so the analytic gradient is backward(dy = r).
// Tolerances: FD max |analytic - numeric| / max |numeric| <= 5e-3 (fp32 forward, eps = 1e-2;
// truncation O(eps²), fp32 rounding ~1e-5); fast vs reference <= 2e-5 relative (fp32 against
// double accumulation), bit-exact where the kernel is a fixed stream (dropout masks, init).
#include <cstring>
#include <functional>

#include "core/dtype.h"
#include "core/rng.h"
#include "kernels/kernels.h"
#include "kernels/vulkan/vulkan.h"
#include "staging.h"
#include "vulkan_validation.h"
#include "test_util.h"

using namespace lisa;
using lisa_test::fvec;
using lisa_test::hvec;
using lisa_test::ivec;

static fvec randv(size_t n, uint64_t seed, float scale = 1.0f) {
    rng r;
    rng_init(&r, seed);
    fvec v(n);
    for (auto& x : v) x = (float)rng_normal(&r) * scale;
    return v;
}

static hvec<uint16_t> randv16(size_t n, uint64_t seed) {
    fvec f = randv(n, seed);
    hvec<uint16_t> v(n);
    for (size_t i = 0; i < n; i++) v[i] = f32_to_bf16(f[i]);
    return v;
}

static double dotd(const fvec& a, const fvec& b) {
    double s = 0;
    for (size_t i = 0; i < a.size(); i++) s += (double)a[i] * b[i];
    return s;
}

// Numeric gradient of loss() with respect to every element of x.
static fvec numeric_grad(fvec& x, const std::function<double()>& loss, float eps = 1e-2f) {
    fvec g(x.size());
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

#define EXPECT_CLOSE(got, want, tol, what)                                                              \
    do {                                                                                                \
        ASSERT_EQ((got).size(), (want).size());                                                         \
        EXPECT_LT(lisa_test::rel_err((got).data(), (want).data(), (got).size()), tol) << what;          \
    } while (0)

// ============================================================================ 1. each backend

// The backends under test: the CPU ones, and Vulkan where this build and machine have a usable
// device (lavapipe in CI), under the validation layer (tests/vulkan_validation.h): a test on Vulkan
// also fails if the layer reported anything.
static std::vector<const char*> backends_under_test(bool with_ref) {
    lisa_test::vulkan_validation_on();  // before the first Vulkan call
    std::vector<const char*> v;
    if (with_ref) v.push_back("ref");
    v.push_back("cpu");
    std::string why;
    if (vulkan_built())
        for (const auto& d : vulkan_devices(&why))
            if (d.usable) {
                v.push_back("vulkan");
                break;
            }
    return v;
}

static void expect_no_validation_messages(const char* backend_name) {
    if (std::string(backend_name) != "vulkan") return;
    backend_by_name("vulkan")->sync();
    EXPECT_EQ(vulkan_validation_messages(), 0) << "the Vulkan validation layer reported problems (printed above)";
}

class kernels : public ::testing::TestWithParam<const char*> {
  protected:
    const backend& K = *lisa_test::staged(GetParam());
    void           TearDown() override { expect_no_validation_messages(GetParam()); }
};

TEST_P(kernels, table_is_complete) {
    // every entry of the interface is implemented (a missing one would be a null pointer)
    const size_t n = (sizeof(backend) - sizeof(const char*)) / sizeof(void (*)());
    const char* p = (const char*)&K + sizeof(const char*);
    for (size_t i = 0; i < n; i++) {
        void (*f)() = nullptr;
        std::memcpy(&f, p + i * sizeof f, sizeof f);
        EXPECT_NE(f, nullptr) << "entry " << i << " of backend " << K.name;
    }
}

TEST_P(kernels, linear_backward_matches_finite_differences) {
    const int64_t N = 5, in = 7, out = 6;
    auto x = randv(N * in, 1), w = randv(out * in, 2), b = randv(out, 3), r = randv(N * out, 4);
    fvec y(N * out);
    auto loss = [&] {
        K.linear_forward(y.data(), x.data(), w.data(), b.data(), N, in, out);
        return dotd(y, r);
    };
    fvec dx(N * in, 0.0f), dw(out * in, 0.0f), db(out, 0.0f);
    K.linear_backward(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(), N, in, out);
    EXPECT_GRAD_NEAR(dx, numeric_grad(x, loss), "linear dx");
    EXPECT_GRAD_NEAR(dw, numeric_grad(w, loss), "linear dw");
    EXPECT_GRAD_NEAR(db, numeric_grad(b, loss), "linear db");
    // backward accumulates: a second call doubles the gradient
    fvec dw2 = dw;
    K.linear_backward(nullptr, dw2.data(), nullptr, r.data(), x.data(), w.data(), N, in, out);
    for (size_t i = 0; i < dw.size(); i++) ASSERT_FLOAT_EQ(dw2[i], 2 * dw[i]);
    // forward against the plain triple loop
    K.linear_forward(y.data(), x.data(), w.data(), b.data(), N, in, out);
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < out; o++) {
            double s = b[o];
            for (int64_t i = 0; i < in; i++) s += (double)x[n * in + i] * w[o * in + i];
            EXPECT_NEAR(y[n * out + o], s, 1e-5);
        }
}

TEST_P(kernels, rmsnorm_backward_matches_finite_differences) {
    const int64_t N = 4, D = 9;
    for (float offset : {0.0f, 1.0f}) {  // Llama: w; Gemma: (1 + w)
        auto x = randv(N * D, 5), w = randv(D, 6), r = randv(N * D, 7);
        fvec y(N * D), rstd(N);
        auto loss = [&] {
            K.rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, D, 1e-5f, offset);
            return dotd(y, r);
        };
        loss();
        fvec dx(N * D, 0.0f), dw(D, 0.0f);
        K.rmsnorm_backward(dx.data(), dw.data(), r.data(), x.data(), w.data(), rstd.data(), N, D, offset);
        EXPECT_GRAD_NEAR(dx, numeric_grad(x, loss), "rmsnorm dx, offset " << offset);
        EXPECT_GRAD_NEAR(dw, numeric_grad(w, loss), "rmsnorm dw, offset " << offset);
        loss();  // forward against the definition
        for (int64_t n = 0; n < N; n++) {
            double ss = 0;
            for (int64_t i = 0; i < D; i++) ss += (double)x[n * D + i] * x[n * D + i];
            double rs = 1.0 / std::sqrt(ss / D + 1e-5);
            for (int64_t i = 0; i < D; i++) EXPECT_NEAR(y[n * D + i], (offset + w[i]) * x[n * D + i] * rs, 1e-5);
        }
    }
}

TEST_P(kernels, rope_backward_matches_finite_differences) {
    const int64_t B = 2, T = 5, H = 3, hd = 6;
    fvec inv = {1.0f, 0.3f, 0.05f}, cs(T * hd / 2), sn(T * hd / 2);
    K.rope_tables(cs.data(), sn.data(), inv.data(), T, hd, 1.0f);
    auto x = randv(B * T * H * hd, 8), r = randv(B * T * H * hd, 9);
    auto loss = [&] {
        fvec y = x;
        K.rope_forward(y.data(), cs.data(), sn.data(), nullptr, B, T, H, hd, hd);
        return dotd(y, r);
    };
    fvec dx = r;
    K.rope_backward(dx.data(), cs.data(), sn.data(), nullptr, B, T, H, hd, hd);
    EXPECT_GRAD_NEAR(dx, numeric_grad(x, loss), "rope dx");
    // rotate-half convention: element i pairs with i + hd/2
    fvec y = x;
    K.rope_forward(y.data(), cs.data(), sn.data(), nullptr, B, T, H, hd, hd);
    int64_t t = 3, i = 1;
    float a = t * inv[i];
    const float* v = x.data() + ((0 * T + t) * H + 0) * hd;
    EXPECT_NEAR(y[((0 * T + t) * H) * hd + i], v[i] * std::cos(a) - v[i + 3] * std::sin(a), 1e-6);
    EXPECT_NEAR(y[((0 * T + t) * H) * hd + i + 3], v[i + 3] * std::cos(a) + v[i] * std::sin(a), 1e-6);
}

// Partial rotary (Phi-3: the first rot values of a head rotate, halves of rot; the rest pass) with
// tables scaled by longrope's attention factor: the backward is the scaled map's transpose.
TEST_P(kernels, partial_scaled_rope_backward_matches_finite_differences) {
    const int64_t B = 2, T = 4, H = 2, hd = 10, rot = 6;
    const float scale = 1.3f;
    fvec inv = {1.0f, 0.3f, 0.05f}, cs(T * rot / 2), sn(T * rot / 2);
    K.rope_tables(cs.data(), sn.data(), inv.data(), T, rot, scale);
    auto x = randv(B * T * H * hd, 18), r = randv(B * T * H * hd, 19);
    auto loss = [&] {
        fvec y = x;
        K.rope_forward(y.data(), cs.data(), sn.data(), nullptr, B, T, H, hd, rot);
        return dotd(y, r);
    };
    fvec dx = r;
    K.rope_backward(dx.data(), cs.data(), sn.data(), nullptr, B, T, H, hd, rot);
    EXPECT_GRAD_NEAR(dx, numeric_grad(x, loss), "partial rope dx");
    fvec y = x;
    K.rope_forward(y.data(), cs.data(), sn.data(), nullptr, B, T, H, hd, rot);
    const int64_t t = 2, h = 1, i = 2;  // pairs i and i + rot/2, both scaled; values past rot untouched
    const float a = t * inv[i];
    const float* v = x.data() + ((1 * T + t) * H + h) * hd;
    const float* w = y.data() + ((1 * T + t) * H + h) * hd;
    EXPECT_NEAR(w[i], scale * (v[i] * std::cos(a) - v[i + 3] * std::sin(a)), 1e-5);
    EXPECT_NEAR(w[i + 3], scale * (v[i + 3] * std::cos(a) + v[i] * std::sin(a)), 1e-5);
    for (int64_t k = rot; k < hd; k++) EXPECT_EQ(w[k], v[k]) << "pass-through value " << k;
}

// Plain causal attention (1/sqrt(hd)), then Gemma's knobs: another scale, soft-capped scores and a
// sliding window shorter than the sequence.
TEST_P(kernels, attention_backward_matches_finite_differences_with_gqa_window_and_softcap) {
    const int64_t B = 2, T = 5, Hq = 4, Hkv = 2, hd = 4;
    const attn_params variants[] = {{0.5f, 0.0f, 0}, {0.8f, 1.5f, 2}, {0.5f, 0.0f, 3}};
    for (const attn_params& ap : variants) {
        auto q = randv(B * T * Hq * hd, 10), k = randv(B * T * Hkv * hd, 11), v = randv(B * T * Hkv * hd, 12),
             r = randv(B * T * Hq * hd, 13);
        fvec out(B * T * Hq * hd), lse(B * Hq * T);
        auto loss = [&] {
            K.attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), B, T, Hq, Hkv, hd, ap);
            return dotd(out, r);
        };
        loss();
        // query (b=1, h=3, t=t0) by hand: softmax over keys max(0, t0-window+1)..t0 of kv head 1
        for (int t0 : {2, 4}) {
            const int lo = ap.window > 0 ? std::max<int>(0, t0 - (int)ap.window + 1) : 0;
            double s[5], m = -1e300, z = 0;
            for (int j = lo; j <= t0; j++) {
                s[j] = 0;
                for (int d = 0; d < hd; d++)
                    s[j] += (double)q[((1 * T + t0) * Hq + 3) * hd + d] * k[((1 * T + j) * Hkv + 1) * hd + d];
                s[j] *= ap.scale;
                if (ap.softcap > 0) s[j] = ap.softcap * std::tanh(s[j] / ap.softcap);
                m = std::max(m, s[j]);
            }
            for (int j = lo; j <= t0; j++) z += (s[j] = std::exp(s[j] - m));
            for (int d = 0; d < hd; d++) {
                double o = 0;
                for (int j = lo; j <= t0; j++) o += s[j] / z * v[((1 * T + j) * Hkv + 1) * hd + d];
                EXPECT_NEAR(out[((1 * T + t0) * Hq + 3) * hd + d], o, 1e-5) << "window " << ap.window << " t " << t0;
            }
        }
        fvec dq(q.size(), 0.0f), dk(k.size(), 0.0f), dv(v.size(), 0.0f);
        K.attention_backward(dq.data(), dk.data(), dv.data(), r.data(), out.data(), lse.data(), q.data(), k.data(),
                             v.data(), B, T, Hq, Hkv, hd, ap);
        EXPECT_GRAD_NEAR(dq, numeric_grad(q, loss), "attention dq, window " << ap.window << " cap " << ap.softcap);
        EXPECT_GRAD_NEAR(dk, numeric_grad(k, loss), "attention dk, window " << ap.window << " cap " << ap.softcap);
        EXPECT_GRAD_NEAR(dv, numeric_grad(v, loss), "attention dv, window " << ap.window << " cap " << ap.softcap);
    }
}

TEST_P(kernels, swiglu_backward_matches_finite_differences) {
    const int64_t n = 23;
    auto g = randv(n, 14, 2.0f), u = randv(n, 15), r = randv(n, 16);
    fvec h(n);
    auto loss = [&] {
        K.swiglu_forward(h.data(), g.data(), u.data(), n);
        return dotd(h, r);
    };
    fvec dg(n, 0.0f), du(n, 0.0f);
    K.swiglu_backward(dg.data(), du.data(), r.data(), g.data(), u.data(), n);
    EXPECT_GRAD_NEAR(dg, numeric_grad(g, loss), "swiglu dg");
    EXPECT_GRAD_NEAR(du, numeric_grad(u, loss), "swiglu du");
}

TEST_P(kernels, geglu_backward_matches_finite_differences) {
    const int64_t n = 23;
    auto g = randv(n, 14, 3.0f), u = randv(n, 15), r = randv(n, 16);
    fvec h(n);
    auto loss = [&] {
        K.geglu_forward(h.data(), g.data(), u.data(), n);
        return dotd(h, r);
    };
    fvec dg(n, 0.0f), du(n, 0.0f);
    K.geglu_backward(dg.data(), du.data(), r.data(), g.data(), u.data(), n);
    EXPECT_GRAD_NEAR(dg, numeric_grad(g, loss), "geglu dg");
    EXPECT_GRAD_NEAR(du, numeric_grad(u, loss), "geglu du");
    // forward against torch.nn.functional.gelu(x, approximate="tanh"), PyTorch 1.13 in float64
    const fvec xs = {-2.0f, 0.5f, 1.7f}, one = {1, 1, 1};
    const float want[] = {-0.0454023059f, 0.3457140098f, 1.6241058956f};
    fvec hv(3);
    K.geglu_forward(hv.data(), xs.data(), one.data(), 3);
    for (int i = 0; i < 3; i++) EXPECT_NEAR(hv[i], want[i], 2e-6) << xs[i];
}

TEST_P(kernels, scale_and_softcap_follow_their_definitions) {
    fvec x = {-30.0f, -1.0f, 0.0f, 0.25f, 7.0f}, y = x;
    K.scale(y.data(), 5, 2.5f);
    for (int i = 0; i < 5; i++) EXPECT_FLOAT_EQ(y[i], x[i] * 2.5f);
    y = x;
    K.softcap(y.data(), 5, 5.0f);
    for (int i = 0; i < 5; i++) EXPECT_NEAR(y[i], 5.0 * std::tanh(x[i] / 5.0), 1e-6);
}

TEST_P(kernels, embedding_backward_matches_finite_differences_with_repeated_tokens) {
    const int64_t N = 6, D = 3, V = 4;
    ivec tok = {1, 3, 1, 0, 1, 3};
    auto table = randv(V * D, 17), r = randv(N * D, 18);
    fvec x(N * D);
    auto loss = [&] {
        K.embedding_forward(x.data(), tok.data(), table.data(), N, D);
        return dotd(x, r);
    };
    fvec dt(V * D, 0.0f);
    K.embedding_backward(dt.data(), r.data(), tok.data(), N, D);
    EXPECT_GRAD_NEAR(dt, numeric_grad(table, loss), "embedding dtable");
    // the sparse form: the same rows, gathered
    ivec row_of = {2, 0, -1, 1};  // tokens 1, 3, 0 touched
    fvec rows(3 * D, 0.0f);
    K.embedding_backward_rows(rows.data(), row_of.data(), r.data(), tok.data(), N, D);
    for (int64_t t = 0; t < V; t++)
        for (int64_t i = 0; i < D; i++)
            EXPECT_FLOAT_EQ(row_of[t] < 0 ? 0.0f : rows[row_of[t] * D + i], dt[t * D + i]) << t;
}

TEST_P(kernels, lmhead_xent_matches_reference_and_finite_differences) {
    const int64_t N = 7, D = 5, V = 11;
    auto x = randv(N * D, 19), w = randv(V * D, 20);
    ivec tgt = {3, -100, 10, 0, -100, 7, 3};
    const float scale = 0.37f;
    for (float cap : {0.0f, 1.2f})  // final-logit soft-capping (Gemma) off and on
    for (int64_t chunk : {1, 3, 7}) {  // chunking must not change anything
        fvec scratch(lmhead_scratch_floats(chunk, D, V));
        auto loss = [&] {
            return scale * K.lmhead_xent(nullptr, nullptr, x.data(), w.data(), nullptr, 30, tgt.data(), N, D, V, 0.0f,
                                         scratch.data(), chunk, cap);
        };
        // reference loss: explicit logits, log-softmax, in double
        double ref = 0;
        for (int64_t n = 0; n < N; n++) {
            if (tgt[n] < 0) continue;
            std::vector<double> lg(V);
            double m = -1e300, z = 0;
            for (int64_t v = 0; v < V; v++) {
                for (int64_t i = 0; i < D; i++) lg[v] += (double)x[n * D + i] * w[v * D + i];
                if (cap > 0) lg[v] = cap * std::tanh(lg[v] / cap);
                m = std::max(m, lg[v]);
            }
            for (double l : lg) z += std::exp(l - m);
            ref += m + std::log(z) - lg[tgt[n]];
        }
        EXPECT_NEAR(loss() / scale, ref, 1e-4 * std::fabs(ref)) << "chunk " << chunk;
        fvec dx(N * D, 0.0f), dw(V * D, 0.0f);
        double l = K.lmhead_xent(dx.data(), dw.data(), x.data(), w.data(), nullptr, 30, tgt.data(), N, D, V, scale,
                                 scratch.data(), chunk, cap);
        EXPECT_NEAR(l, ref, 1e-4 * std::fabs(ref));
        EXPECT_GRAD_NEAR(dx, numeric_grad(x, loss), "lmhead dx, chunk " << chunk << " cap " << cap);
        EXPECT_GRAD_NEAR(dw, numeric_grad(w, loss), "lmhead dw, chunk " << chunk << " cap " << cap);
        for (int64_t i = 0; i < D; i++) {  // ignored rows get no gradient
            EXPECT_EQ(dx[1 * D + i], 0.0f);
            EXPECT_EQ(dx[4 * D + i], 0.0f);
        }
    }
}

TEST_P(kernels, adamw_matches_torch_formula) {
    // torch.optim.AdamW, one parameter, written out: p ← p(1 - lr·wd) - lr·m̂/(√v̂ + eps)
    adamw_hparams h;
    h.lr = 0.1;
    h.weight_decay = 0.01;
    fvec pv = {1.5f}, m = {0.0f}, v = {0.0f}, g = {0.3f};
    const float& p = pv[0];
    double pd = 1.5, md = 0, vd = 0;
    for (int step = 1; step <= 3; step++) {
        K.adamw_update(pv.data(), g.data(), m.data(), v.data(), 1, h, step, true, 2.0f);  // gradient scaled by 2 on the fly
        const double gd = 0.6;
        md = 0.9 * md + 0.1 * gd;
        vd = 0.999 * vd + 0.001 * gd * gd;
        pd = pd * (1 - 0.1 * 0.01) - 0.1 * (md / (1 - std::pow(0.9, step))) / (std::sqrt(vd / (1 - std::pow(0.999, step))) + 1e-8);
        // 5e-6: the fast kernel forms (1 - beta) in fp32 (torch casts the double (1 - beta)); that
        // moves v by ~1e-5 relative, the update by ~2e-5 of its 0.1 size
        EXPECT_NEAR(p, pd, 5e-6) << "step " << step;
    }
    fvec g2 = {3.0f, 4.0f};
    EXPECT_DOUBLE_EQ(K.sum_of_squares(g2.data(), 2), 25.0);
}

// Padding-free and packed rows (attn_params::pos, rope's pos): samples laid end to end in one
// row give, token for token, what each sample gives alone in its own row (the plain path the
// tests above check by hand and by finite differences): outputs, log-sum-exps and every
// gradient, with windows, soft caps and GQA, lengths that cross the CPU kernel's 64-row blocks,
// one-token samples, and two rows packed differently.
TEST_P(kernels, samples_packed_in_a_row_attend_and_rotate_as_each_alone) {
    const int64_t Hq = 4, Hkv = 2, hd = 8, rot = 6;
    const std::vector<std::vector<int64_t>> rows = {{3, 70, 1, 130, 5}, {64, 65, 2, 1}};
    const int64_t T = 209;  // the longer row; the other is right-padded by a sample of its own
    const attn_params variants[] = {{0.35f, 0.0f, 0}, {0.35f, 2.0f, 0}, {0.35f, 0.0f, 50}, {0.35f, 1.5f, 7}};
    fvec inv(rot / 2), cs(T * rot / 2), sn(T * rot / 2);
    for (int64_t i = 0; i < rot / 2; i++) inv[i] = (float)std::pow(10000.0, -2.0 * i / rot);
    K.rope_tables(cs.data(), sn.data(), inv.data(), T, rot, 1.1f);
    const int64_t B = (int64_t)rows.size();
    ivec pos(B * T);
    std::vector<std::vector<std::pair<int64_t, int64_t>>> spans(B);  // (start, length) per sample
    for (int64_t b = 0; b < B; b++) {
        int64_t t0 = 0;
        std::vector<int64_t> lens = rows[b];
        int64_t used = 0;
        for (int64_t n : lens) used += n;
        if (used < T) lens.push_back(T - used);  // the rest of a shorter row: one more sample
        for (int64_t n : lens) {
            for (int64_t i = 0; i < n; i++) pos[b * T + t0 + i] = (int32_t)i;
            spans[b].push_back({t0, n});
            t0 += n;
        }
    }
    for (const attn_params& plain : variants) {
        attn_params ap = plain;
        ap.pos = pos.data();
        auto q = randv(B * T * Hq * hd, 21), k = randv(B * T * Hkv * hd, 22), v = randv(B * T * Hkv * hd, 23),
             dout = randv(B * T * Hq * hd, 24);
        // rope with positions, then attention over the packed rows
        fvec qr = q, kr = k;
        K.rope_forward(qr.data(), cs.data(), sn.data(), pos.data(), B, T, Hq, hd, rot);
        K.rope_forward(kr.data(), cs.data(), sn.data(), pos.data(), B, T, Hkv, hd, rot);
        fvec out(q.size()), lse(B * Hq * T), dq(q.size(), 0.0f), dk(k.size(), 0.0f), dv(v.size(), 0.0f);
        K.attention_forward(out.data(), lse.data(), qr.data(), kr.data(), v.data(), B, T, Hq, Hkv, hd, ap);
        K.attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), out.data(), lse.data(), qr.data(), kr.data(),
                             v.data(), B, T, Hq, Hkv, hd, ap);
        K.rope_backward(dq.data(), cs.data(), sn.data(), pos.data(), B, T, Hq, hd, rot);
        K.rope_backward(dk.data(), cs.data(), sn.data(), pos.data(), B, T, Hkv, hd, rot);
        for (int64_t b = 0; b < B; b++)
            for (auto [t0, n] : spans[b]) {
                // the sample alone: its own row, positions 0..n-1
                auto cut = [&](const fvec& x, int64_t H) {
                    return fvec(x.begin() + (b * T + t0) * H * hd, x.begin() + (b * T + t0 + n) * H * hd);
                };
                fvec q1 = cut(q, Hq), k1 = cut(k, Hkv), v1 = cut(v, Hkv), do1 = cut(dout, Hq);
                K.rope_forward(q1.data(), cs.data(), sn.data(), nullptr, 1, n, Hq, hd, rot);
                K.rope_forward(k1.data(), cs.data(), sn.data(), nullptr, 1, n, Hkv, hd, rot);
                fvec o1(q1.size()), l1(Hq * n), dq1(q1.size(), 0.0f), dk1(k1.size(), 0.0f),
                    dv1(v1.size(), 0.0f);
                K.attention_forward(o1.data(), l1.data(), q1.data(), k1.data(), v1.data(), 1, n, Hq, Hkv, hd, plain);
                K.attention_backward(dq1.data(), dk1.data(), dv1.data(), do1.data(), o1.data(), l1.data(), q1.data(),
                                     k1.data(), v1.data(), 1, n, Hq, Hkv, hd, plain);
                K.rope_backward(dq1.data(), cs.data(), sn.data(), nullptr, 1, n, Hq, hd, rot);
                K.rope_backward(dk1.data(), cs.data(), sn.data(), nullptr, 1, n, Hkv, hd, rot);
                const std::string what = "row " + std::to_string(b) + " sample at " + std::to_string(t0) + " (" +
                                         std::to_string(n) + " tokens), window " + std::to_string(plain.window) +
                                         " cap " + std::to_string(plain.softcap);
                EXPECT_CLOSE(cut(qr, Hq), q1, 1e-6, "rope q, " << what);
                EXPECT_CLOSE(cut(out, Hq), o1, 1e-5, "attention out, " << what);
                fvec lrow;
                for (int64_t h = 0; h < Hq; h++)
                    for (int64_t t = 0; t < n; t++) lrow.push_back(lse[(b * Hq + h) * T + t0 + t]);
                EXPECT_CLOSE(lrow, l1, 1e-5, "attention lse, " << what);
                EXPECT_CLOSE(cut(dq, Hq), dq1, 1e-5, "dq, " << what);
                EXPECT_CLOSE(cut(dk, Hkv), dk1, 1e-5, "dk, " << what);
                EXPECT_CLOSE(cut(dv, Hkv), dv1, 1e-5, "dv, " << what);
            }
    }
}

// The packed path's own gradient by finite differences (a small case: three samples in one row,
// two in the other).
TEST_P(kernels, packed_attention_and_rope_backward_match_finite_differences) {
    const int64_t B = 2, T = 6, Hq = 2, Hkv = 1, hd = 4;
    const ivec pos = {0, 1, 2, 0, 1, 0, /**/ 0, 0, 1, 2, 3, 4};
    fvec inv = {1.0f, 0.1f}, cs(T * 2), sn(T * 2);
    K.rope_tables(cs.data(), sn.data(), inv.data(), T, 4, 1.0f);
    attn_params ap{0.5f, 1.5f, 3};
    ap.pos = pos.data();
    auto q = randv(B * T * Hq * hd, 31), k = randv(B * T * Hkv * hd, 32), v = randv(B * T * Hkv * hd, 33),
         r = randv(B * T * Hq * hd, 34);
    fvec out(q.size()), lse(B * Hq * T), qr, kr;
    auto loss = [&] {
        qr = q, kr = k;
        K.rope_forward(qr.data(), cs.data(), sn.data(), pos.data(), B, T, Hq, hd, 4);
        K.rope_forward(kr.data(), cs.data(), sn.data(), pos.data(), B, T, Hkv, hd, 4);
        K.attention_forward(out.data(), lse.data(), qr.data(), kr.data(), v.data(), B, T, Hq, Hkv, hd, ap);
        return dotd(out, r);
    };
    loss();
    fvec dq(q.size(), 0.0f), dk(k.size(), 0.0f), dv(v.size(), 0.0f);
    K.attention_backward(dq.data(), dk.data(), dv.data(), r.data(), out.data(), lse.data(), qr.data(), kr.data(),
                         v.data(), B, T, Hq, Hkv, hd, ap);
    K.rope_backward(dq.data(), cs.data(), sn.data(), pos.data(), B, T, Hq, hd, 4);
    K.rope_backward(dk.data(), cs.data(), sn.data(), pos.data(), B, T, Hkv, hd, 4);
    EXPECT_GRAD_NEAR(dq, numeric_grad(q, loss), "packed attention dq");
    EXPECT_GRAD_NEAR(dk, numeric_grad(k, loss), "packed attention dk");
    EXPECT_GRAD_NEAR(dv, numeric_grad(v, loss), "packed attention dv");
    // a sample's first token sees only itself: its output is its own value row
    for (int64_t d = 0; d < hd; d++) EXPECT_NEAR(out[((0 * T + 3) * Hq + 1) * hd + d], v[(3 * Hkv) * hd + d], 1e-6);
}

INSTANTIATE_TEST_SUITE_P(backends, kernels, ::testing::ValuesIn(backends_under_test(true)),
                         [](const ::testing::TestParamInfo<const char*>& i) { return std::string(i.param); });

// ============================================================================ 2. fast vs reference

struct shape_gen {
    rng r;
    explicit shape_gen(uint64_t seed) { rng_init(&r, seed); }
    int64_t operator()(int64_t lo, int64_t hi) { return lo + (int64_t)rng_below(&r, (uint64_t)(hi - lo + 1)); }
};

class fast_vs_ref : public ::testing::TestWithParam<const char*> {
  protected:
    const backend& F = *lisa_test::staged(GetParam());
    const backend& R = *lisa_test::staged("ref");
    void           TearDown() override { expect_no_validation_messages(GetParam()); }
};

TEST_P(fast_vs_ref, gemm_linear_and_bf16) {
    shape_gen s(101);
    for (int trial = 0; trial < 6; trial++) {
        const int64_t M = s(1, 70), N = s(1, 300), Kd = s(1, 90);
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                auto A = randv(M * Kd, trial * 10 + 1), B = randv(Kd * N, trial * 10 + 2), C = randv(M * N, trial * 10 + 3);
                auto C2 = C;
                const int64_t lda = ta ? M : Kd, ldb = tb ? Kd : N;
                F.gemm(ta, tb, M, N, Kd, 0.7f, A.data(), lda, B.data(), ldb, 0.5f, C.data(), N);
                R.gemm(ta, tb, M, N, Kd, 0.7f, A.data(), lda, B.data(), ldb, 0.5f, C2.data(), N);
                EXPECT_CLOSE(C, C2, 2e-5, "gemm " << ta << tb << " " << M << "x" << N << "x" << Kd);
            }
        const int64_t in = Kd, out = N;  // out up to 300: crosses the bf16 kernel's 256-row blocks
        auto x = randv(M * in, trial + 20), w = randv(out * in, trial + 21), b = randv(out, trial + 22),
             dy = randv(M * out, trial + 23);
        auto w16 = randv16(out * in, trial + 24);
        fvec y1(M * out), y2(M * out);
        F.linear_forward(y1.data(), x.data(), w.data(), b.data(), M, in, out);
        R.linear_forward(y2.data(), x.data(), w.data(), b.data(), M, in, out);
        EXPECT_CLOSE(y1, y2, 2e-5, "linear_forward");
        F.linear_forward_bf16(y1.data(), x.data(), w16.data(), b.data(), M, in, out);
        R.linear_forward_bf16(y2.data(), x.data(), w16.data(), b.data(), M, in, out);
        EXPECT_CLOSE(y1, y2, 2e-5, "linear_forward_bf16");
        fvec dx1(M * in, 0.5f), dx2 = dx1, dw1(out * in, 0.25f), dw2 = dw1, db1(out, 1.0f), db2 = db1;
        F.linear_backward(dx1.data(), dw1.data(), db1.data(), dy.data(), x.data(), w.data(), M, in, out);
        R.linear_backward(dx2.data(), dw2.data(), db2.data(), dy.data(), x.data(), w.data(), M, in, out);
        EXPECT_CLOSE(dx1, dx2, 2e-5, "linear_backward dx");
        EXPECT_CLOSE(dw1, dw2, 2e-5, "linear_backward dw");
        EXPECT_CLOSE(db1, db2, 2e-5, "linear_backward db");
        F.linear_backward_bf16(dx1.data(), dy.data(), w16.data(), M, in, out);
        R.linear_backward_bf16(dx2.data(), dy.data(), w16.data(), M, in, out);
        EXPECT_CLOSE(dx1, dx2, 2e-5, "linear_backward_bf16");
    }
}

TEST_P(fast_vs_ref, rmsnorm_rope_swiglu_and_elementwise) {
    shape_gen s(202);
    for (int trial = 0; trial < 5; trial++) {
        const int64_t N = s(1, 200), D = s(1, 80);  // N > 64: the fast dw reduces in 64-row chunks
        auto x = randv(N * D, trial + 1), w = randv(D, trial + 2), dy = randv(N * D, trial + 3);
        fvec y1(N * D), y2(N * D), r1(N), r2(N);
        const float off = (float)(trial % 2);
        F.rmsnorm_forward(y1.data(), r1.data(), x.data(), w.data(), N, D, 1e-6f, off);
        R.rmsnorm_forward(y2.data(), r2.data(), x.data(), w.data(), N, D, 1e-6f, off);
        EXPECT_CLOSE(y1, y2, 2e-5, "rmsnorm_forward");
        fvec dx1(N * D, 0.1f), dx2 = dx1, dw1(D, 0.2f), dw2 = dw1;
        F.rmsnorm_backward(dx1.data(), dw1.data(), dy.data(), x.data(), w.data(), r1.data(), N, D, off);
        R.rmsnorm_backward(dx2.data(), dw2.data(), dy.data(), x.data(), w.data(), r1.data(), N, D, off);
        EXPECT_CLOSE(dx1, dx2, 2e-5, "rmsnorm_backward dx");
        EXPECT_CLOSE(dw1, dw2, 2e-5, "rmsnorm_backward dw");

        const int64_t B = s(1, 3), T = s(1, 40), H = s(1, 4), hd = 2 * s(1, 8), rot = trial % 2 ? hd : 2 * s(1, hd / 2);
        const float scale = trial % 2 ? 1.0f : 1.25f;
        fvec inv(rot / 2), c1(T * rot / 2), s1(T * rot / 2), c2 = c1, s2 = s1;
        for (int64_t i = 0; i < rot / 2; i++) inv[i] = (float)std::pow(10000.0, -2.0 * i / rot);
        F.rope_tables(c1.data(), s1.data(), inv.data(), T, rot, scale);
        R.rope_tables(c2.data(), s2.data(), inv.data(), T, rot, scale);
        EXPECT_CLOSE(c1, c2, 1e-7, "rope_tables cos");
        EXPECT_CLOSE(s1, s2, 1e-7, "rope_tables sin");
        auto q1 = randv(B * T * H * hd, trial + 4), q2 = q1;
        F.rope_forward(q1.data(), c1.data(), s1.data(), nullptr, B, T, H, hd, rot);
        R.rope_forward(q2.data(), c1.data(), s1.data(), nullptr, B, T, H, hd, rot);
        EXPECT_CLOSE(q1, q2, 2e-6, "rope_forward");
        F.rope_backward(q1.data(), c1.data(), s1.data(), nullptr, B, T, H, hd, rot);
        R.rope_backward(q2.data(), c1.data(), s1.data(), nullptr, B, T, H, hd, rot);
        EXPECT_CLOSE(q1, q2, 2e-6, "rope_backward");

        const int64_t n = N * D;
        auto g = randv(n, trial + 5, 2.0f), u = randv(n, trial + 6), dh = randv(n, trial + 7);
        fvec h1(n), h2(n), dg1(n, 0.1f), dg2 = dg1, du1(n, 0.2f), du2 = du1;
        F.swiglu_forward(h1.data(), g.data(), u.data(), n);
        R.swiglu_forward(h2.data(), g.data(), u.data(), n);
        EXPECT_CLOSE(h1, h2, 2e-6, "swiglu_forward");
        F.swiglu_backward(dg1.data(), du1.data(), dh.data(), g.data(), u.data(), n);
        R.swiglu_backward(dg2.data(), du2.data(), dh.data(), g.data(), u.data(), n);
        EXPECT_CLOSE(dg1, dg2, 2e-6, "swiglu_backward dg");
        EXPECT_CLOSE(du1, du2, 2e-6, "swiglu_backward du");
        F.geglu_forward(h1.data(), g.data(), u.data(), n);
        R.geglu_forward(h2.data(), g.data(), u.data(), n);
        EXPECT_CLOSE(h1, h2, 2e-6, "geglu_forward");
        F.geglu_backward(dg1.data(), du1.data(), dh.data(), g.data(), u.data(), n);
        R.geglu_backward(dg2.data(), du2.data(), dh.data(), g.data(), u.data(), n);
        EXPECT_CLOSE(dg1, dg2, 2e-6, "geglu_backward dg");
        EXPECT_CLOSE(du1, du2, 2e-6, "geglu_backward du");

        fvec a1 = g, a2 = g;
        F.add(a1.data(), u.data(), n);
        R.add(a2.data(), u.data(), n);
        EXPECT_EQ(a1, a2) << "add";
        F.scale(a1.data(), n, 0.3f);
        R.scale(a2.data(), n, 0.3f);
        EXPECT_EQ(a1, a2) << "scale";
        F.softcap(a1.data(), n, 0.7f);
        R.softcap(a2.data(), n, 0.7f);
        EXPECT_CLOSE(a1, a2, 1e-6, "softcap");
        F.copy(a1.data(), dh.data(), n);
        EXPECT_EQ(a1, dh) << "copy";
        F.zero(a1.data(), n);
        EXPECT_EQ(a1, fvec(n, 0.0f)) << "zero";
        F.dropout(a1.data(), g.data(), n, 0.3f, 77 + trial);
        R.dropout(a2.data(), g.data(), n, 0.3f, 77 + trial);
        for (int64_t i = 0; i < n; i++) ASSERT_EQ(a1[i] == 0.0f, a2[i] == 0.0f) << "dropout mask " << i;
        EXPECT_CLOSE(a1, a2, 1e-6, "dropout");
    }
}

TEST_P(fast_vs_ref, attention_and_kv_attention) {
    shape_gen s(303);
    for (int trial = 0; trial < 4; trial++) {
        const int64_t B = s(1, 2), T = s(1, 150), Hkv = s(1, 2), Hq = Hkv * s(1, 3), hd = s(1, 16);  // T > 64: blocks
        // trial 0: the Llama defaults; then windows shorter and longer than a block, a soft cap
        attn_params ap{1.0f / std::sqrt((float)hd), 0.0f, 0};
        if (trial >= 1) ap.window = trial == 1 ? s(1, 10) : s(1, 100);
        if (trial >= 2) ap.softcap = 2.0f, ap.scale = 0.9f;
        auto q = randv(B * T * Hq * hd, trial + 1), k = randv(B * T * Hkv * hd, trial + 2),
             v = randv(B * T * Hkv * hd, trial + 3), dout = randv(B * T * Hq * hd, trial + 4);
        fvec o1(q.size()), o2(q.size()), l1(B * Hq * T), l2(B * Hq * T);
        F.attention_forward(o1.data(), l1.data(), q.data(), k.data(), v.data(), B, T, Hq, Hkv, hd, ap);
        R.attention_forward(o2.data(), l2.data(), q.data(), k.data(), v.data(), B, T, Hq, Hkv, hd, ap);
        EXPECT_CLOSE(o1, o2, 2e-5, "attention_forward T=" << T << " window " << ap.window);
        EXPECT_CLOSE(l1, l2, 2e-5, "attention_forward lse");
        fvec dq1(q.size(), 0.0f), dq2 = dq1, dk1(k.size(), 0.0f), dk2 = dk1, dv1(v.size(), 0.0f), dv2 = dv1;
        F.attention_backward(dq1.data(), dk1.data(), dv1.data(), dout.data(), o1.data(), l1.data(), q.data(), k.data(),
                             v.data(), B, T, Hq, Hkv, hd, ap);
        R.attention_backward(dq2.data(), dk2.data(), dv2.data(), dout.data(), o2.data(), l2.data(), q.data(), k.data(),
                             v.data(), B, T, Hq, Hkv, hd, ap);
        EXPECT_CLOSE(dq1, dq2, 5e-5, "attention_backward dq");
        EXPECT_CLOSE(dk1, dk2, 5e-5, "attention_backward dk");
        EXPECT_CLOSE(dv1, dv2, 5e-5, "attention_backward dv");
        // KV attention of the last n queries of sequence 0 equals the causal attention's rows
        const int64_t n = s(1, T), pos0 = T - n;
        fvec okv(n * Hq * hd), okv2(n * Hq * hd);
        F.attention_forward_kv(okv.data(), q.data() + pos0 * Hq * hd, k.data(), v.data(), n, pos0, Hq, Hkv, hd, ap);
        R.attention_forward_kv(okv2.data(), q.data() + pos0 * Hq * hd, k.data(), v.data(), n, pos0, Hq, Hkv, hd, ap);
        EXPECT_CLOSE(okv, okv2, 2e-5, "attention_forward_kv");
        fvec rows(o2.begin() + pos0 * Hq * hd, o2.begin() + T * Hq * hd);
        EXPECT_CLOSE(okv, rows, 2e-5, "attention_forward_kv against the causal rows");
    }
}

TEST_P(fast_vs_ref, embedding_lmhead_lora_fold_optimizer_and_init) {
    shape_gen s(404);
    for (int trial = 0; trial < 4; trial++) {
        const int64_t N = s(1, 60), D = s(1, 40), V = s(2, 300);
        ivec tok(N), tgt(N);
        for (int64_t n = 0; n < N; n++) tok[n] = (int32_t)s(0, V - 1), tgt[n] = s(0, 3) == 0 ? -100 : (int32_t)s(0, V - 1);
        auto table = randv(V * D, trial + 1), dx = randv(N * D, trial + 2);
        auto t16 = randv16(V * D, trial + 3);
        fvec x1(N * D), x2(N * D), d1(V * D, 0.0f), d2(V * D, 0.0f);
        F.embedding_forward(x1.data(), tok.data(), table.data(), N, D);
        R.embedding_forward(x2.data(), tok.data(), table.data(), N, D);
        EXPECT_EQ(x1, x2) << "embedding_forward";
        F.embedding_forward_bf16(x1.data(), tok.data(), t16.data(), N, D);
        R.embedding_forward_bf16(x2.data(), tok.data(), t16.data(), N, D);
        EXPECT_EQ(x1, x2) << "embedding_forward_bf16";
        F.embedding_backward(d1.data(), dx.data(), tok.data(), N, D);
        R.embedding_backward(d2.data(), dx.data(), tok.data(), N, D);
        EXPECT_CLOSE(d1, d2, 1e-6, "embedding_backward");

        // LM head: chunk sizes below, at and above N; fp32 and bf16 heads
        const float scale = 0.3f, cap = trial % 2 ? 3.0f : 0.0f;
        for (int64_t chunk : {(int64_t)1, std::max<int64_t>(1, N / 3), N}) {
            fvec sc(lmhead_scratch_floats(chunk, D, V));
            fvec gx1(N * D, 0.0f), gx2 = gx1, gw1(V * D, 0.0f), gw2 = gw1;
            double l1 = F.lmhead_xent(gx1.data(), gw1.data(), x2.data(), table.data(), nullptr, 30, tgt.data(), N, D, V,
                                      scale, sc.data(), chunk, cap);
            double l2 = R.lmhead_xent(gx2.data(), gw2.data(), x2.data(), table.data(), nullptr, 30, tgt.data(), N, D, V,
                                      scale, sc.data(), chunk, cap);
            EXPECT_NEAR(l1, l2, 2e-5 * std::max(1.0, std::fabs(l2))) << "lmhead_xent loss, chunk " << chunk;
            EXPECT_CLOSE(gx1, gx2, 2e-5, "lmhead_xent dx");
            EXPECT_CLOSE(gw1, gw2, 2e-5, "lmhead_xent dw");
            std::fill(gx1.begin(), gx1.end(), 0.0f);
            std::fill(gx2.begin(), gx2.end(), 0.0f);
            l1 = F.lmhead_xent(gx1.data(), nullptr, x2.data(), nullptr, t16.data(), 30, tgt.data(), N, D, V, scale, sc.data(),
                               chunk, cap);
            l2 = R.lmhead_xent(gx2.data(), nullptr, x2.data(), nullptr, t16.data(), 30, tgt.data(), N, D, V, scale, sc.data(),
                               chunk, cap);
            EXPECT_NEAR(l1, l2, 2e-5 * std::max(1.0, std::fabs(l2))) << "lmhead_xent bf16 loss";
            EXPECT_CLOSE(gx1, gx2, 2e-5, "lmhead_xent bf16 dx");
        }

        const int64_t out = s(1, 50), in = s(1, 50), r = s(1, 8);
        auto W = randv(out * in, trial + 4), A = randv(r * in, trial + 5), Bm = randv(out * r, trial + 6);
        auto W2 = W;
        F.lora_fold(W.data(), A.data(), Bm.data(), out, in, r, 0.5f);
        R.lora_fold(W2.data(), A.data(), Bm.data(), out, in, r, 0.5f);
        EXPECT_CLOSE(W, W2, 2e-5, "lora_fold");

        adamw_hparams h;
        h.lr = 1e-2;
        h.weight_decay = 0.1;
        const int64_t n = s(1, 5000);
        auto p1 = randv(n, trial + 7), g = randv(n, trial + 8), m1 = randv(n, trial + 9, 0.1f);
        fvec v1(n, 0.01f), p2 = p1, m2 = m1, v2 = v1;
        for (int step = 1; step <= 3; step++) {
            F.adamw_update(p1.data(), g.data(), m1.data(), v1.data(), n, h, step, step != 2, 0.8f);
            R.adamw_update(p2.data(), g.data(), m2.data(), v2.data(), n, h, step, step != 2, 0.8f);
        }
        // fp32 (1 - beta) constants in the fast kernel: ~1e-5 relative on v (see adamw_matches_torch_formula)
        EXPECT_CLOSE(p1, p2, 2e-5, "adamw_update p");
        EXPECT_CLOSE(m1, m2, 2e-5, "adamw_update m");
        EXPECT_CLOSE(v1, v2, 2e-5, "adamw_update v");
        ivec row_of(V, -1);
        int32_t used = 0;
        for (int64_t t = 0; t < V; t += 3) row_of[t] = used++;
        auto rg = randv(used * D, trial + 10);
        fvec rp1(V * D, 0.5f), rm1(V * D, 0.01f), rv1(V * D, 0.01f), rp2 = rp1, rm2 = rm1, rv2 = rv1;
        F.adamw_update_rows(rp1.data(), rg.data(), row_of.data(), rm1.data(), rv1.data(), V, D, h, 2, true, 0.9f);
        R.adamw_update_rows(rp2.data(), rg.data(), row_of.data(), rm2.data(), rv2.data(), V, D, h, 2, true, 0.9f);
        EXPECT_CLOSE(rp1, rp2, 2e-5, "adamw_update_rows");
        const int64_t big = s(1, 300000);  // crosses the fast kernel's 2^16 blocks
        auto gg = randv(big, trial + 11);
        // the CPU sums in double (1e-9 per value); Vulkan's workgroups sum blocks of 4096 squares in
        // fp32 by a fixed tree (error under log2(4096)·2^-24 ≈ 7e-7 relative), the host adds them in double
        const double ss = R.sum_of_squares(gg.data(), big);
        const bool fp32_blocks = std::string(GetParam()) == "vulkan";
        EXPECT_NEAR(F.sum_of_squares(gg.data(), big), ss, fp32_blocks ? 7e-7 * ss : 1e-9 * big);

        const int64_t ni = s(1, 3000000);  // crosses the 2^20 blocks of the init streams
        fvec f1(ni), f2(ni);
        F.fill_normal(f1.data(), nullptr, ni, 0.02, 5, trial);
        R.fill_normal(f2.data(), nullptr, ni, 0.02, 5, trial);
        EXPECT_EQ(f1, f2) << "fill_normal";
        hvec<uint16_t> h1(ni), h2(ni);
        F.fill_normal(nullptr, h1.data(), ni, 0.02, 5, trial);
        R.fill_normal(nullptr, h2.data(), ni, 0.02, 5, trial);
        EXPECT_EQ(h1, h2) << "fill_normal bf16";
    }
}

INSTANTIATE_TEST_SUITE_P(backends, fast_vs_ref, ::testing::ValuesIn(backends_under_test(false)),
                         [](const ::testing::TestParamInfo<const char*>& i) { return std::string(i.param); });

// ============================================================================ 3. thread counts
// The fast backend's results must not depend on how many threads compute them (a run gives the same
// model on a busy or an idle machine, on 2 cores or 64, and the trainer may change the count between
// steps): matrix products tiled on a grid fixed by the shape, reductions in fixed blocks. Shapes
// here are large enough to be cut into many tiles, along rows and along columns, with ragged edges;
// each result is also checked against the reference, which the tile offsets must not spoil.
TEST(cpu_threads, results_are_bit_identical_for_1_2_and_3_threads) {
    const backend& F = *lisa_test::staged("cpu");
    const backend& R = *lisa_test::staged("ref");
    struct shape { int64_t M, N, K; };
    const shape shapes[] = {{517, 300, 129}, {96, 1100, 77}, {1030, 64, 300}};
    for (const shape& sh : shapes)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                const int64_t M = sh.M, N = sh.N, Kd = sh.K, lda = ta ? M : Kd, ldb = tb ? Kd : N;
                const auto A = randv(M * Kd, 1), B = randv(Kd * N, 2), C0 = randv(M * N, 3);
                fvec want = C0;
                R.gemm(ta, tb, M, N, Kd, 0.7f, A.data(), lda, B.data(), ldb, 0.5f, want.data(), N);
                fvec first;
                for (int threads : {1, 2, 3}) {
                    F.set_threads(threads);
                    fvec C = C0;
                    F.gemm(ta, tb, M, N, Kd, 0.7f, A.data(), lda, B.data(), ldb, 0.5f, C.data(), N);
                    EXPECT_CLOSE(C, want, 2e-5, "gemm " << ta << tb << " " << M << "x" << N << "x" << Kd);
                    if (first.empty()) first = C;
                    else EXPECT_EQ(0, std::memcmp(C.data(), first.data(), C.size() * sizeof(float)))
                        << "gemm " << ta << tb << " " << M << "x" << N << "x" << Kd << " differs at " << threads << " threads";
                }
            }
    // a layer's worth of the other kernels, each at three thread counts
    const int64_t N = 700, in = 192, out = 520;
    const auto x = randv(N * in, 4), w = randv(out * in, 5), b = randv(out, 6), dy = randv(N * out, 7), nw = randv(in, 8);
    std::vector<fvec> runs;
    for (int threads : {1, 2, 3}) {
        F.set_threads(threads);
        fvec y(N * out), dx(N * in, 0.0f), dw(out * in, 0.0f), db(out, 0.0f), ny(N * in), rstd(N),
            ndx(N * in, 0.0f), ndw(in, 0.0f);
        F.linear_forward(y.data(), x.data(), w.data(), b.data(), N, in, out);
        F.linear_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), N, in, out);
        F.rmsnorm_forward(ny.data(), rstd.data(), x.data(), nw.data(), N, in, 1e-5f, 0.0f);
        F.rmsnorm_backward(ndx.data(), ndw.data(), dx.data(), x.data(), nw.data(), rstd.data(), N, in, 0.0f);
        fvec all;
        for (const auto* v : {&y, &dx, &dw, &db, &ny, &ndx, &ndw}) all.insert(all.end(), v->begin(), v->end());
        all.push_back((float)F.sum_of_squares(all.data(), (int64_t)all.size()));
        runs.push_back(all);
    }
    F.set_threads(2);
    EXPECT_EQ(0, std::memcmp(runs[0].data(), runs[1].data(), runs[0].size() * sizeof(float))) << "1 vs 2 threads";
    EXPECT_EQ(0, std::memcmp(runs[0].data(), runs[2].data(), runs[0].size() * sizeof(float))) << "1 vs 3 threads";
}
