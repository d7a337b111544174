// Model folder I/O: save/load round trips (each dtype, sharded), `lisa init`, and bad folders
// refused with the file and tensor named, through the library and through the CLI.
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/fs.h"
#include "model/decoder.h"
#include "test_util.h"

using namespace lisa;
using json = nlohmann::json;
using lisa_test::temp_dir;

static model_config small_cfg(bool tied = false) {
    json j = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", 50},
              {"hidden_size", 16}, {"intermediate_size", 24}, {"num_hidden_layers", 2},
              {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"tie_word_embeddings", tied},
              {"bos_token_id", 1}, {"eos_token_id", 2}, {"initializer_range", 0.5}};
    return config_parse(j.dump(), "test");
}

static std::string load_error(const std::string& dir) {
    try {
        decoder_model_load(dir);
    } catch (const lisa::error& e) {
        return e.what();
    }
    return "";
}

TEST(model_io, save_load_round_trip_per_dtype) {
    auto m = decoder_model_init(small_cfg());
    decoder_model_init_random(m.get(), 7);
    for (dtype dt : {dtype::f32, dtype::bf16, dtype::f16}) {
        temp_dir td;
        decoder_save_options so;
        so.out_dtype = dt;
        decoder_model_save(*m, td.path, so);
        EXPECT_TRUE(fs_is_file(td.path + "/generation_config.json"));
        auto r = decoder_model_load(td.path);
        EXPECT_EQ(r->stored_dtype, dt);
        EXPECT_EQ(r->cfg.torch_dtype, dt);
        ASSERT_EQ(r->params.size(), m->params.size());
        EXPECT_EQ(r->half, dt == dtype::bf16);  // a bf16 model stays bf16 in memory
        for (size_t ti = 0; ti < m->tensors.size(); ti++) {
            std::vector<float> got = decoder_tensor_values(*r, ti), orig = decoder_tensor_values(*m, ti);
            for (size_t i = 0; i < orig.size(); i++) {
                float want = orig[i];
                if (dt == dtype::bf16) want = bf16_to_f32(f32_to_bf16(want));
                if (dt == dtype::f16) want = f16_to_f32(f32_to_f16(want));
                ASSERT_EQ(got[i], want) << dtype_name(dt) << " " << m->tensors[ti].name << " element " << i;
            }
        }
        if (dt == dtype::bf16) {  // and saving the half-mode model gives the same file again
            temp_dir again;
            decoder_model_save(*r, again.path, so);
            EXPECT_EQ(fs_read_text(again.path + "/model.safetensors"), fs_read_text(td.path + "/model.safetensors"));
        }
        for (auto& e : std::filesystem::directory_iterator(td.path))
            EXPECT_EQ(e.path().string().find(".tmp"), std::string::npos) << "temporary left: " << e.path();
    }
}

TEST(model_io, sharded_save_writes_an_index_and_resave_removes_stale_shards) {
    auto m = decoder_model_init(small_cfg(true));
    decoder_model_init_random(m.get(), 8);
    temp_dir td;
    decoder_save_options so;
    so.max_shard_bytes = 4000;  // forces several shards
    decoder_model_save(*m, td.path, so);
    json idx = json::parse(fs_read_text(td.path + "/model.safetensors.index.json"));
    std::set<std::string> files;
    for (auto& [k, v] : idx["weight_map"].items()) files.insert(v.get<std::string>());
    EXPECT_GT(files.size(), 2u);
    EXPECT_EQ(idx["metadata"]["total_size"].get<size_t>(), m->params.size() * 4);
    EXPECT_FALSE(idx["weight_map"].contains("lm_head.weight"));  // tied: not saved, as HF does
    auto r = decoder_model_load(td.path);
    EXPECT_EQ(r->params, m->params);
    // save again unsharded into the same folder: the old shards and index go away
    so.max_shard_bytes = (size_t)1 << 30;
    decoder_model_save(*r, td.path, so);
    EXPECT_FALSE(fs_is_file(td.path + "/model.safetensors.index.json"));
    for (auto& f : files) EXPECT_FALSE(fs_is_file(td.path + "/" + f)) << f;
    EXPECT_EQ(decoder_model_load(td.path)->params, m->params);
}

