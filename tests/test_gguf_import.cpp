// GGUF files in (issue #29): ggml's block types dequantized bit for bit as ggml does them
// (hand-built blocks from the format's description, and ggml itself on random data), Hugging Face
// models through GGUF and back unchanged, the tokenizer rebuilt from GGUF metadata giving the
// Hugging Face ids on every golden string of every asset tokenizer, files llama.cpp quantized
// loading to what llama.cpp computes, every command taking a .gguf, and bad files refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "core/dtype.h"
#include "data/chat_template.h"
#include "export/export_gguf.h"
#include "io/fs.h"
#include "io/ggml_quants.h"
#include "kernels/kernels.h"
#include "io/gguf_read.h"
#include "model/decoder.h"
#include "model/gguf_model.h"
#include "ggml_referee.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

using namespace lisa;
using json = nlohmann::json;
using lisa_test::run_lisa;
using lisa_test::temp_dir;

namespace {

std::string aidreams() { return lisa_test::assets_dir() + "/models/aidreams-260k"; }
std::string text_data() { return lisa_test::golden_dir("aidreams_data") + "/text_only"; }

#define NEED_ASSETS() \
    if (lisa_test::assets_dir().empty()) GTEST_SKIP() << "../shared/assets not found (set LISA_ASSETS)"

void ok(const std::string& args) {
    auto r = run_lisa(args);
    ASSERT_EQ(r.code, 0) << args << "\n" << r.output;
}

// a fresh tiny model of `arch` (tests/test_util.h shapes, aidreams tokenizer) in dir
void make_model(const std::string& arch, const std::string& dir) {
    if (arch == "llama") {
        ok("init --config " + lisa_test::test_dir() + "/../configs/tiny-llama.json --output_model_path " + dir +
           " --tokenizer_path " + aidreams() + " --seed 5");
        return;
    }
    json c = arch == "qwen2" ? lisa_test::tiny_arch_config("qwen3") : lisa_test::tiny_arch_config(arch);
    if (arch == "llama3_rope") {  // Llama 3.1's RoPE scaling: llama.cpp keeps only its divisors (rope_freqs)
        c = json::parse(fs_read_text(lisa_test::test_dir() + "/../configs/tiny-llama.json"));
        c["rope_theta"] = 500000.0;
        c["max_position_embeddings"] = 131072;
        c["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                             {"original_max_position_embeddings", 8192}};
    }
    if (arch == "qwen2") {
        c["architectures"] = {"Qwen2ForCausalLM"};
        c["model_type"] = "qwen2";
        c.erase("head_dim");
    }
    c["use_sliding_window"] = false;  // llama.cpp's qwen2 and qwen3 have no window: the GGUF neither
    temp_dir cfg;
    lisa_test::write_file(cfg.path + "/config.json", c.dump());
    ok("init --config " + cfg.path + "/config.json --output_model_path " + dir + " --tokenizer_path " + aidreams() +
       " --seed 5");
}

std::vector<float> weights_of(const decoder_model& m, const decoder_tensor_info& t) {
    std::vector<float> v(t.numel);
    if (m.half && t.is_matrix && !m.materialized[&t - m.tensors.data()]) {
        std::vector<uint16_t> h(t.numel);
        m.params16.read(t.offset, h.data(), t.numel);
        for (size_t i = 0; i < t.numel; i++) v[i] = bf16_to_f32(h[i]);
    } else {
        m.params.read(t.offset, v.data(), t.numel);
    }
    return v;
}

}  // namespace

// ------------------------------------------------------------------ block types

// Blocks built by hand from the format's description (ggml-common.h's block layouts), with the
// values worked out on paper.
TEST(ggml_blocks, hand_built_blocks_dequantize_to_their_worked_values) {
    // q4_0: d = 0.5 (fp16 0x3800); byte j holds value j (low nibble) and value j + 16 (high)
    uint8_t q40[18];
    const uint16_t half = 0x3800;
    std::memcpy(q40, &half, 2);
    for (int j = 0; j < 16; j++) q40[2 + j] = (uint8_t)(j | ((15 - j) << 4));
    float y[256];
    ggml_dequantize(ggml_type::q4_0, q40, y, 32);
    for (int j = 0; j < 16; j++) {
        EXPECT_EQ(y[j], (j - 8) * 0.5f) << j;
        EXPECT_EQ(y[j + 16], (15 - j - 8) * 0.5f) << j + 16;
    }
    // q8_0: d = 2, q = -3
    uint8_t q80[34];
    const uint16_t two = 0x4000;
    std::memcpy(q80, &two, 2);
    for (int j = 0; j < 32; j++) q80[2 + j] = (uint8_t)(int8_t)(j % 2 ? -3 : 5);
    ggml_dequantize(ggml_type::q8_0, q80, y, 32);
    for (int j = 0; j < 32; j++) EXPECT_EQ(y[j], j % 2 ? -6.0f : 10.0f) << j;
    // q4_K: d = 1, dmin = 0.5; 6-bit scales 1, 2, 3, 4 and mins 0, 1, 2, 3 for sub-blocks 0-3,
    // 0 for 4-7; every byte 0x21 (value 1 in the low nibble, 2 in the high one). Sub-block s of
    // 32 values is d·scale·q - dmin·min: 1·1·1 - 0, 1·2·2 - 0.5, 1·3·1 - 1, 1·4·2 - 1.5, then 0
    uint8_t q4k[144] = {};
    const uint16_t one = 0x3C00;
    std::memcpy(q4k, &one, 2);
    std::memcpy(q4k + 2, &half, 2);
    const uint8_t scales[12] = {1, 2, 3, 4, 0, 1, 2, 3, 0, 0, 0, 0};
    std::memcpy(q4k + 4, scales, 12);
    std::memset(q4k + 16, 0x21, 128);
    ggml_dequantize(ggml_type::q4_K, q4k, y, 256);
    const float want[8] = {1.0f, 3.5f, 2.0f, 6.5f, 0, 0, 0, 0};
    for (int i = 0; i < 256; i++) EXPECT_EQ(y[i], want[i / 32]) << i;
    // q6_K: d = 1, scales all 2; low nibbles 5, high bits 1 (value 5 | 16 = 21, minus 32 = -11)
    uint8_t q6k[210] = {};
    std::memset(q6k, 0x55, 128);  // both nibbles 5
    std::memset(q6k + 128, 0x55, 64);  // every 2-bit field 1
    std::memset(q6k + 192, 2, 16);
    std::memcpy(q6k + 208, &one, 2);
    ggml_dequantize(ggml_type::q6_K, q6k, y, 256);
    for (int i = 0; i < 256; i++) EXPECT_EQ(y[i], -22.0f) << i;
}

TEST(ggml_blocks, every_type_dequantizes_bit_for_bit_as_ggml_does) {
    lisa_test::ggml_referee g;
    if (!g.load()) GTEST_SKIP() << g.why << ": not checked";
    std::mt19937 rng(29);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    const int64_t rows = 6, cols = 512;
    std::vector<float> x(rows * cols);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            const float scale = r == 0 ? 1e-3f : r == 1 ? 30.0f : 1.0f;  // tiny, large, ordinary rows
            x[r * cols + c] = r == 2 && c < 256 ? 0.0f : scale * nd(rng);  // and a block of zeros
        }
    for (ggml_type t : {ggml_type::q4_0, ggml_type::q4_1, ggml_type::q5_0, ggml_type::q5_1, ggml_type::q8_0, ggml_type::q4_K,
                        ggml_type::q5_K, ggml_type::q6_K, ggml_type::f16, ggml_type::bf16}) {
        std::vector<uint8_t> q(ggml_nbytes(t, rows * cols));
        const size_t n = g.quantize_chunk((int)t, x.data(), q.data(), 0, rows, cols, nullptr);
        ASSERT_EQ(n, q.size()) << ggml_type_name(t) << ": ggml's block size differs from ours";
        std::vector<float> mine(rows * cols), theirs(rows * cols);
        ggml_dequantize(t, q.data(), mine.data(), rows * cols);
        g.get_traits((int)t)->to_float(q.data(), theirs.data(), rows * cols);
        size_t diff = 0;
        for (size_t i = 0; i < mine.size(); i++) diff += std::memcmp(&mine[i], &theirs[i], 4) != 0;
        EXPECT_EQ(diff, 0u) << ggml_type_name(t) << ": values that differ from ggml's dequantization";
    }
}

