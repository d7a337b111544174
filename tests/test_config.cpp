// config.json: supported variants parse to the right numbers; anything that would change the
// math and is not implemented is refused with the field named.
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/config.h"
#include "model/decoder.h"
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
    model_config c = config_parse(base().dump(), "config.json");
    EXPECT_EQ(c.model_type, "llama");
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

TEST(config, qwen2_has_qkv_bias_and_windows_follow_hugging_face) {
    json q = base();
    q["architectures"] = {"Qwen2ForCausalLM"};
    q["model_type"] = "qwen2";
    model_config c = config_parse(q.dump(), "c");
    EXPECT_TRUE(c.qkv_bias);
    EXPECT_FALSE(c.o_bias);
    EXPECT_TRUE(c.layer_window.empty());
    // use_sliding_window: layers from max_window_layers on attend through the window
    q["use_sliding_window"] = true;
    q["sliding_window"] = 5;
    q["max_window_layers"] = 1;
    c = config_parse(q.dump(), "c");
    EXPECT_EQ(config_layer_window(c, 0), 0);
    EXPECT_EQ(config_layer_window(c, 1), 5);
    q["layer_types"] = {"sliding_attention", "full_attention"};  // an explicit list wins
    c = config_parse(q.dump(), "c");
    EXPECT_EQ(config_layer_window(c, 0), 5);
    EXPECT_EQ(config_layer_window(c, 1), 0);
    // Mistral: every layer, when sliding_window is set
    json m = base();
    m["architectures"] = {"MistralForCausalLM"};
    m["model_type"] = "mistral";
    m["sliding_window"] = 8;
    c = config_parse(m.dump(), "c");
    EXPECT_EQ(c.sliding_window, 8);
    EXPECT_EQ(config_layer_window(c, 0), 8);
    EXPECT_EQ(config_layer_window(c, 1), 8);
    // a batch longer than the window is computed (not refused)
    auto model = decoder_model_init(c);
    decoder_acts a;
    EXPECT_NO_THROW(decoder_acts_init(&a, *model, 1, 20));
    m["sliding_window"] = nullptr;
    c = config_parse(m.dump(), "c");
    EXPECT_EQ(c.sliding_window, 0);
    EXPECT_EQ(config_layer_window(c, 1), 0);
}

TEST(config, qwen3_has_per_head_norms_and_hugging_face_defaults) {
    json q = base();
    q["architectures"] = {"Qwen3ForCausalLM"};
    q["model_type"] = "qwen3";
    model_config c = config_parse(q.dump(), "c");
    EXPECT_TRUE(c.qk_norm);
    EXPECT_FALSE(c.qkv_bias);
    EXPECT_EQ(c.head_dim, 128);  // Qwen3Config's default, not hidden/heads
    EXPECT_FALSE(c.tie_word_embeddings);
    q["head_dim"] = 24;
    q["attention_bias"] = true;
    c = config_parse(q.dump(), "c");
    EXPECT_TRUE(c.qkv_bias && c.o_bias);
    // params: per layer 2 norms, q/k/v/o (+ biases), q_norm and k_norm [hd], 3 MLP matrices
    const int64_t Q = 4 * 24, KV = 2 * 24;
    int64_t layer = 2 * 64 + 64 * Q + 2 * 64 * KV + Q * 64 + (Q + 2 * KV + 64) + 2 * 24 + 3 * 64 * 128;
    EXPECT_EQ(config_num_params(c), 2 * 100 * 64 + 64 + 2 * layer);
}

static json gemma_base() {
    return {{"architectures", {"Gemma3ForCausalLM"}}, {"model_type", "gemma3_text"}, {"vocab_size", 100},
            {"hidden_size", 64}, {"intermediate_size", 128}, {"num_hidden_layers", 7},
            {"num_attention_heads", 4}, {"num_key_value_heads", 1}, {"head_dim", 32}};
}

