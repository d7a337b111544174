// GGUF export, refereed by llama.cpp itself (node-llama-cpp's prebuilt llama.cpp, installed by
// scripts/install-referees.sh into build/referee; its tests are reported as skipped where it is
// missing). llama.cpp loads what lisa.cpp writes, generates the same greedy tokens as
// `lisa generate`, and tokenizes every golden string of every asset tokenizer as Hugging Face does.
//
// Near-ties: at f16 / bf16 / q8_0 the weights llama.cpp runs are rounded, so greedy paths may part
// where lisa.cpp's two best logits are within the rounding's reach. The test does not loosen the
// comparison: at the first divergence it asks lisa.cpp's own logits whether llama.cpp's token was
// within `tie` (in logits) of the best one, and fails otherwise. f32 allows 1e-3 (float summation
// order only).
#include <nlohmann/json.hpp>

#include <fstream>
#include <set>

#include "core/dtype.h"
#include "core/error.h"
#include "export/export_gguf.h"
#include "export/modelfile.h"
#include "export/gguf.h"
#include "infer/generate.h"
#include "io/fs.h"
#include "model/decoder.h"
#include "model/lora.h"
#include "tokenizer/tokenizer.h"

#include <utf8proc.h>
#include "ggml_referee.h"
#include "io/gguf_read.h"
#include "test_util.h"

using namespace lisa;
using json = nlohmann::json;
using lisa_test::run_lisa;
using lisa_test::temp_dir;

static std::string aidreams() { return lisa_test::assets_dir() + "/models/aidreams-260k"; }
static std::string data_dir() { return lisa_test::golden_dir("aidreams_data") + "/text_only"; }

// node_modules of the referee, or "" when it is not installed
static std::string referee_modules() {
    std::string d = std::string(LISA_BUILD_DIR) + "/referee/node_modules";
    return fs_is_dir(d + "/node-llama-cpp") ? d : "";
}

#define NEED_REFEREE()                                                                                       \
    if (referee_modules().empty())                                                                          \
        GTEST_SKIP() << "llama.cpp referee not installed (scripts/install-referees.sh; needs npm): not checked"; \
    if (lisa_test::assets_dir().empty()) GTEST_SKIP() << "../shared/assets not found (set LISA_ASSETS)"

static json referee(const std::string& gguf, const json& job) {
    temp_dir td;
    const std::string jf = td.path + "/job.json";
    lisa_test::write_file(jf, job.dump());
    const std::string cmd = "node " + lisa_test::test_dir() + "/referee/llama_cpp.mjs " + referee_modules() + " " +
                            gguf + " < " + jf + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    std::string out;
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    const int st = pclose(p);
    EXPECT_EQ(WEXITSTATUS(st), 0) << out;
    const size_t brace = out.rfind("\n{");
    try {
        return json::parse(brace == std::string::npos ? out : out.substr(brace + 1));
    } catch (...) {
        ADD_FAILURE() << "referee output is not JSON: " << out.substr(0, 2000);
        return json::object();
    }
}

static void export_ok(const std::string& args) {
    auto r = run_lisa("export-gguf " + args);
    ASSERT_EQ(r.code, 0) << r.output;
}

// lisa.cpp's logits after `ids` (the model's own KV-cached decode)
static std::vector<float> logits_after(const decoder_model& m, const std::vector<int32_t>& ids) {
    decoder_kv_cache kv;
    decoder_kv_cache_init(&kv, m, (int64_t)ids.size() + 1);
    std::vector<float> lg(m.cfg.vocab_size);
    decoder_decode(m, &kv, ids.data(), (int64_t)ids.size(), lg.data());
    return lg;
}

// llama.cpp's greedy path from `prompt` against lisa.cpp's: equal, or parting only at a near-tie
// of lisa.cpp's logits (then the rest is not compared). Returns the number of equal tokens.
// With `lora`, llama.cpp applies that GGUF adapter to `gguf` (its --lora).
static size_t expect_same_greedy(const decoder_model& m, const std::string& gguf, const std::vector<int32_t>& prompt,
                                 int n, double tie, const std::string& what, const std::string& lora = "") {
    generate_options go;
    go.max_new_tokens = n;
    std::vector<int32_t> mine = generate(m, prompt, go, [](int32_t) {});
    json gen = {{"prompt", prompt}, {"n", n}};
    if (!lora.empty()) gen["lora"] = lora;
    json got = referee(gguf, {{"generate", gen}});
    std::vector<int32_t> theirs = got.value("ids", std::vector<int32_t>{});
    // llama.cpp's evaluation ends at an end-of-generation token; lisa.cpp's generate (no stop ids
    // given) runs on, so the paths are compared up to there
    const auto& eos = m.cfg.eos_token_ids;
    const bool ended = !theirs.empty() && std::find(eos.begin(), eos.end(), theirs.back()) != eos.end();
    if (!ended) {
        EXPECT_EQ(theirs.size(), (size_t)n) << what << ": llama.cpp " << json(theirs).dump() << ", lisa.cpp "
                                            << json(mine).dump();
    }
    for (size_t i = 0; i < std::min(mine.size(), theirs.size()); i++) {
        if (mine[i] == theirs[i]) continue;
        std::vector<int32_t> ctx = prompt;
        ctx.insert(ctx.end(), mine.begin(), mine.begin() + i);
        std::vector<float> lg = logits_after(m, ctx);
        const double gap = lg[mine[i]] - lg[theirs[i]];
        EXPECT_LE(gap, tie) << what << ": step " << i << " llama.cpp chose " << theirs[i] << ", lisa.cpp " << mine[i]
                            << " with a logit gap of " << gap << " (not a near-tie)";
        return i;
    }
    return ended ? (size_t)n : std::min(mine.size(), theirs.size());
}

// ------------------------------------------------------------------ the format itself

