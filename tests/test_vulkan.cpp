// The Vulkan backend on this machine's Vulkan device (Mesa's lavapipe in CI), with the Khronos
// validation layer on (tests/vulkan_validation.h): elementwise, conversion and optimizer kernels
// against the reference backend on shapes that cross the 256-invocation workgroup and the
// 65535-workgroup grid (the whole kernel table is in tests/test_kernels.cpp), device memory round
// trips at every alignment, whole runs against the CPU, and no validation message. Skipped,
// saying why, when this build or machine has no Vulkan device.
#include <csignal>

#include "core/dtype.h"
#include "core/rng.h"
#include "io/ggml_quants.h"
#include "kernels/device_array.h"
#include "kernels/vulkan/vulkan.h"
#include "staging.h"
#include "vulkan_validation.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

using namespace lisa;
using lisa_test::fvec;
using lisa_test::hvec;
using lisa_test::ivec;

namespace {

// The device to test, or why there is none.
std::string no_device() {
    lisa_test::vulkan_validation_on();  // before the first Vulkan call
    if (!vulkan_built()) return "built without Vulkan";
    std::string why;
    for (const auto& d : vulkan_devices(&why))
        if (d.usable) return "";
    return why.empty() ? "no usable Vulkan device" : why;
}

#define NEED_VULKAN()                                           \
    do {                                                        \
        const std::string why_ = no_device();                   \
        if (!why_.empty()) GTEST_SKIP() << why_;                \
    } while (0)

fvec randv(size_t n, uint64_t seed, float scale = 1.0f) {
    rng r;
    rng_init(&r, seed);
    fvec v(n);
    for (auto& x : v) x = (float)rng_normal(&r) * scale;
    return v;
}

double rel(const std::vector<float>& a, const std::vector<float>& b) {
    EXPECT_EQ(a.size(), b.size());
    return lisa_test::rel_err(a.data(), b.data(), a.size());
}

// element counts around the workgroup (256) and the grid (65535 workgroups of 256)
const int64_t kSizes[] = {1, 255, 256, 257, 1000, 65535 * 256 + 77};

// Every test ends with the validation layer silent (each test runs in a process of its own).
class vulkan : public ::testing::Test {
  protected:
    void TearDown() override {
        if (!no_device().empty()) return;
        backend_vulkan(0).sync();
        EXPECT_EQ(vulkan_validation_messages(), 0) << "the Vulkan validation layer reported problems (printed above)";
    }
};

}  // namespace

// The validation layer is loaded and its messages reach lisa's counter: a deliberately invalid
// command draws at least one (so the silent-layer checks above and in the harness can fail).
TEST_F(vulkan, the_validation_layer_is_listening) {
    NEED_VULKAN();
    if (!lisa_test::vulkan_validation_on()) GTEST_SKIP() << "vulkan-validationlayers is not installed";
    backend_vulkan(0);
    EXPECT_GE(vulkan_validation_selftest(), 1) << "the validation layer's messages do not reach lisa";
}

TEST_F(vulkan, devices_are_listed_with_their_memory) {
    NEED_VULKAN();
    std::string why;
    auto devs = vulkan_devices(&why);
    ASSERT_FALSE(devs.empty());
    for (const auto& d : devs) {
        EXPECT_FALSE(d.name.empty());
        EXPECT_GT(d.memory_bytes, 0u) << d.name;
    }
}

TEST_F(vulkan, memory_round_trips_at_every_offset_and_size) {
    NEED_VULKAN();
    const backend& V = backend_vulkan(0);
    for (size_t n : {1u, 3u, 1000u, 70000u, (unsigned)(17 << 20)}) {  // inline, staged, and past the 64 MiB staging
        device_array<float> a(V, n);
        EXPECT_EQ(a.host_copy(), std::vector<float>(n, 0.0f)) << "a new allocation is zeroed";
        std::vector<float> h = randv(n, n);
        a.write(0, h.data(), n);
        EXPECT_EQ(a.host_copy(), h) << n;
        device_array<float> b = a;  // device to device
        EXPECT_EQ(b.host_copy(), h);
        if (n > 2) {
            b.zero(1, n - 2);
            std::vector<float> want(n, 0.0f);
            want[0] = h[0], want[n - 1] = h[n - 1];
            EXPECT_EQ(b.host_copy(), want);
        }
    }
    // bf16 spans start at any even byte: writes, reads and zeroing of odd element offsets
    device_array<uint16_t> s(V, 11);
    const std::vector<uint16_t> v = {1, 2, 3, 4, 5};
    s.write(3, v.data(), 5);
    EXPECT_EQ(s.read(3, 5), v);
    s.zero(4, 3);
    EXPECT_EQ(s.read(2, 7), (std::vector<uint16_t>{0, 1, 0, 0, 0, 5, 0}));
}

