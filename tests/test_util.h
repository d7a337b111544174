// Shared helpers for the tests: golden-file access, tolerance checks, temp folders, the CLI.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
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
    FILE* f = fopen(path.c_str(), "wb");
    fwrite(data.data(), 1, data.size(), f);
    fclose(f);
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

}  // namespace lisa_test
