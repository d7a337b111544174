// Forward (and training step) throughput of lisa.cpp on a compute device, for bench/vulkan.sh and
// for GPU owners:
//   bench_device --model DIR [--device cpu|vulkan|vulkan:N] [--tokens 512] [--batch 1] [--reps 5]
//                [--train] [--peak_tflops X] [--threads 2]
//   bench_device --kernels [--device ...] [--reps 3]
// Runs one warm-up pass, then REPS timed ones over batch × tokens ids (fixed, within the
// vocabulary): the forward with the LM head's loss (what `lisa eval` computes), or with --train
// the forward and backward of full fine-tuning. Prints one JSON line: tokens_per_second (best of
// the reps), seconds, the matrix-product TFLOP/s it reaches (2·N·params forward, 6·N·params with
// the backward, attention left out), and with --peak_tflops the fraction of that peak.
// --kernels times single kernels at a 20M model's shapes instead (one JSON line each), to show
// which kernel a device spends its time in.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/vulkan/vulkan.h"
#include "model/decoder.h"

using json = nlohmann::json;
using namespace lisa;

// seconds per call of f on be (best of reps, after a warm-up call)
template <typename F>
static double time_kernel(const backend* be, int reps, F f) {
    f();
    be->sync();
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        const auto t0 = std::chrono::steady_clock::now();
        f();
        be->sync();
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
}

static void bench_kernels(const backend* be, const std::string& device, int reps) {
    std::vector<std::pair<float*, size_t>> owned;
    auto alloc = [&](int64_t n) {
        float* p = (float*)be->mem_alloc((size_t)n * 4);
        be->fill_normal(p, nullptr, n, 0.02, 7, 0);
        owned.push_back({p, (size_t)n * 4});
        return p;
    };
    auto report = [&](const char* what, double s, double flops) {
        json j = {{"impl", "lisa.cpp"}, {"device", device}, {"kernel", what}, {"seconds", s}};
        if (flops > 0) j["gflops"] = flops / s / 1e9;
        std::printf("%s\n", j.dump().c_str());
    };
    const int64_t T = 512, D = 512, F = 1376, H = 8, Hkv = 4, hd = 64, V = 32000;
    float *x = alloc(T * D), *w = alloc(F * D), *y = alloc(T * F);
    const double mm = 2.0 * T * F * D;
    report("gemm x·wT 512x1376x512 (forward)", time_kernel(be, reps, [&] { be->gemm(false, true, T, F, D, 1, x, D, w, D, 0, y, F); }), mm);
    report("gemm dy·w 512x512x1376 (input gradient)",
           time_kernel(be, reps, [&] { be->gemm(false, false, T, D, F, 1, y, F, w, D, 0, x, D); }), mm);
    report("gemm dyT·x 1376x512x512 (weight gradient)",
           time_kernel(be, reps, [&] { be->gemm(true, false, F, D, T, 1, y, F, x, D, 1, w, D); }), mm);
    float *q = alloc(T * H * hd), *k = alloc(T * Hkv * hd), *v = alloc(T * Hkv * hd), *o = alloc(T * H * hd);
    float *lse = alloc(H * T), *dq = alloc(T * H * hd), *dk = alloc(T * Hkv * hd), *dv = alloc(T * Hkv * hd);
    attn_params ap;
    ap.scale = 0.125f;
    const double att = 2.0 * 2.0 * (double)T * (double)T / 2.0 * (double)(H * hd);  // causal: half the pairs
    report("attention forward T512 Hq8 Hkv4 hd64",
           time_kernel(be, reps, [&] { be->attention_forward(o, lse, q, k, v, 1, T, H, Hkv, hd, ap); }), att);
    report("attention backward T512 Hq8 Hkv4 hd64",
           time_kernel(be, reps, [&] { be->attention_backward(dq, dk, dv, o, o, lse, q, k, v, 1, T, H, Hkv, hd, ap); }),
           2.0 * att);
    float *r = alloc(T), *nw = alloc(D), *nx = alloc(T * D);
    report("rmsnorm forward 512x512", time_kernel(be, reps, [&] { be->rmsnorm_forward(nx, r, x, nw, T, D, 1e-5f, 1.0f); }), 0);
    float* g = alloc(V * 64);
    report("sum of squares 2M", time_kernel(be, reps, [&] { (void)be->sum_of_squares(g, V * 64); }), 0);
    for (auto& [p, bytes] : owned) be->mem_free(p, bytes);
}

int main(int argc, char** argv) {
    std::string model, device = "cpu";
    int64_t T = 512, B = 1;
    int reps = 5, threads = 2;
    bool train = false, kernels = false;
    double peak = 0;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto next = [&] { return std::string(i + 1 < argc ? argv[++i] : ""); };
        if (a == "--model") model = next();
        else if (a == "--device") device = next();
        else if (a == "--tokens") T = std::stoll(next());
        else if (a == "--batch") B = std::stoll(next());
        else if (a == "--reps") reps = std::stoi(next());
        else if (a == "--threads") threads = std::stoi(next());
        else if (a == "--train") train = true;
        else if (a == "--kernels") kernels = true;
        else if (a == "--peak_tflops") peak = std::stod(next());
        else {
            std::fprintf(stderr, "bench_device: unknown argument %s\n", a.c_str());
            return 2;
        }
    }
    try {
        const backend* be = backend_by_name(device.c_str());
        if (!be) fail("--device " + device + ": expected cpu, vulkan or vulkan:N");
        if (kernels) {
            bench_kernels(be, device == "cpu" ? "cpu" : vulkan_current_device(), reps);
            return 0;
        }
        auto m = decoder_model_load(model, -1, be);
        m->ctx.threads = threads;
        std::vector<int32_t> ids((size_t)(B * T));
        for (size_t i = 0; i < ids.size(); i++) ids[i] = (int32_t)(3 + (i * 7919) % (size_t)(m->cfg.vocab_size - 3));
        decoder_acts a;
        decoder_acts_init(&a, *m, B, T);
        decoder_grads gr;
        if (train) decoder_grads_init(&gr, *m);
        std::vector<double> secs;
        for (int r = 0; r <= reps; r++) {  // r = 0: warm-up (pipelines, first-touch pages)
            const auto t0 = std::chrono::steady_clock::now();
            if (train) decoder_grads_zero(&gr);
            decoder_forward_backward(*m, &a, train ? &gr : nullptr, ids.data(), ids.data(), 1.0f / (float)(B * T), nullptr);
            be->sync();
            const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            if (r > 0) secs.push_back(s);
        }
        const double best = *std::min_element(secs.begin(), secs.end());
        const double flops = (train ? 6.0 : 2.0) * (double)(B * T) * (double)m->params.size();
        json j = {{"impl", "lisa.cpp"},
                  {"device", device == "cpu" ? "cpu" : vulkan_current_device()},
                  {"what", train ? "forward+backward (full)" : "forward + loss"},
                  {"tokens", B * T},
                  {"tokens_per_second", (double)(B * T) / best},
                  {"seconds", best},
                  {"tflops", flops / best / 1e12}};
        if (peak > 0) j["fraction_of_peak"] = flops / best / 1e12 / peak;
        std::printf("%s\n", j.dump().c_str());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_device: %s\n", e.what());
        return 1;
    }
    return 0;
}