// ------------------------------------------------------------------ models through GGUF

class gguf_round_trip : public ::testing::TestWithParam<const char*> {};

TEST_P(gguf_round_trip, a_hugging_face_model_reads_back_from_its_gguf_unchanged) {
    NEED_ASSETS();
    const std::string arch = GetParam();
    temp_dir m, td;
    const std::string model = arch == std::string("tinystories") ? lisa_test::assets_dir() + "/models/tinystories-656k" : m.path;
    if (arch != std::string("tinystories")) make_model(arch, m.path);
    ok("export-gguf --model_name_or_path " + model + " --outfile " + td.path + "/a.gguf --outtype f32");
    auto hf = decoder_model_load(model, 0);
    auto gg = decoder_model_load(td.path + "/a.gguf", 0);
    EXPECT_EQ(gg->cfg.num_layers, hf->cfg.num_layers);
    EXPECT_EQ(gg->cfg.hidden_size, hf->cfg.hidden_size);
    EXPECT_EQ(gg->cfg.num_kv_heads, hf->cfg.num_kv_heads);
    EXPECT_EQ(gg->cfg.head_dim, hf->cfg.head_dim);
    EXPECT_EQ(gg->cfg.tie_word_embeddings, hf->cfg.tie_word_embeddings);
    EXPECT_EQ(gg->cfg.qkv_bias, hf->cfg.qkv_bias);
    EXPECT_EQ(gg->cfg.qk_norm, hf->cfg.qk_norm);
    EXPECT_EQ(gg->cfg.norm_weight_offset, hf->cfg.norm_weight_offset);
    EXPECT_EQ(gg->cfg.rope.theta, hf->cfg.rope.theta);
    EXPECT_FLOAT_EQ((float)gg->cfg.rms_norm_eps, (float)hf->cfg.rms_norm_eps);
    EXPECT_EQ(gg->cfg.rope.kind, hf->cfg.rope.kind);
    if (hf->cfg.rope.kind == rope_kind::llama3) {  // the same divisors (parameters that give them back)
        EXPECT_EQ(gguf_llama3_rope_factors(gg->cfg), gguf_llama3_rope_factors(hf->cfg));
    }
    ASSERT_EQ(gg->tensors.size(), hf->tensors.size());
    for (size_t i = 0; i < hf->tensors.size(); i++) {
        const auto& t = hf->tensors[i];
        ASSERT_EQ(gg->tensors[i].name, t.name);
        const std::vector<float> a = weights_of(*hf, t), b = weights_of(*gg, gg->tensors[i]);
        // Gemma's norms travel as 1 + w: (1 + w) - 1 may lose w's last bits below 2^-23
        const float tol = t.kind == tensor_kind::norm && hf->cfg.norm_weight_offset != 0 ? 1.2e-7f : 0.0f;
        float worst = 0;
        for (size_t k = 0; k < a.size(); k++) worst = std::max(worst, std::fabs(a[k] - b[k]));
        EXPECT_LE(worst, tol) << arch << " " << t.name;
    }
    // and out again: the same metadata and tensors (an untouched f32 model). A SentencePiece-style
    // vocabulary's scores are renumbered (one per merge the reader rebuilt) in the same order.
    ok("export-gguf --model_name_or_path " + td.path + "/a.gguf --outfile " + td.path + "/b.gguf --outtype f32");
    auto a = gguf_open(td.path + "/a.gguf"), b = gguf_open(td.path + "/b.gguf");
    ASSERT_EQ(a->kvs.size(), b->kvs.size()) << arch;
    for (size_t i = 0; i < a->kvs.size(); i++) {
        EXPECT_EQ(a->kvs[i].key, b->kvs[i].key) << arch;
        if (a->kvs[i].key != "tokenizer.ggml.scores") {
            EXPECT_TRUE(a->kvs[i].value == b->kvs[i].value) << arch << " " << a->kvs[i].key;
            continue;
        }
        const json &x = a->kvs[i].value, &y = b->kvs[i].value;
        ASSERT_EQ(x.size(), y.size());
        for (size_t k = 1; k < x.size(); k++)
            EXPECT_EQ(x[k - 1].get<double>() < x[k].get<double>(), y[k - 1].get<double>() < y[k].get<double>())
                << arch << " scores " << k;
    }
    ASSERT_EQ(a->tensors.size(), b->tensors.size());
    for (size_t i = 0; i < a->tensors.size(); i++) {
        const auto &x = a->tensors[i], &y = b->tensors[i];
        EXPECT_EQ(x.name, y.name);
        EXPECT_EQ(x.type, y.type);
        const bool same = x.nbytes == y.nbytes && std::memcmp(x.data, y.data, x.nbytes) == 0;
        if (hf->cfg.norm_weight_offset == 0) {
            EXPECT_TRUE(same) << arch << " " << x.name;  // (else 1 + w rounds)
        }
    }
    // the same greedy text from the folder and from the file
    auto g1 = run_lisa("generate --model_name_or_path " + model + " --prompt 'Once upon a time' --max_new_tokens 16");
    auto g2 = run_lisa("generate --model_name_or_path " + td.path + "/a.gguf --prompt 'Once upon a time' --max_new_tokens 16");
    ASSERT_EQ(g1.code, 0) << g1.output;
    ASSERT_EQ(g2.code, 0) << g2.output;
    EXPECT_EQ(g2.output, g1.output) << arch;
}