TEST(model_io, random_init_is_seeded_and_has_the_requested_statistics) {
    auto a = decoder_model_init(small_cfg()), b = decoder_model_init(small_cfg()), c = decoder_model_init(small_cfg());
    decoder_model_init_random(a.get(), 1);
    decoder_model_init_random(b.get(), 1);
    decoder_model_init_random(c.get(), 2);
    EXPECT_EQ(a->params, b->params);
    EXPECT_NE(a->params, c->params);
    double s = 0, s2 = 0;
    size_t n = 0;
    const std::vector<float> pa = a->params.host_copy();
    for (const auto& t : a->tensors) {
        const float* p = pa.data() + t.offset;
        if (!t.is_matrix) {
            for (size_t i = 0; i < t.numel; i++) ASSERT_EQ(p[i], 1.0f) << t.name;  // norms start at one
            continue;
        }
        for (size_t i = 0; i < t.numel; i++, n++) {
            s += p[i];
            s2 += (double)p[i] * p[i];
        }
    }
    double mean = s / n, sd = std::sqrt(s2 / n - mean * mean);
    EXPECT_NEAR(mean, 0.0, 0.02);
    EXPECT_NEAR(sd, 0.5, 0.02);  // initializer_range
}

TEST(model_io, bad_folders_are_refused_naming_file_and_tensor) {
    auto m = decoder_model_init(small_cfg());
    decoder_model_init_random(m.get(), 3);
    temp_dir td;
    decoder_save_options so;
    decoder_model_save(*m, td.path, so);
    const std::string st = td.path + "/model.safetensors";
    // rewrite the weights with one tensor changed
    auto rewrite = [&](const std::function<void(std::vector<st_write_entry>&)>& edit) {
        std::vector<st_write_entry> es;
        static std::vector<float> host;
        host = m->params.host_copy();
        for (const auto& t : m->tensors) es.push_back({t.name, t.shape, dtype::f32, host.data() + t.offset, dtype::f32});
        edit(es);
        st_write(st, es);
    };
    rewrite([](auto& es) { es.erase(es.begin() + 3); });
    std::string e = load_error(td.path);
    EXPECT_NE(e.find("model.safetensors: tensor 'model.layers.0.self_attn.k_proj.weight' is missing"), std::string::npos) << e;
    rewrite([](auto& es) { es[1].shape = {8, 2}; });
    e = load_error(td.path);
    EXPECT_NE(e.find("tensor 'model.layers.0.input_layernorm.weight': shape [8, 2], expected [16]"), std::string::npos) << e;
    std::vector<float> extra(4);
    rewrite([&](auto& es) { es.push_back({"model.layers.0.mlp.extra.weight", {4}, dtype::f32, extra.data(), dtype::f32}); });
    e = load_error(td.path);
    EXPECT_NE(e.find("unexpected tensor 'model.layers.0.mlp.extra.weight'"), std::string::npos) << e;
    std::vector<int32_t> ints(16);
    rewrite([&](auto& es) { es[1] = {es[1].name, {16}, dtype::i32, ints.data(), dtype::i32}; });
    e = load_error(td.path);
    EXPECT_NE(e.find("dtype I32, expected F32, BF16 or F16"), std::string::npos) << e;
    // harmless RoPE buffers of old checkpoints are accepted
    rewrite([&](auto& es) { es.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", {4}, dtype::f32, extra.data(), dtype::f32}); });
    EXPECT_EQ(load_error(td.path), "");
    // truncated weights file
    std::string full = fs_read_text(st);
    lisa_test::write_file(st, full.substr(0, full.size() - 10));
    e = load_error(td.path);
    EXPECT_NE(e.find(st), std::string::npos) << e;
    EXPECT_NE(e.find("past the"), std::string::npos) << e;
    // a config that does not match the weights
    lisa_test::write_file(st, full);
    json cfg = json::parse(fs_read_text(td.path + "/config.json"));
    cfg["intermediate_size"] = 32;
    lisa_test::write_file(td.path + "/config.json", cfg.dump());
    e = load_error(td.path);
    EXPECT_NE(e.find("gate_proj.weight': shape [24, 16], expected [32, 16] from config.json"), std::string::npos) << e;
    // no weights at all; only .bin weights; no config; not a folder (a hub id)
    std::filesystem::remove(st);
    EXPECT_NE(load_error(td.path).find("no model.safetensors"), std::string::npos);
    lisa_test::write_file(td.path + "/pytorch_model.bin", "x");
    EXPECT_NE(load_error(td.path).find("convert them to safetensors"), std::string::npos);
    std::filesystem::remove(td.path + "/config.json");
    EXPECT_NE(load_error(td.path).find("config.json: missing"), std::string::npos);
    e = load_error("meta-llama/Llama-2-7b-hf");
    EXPECT_NE(e.find("no such local folder"), std::string::npos) << e;
    EXPECT_NE(e.find("download it first"), std::string::npos) << e;
}

TEST(cli, init_then_info_and_clear_errors) {
    temp_dir td;
    json cfg = {{"architectures", {"Qwen2ForCausalLM"}}, {"model_type", "qwen2"}, {"vocab_size", 40},
                {"hidden_size", 8}, {"intermediate_size", 16}, {"num_hidden_layers", 2},
                {"num_attention_heads", 2}, {"num_key_value_heads", 1}, {"tie_word_embeddings", true}};
    lisa_test::write_file(td.path + "/cfg.json", cfg.dump());
    std::filesystem::create_directories(td.path + "/tok");
    // the smallest tokenizer.json the loader takes (init checks that the model can embed its ids)
    lisa_test::write_file(td.path + "/tok/tokenizer.json",
                          R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}, "merges": []}})");
    auto r = lisa_test::run_lisa("init --config " + td.path + "/cfg.json --output_model_path " + td.path +
                                 "/m --tokenizer_path " + td.path + "/tok --dtype bfloat16 --seed 5");
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_TRUE(fs_is_file(td.path + "/m/tokenizer.json"));
    r = lisa_test::run_lisa("info --model_name_or_path " + td.path + "/m");
    ASSERT_EQ(r.code, 0) << r.output;
    json info = json::parse(r.output);
    EXPECT_EQ(info["architecture"], "Qwen2ForCausalLM");
    EXPECT_EQ(info["stored_dtype"], "bfloat16");
    // qwen2: embed (40x8) + norm + 2 layers x (2 norms 16, q 64+8, k 8x4+4, v 36, o 64, mlp 3x128)
    EXPECT_EQ(info["parameters"], 40 * 8 + 8 + 2 * (16 + 72 + 36 + 36 + 64 + 384));
    // errors: one line on stderr, non-zero exit, never a crash
    auto one_line_error = [](const lisa_test::run_result& rr, const std::string& expect) {
        EXPECT_EQ(rr.code, 1) << rr.output;
        EXPECT_EQ(rr.output.rfind("lisa: error: ", 0), 0u) << rr.output;
        EXPECT_EQ(std::count(rr.output.begin(), rr.output.end(), '\n'), 1) << rr.output;
        EXPECT_NE(rr.output.find(expect), std::string::npos) << rr.output;
    };
    one_line_error(lisa_test::run_lisa("info --model_name_or_path meta-llama/Llama-2-7b-hf"), "download it first");
    lisa_test::write_file(td.path + "/m/model.safetensors", "garbage!garbage!");
    one_line_error(lisa_test::run_lisa("info --model_name_or_path " + td.path + "/m"), "model.safetensors");
    cfg["hidden_act"] = "gelu";
    lisa_test::write_file(td.path + "/cfg.json", cfg.dump());
    one_line_error(lisa_test::run_lisa("init --config " + td.path + "/cfg.json --output_model_path " + td.path + "/n"),
                   "field 'hidden_act'");
    EXPECT_FALSE(fs_is_dir(td.path + "/n"));
    EXPECT_NE(lisa_test::run_lisa("init --output_model_path x").code, 0);  // missing --config
}