// A reader written here from the GGUF description, independent of the writer.
struct gguf_read {
    std::map<std::string, json> kv;
    struct tensor {
        std::vector<uint64_t> ne;
        uint32_t              type;
        uint64_t              offset;
    };
    std::map<std::string, tensor> tensors;
    size_t                        data_start = 0;
    std::string                   bytes;
};

static gguf_read read_gguf(const std::string& path) {
    gguf_read g;
    g.bytes = fs_read_text(path);
    size_t p = 0;
    auto take = [&](size_t n) {
        if (p + n > g.bytes.size()) throw std::runtime_error("truncated");
        const char* r = g.bytes.data() + p;
        p += n;
        return r;
    };
    auto u32 = [&] { uint32_t v; std::memcpy(&v, take(4), 4); return v; };
    auto u64 = [&] { uint64_t v; std::memcpy(&v, take(8), 8); return v; };
    auto str = [&] { uint64_t n = u64(); return std::string(take(n), n); };
    std::function<json(uint32_t)> value = [&](uint32_t t) -> json {
        switch (t) {
            case 4: return u32();
            case 5: { int32_t v; std::memcpy(&v, take(4), 4); return v; }
            case 6: { float v; std::memcpy(&v, take(4), 4); return v; }
            case 7: return *take(1) != 0;
            case 8: return str();
            case 10: return u64();
            case 9: {
                uint32_t et = u32();
                uint64_t n = u64();
                json a = json::array();
                for (uint64_t i = 0; i < n; i++) a.push_back(value(et));
                return a;
            }
        }
        throw std::runtime_error("unknown value type " + std::to_string(t));
    };
    EXPECT_EQ(std::string(take(4), 4), "GGUF");
    EXPECT_EQ(u32(), 3u);
    const uint64_t nt = u64(), nkv = u64();
    for (uint64_t i = 0; i < nkv; i++) {
        std::string k = str();
        g.kv[k] = value(u32());
    }
    for (uint64_t i = 0; i < nt; i++) {
        std::string name = str();
        gguf_read::tensor t;
        uint32_t nd = u32();
        for (uint32_t d = 0; d < nd; d++) t.ne.push_back(u64());
        t.type = u32();
        t.offset = u64();
        g.tensors[name] = t;
    }
    g.data_start = (p + 31) / 32 * 32;
    return g;
}

TEST(gguf, q8_0_blocks_follow_llama_cpp_definition) {
    std::vector<float> x(64);
    for (int i = 0; i < 64; i++) x[i] = std::sin(0.37f * i) * (i < 32 ? 2.0f : 0.01f);
    x[5] = -2.5f;  // the block's largest magnitude is negative
    std::vector<uint8_t> q(ggml_nbytes(ggml_type::q8_0, 64));
    quantize_q8_0(x.data(), q.data(), 64);
    ASSERT_EQ(q.size(), 68u);
    for (int b = 0; b < 2; b++) {
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = std::max(amax, std::fabs(x[b * 32 + i]));
        uint16_t dh;
        std::memcpy(&dh, q.data() + b * 34, 2);
        EXPECT_EQ(dh, f32_to_f16(amax / 127.0f)) << "block " << b << " scale";
        for (int i = 0; i < 32; i++) {
            const int8_t qi = (int8_t)q[b * 34 + 2 + i];
            EXPECT_EQ(qi, (int8_t)std::lround(x[b * 32 + i] / (amax / 127.0f))) << b << "," << i;
        }
    }
    EXPECT_EQ((int8_t)q[2 + 5], -127);
    std::vector<float> back(64);
    ggml_dequantize(ggml_type::q8_0, q.data(), back.data(), 64);
    for (int i = 0; i < 64; i++) EXPECT_NEAR(back[i], x[i], (i < 32 ? 2.5f : 0.01f) / 127.0f * 0.51f + 1e-3f) << i;
    std::vector<float> zeros(32, 0.0f);  // an all-zero block: scale 0, no division by zero
    quantize_q8_0(zeros.data(), q.data(), 32);
    for (int i = 0; i < 34; i++) EXPECT_EQ(q[i], 0) << i;
}

TEST(gguf, the_file_has_the_layout_llama_cpp_reads) {
    if (lisa_test::assets_dir().empty()) GTEST_SKIP() << "../shared/assets not found";
    temp_dir td;
    export_ok("--model_name_or_path " + aidreams() + " --outfile " + td.path + "/m.gguf --outtype q8_0");
    gguf_read g = read_gguf(td.path + "/m.gguf");
    EXPECT_EQ(g.kv["general.architecture"], "llama");
    EXPECT_EQ(g.kv["llama.block_count"], 4);
    EXPECT_EQ(g.kv["llama.embedding_length"], 64);
    EXPECT_EQ(g.kv["tokenizer.ggml.model"], "llama");
    EXPECT_EQ(g.kv["tokenizer.ggml.tokens"].size(), 512u);
    EXPECT_EQ(g.kv["general.file_type"], 7);  // MOSTLY_Q8_0
    // tied: no output.weight; 4 layers x 9 tensors + embedding + final norm
    EXPECT_EQ(g.tensors.count("output.weight"), 0u);
    EXPECT_EQ(g.tensors.size(), 4u * 9 + 2);
    const auto& q = g.tensors["blk.0.attn_q.weight"];
    EXPECT_EQ(q.ne, (std::vector<uint64_t>{64, 64}));  // {cols, rows}
    EXPECT_EQ(q.type, 8u);
    EXPECT_EQ(g.tensors["blk.0.attn_norm.weight"].type, 0u);  // norms stay f32
    for (const auto& [name, t] : g.tensors) EXPECT_EQ(t.offset % 32, 0u) << name;
    // the data section ends on the alignment and holds exactly the tensors
    size_t end = 0;
    for (const auto& [name, t] : g.tensors) {
        uint64_t n = 1;
        for (auto d : t.ne) n *= d;
        end = std::max<size_t>(end, t.offset + ggml_nbytes((ggml_type)t.type, (int64_t)n));
    }
    EXPECT_EQ(g.bytes.size(), g.data_start + (end + 31) / 32 * 32);
    // the norm's values are the model's, bit for bit (f32 stays f32)
    auto m = decoder_model_load(aidreams());
    const auto& nt = g.tensors["output_norm.weight"];
    std::vector<float> want = decoder_tensor_values(*m, m->tensors.size() - 1);
    ASSERT_EQ(nt.ne[0], want.size());
    EXPECT_EQ(std::memcmp(g.bytes.data() + g.data_start + nt.offset, want.data(), want.size() * 4), 0);
}