TEST(config, gemma3_text_reads_every_architecture_field) {
    model_config c = config_parse(gemma_base().dump(), "c");
    EXPECT_EQ(c.model_type, "gemma3_text");
    EXPECT_TRUE(c.qk_norm && c.sandwich_norms);
    EXPECT_EQ(c.norm_weight_offset, 1.0);
    EXPECT_EQ(c.hidden_act, activation::gelu_tanh);
    EXPECT_DOUBLE_EQ(c.embed_scale, 8.0);  // sqrt(64)
    EXPECT_TRUE(c.tie_word_embeddings);    // Gemma3TextConfig's default
    EXPECT_EQ(config_attn_scale(c), (float)(1.0 / 16.0));  // query_pre_attn_scalar 256 by default
    // sliding_window_pattern 6 (default): layers 0-4 local, 5 global, 6 local
    for (int64_t l = 0; l < 7; l++) {
        EXPECT_EQ(config_layer_window(c, l), l == 5 ? 0 : 4096) << l;
        EXPECT_EQ(config_layer_local_rope(c, l), l != 5) << l;
    }
    EXPECT_DOUBLE_EQ(c.rope_local.theta, 10000.0);
    EXPECT_DOUBLE_EQ(c.rope.theta, 1000000.0);  // Gemma3TextConfig's rope_theta (the global layers)
    json g = gemma_base();
    g["layer_types"] = {"full_attention", "sliding_attention", "full_attention", "full_attention",
                        "full_attention", "full_attention", "sliding_attention"};
    g["sliding_window"] = 3;
    g["query_pre_attn_scalar"] = 64;
    g["attn_logit_softcapping"] = 50.0;
    g["final_logit_softcapping"] = 30.0;
    g["rope_local_base_freq"] = 500.0;
    g["rope_theta"] = 1e6;
    g["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 8.0}};
    c = config_parse(g.dump(), "c");
    EXPECT_EQ(config_layer_window(c, 0), 0);
    EXPECT_EQ(config_layer_window(c, 1), 3);
    EXPECT_EQ(config_layer_window(c, 6), 3);
    EXPECT_EQ(config_attn_scale(c), 0.125f);
    EXPECT_EQ(c.attn_logit_softcap, 50.0);
    EXPECT_EQ(c.final_logit_softcap, 30.0);
    EXPECT_EQ(c.rope.kind, rope_kind::linear);       // global layers: scaled
    EXPECT_EQ(c.rope_local.kind, rope_kind::none);   // local layers: plain, their own base
    EXPECT_DOUBLE_EQ(c.rope_local.theta, 500.0);
    // params: per layer 4 norms [D], q/k/v/o, q_norm and k_norm [hd], 3 MLP matrices; tied head
    const int64_t Q = 4 * 32, KV = 32;
    int64_t layer = 4 * 64 + 64 * Q + 2 * 64 * KV + Q * 64 + 2 * 32 + 3 * 64 * 128;
    EXPECT_EQ(config_num_params(c), 100 * 64 + 64 + 7 * layer);
}

// What a config asks for that is not implemented is refused with the field named.
TEST(config, vision_towers_experts_and_unknown_parts_are_refused_by_name) {
    struct bad_case {
        json        j;
        const char* expect;
    };
    json mm = gemma_base();
    mm["architectures"] = {"Gemma3ForConditionalGeneration"};
    mm["model_type"] = "gemma3";
    json vis = gemma_base();
    vis["vision_config"] = {{"hidden_size", 32}};
    json moe = base();
    moe["architectures"] = {"Qwen3MoeForCausalLM"};
    moe["model_type"] = "qwen3_moe";
    json experts = base();
    experts["architectures"] = {"Qwen3ForCausalLM"};
    experts["model_type"] = "qwen3";
    experts["num_experts"] = 128;
    json act = gemma_base();
    act["hidden_activation"] = "gelu";
    json rope = gemma_base();
    rope["rope_scaling"] = {{"rope_type", "dynamic"}, {"factor", 2.0}};
    json types = gemma_base();
    types["layer_types"] = {"sliding_attention"};
    json bidir = gemma_base();
    bidir["use_bidirectional_attention"] = true;
    std::vector<bad_case> cases = {
        {mm, "field 'architectures': Gemma3ForConditionalGeneration is the multimodal Gemma 3"},
        {vis, "field 'vision_config'"},
        {moe, "field 'architectures': Qwen3MoeForCausalLM is a mixture-of-experts model"},
        {experts, "field 'num_experts'"},
        {act, "field 'hidden_activation'"},
        {rope, "unsupported rope type \"dynamic\""},
        {types, "field 'layer_types': expected a list of 7 entries"},
        {bidir, "field 'use_bidirectional_attention'"},
    };
    for (auto& c : cases) {
        std::string m = err(c.j);
        EXPECT_NE(m.find("x/config.json"), std::string::npos) << m;
        EXPECT_NE(m.find(c.expect), std::string::npos) << "got: " << m;
    }
}

// A saved config reads back to the same model: every architecture's fields survive.
TEST(config, every_architecture_round_trips_through_config_to_json) {
    json q2 = base(), q3 = base(), mi = base(), ge = gemma_base();
    q2["architectures"] = {"Qwen2ForCausalLM"}, q2["model_type"] = "qwen2", q2["use_sliding_window"] = true;
    q2["sliding_window"] = 6, q2["max_window_layers"] = 1;
    q3["architectures"] = {"Qwen3ForCausalLM"}, q3["model_type"] = "qwen3", q3["head_dim"] = 8;
    mi["architectures"] = {"MistralForCausalLM"}, mi["model_type"] = "mistral", mi["sliding_window"] = 4;
    ge["final_logit_softcapping"] = 30.0, ge["sliding_window"] = 9;
    json sm = base(), sw = base();
    sm["architectures"] = {"SmolLM3ForCausalLM"}, sm["model_type"] = "smollm3";
    sw = sm, sw["num_hidden_layers"] = 7, sw["use_sliding_window"] = true, sw["sliding_window"] = 3, sw["no_rope_layers"] = {1, 0, 1, 0, 1, 1, 0};
    json ph = base();  // Phi-3: fused projections, partial rotary, longrope
    ph["architectures"] = {"Phi3ForCausalLM"}, ph["model_type"] = "phi3", ph["partial_rotary_factor"] = 0.5;
    ph["max_position_embeddings"] = 128, ph["original_max_position_embeddings"] = 32, ph["sliding_window"] = 7;
    ph["rope_scaling"] = {{"type", "longrope"}, {"short_factor", {1.0, 2.0, 3.0, 4.0}}, {"long_factor", {5, 6, 7, 8}}};
    for (const json& j : {base(), q2, q3, mi, ge, sm, sw, ph}) {
        model_config a = config_parse(j.dump(), "a");
        model_config b = config_parse(config_to_json(a), "b");
        EXPECT_EQ(a.architecture, b.architecture);
        EXPECT_EQ(a.head_dim, b.head_dim) << a.architecture;
        EXPECT_EQ(a.qk_norm, b.qk_norm) << a.architecture;
        EXPECT_EQ(a.qkv_bias, b.qkv_bias) << a.architecture;
        EXPECT_EQ(a.layer_window, b.layer_window) << a.architecture;
        EXPECT_EQ(a.layer_local_rope, b.layer_local_rope) << a.architecture;
        EXPECT_EQ(a.query_pre_attn_scalar, b.query_pre_attn_scalar) << a.architecture;
        EXPECT_EQ(a.final_logit_softcap, b.final_logit_softcap) << a.architecture;
        EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings) << a.architecture;
        EXPECT_EQ(a.rope_local.theta, b.rope_local.theta) << a.architecture;
        EXPECT_EQ(a.layer_no_rope, b.layer_no_rope) << a.architecture;
        EXPECT_EQ(a.rope.theta, b.rope.theta) << a.architecture;
        EXPECT_EQ(a.rope_dim, b.rope_dim) << a.architecture;
        EXPECT_EQ(a.fused_qkv, b.fused_qkv) << a.architecture;
        EXPECT_EQ(a.rope.kind, b.rope.kind) << a.architecture;
        EXPECT_EQ(a.rope.short_factor, b.rope.short_factor) << a.architecture;
        EXPECT_EQ(a.rope.long_factor, b.rope.long_factor) << a.architecture;
        EXPECT_EQ(a.rope.attention_factor, b.rope.attention_factor) << a.architecture;
        EXPECT_EQ(a.rope.original_max_position_embeddings, b.rope.original_max_position_embeddings) << a.architecture;
        EXPECT_EQ(config_num_params(a), config_num_params(b)) << a.architecture;
    }
}