TEST_F(vulkan, device_memory_is_not_host_memory) {
    NEED_VULKAN();
    const backend& V = backend_vulkan(0);
    device_array<float> a(V, 16);
    EXPECT_EQ(V.mem_host(a.data()), nullptr);
    EXPECT_DEATH({ volatile float x = a.data()[3]; (void)x; }, "");  // the host mirror is PROT_NONE
    // a host pointer given to a kernel is refused by name
    std::vector<float> host(16);
    try {
        V.scale(host.data(), 16, 2.0f);
        ADD_FAILURE() << "a host pointer was accepted";
    } catch (const std::exception& e) {
        EXPECT_NE(std::string(e.what()).find("not memory of the Vulkan device"), std::string::npos) << e.what();
    }
}

TEST_F(vulkan, elementwise_kernels_match_the_reference) {
    NEED_VULKAN();
    const backend& F = *lisa_test::staged("vulkan");
    const backend& R = *lisa_test::staged("ref");
    for (int64_t n : kSizes) {
        auto g = randv(n, 1, 2.0f), u = randv(n, 2), dh = randv(n, 3), x = randv(n, 4, 3.0f);
        fvec h1(n), h2(n), dg1(n, 0.1f), dg2 = dg1, du1(n, 0.2f), du2 = du1;
        F.swiglu_forward(h1.data(), g.data(), u.data(), n);
        R.swiglu_forward(h2.data(), g.data(), u.data(), n);
        EXPECT_LT(rel(h1, h2), 2e-6) << "swiglu_forward " << n;
        F.swiglu_backward(dg1.data(), du1.data(), dh.data(), g.data(), u.data(), n);
        R.swiglu_backward(dg2.data(), du2.data(), dh.data(), g.data(), u.data(), n);
        EXPECT_LT(rel(dg1, dg2), 2e-6) << "swiglu_backward dg " << n;
        EXPECT_LT(rel(du1, du2), 2e-6) << "swiglu_backward du " << n;
        F.geglu_forward(h1.data(), g.data(), u.data(), n);
        R.geglu_forward(h2.data(), g.data(), u.data(), n);
        EXPECT_LT(rel(h1, h2), 2e-6) << "geglu_forward " << n;
        F.geglu_backward(dg1.data(), du1.data(), dh.data(), g.data(), u.data(), n);
        R.geglu_backward(dg2.data(), du2.data(), dh.data(), g.data(), u.data(), n);
        EXPECT_LT(rel(dg1, dg2), 2e-6) << "geglu_backward dg " << n;
        EXPECT_LT(rel(du1, du2), 2e-6) << "geglu_backward du " << n;
        fvec a1 = x, a2 = x;
        F.add(a1.data(), g.data(), n);
        R.add(a2.data(), g.data(), n);
        EXPECT_EQ(a1, a2) << "add " << n;
        F.scale(a1.data(), n, 0.37f);
        R.scale(a2.data(), n, 0.37f);
        EXPECT_LT(rel(a1, a2), 1e-7) << "scale " << n;
        F.softcap(a1.data(), n, 1.7f);
        R.softcap(a2.data(), n, 1.7f);
        EXPECT_LT(rel(a1, a2), 2e-6) << "softcap " << n;
        F.copy(a1.data(), u.data(), n);
        EXPECT_EQ(a1, u) << "copy " << n;
        F.fill(a1.data(), n, -2.5f);
        EXPECT_EQ(a1, fvec(n, -2.5f)) << "fill " << n;
        F.zero(a1.data(), n);
        EXPECT_EQ(a1, fvec(n, 0.0f)) << "zero " << n;
    }
}