INSTANTIATE_TEST_SUITE_P(archs, gguf_round_trip, ::testing::Values("llama", "llama3_rope", "qwen2", "qwen3", "gemma3", "tinystories"),
                         [](const ::testing::TestParamInfo<const char*>& i) { return std::string(i.param); });

// ------------------------------------------------------------------ tokenizers from metadata

class gguf_tokenizer_in : public ::testing::TestWithParam<const char*> {};

TEST_P(gguf_tokenizer_in, the_rebuilt_tokenizer_gives_hugging_face_ids_on_every_golden_string) {
    NEED_ASSETS();
    const std::string name = GetParam();
    const std::string tok_dir = name == "aidreams-260k" ? aidreams() : lisa_test::assets_dir() + "/tokenizers/" + name;
    std::unique_ptr<tokenizer> hf = tokenizer_load(tok_dir);
    temp_dir cfg, model, td;
    json c = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", tokenizer_vocab_size(*hf)},
              {"hidden_size", 8}, {"intermediate_size", 16}, {"num_hidden_layers", 1}, {"num_attention_heads", 2},
              {"max_position_embeddings", 64}, {"tie_word_embeddings", true}};
    lisa_test::write_file(cfg.path + "/config.json", c.dump());
    ok("init --config " + cfg.path + "/config.json --output_model_path " + model.path + " --tokenizer_path " + tok_dir);
    ok("export-gguf --model_name_or_path " + model.path + " --outfile " + td.path + "/t.gguf --outtype f32");
    std::unique_ptr<tokenizer> tok = tokenizer_load(td.path + "/t.gguf");
    json tj = json::parse(fs_read_text(tok_dir + "/tokenizer.json"));
    // GGUF has no truncation: where tokenizer.json truncates (GPT-2's asset, at 50), the golden
    // ids are the first ones of the untruncated encoding
    const size_t cut = tj["truncation"].is_object() ? tj["truncation"].value("max_length", (size_t)0) : 0;
    auto cut_to = [&](std::vector<int32_t> v, size_t n) {
        if (cut > 0 && n == cut && v.size() > cut) v.resize(cut);
        return v;
    };
    std::ifstream in(lisa_test::assets_dir() + "/tokenizer_golden/" + name + ".jsonl");
    std::string line;
    int n = 0, bad = 0;
    while (std::getline(in, line)) {
        if (line.empty()) continue;
        const json k = json::parse(line);
        const std::string text = k["text"];
        const std::vector<int32_t> want = k["ids"], want_sp = k["ids_special"];
        const std::vector<int32_t> ids = cut_to(tokenizer_encode(*tok, text, false), want.size());
        const std::vector<int32_t> ids_sp = cut_to(tokenizer_encode(*tok, text, true), want_sp.size());
        const std::string dec = tokenizer_decode(*tok, want, false);
        if (ids != want || ids_sp != want_sp || dec != k["decoded"].get<std::string>()) {
            if (++bad <= 3)
                ADD_FAILURE() << name << " " << json(text).dump() << "\n  ids " << json(ids).dump() << "\n want "
                              << json(want).dump() << "\n  with special " << json(ids_sp).dump() << "\n want "
                              << json(want_sp).dump() << "\n  decoded " << json(dec).dump() << " want " << k["decoded"];
        }
        n++;
    }
    EXPECT_EQ(n, 77);
    EXPECT_EQ(bad, 0) << name;
    // the chat template travels, byte for byte, and is what lisa uses for conversations
    const std::string tc = tok_dir + "/tokenizer_config.json";
    const json want_tc = fs_is_file(tc) ? json::parse(fs_read_text(tc)) : json::object();
    model_chat_template from_gguf;
    const bool has = model_chat_template_load(td.path + "/t.gguf", &from_gguf);
    if (want_tc.contains("chat_template") && want_tc["chat_template"].is_string()) {
        std::string got_tc;
        ASSERT_TRUE(model_text_file(td.path + "/t.gguf", "tokenizer_config.json", &got_tc));
        EXPECT_EQ(json::parse(got_tc)["chat_template"], want_tc["chat_template"]) << name;
        EXPECT_TRUE(has) << name;
    } else {
        EXPECT_FALSE(has) << name;
    }
    EXPECT_EQ(tokenizer_bos_id(*tok), tokenizer_bos_id(*hf)) << name;
    EXPECT_EQ(tokenizer_eos_id(*tok), tokenizer_eos_id(*hf)) << name;
}