TEST(gguf, bad_requests_fail_with_one_line_and_leave_no_file) {
    if (lisa_test::assets_dir().empty()) GTEST_SKIP() << "../shared/assets not found";
    temp_dir td;
    auto r = run_lisa("export-gguf --model_name_or_path " + aidreams() + " --outfile " + td.path + "/m.gguf --outtype q4_k");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.output.find("--outtype q4_k: expected f32, f16, bf16, q8_0, q4_0 or q4_K"), std::string::npos) << r.output;
    // a model folder without tokenizer.json
    temp_dir bare;
    auto m = decoder_model_load(aidreams());
    decoder_model_save(*m, bare.path, decoder_save_options{});
    fs_remove(bare.path + "/tokenizer.json");
    r = run_lisa("export-gguf --model_name_or_path " + bare.path + " --outfile " + td.path + "/m.gguf");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.output.find("tokenizer.json: missing"), std::string::npos) << r.output;
    // a Unigram tokenizer has no llama.cpp form here
    fs_copy_atomic(aidreams() + "/tokenizer.json", bare.path + "/tokenizer.json");
    json tj = json::parse(fs_read_text(bare.path + "/tokenizer.json"));
    tj["model"]["type"] = "Unigram";
    lisa_test::write_file(bare.path + "/tokenizer.json", tj.dump());
    r = run_lisa("export-gguf --model_name_or_path " + bare.path + " --outfile " + td.path + "/m.gguf");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.output.find("model.type"), std::string::npos) << r.output;
    // a SmolLM3 whose NoPE layers are not llama.cpp's every 4th: refused, naming the field
    temp_dir cfg, smol;
    lisa_test::write_file(cfg.path + "/config.json",
                          json{{"architectures", {"SmolLM3ForCausalLM"}}, {"model_type", "smollm3"},
                               {"vocab_size", 512}, {"hidden_size", 32}, {"intermediate_size", 64},
                               {"num_hidden_layers", 4}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                               {"no_rope_layers", {1, 0, 1, 1}}}
                              .dump());
    r = run_lisa("init --config " + cfg.path + "/config.json --output_model_path " + smol.path + " --tokenizer_path " +
                 aidreams());
    ASSERT_EQ(r.code, 0) << r.output;
    r = run_lisa("export-gguf --model_name_or_path " + smol.path + " --outfile " + td.path + "/m.gguf");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.output.find("config.json: field 'no_rope_layers': llama.cpp's smollm3 skips RoPE on every 4th layer "
                            "(3, 7, 11, ...), this model does not rotate layer 1"),
              std::string::npos)
        << r.output;
    // an unwritable destination: an error, and nothing at the path
    r = run_lisa("export-gguf --model_name_or_path " + aidreams() + " --outfile /proc/lisa_no/m.gguf");
    EXPECT_NE(r.code, 0);
    EXPECT_FALSE(fs_is_file(td.path + "/m.gguf"));
    for (const auto& e : std::filesystem::directory_iterator(td.path)) ADD_FAILURE() << "left behind: " << e.path();
}

// ------------------------------------------------------------------ llama.cpp as referee

TEST(gguf_referee, aidreams_greedy_paths_match_at_every_outtype) {
    NEED_REFEREE();
    auto m = decoder_model_load(aidreams());
    temp_dir td;
    const std::vector<int32_t> prompt = {1};  // BOS
    for (const char* type : {"f32", "f16", "bf16"}) {
        const std::string f = td.path + "/m-" + type + ".gguf";
        export_ok("--model_name_or_path " + aidreams() + " --outfile " + f + " --outtype " + type);
        const double tie = std::string(type) == "f32" ? 1e-3 : std::string(type) == "f16" ? 2e-2 : 1e-1;
        size_t same = expect_same_greedy(*m, f, prompt, 40, tie, type);
        if (std::string(type) == "f32") {
            EXPECT_EQ(same, 40u) << "f32 must follow lisa.cpp all the way";
        }
    }
    const std::string q = td.path + "/m-q8_0.gguf";
    export_ok("--model_name_or_path " + aidreams() + " --outfile " + q + " --outtype q8_0");
    EXPECT_GE(expect_same_greedy(*m, q, prompt, 40, 0.5, "q8_0"), 5u) << "q8_0 leaves the f32 path too early";
}