TEST_F(vulkan, conversions_embedding_adamw_and_sum_of_squares_match_the_reference) {
    NEED_VULKAN();
    const backend& F = *lisa_test::staged("vulkan");
    const backend& R = *lisa_test::staged("ref");
    for (int64_t n : kSizes) {
        fvec x = randv(n, 5, 10.0f);
        if (n > 4) x[0] = 0.0f, x[1] = -0.0f, x[2] = std::nanf(""), x[3] = 3.0e38f;  // zeros, NaN, overflow to inf
        hvec<uint16_t> b1(n), b2(n);
        F.f32_to_bf16(b1.data(), x.data(), n);
        R.f32_to_bf16(b2.data(), x.data(), n);
        EXPECT_EQ(b1, b2) << "f32_to_bf16 rounds to nearest even, " << n;
        fvec y1(n), y2(n);
        F.bf16_to_f32(y1.data(), b1.data(), n);
        R.bf16_to_f32(y2.data(), b1.data(), n);
        EXPECT_EQ(0, std::memcmp(y1.data(), y2.data(), n * 4)) << "bf16_to_f32 is exact, " << n;
        if (n > 4) x[2] = 1.0f, x[3] = 3.0f;  // (partial sums are fp32 on the device: no 1e38 squares)
        const double s1 = F.sum_of_squares(x.data(), n), s2 = R.sum_of_squares(x.data(), n);
        EXPECT_NEAR(s1, s2, 1e-5 * s2) << "sum_of_squares " << n;
        EXPECT_EQ(s1, F.sum_of_squares(x.data(), n)) << "sum_of_squares repeats bit for bit";
        // AdamW: three steps, decay on and off, a clip factor; against the CPU backend, which forms
        // the update in fp32 the same way (the reference's double arithmetic differs by ~1e-5 in v)
        const backend& C = *lisa_test::staged("cpu");
        adamw_hparams h;
        h.lr = 1e-2;
        h.weight_decay = 0.1;
        fvec p1 = randv(n, 6), g = randv(n, 7), m1(n, 0.0f), v1(n, 0.0f), p2 = p1, m2 = m1, v2 = v1;
        for (int step = 1; step <= 3; step++) {
            F.adamw_update(p1.data(), g.data(), m1.data(), v1.data(), n, h, step, step != 2, 0.8f);
            C.adamw_update(p2.data(), g.data(), m2.data(), v2.data(), n, h, step, step != 2, 0.8f);
        }
        EXPECT_LT(rel(p1, p2), 1e-6) << "adamw p " << n;
        EXPECT_LT(rel(m1, m2), 1e-6) << "adamw m " << n;
        EXPECT_LT(rel(v1, v2), 1e-6) << "adamw v " << n;
    }
    // embedding rows, fp32 and bf16 tables, rows wider and narrower than a workgroup
    for (int64_t D : {3, 300}) {
        const int64_t V = 50, N = 77;
        fvec table = randv(V * D, 8);
        hvec<uint16_t> t16(V * D);
        for (int64_t i = 0; i < V * D; i++) t16[i] = f32_to_bf16(table[i]);
        ivec tok(N);
        for (int64_t i = 0; i < N; i++) tok[i] = (int32_t)((i * 31 + 7) % V);
        fvec e1(N * D), e2(N * D);
        F.embedding_forward(e1.data(), tok.data(), table.data(), N, D);
        R.embedding_forward(e2.data(), tok.data(), table.data(), N, D);
        EXPECT_EQ(e1, e2) << "embedding_forward D " << D;
        F.embedding_forward_bf16(e1.data(), tok.data(), t16.data(), N, D);
        R.embedding_forward_bf16(e2.data(), tok.data(), t16.data(), N, D);
        EXPECT_EQ(e1, e2) << "embedding_forward_bf16 D " << D;
    }
}

