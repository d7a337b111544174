// Forward (and training step) throughput of lisa.cpp on a compute device, for bench/vulkan.sh and
// for GPU owners:
//   bench_device --model DIR [--device cpu|vulkan|vulkan:N] [--tokens 512] [--batch 1] [--reps 5]
//                [--train] [--peak_tflops X] [--threads 2]
// Runs one warm-up pass, then REPS timed ones over batch × tokens ids (fixed, within the
// vocabulary): the forward with the LM head's loss (what `lisa eval` computes), or with --train
// the forward and backward of full fine-tuning. Prints one JSON line: tokens_per_second (best of
// the reps), seconds, the matrix-product TFLOP/s it reaches (2·N·params forward, 6·N·params with
// the backward, attention left out), and with --peak_tflops the fraction of that peak.
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

int main(int argc, char** argv) {
    std::string model, device = "cpu";
    int64_t T = 512, B = 1;
    int reps = 5, threads = 2;
    bool train = false;
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
        else if (a == "--peak_tflops") peak = std::stod(next());
        else {
            std::fprintf(stderr, "bench_device: unknown argument %s\n", a.c_str());
            return 2;
        }
    }
    try {
        const backend* be = backend_by_name(device.c_str());
        if (!be) fail("--device " + device + ": expected cpu, vulkan or vulkan:N");
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