TEST(gguf_referee, a_lisa_fine_tune_and_a_lora_adapter_export_as_trained) {
    NEED_REFEREE();
    temp_dir lisa_out, lora_out, td;
    auto r = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + data_dir() +
                      " --output_model_path " + lisa_out.path + " --lisa_activated_layers 1 --lisa_interval_steps 2 "
                      "--max_steps 6 --learning_rate 3e-3 --per_device_train_batch_size 4 --save_gguf f32");
    ASSERT_EQ(r.code, 0) << r.output;
    ASSERT_TRUE(fs_is_file(lisa_out.path + "/model-f32.gguf")) << r.output;  // --save_gguf
    auto tuned = decoder_model_load(lisa_out.path);
    EXPECT_EQ(expect_same_greedy(*tuned, lisa_out.path + "/model-f32.gguf", {1, 400}, 30, 1e-3, "LISA fine-tune"), 30u);
    // LoRA: the adapter merged on the way equals the merged model
    r = run_lisa("train --method lora --lora_r 4 --model_name_or_path " + aidreams() + " --dataset_path " + data_dir() +
                 " --output_model_path " + lora_out.path + " --max_steps 6 --learning_rate 1e-2 --per_device_train_batch_size 4 "
                 "--save_gguf q8_0");
    ASSERT_EQ(r.code, 0) << r.output;
    ASSERT_TRUE(fs_is_file(lora_out.path + "/model-q8_0.gguf")) << r.output;  // the merged model, quantized
    export_ok("--model_name_or_path " + aidreams() + " --lora_model_path " + lora_out.path + " --outfile " + td.path +
              "/lora.gguf --outtype f32");
    auto base = decoder_model_load(aidreams());
    lora_merge_adapter(base.get(), lora_out.path);
    EXPECT_EQ(expect_same_greedy(*base, td.path + "/lora.gguf", {1}, 30, 1e-3, "LoRA merged on export"), 30u);
}

// The adapter alone as a GGUF LoRA adapter: llama.cpp applies it (--lora) to the base model's GGUF
// and follows the greedy path lisa.cpp follows with the adapter merged. Every Linear is adapted
// (q and k rows move to llama.cpp's pair order with the base weights'), and an rsLoRA adapter,
// whose scale is not alpha / r, is exported too. The train command writes adapter.gguf beside
// the merged model.
TEST(gguf_referee, a_lora_adapter_runs_in_llama_cpp_as_a_gguf_adapter) {
    NEED_REFEREE();
    temp_dir td;
    export_ok("--model_name_or_path " + aidreams() + " --outfile " + td.path + "/base.gguf --outtype f32");
    for (const std::string extra : {"", " --use_rslora"}) {
        temp_dir lora_out;
        auto r = run_lisa("train --method lora --lora_r 4 --lora_alpha 16 --lora_target_modules all-linear"
                          " --model_name_or_path " + aidreams() + " --dataset_path " + data_dir() + " --output_model_path " +
                          lora_out.path + " --max_steps 6 --learning_rate 2e-2 --per_device_train_batch_size 4 "
                          "--save_gguf f32" + extra);
        ASSERT_EQ(r.code, 0) << r.output;
        ASSERT_TRUE(fs_is_file(lora_out.path + "/adapter.gguf")) << r.output;
        export_ok("--model_name_or_path " + aidreams() + " --lora_model_path " + lora_out.path + " --adapter_only" +
                  " --outfile " + td.path + "/adapter" + extra.substr(extra.empty() ? 0 : 3) + ".gguf");
        EXPECT_EQ(fs_read_text(lora_out.path + "/adapter.gguf"),
                  fs_read_text(td.path + "/adapter" + extra.substr(extra.empty() ? 0 : 3) + ".gguf"))
            << "train --save_gguf and export-gguf --adapter_only write the same adapter";
        gguf_read g = read_gguf(lora_out.path + "/adapter.gguf");
        EXPECT_EQ(g.kv["general.type"], "adapter");
        EXPECT_EQ(g.kv["adapter.type"], "lora");
        EXPECT_EQ(g.tensors.size(), 2u * 7 * 4) << "A and B of 7 Linears in each of aidreams' 4 layers";
        auto tuned = decoder_model_load(aidreams());
        lora_merge_adapter(tuned.get(), lora_out.path);
        auto plain = decoder_model_load(aidreams());
        generate_options go;
        go.max_new_tokens = 30;
        EXPECT_NE(generate(*tuned, {1}, go, [](int32_t) {}), generate(*plain, {1}, go, [](int32_t) {}))
            << "the adapter must change the greedy path, or this test would not see it applied";
        EXPECT_EQ(expect_same_greedy(*tuned, td.path + "/base.gguf", {1}, 30, 1e-3, "GGUF LoRA adapter" + extra,
                                     lora_out.path + "/adapter.gguf"),
                  30u);
    }
}

// Every asset tokenizer: a tiny model with its vocabulary, exported, tokenizes the 77 golden
// strings in llama.cpp as the Hugging Face library did (ids without special tokens, BOS policy).
// Three differences belong to llama.cpp, not to the file, and are recognised rather than loosened:
// - it does not apply Unicode normalizers: for an NFC tokenizer (Qwen) it is given the composed
//   text, which is what Hugging Face tokenizes after its normalizer;
// - it promotes some strings to end-of-generation control tokens wherever they are ordinary
//   vocabulary entries (its llama-vocab.cpp list: "</s>", "<|endoftext|>", ...): a string
//   holding one may differ only where llama.cpp emitted that token;
// - it has no truncation: where tokenizer.json truncates (GPT-2's asset at 50), the Hugging Face
//   ids are compared with llama.cpp's first ones.
static const char* kLlamaCppEog[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                                     "</s>", "<|eom_id|>", "<EOT>", "<|end_of_text|>"};
class gguf_tokenizer : public ::testing::TestWithParam<const char*> {};