// Phi-3 as Hugging Face reads it: q/k/v and gate/up fused, int(head_dim · partial_rotary_factor)
// values rotated, longrope's attention factor sqrt(1 + ln(max/original) / ln(original)) unless
// given, the long factors only past the original context; what it cannot compute is refused.
TEST(config, phi3_reads_fused_projections_partial_rotary_and_longrope) {
    json j = base();  // hidden 64, 4 heads: head_dim 16
    j["architectures"] = {"Phi3ForCausalLM"}, j["model_type"] = "phi3", j["partial_rotary_factor"] = 0.75;
    j["max_position_embeddings"] = 131072, j["original_max_position_embeddings"] = 4096;
    j["rope_scaling"] = {{"type", "longrope"},
                         {"short_factor", {1, 1, 1, 1, 1, 1}},
                         {"long_factor", {2, 2, 2, 2, 2, 4}}};
    model_config c = config_parse(j.dump(), "c");
    EXPECT_TRUE(c.fused_qkv && c.fused_gate_up);
    EXPECT_EQ(c.rope_dim, 12);
    EXPECT_NEAR(c.rope.attention_factor, std::sqrt(1 + std::log(32.0) / std::log(4096.0)), 1e-12);
    EXPECT_FALSE(decoder_rope_long(c, 4096));
    EXPECT_TRUE(decoder_rope_long(c, 4097));
    auto s = decoder_rope_inv_freq(c, 100), l = decoder_rope_inv_freq(c, 5000);
    ASSERT_EQ(s.size(), 6u);
    EXPECT_NEAR(s[5], 1.0 / std::pow(10000.0, 10.0 / 12.0), 1e-9);
    EXPECT_NEAR(l[5], 1.0 / (4.0 * std::pow(10000.0, 10.0 / 12.0)), 1e-9);
    // the size table holds the fused tensors only
    EXPECT_EQ(config_num_params(c), 100 * 64 * 2 + 64 + 2 * (2 * 64 + (16 * 4 + 2 * 16 * 2) * 64 + 64 * 64 + 2 * 128 * 64 + 64 * 128));
    j["rope_scaling"]["attention_factor"] = 1.5;
    EXPECT_EQ(config_parse(j.dump(), "c").rope.attention_factor, 1.5);
    struct bad_case {
        const char* field;
        json        value;
        const char* expect;
    } cases[] = {
        {"partial_rotary_factor", 0.7, "field 'partial_rotary_factor': expected a number in (0, 1] giving an even count"},
        {"resid_pdrop", 0.1, "field 'resid_pdrop': expected 0 (dropout is not implemented)"},
        {"attention_bias", true, "field 'attention_bias': expected false"},
        {"rope_scaling", {{"type", "longrope"}, {"short_factor", {1, 1}}, {"long_factor", {1, 1}}},
         "field 'rope_scaling.short_factor': expected a list of 6 positive numbers"},
        {"rope_scaling", {{"type", "longrope"}, {"short_factor", {1, 1, 1, 1, 1, 1}}, {"long_factor", {1, 1, 1, 1, 1, -1}}},
         "field 'rope_scaling.long_factor': expected a list of 6 positive numbers"},
        {"rope_scaling", {{"type", "yarn"}, {"factor", 4.0}}, "unsupported rope type \"yarn\""},
    };
    for (const bad_case& b : cases) {
        json k = j;
        k[b.field] = b.value;
        std::string m = err(k);
        EXPECT_NE(m.find("x/config.json"), std::string::npos) << m;
        EXPECT_NE(m.find(b.expect), std::string::npos) << "got: " << m;
    }
}

