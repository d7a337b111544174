// Shared helpers for the tests: golden-file access, tolerance checks, temp folders, the CLI.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace lisa_test {

inline std::string test_dir() { return LISA_TEST_DIR; }
inline std::string golden_dir(const std::string& flavour) { return test_dir() + "/golden/" + flavour; }

// ../shared/assets, found through LISA_ASSETS or relative to the checkout; "" if absent
inline std::string assets_dir() {
    if (const char* e = std::getenv("LISA_ASSETS")) return e;
    std::string p = test_dir() + "/../../shared/assets";
    return std::filesystem::is_directory(p) ? p : "";
}

// A fresh empty folder under the build's temp area, removed by the destructor.
struct temp_dir {
    std::string path;
    temp_dir() {
        char tmpl[] = "/tmp/lisa_test_XXXXXX";
        path = mkdtemp(tmpl);
    }
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
};

// Tensor from a safetensors file as fp32.
inline std::vector<float> read_f32(const lisa::st_file& f, const std::string& name) {
    const lisa::st_tensor* t = lisa::st_find(f, name);
    if (!t) ADD_FAILURE() << "golden tensor missing: " << name;
    if (!t) return {};
    std::vector<float> v(t->numel);
    lisa::convert_to_f32(v.data(), t->data, t->dt, t->numel);
    return v;
}

// Relative error as the tests define it: max |got - want| / max |want|
// (scaled by the tensor's own magnitude, so near-zero entries do not dominate).
inline double rel_err(const float* got, const float* want, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num = std::max(num, (double)std::fabs(got[i] - want[i]));
        den = std::max(den, (double)std::fabs(want[i]));
    }
    return den > 0 ? num / den : num;
}

struct run_result {
    int         code;
    std::string output;  // stdout + stderr
};
// Runs the built `lisa` program with arguments (a shell string), capturing its output.
// `lisa ARGS`, stdout and stderr together; `prefix` goes before the binary (e.g. an `env -u ...`).
inline run_result run_lisa(const std::string& args, const std::string& prefix = "") {
    std::string cmd = (prefix.empty() ? "" : prefix + " ") + std::string(LISA_BIN) + " " + args + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    int st = pclose(p);
    return {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), out};
}

inline void write_file(const std::string& path, const std::string& data) {
    const size_t slash = path.rfind('/');
    if (slash != std::string::npos && slash > 0) std::filesystem::create_directories(path.substr(0, slash));
    FILE* f = fopen(path.c_str(), "wb");
    if (!f) throw std::runtime_error("write_file: cannot open " + path);
    fwrite(data.data(), 1, data.size(), f);
    fclose(f);
}

// A whole file's bytes ("" when it cannot be read).
inline std::string read_file(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// One JSON value per non-empty line (keys in file order), as the golden .jsonl files hold them.
inline std::vector<nlohmann::ordered_json> read_jsonl(const std::string& path) {
    std::ifstream f(path);
    std::vector<nlohmann::ordered_json> v;
    std::string line;
    while (std::getline(f, line))
        if (!line.empty()) v.push_back(nlohmann::ordered_json::parse(line));
    return v;
}

// Largest |a - b| over every tensor of two safetensors files with the same tensors.
inline double max_weight_diff(const std::string& a, const std::string& b) {
    auto fa = lisa::st_open(a), fb = lisa::st_open(b);
    double mx = 0;
    for (const auto& t : fa->tensors) {
        std::vector<float> x = read_f32(*fa, t.name), y = read_f32(*fb, t.name);
        EXPECT_EQ(x.size(), y.size()) << t.name;
        for (size_t i = 0; i < x.size() && i < y.size(); i++) mx = std::max(mx, (double)std::fabs(x[i] - y[i]));
    }
    return mx;
}

// ||a - b|| / ||a - base||: how far two runs' weights are apart, relative to how far training
// moved them (AdamW turns rounding-level gradient differences on near-zero entries into whole
// lr-sized steps, so a max-abs bound would be loose; this one is not)
inline double rel_update_diff(const std::string& base, const std::string& a, const std::string& b) {
    auto f0 = lisa::st_open(base), fa = lisa::st_open(a), fb = lisa::st_open(b);
    double diff = 0, moved = 0;
    for (const auto& t : fa->tensors) {
        std::vector<float> x0 = read_f32(*f0, t.name), x = read_f32(*fa, t.name), y = read_f32(*fb, t.name);
        for (size_t i = 0; i < x.size(); i++) {
            diff += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
            moved += ((double)x[i] - x0[i]) * ((double)x[i] - x0[i]);
        }
    }
    return std::sqrt(diff / std::max(moved, 1e-30));
}

// Shapes of the real models, scaled down; vocabulary 512 to use the aidreams tokenizer.
inline nlohmann::json tiny_arch_config(const std::string& arch) {
    if (arch == "qwen3")
        return {{"architectures", {"Qwen3ForCausalLM"}}, {"model_type", "qwen3"}, {"vocab_size", 512},
                {"hidden_size", 48}, {"intermediate_size", 96}, {"num_hidden_layers", 4},
                {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"head_dim", 16},
                {"max_position_embeddings", 256}, {"rms_norm_eps", 1e-6}, {"rope_theta", 1000000.0},
                {"use_sliding_window", true}, {"sliding_window", 6}, {"max_window_layers", 2},
                {"tie_word_embeddings", true}, {"bos_token_id", 1}, {"eos_token_id", 2}, {"torch_dtype", "float32"}};
    if (arch == "phi3")  // fused projections, 3/4 of a head rotated, longrope past 16 positions, window 6
        return {{"architectures", {"Phi3ForCausalLM"}}, {"model_type", "phi3"}, {"vocab_size", 512},
                {"hidden_size", 64}, {"intermediate_size", 96}, {"num_hidden_layers", 4},
                {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"partial_rotary_factor", 0.75},
                {"max_position_embeddings", 256}, {"original_max_position_embeddings", 16},
                {"rope_scaling", {{"type", "longrope"}, {"short_factor", {1.0, 1.1, 1.2, 1.3, 1.4, 1.5}},
                                  {"long_factor", {2.0, 3.0, 4.0, 5.0, 6.0, 7.0}}}},
                {"sliding_window", 6}, {"bos_token_id", 1}, {"eos_token_id", 2}, {"torch_dtype", "float32"}};
    if (arch == "smollm3")  // layer 3 NoPE (the default every 4th), with a window of 6 there
        return {{"architectures", {"SmolLM3ForCausalLM"}}, {"model_type", "smollm3"}, {"vocab_size", 512},
                {"hidden_size", 48}, {"intermediate_size", 96}, {"num_hidden_layers", 4},
                {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"max_position_embeddings", 256},
                {"use_sliding_window", true}, {"sliding_window", 6}, {"bos_token_id", 1}, {"eos_token_id", 2},
                {"torch_dtype", "bfloat16"}};
    return {{"architectures", {"Gemma3ForCausalLM"}}, {"model_type", "gemma3_text"}, {"vocab_size", 512},
            {"hidden_size", 48}, {"intermediate_size", 96}, {"num_hidden_layers", 4}, {"num_attention_heads", 2},
            {"num_key_value_heads", 1}, {"head_dim", 32}, {"max_position_embeddings", 256},
            {"query_pre_attn_scalar", 32}, {"sliding_window", 5}, {"sliding_window_pattern", 2},
            {"rope_local_base_freq", 10000.0}, {"rope_theta", 1000000.0}, {"final_logit_softcapping", 30.0},
            {"bos_token_id", 1}, {"eos_token_id", 2}, {"torch_dtype", "bfloat16"}};
}

}  // namespace lisa_test