TEST_P(gguf_tokenizer, llama_cpp_tokenizes_the_golden_strings_as_hugging_face) {
    NEED_REFEREE();
    const std::string name = GetParam();
    const std::string tok_dir = name == "aidreams-260k" ? aidreams() : lisa_test::assets_dir() + "/tokenizers/" + name;
    std::unique_ptr<tokenizer> tok = tokenizer_load(tok_dir);
    temp_dir cfg, model, td;
    json c = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
              {"vocab_size", tokenizer_vocab_size(*tok)}, {"hidden_size", 8}, {"intermediate_size", 16},
              {"num_hidden_layers", 1}, {"num_attention_heads", 2}, {"max_position_embeddings", 64},
              {"tie_word_embeddings", true}};
    lisa_test::write_file(cfg.path + "/config.json", c.dump());
    auto r = run_lisa("init --config " + cfg.path + "/config.json --output_model_path " + model.path +
                      " --tokenizer_path " + tok_dir);
    ASSERT_EQ(r.code, 0) << r.output;
    export_ok("--model_name_or_path " + model.path + " --outfile " + td.path + "/t.gguf --outtype f32");
    {  // the chat template travels with the tokenizer, byte for byte
        gguf_read g = read_gguf(td.path + "/t.gguf");
        const std::string tc = tok_dir + "/tokenizer_config.json";
        json cfg = fs_is_file(tc) ? json::parse(fs_read_text(tc)) : json::object();
        if (cfg.contains("chat_template") && cfg["chat_template"].is_string()) {
            EXPECT_EQ(g.kv["tokenizer.chat_template"], cfg["chat_template"]) << name;
        } else {
            EXPECT_EQ(g.kv.count("tokenizer.chat_template"), 0u) << name;
        }
    }
    std::vector<json> cases;
    std::ifstream in(lisa_test::assets_dir() + "/tokenizer_golden/" + name + ".jsonl");
    std::string line;
    while (std::getline(in, line))
        if (!line.empty()) cases.push_back(json::parse(line));
    ASSERT_EQ(cases.size(), 77u);
    json tj = json::parse(fs_read_text(tok_dir + "/tokenizer.json"));
    const bool nfc = tj["normalizer"].is_object() && tj["normalizer"].value("type", "") == "NFC";
    const size_t truncate_at = tj["truncation"].is_object() ? tj["truncation"].value("max_length", (size_t)0) : 0;
    json job = {{"tokenize", json::array()}};
    for (const json& k : cases) {
        std::string text = k["text"].get<std::string>();
        if (nfc) {
            utf8proc_uint8_t* composed = utf8proc_NFC((const utf8proc_uint8_t*)text.c_str());
            text = (const char*)composed;
            free(composed);
        }
        job["tokenize"].push_back(text);
    }
    json got = referee(td.path + "/t.gguf", job);
    ASSERT_EQ(got["ids"].size(), cases.size());
    int bad = 0, eog = 0;
    for (size_t i = 0; i < cases.size(); i++) {
        std::vector<int32_t> mine = got["ids"][i].get<std::vector<int32_t>>(), want = cases[i]["ids"];
        if (truncate_at > 0 && want.size() == truncate_at && mine.size() > truncate_at) mine.resize(truncate_at);
        if (mine == want) continue;
        bool promoted = false;  // llama.cpp emitted an ordinary token it treats as end-of-generation
        for (const char* e : kLlamaCppEog) {
            const int32_t id = tokenizer_token_to_id(*tok, e);
            promoted |= id >= 0 && !tokenizer_is_special(*tok, id) &&
                        cases[i]["text"].get<std::string>().find(e) != std::string::npos &&
                        std::count(mine.begin(), mine.end(), id) > 0;
        }
        if (promoted) {
            eog++;
            continue;
        }
        if (++bad <= 5)
            ADD_FAILURE() << name << ": " << cases[i]["text"].dump() << "\n  llama.cpp " << json(mine).dump()
                          << "\n  HF        " << json(want).dump();
    }
    EXPECT_EQ(bad, 0) << name << ": strings llama.cpp tokenizes differently";
    EXPECT_LE(eog, 1) << name << ": only the golden string with an end-of-generation text may differ";
    RecordProperty("llama_cpp_eog_promotions", eog);
    // BOS: llama.cpp prepends it exactly when Hugging Face's post-processor adds it
    const json& k0 = cases[0];
    const bool hf_adds_bos = k0["ids_special"].size() > k0["ids"].size() &&
                             (k0["ids"].empty() || k0["ids_special"][0] != k0["ids"][0]);
    EXPECT_EQ(got["add_bos"].get<bool>(), hf_adds_bos) << name;
}

INSTANTIATE_TEST_SUITE_P(assets, gguf_tokenizer,
                         ::testing::Values("llama3", "llama3_1", "qwen3", "mistral", "smollm2", "gpt2", "gemma3",
                                           "aidreams-260k"),
                         [](const auto& info) {
                             std::string s = info.param;
                             for (auto& ch : s)
                                 if (!isalnum((unsigned char)ch)) ch = '_';
                             return s;
                         });

// The newer architectures (issue: Qwen3, Gemma 3) refereed by llama.cpp: a tiny model of each,
// trained a little so that its logits are not flat, exported, generates lisa.cpp's greedy path.
// Gemma 3 keeps local layers with a window (5) shorter than the 40 generated tokens, its own
// RoPE base, and a final soft cap; llama.cpp's gemma3 reads its scale from head_dim, so
// query_pre_attn_scalar is head_dim here as in the released models.
class gguf_arch : public ::testing::TestWithParam<const char*> {};