// SmolLM3 as SmolLM3Config reads it: no_rope_layers[l] == 1 means layer l DOES use RoPE; without
// the list every no_rope_layer_interval-th layer is NoPE; windows only with use_sliding_window, on
// the NoPE layers unless layer_types says otherwise; rope_theta 2e6 and tied embeddings by default.
TEST(config, smollm3_reads_its_nope_layers_windows_and_defaults) {
    json j = base();
    j["architectures"] = {"SmolLM3ForCausalLM"}, j["model_type"] = "smollm3";
    j["num_hidden_layers"] = 7;
    model_config c = config_parse(j.dump(), "c");  // 7 layers, interval 4: layer 3 is NoPE
    EXPECT_EQ(c.layer_no_rope, (std::vector<uint8_t>{0, 0, 0, 1, 0, 0, 0}));
    EXPECT_TRUE(config_layer_rope(c, 2));
    EXPECT_FALSE(config_layer_rope(c, 3));
    EXPECT_TRUE(c.tie_word_embeddings);
    EXPECT_EQ(c.rope.theta, 2000000.0);
    EXPECT_TRUE(c.layer_window.empty());
    j["no_rope_layer_interval"] = 2;
    EXPECT_EQ(config_parse(j.dump(), "c").layer_no_rope, (std::vector<uint8_t>{0, 1, 0, 1, 0, 1, 0}));
    j["no_rope_layers"] = {1, 1, 1, 1, 1, 1, 1, 0};  // longer than the layers: the first 7 count
    c = config_parse(j.dump(), "c");
    EXPECT_TRUE(c.layer_no_rope.empty());
    j["no_rope_layers"] = {0, 1, 1, 0, 1, 1, 1};
    j["sliding_window"] = 5;  // without use_sliding_window: no window
    EXPECT_TRUE(config_parse(j.dump(), "c").layer_window.empty());
    j["use_sliding_window"] = true;
    EXPECT_EQ(config_parse(j.dump(), "c").layer_window, (std::vector<int64_t>{5, 0, 0, 5, 0, 0, 0}));
    j["layer_types"] = {"full_attention", "sliding_attention", "full_attention", "full_attention",
                        "full_attention", "full_attention", "full_attention"};
    EXPECT_EQ(config_parse(j.dump(), "c").layer_window, (std::vector<int64_t>{0, 5, 0, 0, 0, 0, 0}));
    // bad lists: one line naming the field
    for (json bad : {json({1, 0}), json({1, 0, 2, 1, 1, 1, 1}), json("all")}) {
        j["no_rope_layers"] = bad;
        try {
            config_parse(j.dump(), "x/config.json");
            ADD_FAILURE() << "accepted no_rope_layers " << bad.dump();
        } catch (const error& e) {
            EXPECT_NE(std::string(e.what()).find("x/config.json: field 'no_rope_layers': expected a list of at least "
                                                 "num_hidden_layers (7) entries 0 or 1"),
                      std::string::npos)
                << e.what();
        }
    }
}

TEST(config, llama3_rope_frequencies_follow_the_formula) {
    json j = base();
    j["rope_theta"] = 500000.0;
    j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
    model_config c = config_parse(j.dump(), "c");
    auto f = decoder_rope_inv_freq(c);
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
    auto g = decoder_rope_inv_freq(config_parse(j.dump(), "c"));
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