INSTANTIATE_TEST_SUITE_P(assets, gguf_tokenizer_in,
                         ::testing::Values("aidreams-260k", "gpt2", "llama3", "llama3_1", "mistral", "qwen3", "smollm2",
                                           "gemma3"),
                         [](const ::testing::TestParamInfo<const char*>& i) {
                             std::string s = i.param;
                             std::replace(s.begin(), s.end(), '-', '_');
                             return s;
                         });

// ------------------------------------------------------------------ every command, and bad files

// Every command that takes --model_name_or_path takes a GGUF file; what a run writes stands on
// its own (tokenizer files and config rebuilt from the metadata beside the weights).
TEST(gguf_commands, every_command_reads_a_gguf_and_what_it_writes_stands_alone) {
    NEED_ASSETS();
    temp_dir td;
    const std::string q8 = td.path + "/m-q8_0.gguf";
    ok("export-gguf --model_name_or_path " + aidreams() + " --outfile " + q8 + " --outtype q8_0");
    auto r = run_lisa("info --model_name_or_path " + q8);
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_EQ(json::parse(r.output)["architecture"], "LlamaForCausalLM");
    EXPECT_EQ(json::parse(r.output)["stored_dtype"], "bfloat16") << "a quantized file's matrices are held in bf16";
    // eval: the q8_0 file's loss within 1% of the fp32 folder's
    auto e1 = run_lisa("eval --model_name_or_path " + aidreams() + " --dataset_path " + text_data() + " --block_size 64");
    auto e2 = run_lisa("eval --model_name_or_path " + q8 + " --dataset_path " + text_data() + " --block_size 64");
    ASSERT_EQ(e1.code, 0) << e1.output;
    ASSERT_EQ(e2.code, 0) << e2.output;
    const double l1 = json::parse(e1.output.substr(e1.output.rfind('{')))["loss"], l2 = json::parse(e2.output.substr(e2.output.rfind('{')))["loss"];
    EXPECT_NEAR(l2, l1, 0.01 * l1);
    r = run_lisa("tokenize --model_name_or_path " + q8 + " --text 'Once upon a time'");
    auto r0 = run_lisa("tokenize --model_name_or_path " + aidreams() + " --text 'Once upon a time'");
    EXPECT_EQ(r.output, r0.output);
    r = run_lisa("inspect-data --model_name_or_path " + q8 + " --dataset_path " + text_data() + " --block_size 64");
    EXPECT_EQ(r.code, 0) << r.output;
    // LISA from the file: the output folder is a whole model
    ok("train --model_name_or_path " + q8 + " --dataset_path " + text_data() + " --output_model_path " + td.path +
       "/lisa --method lisa --lisa_activated_layers 1 --lisa_interval_steps 2 --max_steps 4 --block_size 64 --save_strategy no");
    for (const char* f : {"config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"})
        EXPECT_TRUE(fs_is_file(td.path + "/lisa/" + f)) << f;
    r = run_lisa("generate --model_name_or_path " + td.path + "/lisa --prompt 'Once upon a time' --max_new_tokens 8");
    EXPECT_EQ(r.code, 0) << r.output;
    // LoRA on the file, then merged into it
    ok("train --model_name_or_path " + q8 + " --dataset_path " + text_data() + " --output_model_path " + td.path +
       "/lora --method lora --lora_r 4 --max_steps 4 --block_size 64 --learning_rate 1e-2 --save_strategy no");
    EXPECT_TRUE(fs_is_file(td.path + "/lora/tokenizer.json"));
    ok("merge-lora --model_name_or_path " + q8 + " --lora_model_path " + td.path + "/lora --output_model_path " + td.path +
       "/merged");
    auto g1 = run_lisa("generate --model_name_or_path " + q8 + " --lora_model_path " + td.path +
                       "/lora --prompt 'Once upon a time' --max_new_tokens 8");
    auto g2 = run_lisa("generate --model_name_or_path " + td.path + "/merged --prompt 'Once upon a time' --max_new_tokens 8");
    ASSERT_EQ(g1.code, 0) << g1.output;
    EXPECT_EQ(g2.output, g1.output);
}

namespace {

// bytes of a file, edited and written back to another
std::string bytes_of(const std::string& p) { return lisa_test::read_file(p); }
size_t find_after(const std::string& s, const std::string& what) {
    const size_t at = s.find(what);
    EXPECT_NE(at, std::string::npos) << what;
    return at + what.size();
}
template <typename T>
void put_at(std::string& s, size_t at, T v) {
    std::memcpy(&s[at], &v, sizeof v);
}

}  // namespace