TEST_P(gguf_arch, llama_cpp_follows_the_greedy_path_of_a_trained_model) {
    NEED_REFEREE();
    const std::string arch = GetParam();
    json c;
    std::string init_flags;
    if (arch == "llama3")  // llama3 RoPE scaling (-> rope_freqs), GQA, untied head, bf16, q/k row order
        c = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", 512},
             {"hidden_size", 64}, {"intermediate_size", 128}, {"num_hidden_layers", 3}, {"num_attention_heads", 4},
             {"num_key_value_heads", 2}, {"max_position_embeddings", 256}, {"rope_theta", 500000.0},
             {"rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                               {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 16}}},
             {"tie_word_embeddings", false}, {"bos_token_id", 1}, {"eos_token_id", 2}, {"torch_dtype", "bfloat16"}};
    else if (arch == "qwen2") {  // q/k/v biases, f16 storage in shards with an index
        c = {{"architectures", {"Qwen2ForCausalLM"}}, {"model_type", "qwen2"}, {"vocab_size", 512},
             {"hidden_size", 64}, {"intermediate_size", 128}, {"num_hidden_layers", 3}, {"num_attention_heads", 4},
             {"num_key_value_heads", 2}, {"max_position_embeddings", 256}, {"rope_theta", 1000000.0},
             {"tie_word_embeddings", true}, {"bos_token_id", 1}, {"eos_token_id", 2}, {"torch_dtype", "float16"}};
        init_flags = " --max_shard_size 100KB";
    } else if (arch == "qwen3")
        c = {{"architectures", {"Qwen3ForCausalLM"}}, {"model_type", "qwen3"}, {"vocab_size", 512},
             {"hidden_size", 64}, {"intermediate_size", 128}, {"num_hidden_layers", 3}, {"num_attention_heads", 4},
             {"num_key_value_heads", 2}, {"head_dim", 24}, {"max_position_embeddings", 256},
             {"rope_theta", 1000000.0}, {"tie_word_embeddings", true}, {"bos_token_id", 1}, {"eos_token_id", 2}};
    else if (arch == "phi3")  // fused qkv / gate_up, 3/4 of a head rotated, longrope past 16 positions (40 generated)
        c = {{"architectures", {"Phi3ForCausalLM"}}, {"model_type", "phi3"}, {"vocab_size", 512},
             {"hidden_size", 64}, {"intermediate_size", 128}, {"num_hidden_layers", 3}, {"num_attention_heads", 4},
             {"num_key_value_heads", 2}, {"partial_rotary_factor", 0.75}, {"max_position_embeddings", 256},
             {"original_max_position_embeddings", 16},
             {"rope_scaling", {{"type", "longrope"}, {"short_factor", {1.0, 1.1, 1.2, 1.3, 1.4, 1.5}},
                               {"long_factor", {1.5, 2.0, 3.0, 4.0, 6.0, 8.0}}}},
             {"bos_token_id", 1}, {"eos_token_id", 2}, {"torch_dtype", "bfloat16"}};
    else if (arch == "smollm3")  // NoPE on layer 3 (llama.cpp's fixed step of 4), GQA, tied, q/k row order
        c = {{"architectures", {"SmolLM3ForCausalLM"}}, {"model_type", "smollm3"}, {"vocab_size", 512},
             {"hidden_size", 64}, {"intermediate_size", 128}, {"num_hidden_layers", 4}, {"num_attention_heads", 4},
             {"num_key_value_heads", 2}, {"max_position_embeddings", 256}, {"rope_theta", 10000.0},
             {"bos_token_id", 1}, {"eos_token_id", 2}, {"torch_dtype", "bfloat16"}};
    else
        c = {{"architectures", {"Gemma3ForCausalLM"}}, {"model_type", "gemma3_text"}, {"vocab_size", 512},
             {"hidden_size", 64}, {"intermediate_size", 128}, {"num_hidden_layers", 4}, {"num_attention_heads", 2},
             {"num_key_value_heads", 1}, {"head_dim", 32}, {"query_pre_attn_scalar", 32},
             {"max_position_embeddings", 256}, {"sliding_window", 5}, {"sliding_window_pattern", 2},
             {"rope_local_base_freq", 10000.0}, {"rope_theta", 1000000.0}, {"final_logit_softcapping", 30.0},
             {"bos_token_id", 1}, {"eos_token_id", 2}, {"torch_dtype", "bfloat16"}};
    temp_dir cfg, base, tuned, td;
    lisa_test::write_file(cfg.path + "/config.json", c.dump());
    auto r = run_lisa("init --config " + cfg.path + "/config.json --output_model_path " + base.path +
                      " --tokenizer_path " + aidreams() + " --seed 5" + init_flags);
    ASSERT_EQ(r.code, 0) << r.output;
    r = run_lisa("train --method full --model_name_or_path " + base.path + " --dataset_path " + data_dir() +
                 " --output_model_path " + tuned.path + " --max_steps 30 --learning_rate 1e-2 "
                 "--per_device_train_batch_size 4 --block_size 64" + init_flags);
    ASSERT_EQ(r.code, 0) << r.output;
    export_ok("--model_name_or_path " + tuned.path + " --outfile " + td.path + "/m.gguf --outtype f32");
    if (arch == "qwen2") {
        EXPECT_TRUE(fs_is_file(tuned.path + "/model.safetensors.index.json")) << "not sharded";
    }
    auto m = decoder_model_load(tuned.path);
    EXPECT_EQ(expect_same_greedy(*m, td.path + "/m.gguf", {1, 400}, 40, 1e-3, arch), 40u);
    if (arch == "phi3") {  // a LoRA on the fused qkv_proj / gate_up_proj, merged on export
        temp_dir ad;
        r = run_lisa("train --method lora --lora_r 4 --model_name_or_path " + tuned.path + " --dataset_path " +
                     data_dir() + " --output_model_path " + ad.path + " --max_steps 10 --learning_rate 2e-2 "
                     "--per_device_train_batch_size 4 --block_size 64");
        ASSERT_EQ(r.code, 0) << r.output;
        export_ok("--model_name_or_path " + tuned.path + " --lora_model_path " + ad.path + " --outfile " + td.path +
                  "/lora.gguf --outtype f32");
        lora_merge_adapter(m.get(), ad.path);
        EXPECT_EQ(expect_same_greedy(*m, td.path + "/lora.gguf", {1, 400}, 40, 1e-3, "phi3 + LoRA"), 40u);
    }
}

INSTANTIATE_TEST_SUITE_P(archs, gguf_arch,
                         ::testing::Values("llama3", "qwen2", "qwen3", "gemma3", "smollm3", "phi3"));

