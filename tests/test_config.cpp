// config.json: supported variants parse to the right numbers; anything that would change the
// math and is not implemented is refused with the field named.
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/config.h"
#include "model/llama.h"
#include "test_util.h"

using namespace lisa;
using json = nlohmann::json;

static json base() {
    return {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"vocab_size", 100},
            {"hidden_size", 64}, {"intermediate_size", 128}, {"num_hidden_layers", 2},
            {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"rms_norm_eps", 1e-5}};
}

static std::string err(const json& j) {
    try {
        config_parse(j.dump(), "x/config.json");
    } catch (const lisa::error& e) {
        return e.what();
    }
    return "";
}

TEST(config, llama_defaults) {
    llama_config c = config_parse(base().dump(), "config.json");
    EXPECT_EQ(c.arch, model_arch::llama);
    EXPECT_EQ(c.head_dim, 16);
    EXPECT_EQ(c.num_kv_heads, 2);
    EXPECT_FALSE(c.tie_word_embeddings);
    EXPECT_FALSE(c.qkv_bias);
    EXPECT_EQ(c.rope.kind, rope_kind::none);
    EXPECT_DOUBLE_EQ(c.rope.theta, 10000.0);
    EXPECT_EQ(c.torch_dtype, dtype::f32);
    // param count: embed + head + norm + 2 layers of (2 norms, q, k, v, o, 3 mlp)
    int64_t layer = 2 * 64 + 64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 128;
    EXPECT_EQ(config_num_params(c), 2 * 100 * 64 + 64 + 2 * layer);
}

TEST(config, qwen2_has_qkv_bias_and_mistral_window) {
    json q = base();
    q["architectures"] = {"Qwen2ForCausalLM"};
    q["model_type"] = "qwen2";
    llama_config c = config_parse(q.dump(), "c");
    EXPECT_TRUE(c.qkv_bias);
    EXPECT_FALSE(c.o_bias);
    json m = base();
    m["architectures"] = {"MistralForCausalLM"};
    m["model_type"] = "mistral";
    m["sliding_window"] = 8;
    c = config_parse(m.dump(), "c");
    EXPECT_EQ(c.sliding_window, 8);
    // a batch longer than the window is refused, not computed without the window
    auto model = llama_model_init(c);
    llama_acts a;
    EXPECT_NO_THROW(llama_acts_init(&a, *model, 1, 8));
    try {
        llama_acts_init(&a, *model, 1, 9);
        ADD_FAILURE() << "expected a sliding-window error";
    } catch (const lisa::error& e) {
        EXPECT_NE(std::string(e.what()).find("sliding_window"), std::string::npos);
    }
    m["sliding_window"] = nullptr;
    EXPECT_EQ(config_parse(m.dump(), "c").sliding_window, 0);
}

TEST(config, llama3_rope_frequencies_follow_the_formula) {
    json j = base();
    j["rope_theta"] = 500000.0;
    j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
    llama_config c = config_parse(j.dump(), "c");
    auto f = llama_rope_inv_freq(c);
    ASSERT_EQ(f.size(), 8u);
    // hand-computed: wavelength 2π/inv vs 8192/4 = 2048 (high) and 8192 (low)
    for (int i = 0; i < 8; i++) {
        double inv = 1.0 / std::pow(500000.0, 2.0 * i / 16.0), wl = 2 * M_PI / inv, want;
        if (wl < 2048) want = inv;
        else if (wl > 8192) want = inv / 8;
        else {
            double s = (8192 / wl - 1) / 3;
            want = (1 - s) * inv / 8 + s * inv;
        }
        EXPECT_NEAR(f[i], want, 1e-6 * want) << i;
    }
    j["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
    auto g = llama_rope_inv_freq(config_parse(j.dump(), "c"));
    EXPECT_NEAR(g[1], 1.0 / std::pow(500000.0, 2.0 / 16.0) / 4, 1e-9);
}

TEST(config, bad_fields_are_named) {
    struct bad_case {
        std::function<void(json&)> edit;
        const char*                 expect;
    };
    std::vector<bad_case> cases = {
        {[](json& j) { j.erase("hidden_size"); }, "field 'hidden_size': expected a positive integer, got nothing"},
        {[](json& j) { j["hidden_size"] = "64"; }, "field 'hidden_size': expected a positive integer, got string"},
        {[](json& j) { j["num_hidden_layers"] = 0; }, "field 'num_hidden_layers'"},
        {[](json& j) { j["vocab_size"] = 3.5; }, "field 'vocab_size'"},
        {[](json& j) { j["num_key_value_heads"] = 3; }, "field 'num_key_value_heads'"},
        {[](json& j) { j["hidden_act"] = "gelu"; }, "field 'hidden_act'"},
        {[](json& j) { j["architectures"] = {"GPT2LMHeadModel"}; }, "unsupported architecture \"GPT2LMHeadModel\""},
        {[](json& j) { j.erase("architectures"); j.erase("model_type"); }, "field 'model_type'"},
        {[](json& j) { j["model_type"] = "qwen2"; }, "does not match"},
        {[](json& j) { j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}}; }, "unsupported rope type \"yarn\""},
        {[](json& j) { j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"original_max_position_embeddings", 64}}; }, "rope_scaling.low_freq_factor"},
        {[](json& j) { j["rope_scaling"] = 5; }, "field 'rope_scaling'"},
        {[](json& j) { j["mlp_bias"] = true; }, "field 'mlp_bias'"},
        {[](json& j) { j["tie_word_embeddings"] = "yes"; }, "field 'tie_word_embeddings': expected true or false"},
        {[](json& j) { j["torch_dtype"] = "int8"; }, "field 'torch_dtype'"},
        {[](json& j) { j["head_dim"] = 7; }, "field 'head_dim'"},
        {[](json& j) { j["attention_dropout"] = 0.1; }, "field 'attention_dropout'"},
        {[](json& j) { j["rms_norm_eps"] = -1; }, "field 'rms_norm_eps'"},
    };
    for (auto& c : cases) {
        json j = base();
        c.edit(j);
        std::string m = err(j);
        EXPECT_NE(m.find("x/config.json"), std::string::npos) << m;
        EXPECT_NE(m.find(c.expect), std::string::npos) << "got: " << m;
    }
    EXPECT_NE(std::string([] {
                  try {
                      config_parse("{not json", "x/config.json");
                  } catch (const lisa::error& e) {
                      return std::string(e.what());
                  }
                  return std::string();
              }()).find("x/config.json: not valid JSON"),
              std::string::npos);
}
