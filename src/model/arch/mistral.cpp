// MistralForCausalLM: Llama with a sliding window on every layer (sliding_window: null = none).
#include "model/arch/arch.h"

namespace lisa {

static void mistral_parse(const json_reader& r, model_config& c, std::vector<uint8_t>& sliding) {
    config_read_silu(r);
    c.sliding_window = r.has("sliding_window") ? r.pos_int("sliding_window") : 0;
    if (c.sliding_window > 0) sliding.assign(c.num_layers, 1);
    if (config_read_layer_types(r, c.num_layers, sliding) && c.sliding_window == 0)
        sliding.assign(c.num_layers, 0);  // no window to slide
}

static void mistral_write(const model_config& c, nlohmann::json& j) {
    j["hidden_act"] = "silu";
    j["sliding_window"] = c.sliding_window > 0 ? nlohmann::json(c.sliding_window) : nlohmann::json(nullptr);
}

static void mistral_gguf(const model_config& c, const std::string&, gguf_arch_meta& meta) {
    gguf_warn_no_window(c, "llama", meta);
}

extern const arch_def kArchMistral = {
    "mistral", "MistralForCausalLM", /*default_max_positions=*/4096 * 32, /*default_head_dim=*/0,
    /*default_tied=*/false, /*default_rope_theta=*/10000.0, mistral_parse, mistral_write,
    "llama",  // llama.cpp runs Mistral as llama
    /*gguf_rope_pairs=*/true, mistral_gguf,
};

}  // namespace lisa