// The real TinyStories-656K as Hugging Face saved it (tied embedding stored once, as
// lm_head.weight): exported as it is and after a LISA fine-tune, llama.cpp follows lisa.cpp's
// greedy path from the golden prompt (ids from the Hugging Face tokenizer).
TEST(gguf_referee, tinystories_as_saved_and_fine_tuned_runs_the_same_in_llama_cpp) {
    NEED_REFEREE();
    const std::string ts = lisa_test::assets_dir() + "/models/tinystories-656k";
    const json gold = json::parse(fs_read_text(lisa_test::golden_dir("") + "/tinystories.json"));
    const std::vector<int32_t> prompt = gold["greedy"]["prompt_ids"].get<std::vector<int32_t>>();
    temp_dir td;
    export_ok("--model_name_or_path " + ts + " --outfile " + td.path + "/ts.gguf --outtype f32");
    auto m = decoder_model_load(ts);
    EXPECT_EQ(expect_same_greedy(*m, td.path + "/ts.gguf", prompt, 40, 1e-3, "tinystories f32"), 40u);
    // a LISA fine-tune of it, exported by --save_gguf
    const std::string data = td.path + "/data";
    std::filesystem::create_directories(data);
    json inst = json::array();
    for (const auto& t : gold["texts"]) inst.push_back({{"text", t["text"]}});
    lisa_test::write_file(data + "/stories.json", json({{"type", "text_only"}, {"instances", inst}}).dump());
    auto r = run_lisa("train --model_name_or_path " + ts + " --dataset_path " + data + " --output_model_path " + td.path +
                      "/tuned --lisa_activated_layers 1 --max_steps 8 --learning_rate 3e-3 --per_device_train_batch_size 3 "
                      "--save_gguf f32");
    ASSERT_EQ(r.code, 0) << r.output;
    auto tuned = decoder_model_load(td.path + "/tuned");
    EXPECT_EQ(expect_same_greedy(*tuned, td.path + "/tuned/model-f32.gguf", prompt, 40, 1e-3, "tinystories LISA"), 40u);
}

// GGUF in (issue #29): files quantized by llama.cpp itself (llama_model_quantize, the way people's
// downloads were made) load into lisa.cpp with weights near the originals, within each type's
// precision, and lisa.cpp's greedy path on the file is llama.cpp's own on the same file. Two
// models: tinystories (trained; rows of 128 and 384 values, so llama.cpp falls back to its
// 32-value block types) and a widened random one (rows of 256 and 512: the k-quants proper).
// A file with a type lisa.cpp does not read (q3_K) is refused naming it.
TEST(gguf_referee, files_llama_cpp_quantized_load_and_run_as_llama_cpp_runs_them) {
    NEED_REFEREE();
    lisa_test::ggml_referee g;
    if (!g.load() || !g.quant_defaults) GTEST_SKIP() << "llama.cpp's quantizer not loadable: " << g.why;
    temp_dir td, cfgd, wide;
    const std::string ts = lisa_test::assets_dir() + "/models/tinystories-656k";
    json c = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", 512},
              {"hidden_size", 256}, {"intermediate_size", 512}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
              {"num_key_value_heads", 2}, {"max_position_embeddings", 256}, {"initializer_range", 0.25},
              {"tie_word_embeddings", false}, {"bos_token_id", 1}, {"eos_token_id", 2}};
    lisa_test::write_file(cfgd.path + "/config.json", c.dump());
    auto r = run_lisa("init --config " + cfgd.path + "/config.json --output_model_path " + wide.path + " --tokenizer_path " +
                      aidreams() + " --seed 11");
    ASSERT_EQ(r.code, 0) << r.output;
    const json gold = json::parse(fs_read_text(lisa_test::golden_dir("") + "/tinystories.json"));
    const std::vector<int32_t> ts_prompt = gold["greedy"]["prompt_ids"].get<std::vector<int32_t>>();
    struct ftype { const char* name; int id; double rel_rms; };  // llama.h LLAMA_FTYPE_*, and the error each may cost
    const ftype types[] = {{"F32", 0, 0.0}, {"Q8_0", 7, 0.01}, {"Q4_0", 2, 0.2}, {"Q4_1", 3, 0.2}, {"Q5_0", 8, 0.1},
                           {"Q5_1", 9, 0.1}, {"Q4_K_M", 15, 0.2}, {"Q5_K_M", 17, 0.1}, {"Q6_K", 18, 0.05}};
    for (const auto& [model, prompt, what] : {std::tuple<std::string, std::vector<int32_t>, std::string>{ts, ts_prompt, "tinystories"},
                                             {wide.path, std::vector<int32_t>{1, 300, 17}, "wide"}}) {
        export_ok("--model_name_or_path " + model + " --outfile " + td.path + "/" + what + ".gguf --outtype f32");
        auto orig = decoder_model_load(model, 0);
        std::set<std::string> seen_types;
        for (const ftype& ft : types) {
            const std::string q = td.path + "/" + what + "-" + ft.name + ".gguf";
            if (ft.id == 0) std::filesystem::copy_file(td.path + "/" + what + ".gguf", q);  // the unquantized file
            else ASSERT_EQ(g.quantize(td.path + "/" + what + ".gguf", q, ft.id), "") << ft.name;
            const auto qf = gguf_open(q);  // (kept: its tensors point into its mapping)
            for (const auto& t : qf->tensors) seen_types.insert(ggml_type_name(t.type));
            auto m = decoder_model_load(q, 0);
            for (size_t i = 0; i < m->tensors.size(); i++) {
                const auto& t = m->tensors[i];
                std::vector<float> a(t.numel), b(t.numel);
                orig->params.read(t.offset, a.data(), t.numel);
                m->params.read(t.offset, b.data(), t.numel);
                double num = 0, den = 0;
                for (size_t k = 0; k < a.size(); k++) num += (a[k] - b[k]) * (a[k] - b[k]), den += a[k] * a[k];
                EXPECT_LE(std::sqrt(num / std::max(den, 1e-30)), ft.rel_rms) << what << " " << ft.name << " " << t.name;
            }
            // every tensor of the file as ggml itself dequantizes it, bit for bit
            for (const auto& t : qf->tensors) {
                std::vector<float> mine(t.numel), theirs(t.numel);
                ggml_dequantize(t.type, t.data, mine.data(), t.numel);
                if (t.type == ggml_type::f32) std::memcpy(theirs.data(), t.data, t.nbytes);  // (ggml has no f32 to_float)
                else g.get_traits((int)t.type)->to_float(t.data, theirs.data(), t.numel);
                EXPECT_EQ(std::memcmp(mine.data(), theirs.data(), mine.size() * 4), 0) << what << " " << ft.name << " " << t.name;
            }
            // the trained model's greedy path in llama.cpp on the same file (llama.cpp multiplies
            // by activations it quantizes too, so paths may part at a near-tie of lisa.cpp's
            // logits; the random wide model's logits are all near-ties at that precision)
            if (what == "tinystories") {
                const size_t same = expect_same_greedy(*m, q, prompt, 24, 0.05, what + " " + ft.name);
                RecordProperty(what + "_" + ft.name + "_same_tokens", (int)same);
            }
        }
        if (what == "wide") {  // the k-quants really were exercised
            for (const char* t : {"q4_K", "q5_K", "q6_K"}) EXPECT_TRUE(seen_types.count(t)) << what << " " << t;
        } else {
            for (const char* t : {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0"}) EXPECT_TRUE(seen_types.count(t)) << what << " " << t;
        }
    }
    // files lisa.cpp itself quantized (export-gguf --outtype q4_0 / q4_K; its quantizers make
    // ggml's bytes, tests/test_gguf_import.cpp): llama.cpp loads them and follows lisa.cpp's path
    for (const char* outtype : {"q4_0", "q4_K", "q8_0"}) {
        const std::string f = td.path + "/ts-lisa-" + outtype + ".gguf";
        export_ok("--model_name_or_path " + ts + " --outfile " + f + " --outtype " + outtype);
        auto m = decoder_model_load(f, 0);
        const size_t same = expect_same_greedy(*m, f, ts_prompt, 24, 0.05, std::string("tinystories lisa ") + outtype);
        RecordProperty(std::string("tinystories_lisa_") + outtype + "_same_tokens", (int)same);
    }
    // q3_K: refused, naming the tensor and the type number
    const std::string q3 = td.path + "/wide-Q3_K_M.gguf";
    ASSERT_EQ(g.quantize(td.path + "/wide.gguf", q3, 12), "");
    r = run_lisa("info --model_name_or_path " + q3);
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.output.find("ggml type 11 is not one lisa.cpp reads"), std::string::npos) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
}