// Truncated, miscounted, mistyped and hostile files: one line naming the file and the key or
// tensor, a non-zero exit, nothing allocated from what a file merely claims.
TEST(gguf_commands, bad_files_are_refused_in_one_line) {
    NEED_ASSETS();
    temp_dir td;
    const std::string good = td.path + "/good.gguf";
    ok("export-gguf --model_name_or_path " + aidreams() + " --outfile " + good + " --outtype q8_0");
    const std::string g = bytes_of(good);
    auto refused = [&](const std::string& name, const std::string& bytes, const std::string& expect) {
        const std::string p = td.path + "/" + name + ".gguf";
        lisa_test::write_file(p, bytes);
        auto r = run_lisa("info --model_name_or_path " + p);
        EXPECT_NE(r.code, 0) << name;
        EXPECT_NE(r.output.find(expect), std::string::npos) << name << ": " << r.output;
        EXPECT_NE(r.output.find(p), std::string::npos) << name << " names the file: " << r.output;
        EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << name << ": " << r.output;
    };
    refused("truncated", g.substr(0, g.size() - 1000), "past the end");
    refused("header-only", g.substr(0, 20), "at least a 24-byte header");
    std::string v = g;
    put_at<uint32_t>(v, 4, 7);
    refused("version", v, "GGUF version 7");
    v = g;
    put_at<uint64_t>(v, 8, (uint64_t)1 << 60);  // tensor count
    refused("tensor-count", v, "tensor count");
    v = g;
    put_at<uint64_t>(v, 16, (uint64_t)1 << 60);  // key/value count
    refused("kv-count", v, "key/value count");
    // the embedding's info: name, n_dims, dims, type, offset
    const size_t info = find_after(g, "token_embd.weight");
    v = g;
    put_at<uint32_t>(v, info + 4 + 16, 99);
    refused("type", v, "ggml type 99 is not one lisa.cpp reads");
    v = g;
    put_at<uint64_t>(v, info + 4, (uint64_t)1 << 62);
    refused("dims", v, "dimension 0");
    v = g;
    put_at<uint64_t>(v, info + 4 + 16 + 4, (uint64_t)1 << 50);
    refused("offset", v, "offset");
    v = g;
    put_at<uint32_t>(v, info, 9);
    refused("n-dims", v, "9 dimensions");
    // a string whose length runs past the end
    const size_t arch_key = g.find("general.architecture");
    v = g;
    put_at<uint64_t>(v, arch_key + 20 + 4, (uint64_t)1 << 40);
    refused("string", v, "runs past the end");
    // an architecture lisa.cpp does not read
    v = g;
    std::memcpy(&v[arch_key + 20 + 4 + 8], "gpt9!", 5);
    refused("arch", v, "key 'general.architecture': \"gpt9!\" is not read");
    // a tensor the config does not imply
    v = g;
    std::memcpy(&v[find_after(g, "blk.0.ffn_up.weight") - 6], "upxx", 4);
    refused("unknown-tensor", v, "blk.0.ffn_up.weight' is missing");
}

// ------------------------------------------------------------------ a quantized base

namespace {

// the loss and the norms' gradients of one batch, every matrix frozen (input gradients only)
struct pass {
    double             loss;
    std::vector<float> norm_grads;
};
pass run_pass(const decoder_model& m) {
    const int64_t B = 2, T = 24;
    decoder_acts a;
    decoder_acts_init(&a, m, B, T);
    decoder_grads gr;
    decoder_grads_init(&gr, m);
    for (auto& layer : gr.g.layers)
        for (int t = 0; t < LT_COUNT; t++)
            if (t != LT_ATTN_NORM && t != LT_MLP_NORM) layer[t] = nullptr;
    gr.g.embed = gr.g.lm_head = nullptr;
    std::vector<int32_t> ids(B * T);
    for (size_t i = 0; i < ids.size(); i++) ids[i] = (int32_t)(3 + (i * 37) % 500);
    int64_t n = 0;
    pass p;
    p.loss = decoder_forward_backward(m, &a, &gr, ids.data(), ids.data(), 1.0f / (B * T), &n);
    for (const auto& t : m.tensors)
        if (t.kind == tensor_kind::norm && t.layer >= 0) {
            const std::vector<float> g = gr.buf.read(t.offset, t.numel);
            p.norm_grads.insert(p.norm_grads.end(), g.begin(), g.end());
        }
    return p;
}

}  // namespace

// The decoder layers of a quantized file stay in their blocks (no bf16 or fp32 copy), and compute
// what the same weights dequantized into fp32 compute (the same model with every layer matrix
// materialised); a layer that is trained and leaves is held in bf16 and its blocks given back.
TEST(quantized_base, frozen_blocks_compute_as_their_dequantized_weights) {
    NEED_ASSETS();
    temp_dir td;
    const std::string q8 = td.path + "/m.gguf";
    ok("export-gguf --model_name_or_path " + aidreams() + " --outfile " + q8 + " --outtype q8_0");
    auto m = decoder_model_load(q8);
    ASSERT_TRUE(m->half);
    size_t blocks = 0, n_blocks = 0;
    auto g = gguf_model_open(q8);  // (aidreams' rows of 172 values are not whole blocks: written f16)
    for (size_t i = 0; i < m->tensors.size(); i++) {
        const auto& t = m->tensors[i];
        const bool want = t.is_matrix && gguf_model_type(*g, t) == ggml_type::q8_0;  // the embedding too
        n_blocks += want;
        EXPECT_EQ(decoder_tensor_quantized(*m, i), want) << t.name;
        if (want) {
            EXPECT_EQ(m->q_type[i], (uint32_t)ggml_type::q8_0) << t.name;
            blocks += ggml_nbytes(ggml_type::q8_0, (int64_t)t.numel);
        }
    }
    EXPECT_GE(n_blocks, 16u + 1);
    EXPECT_GE(m->paramsq.size(), blocks);
    // the tied head is the embedding's blocks: the loss and every gradient below go through the
    // block-type embedding lookup and head products
    EXPECT_TRUE(decoder_tensor_quantized(*m, 0)) << m->tensors[0].name;
    EXPECT_EQ(m->w16.lm_head.type, (uint32_t)ggml_type::q8_0);
    EXPECT_EQ(m->w16.lm_head.p, m->w16.embed.p);
    const pass q = run_pass(*m);
    // every layer matrix materialised: fp32 masters dequantized from the same blocks
    auto f = decoder_model_load(q8);
    for (size_t i = 0; i < f->tensors.size(); i++)
        if (decoder_tensor_quantized(*f, i)) decoder_materialize(f.get(), i, i);
    const pass d = run_pass(*f);
    EXPECT_NEAR(q.loss, d.loss, 1e-5 * std::fabs(d.loss));
    ASSERT_EQ(q.norm_grads.size(), d.norm_grads.size());
    ASSERT_FALSE(q.norm_grads.empty());
    EXPECT_LE(lisa_test::rel_err(q.norm_grads.data(), d.norm_grads.data(), q.norm_grads.size()), 1e-5);
    // a trained layer leaving: bf16 of its master, blocks zeroed and no longer used
    size_t i0 = 0;
    while (!decoder_tensor_quantized(*m, i0) || m->tensors[i0].layer < 0) i0++;
    const auto& t0 = m->tensors[i0];
    decoder_materialize(m.get(), i0, i0);
    std::vector<float> master = m->params.read(t0.offset, t0.numel);
    master[0] += 0.25f;  // "trained"
    m->params.write(t0.offset, master.data(), master.size());
    decoder_dematerialize(m.get(), i0, i0);
    EXPECT_FALSE(decoder_tensor_quantized(*m, i0));
    const std::vector<float> now = decoder_tensor_values(*m, i0);
    EXPECT_NEAR(now[0], master[0], 4e-3 * std::fabs(master[0]) + 1e-6);
    EXPECT_TRUE(m->w16.layers[t0.layer][t0.field].is_bf16());
}

