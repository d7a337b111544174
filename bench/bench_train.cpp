// Training throughput and memory of lisa.cpp on pre-tokenized batches, for bench/train.sh.
//   bench_train --model DIR --tokens FILE --method lisa|full|lora [--gamma 2] [--interval K]
//               [--threads 2] [--lr 1e-5] [--freeze_embeddings] [--gradient_checkpointing]
//   bench_train --sgemm [--threads 2]        the machine's sgemm GFLOP/s (2048^3, best of 5)
// FILE: int32 little-endian: steps, batch, T, then steps*batch*T token ids (made by train.sh).
// Prints one JSON line: tokens_per_second (median over steps after the first), step seconds,
// peak_rss_mib, rss_mib per logged step, optimizer_state_bytes.
#include <algorithm>
#include <cblas.h>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <omp.h>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "train/trainer.h"

using json = nlohmann::json;

static double sgemm_gflops() {
    const int n = 2048;
    std::vector<float> a(n * n, 0.5f), b(n * n, 0.25f), c(n * n);
    double best = 0;
    for (int r = 0; r < 5; r++) {
        auto t0 = std::chrono::steady_clock::now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
        double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        best = std::max(best, 2.0 * n * n * (double)n / s / 1e9);
    }
    return best;
}

int main(int argc, char** argv) {
    std::string model, tokens, method = "lisa";
    int threads = 2, gamma = 2, interval = 20;
    double lr = 1e-5;
    bool sgemm = false, freeze_embeddings = false, checkpointing = false;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto next = [&] { return std::string(i + 1 < argc ? argv[++i] : ""); };
        if (a == "--model") model = next();
        else if (a == "--tokens") tokens = next();
        else if (a == "--method") method = next();
        else if (a == "--threads") threads = std::stoi(next());
        else if (a == "--gamma") gamma = std::stoi(next());
        else if (a == "--interval") interval = std::stoi(next());
        else if (a == "--lr") lr = std::stod(next());
        else if (a == "--sgemm") sgemm = true;
        else if (a == "--freeze_embeddings") freeze_embeddings = true;  // LISA: embedding and head frozen
        else if (a == "--gradient_checkpointing") checkpointing = true;
        else {
            std::fprintf(stderr, "bench_train: unknown argument %s\n", a.c_str());
            return 2;
        }
    }
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
    if (sgemm) {
        std::printf("%s\n", json({{"sgemm_gflops", sgemm_gflops()}, {"threads", threads}}).dump().c_str());
        return 0;
    }
    std::ifstream f(tokens, std::ios::binary);
    int32_t hdr[3];
    f.read((char*)hdr, sizeof hdr);
    const int steps = hdr[0], B = hdr[1], T = hdr[2];
    lisa::dataset d;
    for (int s = 0; s < steps * B; s++) {
        lisa::sample x;
        x.ids.resize(T);
        f.read((char*)x.ids.data(), T * sizeof(int32_t));
        x.labels = x.ids;
        d.samples.push_back(std::move(x));
    }
    if (!f) {
        std::fprintf(stderr, "bench_train: %s is truncated\n", tokens.c_str());
        return 2;
    }
    lisa::train_options o;
    if (!lisa::train_method_parse(method, &o.method)) {
        std::fprintf(stderr, "bench_train: --method %s: expected lisa, full or lora\n", method.c_str());
        return 2;
    }
    o.threads = threads;
    o.model_name_or_path = model;
    o.output_model_path = "/tmp/lisa_bench_out";
    o.overwrite_output_dir = true;  // a scratch folder, replaced by each run
    o.train_data = &d;
    o.shuffle = false;
    o.save_model = false;
    o.max_steps = steps;
    o.per_device_train_batch_size = B;
    o.lisa_activated_layers = gamma;
    o.lisa_interval_steps = interval;
    o.adam.lr = lr;
    o.logging_steps = 1;
    o.lora_dropout = 0.0;
    o.lisa_train_embeddings = o.lisa_train_head = !freeze_embeddings;
    o.gradient_checkpointing = checkpointing;
    std::vector<double> step_s, rss;
    size_t opt_bytes = 0;
    auto last = std::chrono::steady_clock::now();
    lisa::train_callbacks cb;
    cb.on_log = [&](const std::string& line) {
        auto now = std::chrono::steady_clock::now();
        json j = json::parse(line);
        if (!j.contains("loss")) return;
        step_s.push_back(std::chrono::duration<double>(now - last).count());
        rss.push_back(j["rss_mib"].get<double>());
        opt_bytes = j["optimizer_state_bytes"].get<size_t>();
        last = now;
    };
    last = std::chrono::steady_clock::now();
    lisa::train_result r = lisa::train_run(o, cb);
    std::vector<double> timed(step_s.begin() + (step_s.size() > 1 ? 1 : 0), step_s.end());
    std::sort(timed.begin(), timed.end());
    double med = timed[timed.size() / 2];
    std::printf("%s\n", json({{"impl", "lisa.cpp"},
                              {"method", method},
                              {"tokens_per_second", B * T / med},
                              {"step_seconds", med},
                              {"peak_rss_mib", r.peak_rss_mib},
                              {"rss_mib", rss},
                              {"optimizer_state_bytes", opt_bytes}})
                            .dump()
                            .c_str());
}