// The Modelfile written for Ollama: the format the model was trained in as TEMPLATE (raw between
// triple quotes, so real newlines), its end-of-turn token as stop only where the tokenizer has
// it, and no chat wrapping for a model trained without a chat template.
TEST(modelfile, names_the_trained_format_and_only_tokens_the_tokenizer_has) {
    if (lisa_test::assets_dir().empty()) GTEST_SKIP() << "../shared/assets not found";
    const std::string tk = lisa_test::assets_dir() + "/tokenizers/";
    struct want {
        const char* tokenizer;
        const char* format;
        const char* stop;
    };
    for (const want& w : {want{"qwen3", "chatml", "<|im_end|>"}, want{"llama3_1", "llama3", "<|eot_id|>"},
                          want{"gemma3", "gemma", "<end_of_turn>"}}) {
        temp_dir td;
        for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
            std::filesystem::copy_file(tk + w.tokenizer + "/" + f, td.path + "/" + f);
        modelfile_info mf = ollama_modelfile(td.path, td.path, td.path + "/model.gguf", td.path);
        EXPECT_EQ(mf.format, w.format) << w.tokenizer << "\n" << mf.text;
        EXPECT_NE(mf.text.find("FROM ./model.gguf\n"), std::string::npos) << mf.text;
        EXPECT_NE(mf.text.find(std::string("PARAMETER stop \"") + w.stop + "\"\n"), std::string::npos) << mf.text;
        const size_t open = mf.text.find("TEMPLATE \"\"\""), close = mf.text.rfind("\"\"\"");
        ASSERT_NE(open, std::string::npos) << mf.text;
        const std::string body = mf.text.substr(open + 12, close - open - 12);
        EXPECT_NE(body.find("{{ .Prompt }}"), std::string::npos) << body;
        EXPECT_NE(body.find('\n'), std::string::npos) << "newlines must be real, not \\n: " << body;
        EXPECT_EQ(body.find("\\n"), std::string::npos) << body;
        // trained on text2text data: no chat template, whatever the tokenizer has
        lisa_test::write_file(td.path + "/training_args.json",
                              R"({"conversation_template": "", "resolved": {"dataset_type": "text2text"}})");
        mf = ollama_modelfile(td.path, td.path, td.path + "/model.gguf", td.path);
        EXPECT_EQ(mf.format, "plain") << mf.text;
        EXPECT_NE(mf.text.find("TEMPLATE \"\"\"{{ .Prompt }}\"\"\"\n"), std::string::npos) << mf.text;
        EXPECT_EQ(mf.text.find("PARAMETER stop"), std::string::npos) << mf.text;
    }
    // a ChatML run on a tokenizer without <|im_end|>: the template, but no stop it cannot name
    temp_dir td;
    std::filesystem::copy_file(lisa_test::assets_dir() + "/models/aidreams-260k/tokenizer.json", td.path + "/tokenizer.json");
    lisa_test::write_file(td.path + "/training_args.json",
                          R"({"conversation_template": "chatml", "resolved": {"dataset_type": "conversation"}})");
    modelfile_info mf = ollama_modelfile(td.path, td.path, td.path + "/out/m.gguf", td.path);
    EXPECT_EQ(mf.format, "chatml");
    EXPECT_NE(mf.text.find("FROM ./out/m.gguf\n"), std::string::npos) << mf.text;
    EXPECT_EQ(mf.text.find("PARAMETER stop"), std::string::npos) << mf.text;
}