// LISA and LoRA on a quantized file: the run trains (loss falls), resumes from a checkpoint
// exactly as it would have gone on, and uses less memory than the same model in bf16.
TEST(quantized_base, lisa_and_lora_train_resume_and_save_on_a_quantized_file) {
    NEED_ASSETS();
    temp_dir td;
    const std::string q8 = td.path + "/m.gguf";
    ok("export-gguf --model_name_or_path " + aidreams() + " --outfile " + q8 + " --outtype q8_0");
    const std::string common = " --dataset_path " + text_data() + " --block_size 64 --logging_steps 1 --learning_rate 3e-3 "
                               "--lr_scheduler_type constant";
    auto losses = [](const std::string& dir) {
        std::vector<double> v;
        for (const auto& j : lisa_test::read_jsonl(dir + "/trainer_log.jsonl"))
            if (j.contains("loss")) v.push_back(j["loss"].get<double>());
        return v;
    };
    for (const std::string method : {"--method lisa --lisa_activated_layers 1 --lisa_interval_steps 2",
                                     "--method lora --lora_r 4"}) {
        temp_dir whole, parts;
        ok("train --model_name_or_path " + q8 + " --output_model_path " + whole.path + " " + method + common +
           " --max_steps 6 --save_strategy no");
        const std::vector<double> w = losses(whole.path);
        ASSERT_EQ(w.size(), 6u) << method;
        EXPECT_LT(w.back(), w.front()) << method;
        ok("train --model_name_or_path " + q8 + " --output_model_path " + parts.path + " " + method + common +
           " --max_steps 3 --save_strategy steps --save_steps 3");
        ok("train --model_name_or_path " + q8 + " --output_model_path " + parts.path + " " + method + common +
           " --max_steps 6 --save_strategy steps --save_steps 3 --resume_from_checkpoint latest");
        const std::vector<double> p = losses(parts.path);
        ASSERT_GE(p.size(), 3u) << method;
        for (size_t k = 0; k < 3; k++)
            EXPECT_EQ(p[p.size() - 3 + k], w[3 + k]) << method << ": step " << 4 + k << " after resuming";
    }
}

// The block-type matrix products of the CPU backends against the fp32 product on the same
// weights dequantized: shapes crossing the 256-row tiles, every block type, forward and input
// gradient; the embedding lookup and the frozen LM head with cross-entropy on the same blocks.
TEST(quantized_kernels, block_products_equal_the_fp32_product_on_the_dequantized_weights) {
    std::mt19937 rng(7);
    std::uniform_int_distribution<int> byte(0, 255);
    for (const char* name : {"cpu", "ref"}) {
        const backend& K = *backend_by_name(name);
        for (ggml_type t : {ggml_type::q8_0, ggml_type::q4_0, ggml_type::q4_1, ggml_type::q5_0, ggml_type::q5_1,
                            ggml_type::q4_K, ggml_type::q5_K, ggml_type::q6_K}) {
            const int64_t bs = ggml_block_size(t), in = bs * (bs == 32 ? 3 : 1), out = 300, N = 5;
            // random blocks, with their fp16 scales set to small normal values
            std::vector<uint8_t> w(ggml_nbytes(t, out * in));
            for (auto& b : w) b = (uint8_t)byte(rng);
            const size_t bb = ggml_block_bytes(t);
            for (size_t at = 0; at < w.size(); at += bb) {
                const uint16_t d = 0x2000 + (uint16_t)byte(rng);  // about 0.008
                const size_t pos = t == ggml_type::q6_K ? 208 : 0;
                std::memcpy(&w[at + pos], &d, 2);
                if (t == ggml_type::q4_1 || t == ggml_type::q5_1 || t == ggml_type::q4_K || t == ggml_type::q5_K)
                    std::memcpy(&w[at + 2], &d, 2);  // the min / dmin
            }
            std::vector<float> wf(out * in), x(N * in), dy(N * out), b(out);
            ggml_dequantize(t, w.data(), wf.data(), out * in);
            std::normal_distribution<float> nd(0, 1);
            for (auto& v : x) v = nd(rng);
            for (auto& v : dy) v = nd(rng);
            for (auto& v : b) v = nd(rng);
            std::vector<float> y1(N * out), y2(N * out), dx1(N * in, 0.5f), dx2(N * in, 0.5f);
            K.linear_forward_q(y1.data(), x.data(), w.data(), (uint32_t)t, b.data(), N, in, out);
            K.linear_forward(y2.data(), x.data(), wf.data(), b.data(), N, in, out);
            EXPECT_LE(lisa_test::rel_err(y1.data(), y2.data(), y1.size()), 1e-6) << name << " " << ggml_type_name(t);
            K.linear_backward_q(dx1.data(), dy.data(), w.data(), (uint32_t)t, N, in, out);
            K.linear_backward(dx2.data(), nullptr, nullptr, dy.data(), nullptr, wf.data(), N, in, out);
            EXPECT_LE(lisa_test::rel_err(dx1.data(), dx2.data(), dx1.size()), 1e-6) << name << " " << ggml_type_name(t);
            // the same blocks as an embedding table [out, in] and as a frozen LM head [V = out, D = in]
            std::vector<int32_t> tok = {0, 299, 17, 17, 150};
            std::vector<float> e1(N * in), e2(N * in);
            K.embedding_forward_q(e1.data(), tok.data(), w.data(), (uint32_t)t, N, in);
            K.embedding_forward(e2.data(), tok.data(), wf.data(), N, in);
            EXPECT_EQ(e1, e2) << name << " " << ggml_type_name(t) << ": embedding rows";
            std::vector<int32_t> tgt = {3, -100, 299, 0, 42};
            const int64_t chunk = 2;
            std::vector<float> sc(lmhead_scratch_floats(chunk, in, out)), hx1(N * in, 0.0f), hx2(N * in, 0.0f);
            const double l1 = K.lmhead_xent(hx1.data(), nullptr, x.data(), nullptr, w.data(), (uint32_t)t, tgt.data(), N,
                                            in, out, 0.5f, sc.data(), chunk, 0.0f);
            const double l2 = K.lmhead_xent(hx2.data(), nullptr, x.data(), wf.data(), nullptr, 30, tgt.data(), N, in, out,
                                            0.5f, sc.data(), chunk, 0.0f);
            EXPECT_NEAR(l1, l2, 1e-6 * std::fabs(l2)) << name << " " << ggml_type_name(t) << ": head loss";
            EXPECT_LE(lisa_test::rel_err(hx1.data(), hx2.data(), hx1.size()), 1e-6) << name << " " << ggml_type_name(t);
        }
    }
}