// Frozen weights in ggml block types (issue #29): dequant.comp's values equal the CPU's
// dequantization bit for bit for every type (an embedding lookup of every row shows each value,
// f16 scales subnormal and negative included), and the products and the frozen LM head built
// on its tiles agree with the reference backend; q8_0's matrix crosses a tile of rows.
TEST_F(vulkan, block_type_weights_dequantize_as_the_cpu_does) {
    NEED_VULKAN();
    const backend& F = *lisa_test::staged("vulkan");
    const backend& R = *lisa_test::staged("ref");
    rng r;
    rng_init(&r, 11);
    for (ggml_type t : {ggml_type::q8_0, ggml_type::q4_0, ggml_type::q4_1, ggml_type::q5_0, ggml_type::q5_1,
                        ggml_type::q4_K, ggml_type::q5_K, ggml_type::q6_K}) {
        const int64_t bs = ggml_block_size(t), in = bs * (bs == 32 ? 3 : 2), N = 5;
        const int64_t out = t == ggml_type::q8_0 ? 44000 : 37;  // (Vulkan's tiles hold 2^22 / in rows)
        hvec<uint8_t> w(ggml_nbytes(t, out * in));
        for (auto& b : w) b = (uint8_t)(rng_next(&r) & 0xff);
        const size_t bb = ggml_block_bytes(t);
        size_t k = 0;
        for (size_t at = 0; at < w.size(); at += bb, k++) {
            // scales about ±0.008, one in 7 subnormal
            uint16_t d = (uint16_t)(k % 7 == 3 ? (rng_next(&r) & 0x3ff) : 0x2000 + (rng_next(&r) & 0xff));
            if (k % 2) d |= 0x8000;
            const size_t pos = t == ggml_type::q6_K ? 208 : 0;
            std::memcpy(&w[at + pos], &d, 2);
            if (t == ggml_type::q4_1 || t == ggml_type::q5_1 || t == ggml_type::q4_K || t == ggml_type::q5_K)
                std::memcpy(&w[at + 2], &d, 2);  // the min / dmin
        }
        std::vector<float> want(out * in);
        ggml_dequantize(t, w.data(), want.data(), out * in);
        ivec rows(out);
        for (int64_t i = 0; i < out; i++) rows[i] = (int32_t)((i * 7 + 3) % out);
        fvec e(out * in);
        F.embedding_forward_q(e.data(), rows.data(), w.data(), (uint32_t)t, out, in);
        size_t differ = 0;
        for (int64_t i = 0; i < out * in; i++)
            differ += std::memcmp(&e[i], &want[rows[i / in] * in + i % in], 4) != 0;
        EXPECT_EQ(differ, 0u) << ggml_type_name(t) << ": values unlike the CPU's dequantization";
        fvec x = randv(N * in, 12), dy = randv(N * out, 13), b = randv(out, 14);
        fvec y1(N * out), y2(N * out), dx1(N * in, 0.5f), dx2(N * in, 0.5f);
        F.linear_forward_q(y1.data(), x.data(), w.data(), (uint32_t)t, b.data(), N, in, out);
        R.linear_forward_q(y2.data(), x.data(), w.data(), (uint32_t)t, b.data(), N, in, out);
        EXPECT_LT(rel(y1, y2), 1e-5) << ggml_type_name(t) << " linear_forward_q";
        F.linear_backward_q(dx1.data(), dy.data(), w.data(), (uint32_t)t, N, in, out);
        R.linear_backward_q(dx2.data(), dy.data(), w.data(), (uint32_t)t, N, in, out);
        EXPECT_LT(rel(dx1, dx2), 1e-5) << ggml_type_name(t) << " linear_backward_q";
        ivec tgt = {3, -100, (int32_t)out - 1, 0, 17};
        const int64_t chunk = 2;
        fvec sc(lmhead_scratch_floats(chunk, in, out)), hx1(N * in, 0.0f), hx2(N * in, 0.0f);
        const double l1 = F.lmhead_xent(hx1.data(), nullptr, x.data(), nullptr, w.data(), (uint32_t)t, tgt.data(), N, in,
                                        out, 0.5f, sc.data(), chunk, 0.0f);
        const double l2 = R.lmhead_xent(hx2.data(), nullptr, x.data(), nullptr, w.data(), (uint32_t)t, tgt.data(), N, in,
                                        out, 0.5f, sc.data(), chunk, 0.0f);
        EXPECT_NEAR(l1, l2, 1e-5 * std::fabs(l2)) << ggml_type_name(t) << " lmhead_xent loss";
        EXPECT_LT(rel(hx1, hx2), 1e-5) << ggml_type_name(t) << " lmhead_xent dx";
    }
}

// `lisa devices` lists what the library sees; a device that is not there is one clear line.
TEST(vulkan_cli, devices_are_listed_and_a_wrong_device_is_one_line) {
    auto r = lisa_test::run_lisa("devices --json");
    ASSERT_EQ(r.code, 0) << r.output;
    const nlohmann::json j = nlohmann::json::parse(r.output.substr(r.output.find('{')));
    EXPECT_EQ(j["vulkan_built"].get<bool>(), vulkan_built());
    std::string why;
    EXPECT_EQ(j["vulkan"].size(), vulkan_devices(&why).size());
    for (const char* bad : {"--device tpu", "--device vulkan:99", "--device vulkan:x"}) {
        auto e = lisa_test::run_lisa(std::string("eval ") + bad + " --model_name_or_path " + lisa_test::assets_dir() +
                                     "/models/aidreams-260k --dataset_path " + lisa_test::golden_dir("aidreams_data") +
                                     "/text_only");
        EXPECT_NE(e.code, 0) << bad;
        EXPECT_NE(e.output.find("--device"), std::string::npos) << bad << ": " << e.output;
        EXPECT_EQ(std::count(e.output.begin(), e.output.end(), '\n'), 1) << bad << ": " << e.output;
    }
}

