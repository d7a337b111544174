// Gemma3ForCausalLM (text-only Gemma 3): GeGLU (tanh GELU), norms that scale by (1 + w) around
// both blocks ("sandwich"), per-head q/k norms, embeddings scaled by sqrt(hidden_size), scores
// scaled by query_pre_attn_scalar, optional soft caps, and local layers (a sliding window with
// their own RoPE base) between global ones.
#include "model/arch/arch.h"

#include <cmath>

#include "core/error.h"

namespace lisa {

using json = nlohmann::json;

static void gemma3_parse(const json_reader& r, model_config& c, std::vector<uint8_t>& sliding) {
    std::string act = r.str_or("hidden_activation", "gelu_pytorch_tanh");
    if (act != "gelu_pytorch_tanh")
        r.bad("hidden_activation", "\"gelu_pytorch_tanh\" (the only Gemma activation implemented)");
    c.hidden_act = activation::gelu_tanh;
    c.qk_norm = true;
    c.sandwich_norms = true;
    c.norm_weight_offset = 1.0;
    c.embed_scale = std::sqrt((double)c.hidden_size);
    c.qkv_bias = c.o_bias = r.bool_or("attention_bias", false);
    c.query_pre_attn_scalar = r.num_or("query_pre_attn_scalar", 256);
    if (!(c.query_pre_attn_scalar > 0)) r.bad("query_pre_attn_scalar", "a positive number");
    c.attn_logit_softcap = r.num_or("attn_logit_softcapping", 0.0);
    c.final_logit_softcap = r.num_or("final_logit_softcapping", 0.0);
    if (c.attn_logit_softcap < 0) r.bad("attn_logit_softcapping", "a positive number or null");
    if (c.final_logit_softcap < 0) r.bad("final_logit_softcapping", "a positive number or null");
    c.sliding_window = r.pos_int_or("sliding_window", 4096);
    const int64_t pattern = r.pos_int_or("sliding_window_pattern", 6);  // older configs: every 6th layer global
    for (int64_t l = 0; l < c.num_layers; l++) sliding[l] = (l + 1) % pattern != 0;
    config_read_layer_types(r, c.num_layers, sliding);  // newer configs say it per layer
    c.rope_local.theta = r.num_or("rope_local_base_freq", 10000.0);
    if (!(c.rope_local.theta > 0)) r.bad("rope_local_base_freq", "a positive number");
    c.layer_local_rope = sliding;  // local layers: rope_local_base_freq, no scaling
}

static void gemma3_write(const model_config& c, json& j) {
    j["hidden_activation"] = "gelu_pytorch_tanh";
    j["attention_bias"] = c.qkv_bias;
    json types = json::array();
    for (int64_t l = 0; l < c.num_layers; l++)
        types.push_back(config_layer_window(c, l) > 0 ? "sliding_attention" : "full_attention");
    j["layer_types"] = types;
    j["sliding_window"] = c.sliding_window;
    j.erase("sliding_window_pattern");  // layer_types says it
    const double qs = c.query_pre_attn_scalar;  // an integer in Hugging Face's configs (256)
    j["query_pre_attn_scalar"] = qs == std::floor(qs) && qs < 1e15 ? json((int64_t)qs) : json(qs);
    j["rope_local_base_freq"] = c.rope_local.theta;
    j["attn_logit_softcapping"] = c.attn_logit_softcap > 0 ? json(c.attn_logit_softcap) : json(nullptr);
    j["final_logit_softcapping"] = c.final_logit_softcap > 0 ? json(c.final_logit_softcap) : json(nullptr);
}

// Local/global layers as llama.cpp reads them: a period p (layer l is global when (l + 1) % p == 0).
// Fails when the layer types follow no such period.
static uint32_t gemma_swa_period(const model_config& c, const std::string& cfg_path) {
    for (uint32_t p = 1; p <= (uint32_t)c.num_layers + 1; p++) {
        bool ok = true;
        for (int64_t l = 0; l < c.num_layers && ok; l++) ok = (config_layer_window(c, l) > 0) == ((l + 1) % p != 0);
        if (ok) return p;
    }
    fail(strf("%s: field 'layer_types': llama.cpp's gemma3 needs every p-th layer global (a sliding_window_pattern); "
              "this model's layers follow no such period", cfg_path.c_str()));
}

static void gemma3_gguf(const model_config& c, const std::string& cfg_path, gguf_arch_meta& meta) {
    gguf_refuse_o_bias(c, cfg_path, "gemma3");
    if (c.attn_logit_softcap > 0)
        gguf_refuse(cfg_path, "attn_logit_softcapping", "llama.cpp's gemma3 does not soft-cap scores");
    if (std::fabs(c.query_pre_attn_scalar - (double)c.head_dim) > 0)
        gguf_refuse(cfg_path, "query_pre_attn_scalar",
                    strf("llama.cpp's gemma3 scales scores by 1/sqrt(head_dim %lld), this model by 1/sqrt(%g)",
                         (long long)c.head_dim, c.query_pre_attn_scalar));
    if (c.rope_local.kind != rope_kind::none)
        gguf_refuse(cfg_path, "rope_local_base_freq", "local layers with scaled RoPE");
    bool any_window = false;
    for (int64_t l = 0; l < c.num_layers; l++) any_window |= config_layer_window(c, l) > 0;
    if (any_window) {
        meta.add_u32("attention.sliding_window", (uint32_t)c.sliding_window);
        meta.add_u32("attention.sliding_window_pattern", gemma_swa_period(c, cfg_path));
        meta.add_f32("rope.freq_base_swa", (float)c.rope_local.theta);
    }
    if (c.final_logit_softcap > 0) meta.add_f32("final_logit_softcapping", (float)c.final_logit_softcap);
}

extern const arch_def kArchGemma3 = {
    "gemma3_text", "Gemma3ForCausalLM", /*default_max_positions=*/131072, /*default_head_dim=*/256,
    /*default_tied=*/true, /*default_rope_theta=*/1000000.0,  // Gemma3TextConfig's defaults
    gemma3_parse, gemma3_write, "gemma3", /*gguf_rope_pairs=*/false, gemma3_gguf,
};

}  // namespace lisa