// lisa.cpp's quantizers (for --base_quant) make the blocks ggml's reference quantizers make.
TEST(ggml_blocks, quantizers_make_ggml_s_blocks_bit_for_bit) {
    lisa_test::ggml_referee g;
    if (!g.load()) GTEST_SKIP() << g.why << ": not checked";
    std::mt19937 rng(31);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    const int64_t rows = 8, cols = 512;
    std::vector<float> x(rows * cols);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            x[r * cols + c] = r == 2 && c < 256 ? 0.0f : (r == 0 ? 1e-3f : r == 1 ? 20.0f : 1.0f) * nd(rng) + (r == 3 ? 0.5f : 0.0f);
    for (ggml_type t : {ggml_type::q8_0, ggml_type::q4_0, ggml_type::q4_K}) {
        std::vector<uint8_t> mine(ggml_nbytes(t, rows * cols)), theirs(mine.size());
        ggml_quantize(t, x.data(), mine.data(), rows * cols);
        g.quantize_chunk((int)t, x.data(), theirs.data(), 0, rows, cols, nullptr);
        size_t diff = 0;
        for (size_t i = 0; i < mine.size(); i++) diff += mine[i] != theirs[i];
        EXPECT_EQ(diff, 0u) << ggml_type_name(t) << ": bytes that differ from ggml's quantizer";
    }
}

// --base_quant: a Hugging Face model's frozen layer matrices quantized at load (q8_0, q4_0, q4_K):
// the log says what is held, LoRA trains on it, LISA resumes bit for bit, bad uses are refused.
TEST(quantized_base, base_quant_quantizes_a_hugging_face_model_at_load) {
    NEED_ASSETS();
    temp_dir cfgd, model;
    json c = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", 512},
              {"hidden_size", 256}, {"intermediate_size", 512}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
              {"num_key_value_heads", 2}, {"max_position_embeddings", 128}, {"tie_word_embeddings", false},
              {"bos_token_id", 1}, {"eos_token_id", 2}};
    lisa_test::write_file(cfgd.path + "/config.json", c.dump());
    ok("init --config " + cfgd.path + "/config.json --output_model_path " + model.path + " --tokenizer_path " + aidreams() +
       " --seed 3");
    const std::string common = " --model_name_or_path " + model.path + " --dataset_path " + text_data() +
                               " --block_size 64 --logging_steps 1 --learning_rate 3e-3 --lr_scheduler_type constant";
    auto losses = [](const std::string& dir) {
        std::vector<double> v;
        for (const auto& j : lisa_test::read_jsonl(dir + "/trainer_log.jsonl"))
            if (j.contains("loss")) v.push_back(j["loss"].get<double>());
        return v;
    };
    for (const char* q : {"q8_0", "q4_0", "q4_K"}) {
        temp_dir out;
        auto r = run_lisa("train" + common + " --output_model_path " + out.path + " --method lora --lora_r 4 --max_steps 4 "
                          "--save_strategy no --base_quant " + q);
        ASSERT_EQ(r.code, 0) << r.output;
        EXPECT_NE(r.output.find(strf("base: 14 frozen layer matrices held in ggml blocks (14 %s); embedding in %s "
                                     "blocks; head in %s blocks", q, q, q)),
                  std::string::npos)
            << r.output << "\nLoRA keeps the embedding and head frozen: quantized too";
        const auto l = losses(out.path);
        ASSERT_EQ(l.size(), 4u);
        EXPECT_LT(l.back(), l.front()) << q;
        EXPECT_EQ(json::parse(fs_read_text(out.path + "/training_args.json"))["base_quant"], q);
    }
    // LISA on a q4_K base resumes bit for bit
    temp_dir whole, parts;
    const std::string lisa = " --method lisa --lisa_activated_layers 1 --lisa_interval_steps 2 --base_quant q4_K";
    ok("train" + common + lisa + " --output_model_path " + whole.path + " --max_steps 6 --save_strategy no");
    ok("train" + common + lisa + " --output_model_path " + parts.path + " --max_steps 3 --save_strategy steps --save_steps 3");
    ok("train" + common + lisa + " --output_model_path " + parts.path +
       " --max_steps 6 --save_strategy steps --save_steps 3 --resume_from_checkpoint latest");
    const auto w = losses(whole.path), p = losses(parts.path);
    ASSERT_EQ(w.size(), 6u);
    ASSERT_GE(p.size(), 3u);
    for (size_t k = 0; k < 3; k++) EXPECT_EQ(p[p.size() - 3 + k], w[3 + k]) << "step " << 4 + k << " after resuming";
    // LISA trains the embedding and head: they keep their exact values (fp32 masters), unless
    // LISA is told to leave them frozen
    temp_dir e1, e2;
    auto lw = run_lisa("train" + common + lisa + " --output_model_path " + e1.path + " --max_steps 1 --save_strategy no");
    EXPECT_NE(lw.output.find("; embedding trained (fp32 master); head trained (fp32 master);"), std::string::npos)
        << lw.output;
    lw = run_lisa("train" + common + lisa + " --output_model_path " + e2.path + " --max_steps 2 --save_strategy no "
                  "--lisa_train_embeddings 0 --lisa_train_head 0");
    EXPECT_NE(lw.output.find("; embedding in q4_K blocks; head in q4_K blocks;"), std::string::npos) << lw.output;
    EXPECT_EQ(losses(e2.path).size(), 2u);
    // refused: an unknown type, and full fine-tuning (nothing stays frozen)
    temp_dir bad;
    auto r = run_lisa("train" + common + " --output_model_path " + bad.path + " --max_steps 1 --base_quant q3_K");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.output.find("--base_quant q3_K: expected q8_0, q4_0 or q4_K"), std::string::npos) << r.output;
    r = run_lisa("train" + common + " --output_model_path " + bad.path + "2 --max_steps 1 --method full --base_quant q8_0");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.output.find("nothing stays frozen"), std::string::npos) << r.output;
}