// ============================================================================ end to end
// The same runs on --device cpu and --device vulkan: LISA, full fine-tuning and LoRA on a tiny
// Llama (the aidreams checkpoint), LISA on tiny Qwen3 (qk-norm, tied head, windows) and Gemma 3
// (bf16 frozen weights, GeGLU, sandwich norms, local/global layers, soft caps) made by `lisa init`:
// every logged loss within 1e-4 relative over 30 steps, the same eval loss, the same greedy tokens,
// and a checkpoint written on one device resumed on the other gives the one-device run's loss.

using nlohmann::json;

namespace {

std::string aidreams() { return lisa_test::assets_dir() + "/models/aidreams-260k"; }
std::string text_data() { return lisa_test::golden_dir("aidreams_data") + "/text_only"; }


// the logged losses of a run
std::vector<double> losses(const std::string& out) {
    std::vector<double> v;
    for (const auto& j : lisa_test::read_jsonl(out + "/trainer_log.jsonl"))
        if (j.contains("loss")) v.push_back(j["loss"].get<double>());
    return v;
}

void expect_same_losses(const std::vector<double>& a, const std::vector<double>& b, const std::string& what) {
    ASSERT_EQ(a.size(), b.size()) << what;
    ASSERT_FALSE(a.empty()) << what;
    for (size_t i = 0; i < a.size(); i++) EXPECT_NEAR(a[i], b[i], 1e-4 * std::fabs(b[i])) << what << ", step " << i + 1;
}

class vulkan_e2e : public ::testing::TestWithParam<const char*> {
  protected:
    void SetUp() override {
        NEED_VULKAN();
        if (lisa_test::assets_dir().empty()) GTEST_SKIP() << "../shared/assets not found (set LISA_ASSETS)";
        const std::string arch = GetParam();
        if (arch == "llama") {
            model = aidreams();
            return;
        }
        lisa_test::write_file(cfg.path + "/config.json", lisa_test::tiny_arch_config(arch).dump());
        auto r = lisa_test::run_lisa("init --config " + cfg.path + "/config.json --output_model_path " + base.path +
                                     " --tokenizer_path " + aidreams() + " --seed 3");
        ASSERT_EQ(r.code, 0) << r.output;
        model = base.path;
    }
    std::string train(const std::string& device, const std::string& out, const std::string& args) {
        auto r = lisa_test::run_lisa("train --device " + device + " --model_name_or_path " + model + " --dataset_path " +
                                     text_data() + " --output_model_path " + out +
                                     " --logging_steps 1 --block_size 64 --per_device_train_batch_size 4 " + args);
        EXPECT_EQ(r.code, 0) << r.output;
        EXPECT_EQ(r.output.find("vulkan validation"), std::string::npos) << r.output;
        return r.output;
    }
    std::string model;
    lisa_test::temp_dir cfg, base;
};

}  // namespace

TEST_P(vulkan_e2e, training_evaluation_and_generation_match_the_cpu) {
    const std::string arch = GetParam();
    std::vector<std::string> methods = {"--method lisa --lisa_activated_layers 1 --lisa_interval_steps 5"};
    if (arch == "llama") {
        methods.push_back("--method full");
        methods.push_back("--method lora --lora_r 4 --lora_dropout 0.1");
    }
    for (const std::string& m : methods) {
        lisa_test::temp_dir c, v;
        const std::string args = m + " --max_steps 30 --learning_rate 1e-3 --save_strategy no";
        train("cpu", c.path, args);
        train("vulkan", v.path, args);
        expect_same_losses(losses(v.path), losses(c.path), arch + " " + m);
        if (m == methods.front()) {  // reductions in a fixed order: the same device repeats a run bit for bit
            lisa_test::temp_dir again;
            train("vulkan", again.path, args);
            EXPECT_EQ(losses(again.path), losses(v.path)) << arch << " " << m << ": a second run's losses";
            const std::string w1 = lisa_test::read_file(v.path + "/model.safetensors");
            EXPECT_FALSE(w1.empty()) << v.path << "/model.safetensors";
            EXPECT_TRUE(lisa_test::read_file(again.path + "/model.safetensors") == w1) << arch << " " << m << ": a second run's weights";
        }
    }
    // evaluation and greedy decoding of one model on both devices
    for (const char* what : {"eval", "generate"}) {
        const std::string tail = std::string(what) == "eval"
                                     ? " --dataset_path " + text_data() + " --block_size 64"
                                     : " --prompt 'Once upon a time' --max_new_tokens 24";
        auto rc = lisa_test::run_lisa(std::string(what) + " --model_name_or_path " + model + tail);
        auto rv = lisa_test::run_lisa(std::string(what) + " --device vulkan --model_name_or_path " + model + tail);
        ASSERT_EQ(rc.code, 0) << rc.output;
        ASSERT_EQ(rv.code, 0) << rv.output;
        if (std::string(what) == "eval") {
            const double lc = json::parse(rc.output.substr(rc.output.rfind('{')))["loss"].get<double>();
            const double lv = json::parse(rv.output.substr(rv.output.rfind('{')))["loss"].get<double>();
            EXPECT_NEAR(lv, lc, 1e-5 * lc) << arch << " eval";
        } else {
            EXPECT_EQ(rv.output, rc.output) << arch << " greedy tokens";
        }
    }
}