// --save_gguf from a quantized file: the matrices training left alone keep their original blocks
// byte for byte (never quantized again); what it changed is written at the chosen type. Whether
// a matrix was left alone is decided here independently: the saved folder's values against the
// source's blocks dequantized and rounded to bf16, as the folder stores them.
TEST(quantized_base, save_gguf_keeps_what_training_left_alone_in_its_original_blocks) {
    NEED_ASSETS();
    temp_dir td;
    const std::string q8 = td.path + "/m.gguf";
    ok("export-gguf --model_name_or_path " + aidreams() + " --outfile " + q8 + " --outtype q8_0");
    const std::unique_ptr<gguf_file> src = gguf_open(q8);
    const std::unique_ptr<gguf_model> srcm = gguf_model_open(q8);
    const std::string common = " --dataset_path " + text_data() + " --block_size 64 --learning_rate 3e-3 --save_strategy no";
    // LISA, one interval of one layer: that layer, the embedding and (tied) the head change
    {
        temp_dir out;
        auto r = run_lisa("train --model_name_or_path " + q8 + " --output_model_path " + out.path + common +
                          " --lisa_activated_layers 1 --lisa_interval_steps 2 --max_steps 2 --save_gguf f16");
        ASSERT_EQ(r.code, 0) << r.output;
        EXPECT_NE(r.output.find("21 unchanged matrices kept in their original blocks"), std::string::npos) << r.output;
        const std::unique_ptr<gguf_file> got = gguf_open(out.path + "/model-f16.gguf");
        auto folder = decoder_model_load(out.path);
        size_t kept = 0, changed = 0;
        for (const decoder_tensor_info& t : folder->tensors) {
            if (!t.is_matrix) continue;
            const gguf_tensor_info* gi = gguf_find_tensor(*got, gguf_tensor_name(t));
            const gguf_tensor_info* si = gguf_find_tensor(*src, gguf_tensor_name(t));
            ASSERT_TRUE(gi && si) << t.name;
            std::vector<float> base(t.numel);
            gguf_model_read(*srcm, t, base.data());
            for (float& v : base) v = bf16_to_f32(f32_to_bf16(v));
            const bool same = weights_of(*folder, t) == base;
            if (same) {
                kept++;
                EXPECT_EQ(gi->type, si->type) << t.name;  // q8_0; f16 where rows are not whole blocks (172)
                ASSERT_EQ(gi->nbytes, si->nbytes) << t.name;
                EXPECT_EQ(std::memcmp(gi->data, si->data, si->nbytes), 0) << t.name << ": the source's blocks, as they are";
            } else {
                changed++;
                EXPECT_EQ(gi->type, ggml_type::f16) << t.name << " was trained: written at --save_gguf's type";
            }
        }
        EXPECT_EQ(kept, 3u * 7) << "three layers untouched";
        EXPECT_EQ(changed, 7u + 1) << "one layer and the embedding trained";
    }
    // LoRA on q and v: the merged model keeps every other matrix's blocks
    {
        temp_dir out;
        auto r = run_lisa("train --model_name_or_path " + q8 + " --output_model_path " + out.path + common +
                          " --method lora --lora_r 4 --lora_target_modules q_proj v_proj --max_steps 2 --save_gguf f16");
        ASSERT_EQ(r.code, 0) << r.output;
        const std::unique_ptr<gguf_file> got = gguf_open(out.path + "/model-f16.gguf");
        size_t kept = 0;
        for (const gguf_tensor_info& gi : got->tensors) {
            if (gi.ne.size() != 2) continue;
            const gguf_tensor_info* si = gguf_find_tensor(*src, gi.name);
            ASSERT_TRUE(si) << gi.name;
            const bool adapted = gi.name.find("attn_q") != std::string::npos || gi.name.find("attn_v") != std::string::npos;
            EXPECT_EQ(gi.type, adapted ? ggml_type::f16 : si->type) << gi.name;
            if (!adapted && gi.nbytes == si->nbytes && std::memcmp(gi.data, si->data, si->nbytes) == 0) kept++;
        }
        EXPECT_EQ(kept, 4u * 5 + 1) << "5 unadapted Linears in each of 4 layers, and the embedding";
        EXPECT_TRUE(fs_is_file(out.path + "/adapter.gguf"));
    }
    // export-gguf --base_gguf: a folder that holds the file's values exactly keeps all its blocks
    temp_dir saved;
    ok("train --model_name_or_path " + q8 + " --output_model_path " + saved.path + common +
       " --lisa_activated_layers 1 --lisa_interval_steps 2 --max_steps 1 --learning_rate 0");
    auto r = run_lisa("export-gguf --model_name_or_path " + saved.path + " --base_gguf " + q8 + " --outfile " + td.path +
                      "/again.gguf --outtype f16");
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("29 matrices copied in their original blocks"), std::string::npos) << r.output;
}