TEST_P(vulkan_e2e, a_checkpoint_resumes_on_the_other_device) {
    const std::string args = "--method lisa --lisa_activated_layers 1 --lisa_interval_steps 2 --max_steps 6 "
                             "--learning_rate 1e-3 --lr_scheduler_type constant --save_strategy steps --save_steps 3";
    lisa_test::temp_dir whole, a, b;
    train("cpu", whole.path, args);
    // steps 1-3 on one device, 4-6 on the other, both ways
    for (const auto& [first, second, dir] : {std::tuple<const char*, const char*, std::string>{"cpu", "vulkan", a.path},
                                            {"vulkan", "cpu", b.path}}) {
        train(first, dir, args + " --max_steps 3");
        train(second, dir, args + " --resume_from_checkpoint latest");
        const std::vector<double> got = losses(dir), want = losses(whole.path);
        ASSERT_EQ(want.size(), 6u);
        ASSERT_GE(got.size(), 3u);
        expect_same_losses(std::vector<double>(got.end() - 3, got.end()), std::vector<double>(want.end() - 3, want.end()),
                           std::string("resumed ") + first + " -> " + second);
    }
}

INSTANTIATE_TEST_SUITE_P(archs, vulkan_e2e, ::testing::Values("llama", "qwen3", "gemma3"),
                         [](const ::testing::TestParamInfo<const char*>& i) { return std::string(i.param); });

// A quantized GGUF base on the Vulkan device (issue #29): its block-type matrices (the tied
// embedding and head among them) stay blocks in device memory and LoRA, LISA and --base_quant
// train on them as on the CPU.
TEST_F(vulkan, a_quantized_base_trains_as_on_the_cpu) {
    NEED_VULKAN();
    if (lisa_test::assets_dir().empty()) GTEST_SKIP() << "../shared/assets not found (set LISA_ASSETS)";
    lisa_test::temp_dir td;
    const std::string q8 = td.path + "/m-q8_0.gguf";
    auto r = lisa_test::run_lisa("export-gguf --model_name_or_path " + aidreams() + " --outfile " + q8 + " --outtype q8_0");
    ASSERT_EQ(r.code, 0) << r.output;
    for (const std::string model_args : {" --model_name_or_path " + q8 + " --method lora --lora_r 4",
                                         " --model_name_or_path " + q8 + " --method lisa --lisa_activated_layers 1 "
                                                                          "--lisa_interval_steps 3",
                                         " --model_name_or_path " + aidreams() + " --method lora --lora_r 4 --base_quant q4_0"}) {
        lisa_test::temp_dir c, v;
        std::string out[2];
        for (int k = 0; k < 2; k++) {
            auto t = lisa_test::run_lisa(std::string("train --device ") + (k ? "vulkan" : "cpu") + model_args +
                                         " --dataset_path " + text_data() + " --output_model_path " + (k ? v.path : c.path) +
                                         " --logging_steps 1 --block_size 64 --per_device_train_batch_size 4 --max_steps 8 "
                                         "--learning_rate 1e-3 --save_strategy no");
            ASSERT_EQ(t.code, 0) << t.output;
            out[k] = t.output;
        }
        EXPECT_NE(out[1].find("held in ggml blocks"), std::string::npos) << out[1];
        EXPECT_EQ(out[1].find("vulkan validation"), std::string::npos) << out[1];
        expect_same_losses(losses(v.path), losses(c.path), "quantized base:" + model_args);
    }
}
