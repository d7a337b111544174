// SmolLM3ForCausalLM: Llama with GQA and tied embeddings whose layers marked 0 in no_rope_layers
// attend without RoPE ("NoPE"; by default every 4th layer). Sliding windows, when
// use_sliding_window, only on the layers layer_types marks (by default the NoPE ones).
#include "model/arch/arch.h"

#include "core/error.h"

namespace lisa {

using json = nlohmann::json;

static void smollm3_parse(const json_reader& r, model_config& c, std::vector<uint8_t>& sliding) {
    config_read_silu(r);
    c.qkv_bias = c.o_bias = r.bool_or("attention_bias", false);
    if (r.bool_or("mlp_bias", false)) r.bad("mlp_bias", "false (MLP biases are not implemented)");
    // no_rope_layers[l]: 1 = layer l uses RoPE, 0 = it does not (the name says the opposite)
    std::vector<uint8_t> use_rope(c.num_layers);
    if (r.has("no_rope_layers")) {
        const json& nr = r.j["no_rope_layers"];
        const std::string expected = strf("a list of at least num_hidden_layers (%lld) entries 0 or 1",
                                          (long long)c.num_layers);
        if (!nr.is_array() || (int64_t)nr.size() < c.num_layers) r.bad("no_rope_layers", expected.c_str());
        for (int64_t l = 0; l < c.num_layers; l++) {
            if (!nr[l].is_number_integer() || (nr[l] != 0 && nr[l] != 1)) r.bad("no_rope_layers", expected.c_str());
            use_rope[l] = nr[l] == 1;
        }
    } else {
        const int64_t every = r.pos_int_or("no_rope_layer_interval", 4);
        for (int64_t l = 0; l < c.num_layers; l++) use_rope[l] = (l + 1) % every != 0;
    }
    c.layer_no_rope.assign(c.num_layers, 0);
    bool any_nope = false;
    for (int64_t l = 0; l < c.num_layers; l++) any_nope |= (c.layer_no_rope[l] = !use_rope[l]) != 0;
    if (!any_nope) c.layer_no_rope.clear();
    // as SmolLM3Attention: a window only with use_sliding_window, on layers layer_types marks
    // (which default to the NoPE layers when a window is given)
    const bool use_window = r.bool_or("use_sliding_window", false);
    const bool window_given = r.has("sliding_window");
    std::vector<uint8_t> marked(c.num_layers, 0);
    if (!config_read_layer_types(r, c.num_layers, marked) && window_given)
        for (int64_t l = 0; l < c.num_layers; l++) marked[l] = !use_rope[l];
    if (use_window) {
        bool any = false;
        for (uint8_t m : marked) any |= m != 0;
        if (any && !window_given) r.bad("sliding_window", "a positive integer (use_sliding_window is true)");
        if (any) c.sliding_window = r.pos_int("sliding_window");
        sliding = marked;
    }
}

static void smollm3_write(const model_config& c, json& j) {
    j["hidden_act"] = "silu";
    j["attention_bias"] = c.qkv_bias;
    j["mlp_bias"] = false;
    json use_rope = json::array(), types = json::array();
    for (int64_t l = 0; l < c.num_layers; l++) {
        use_rope.push_back(config_layer_rope(c, l) ? 1 : 0);
        types.push_back(config_layer_window(c, l) > 0 ? "sliding_attention" : "full_attention");
    }
    j["no_rope_layers"] = use_rope;
    j["layer_types"] = types;
    const bool any = !c.layer_window.empty();
    j["use_sliding_window"] = any;
    j["sliding_window"] = any ? json(c.sliding_window) : json(nullptr);
}

static void smollm3_gguf(const model_config& c, const std::string& cfg_path, gguf_arch_meta& meta) {
    if (c.qkv_bias || c.o_bias) gguf_refuse(cfg_path, "attention_bias", "llama.cpp's smollm3 loads no attention biases");
    // llama.cpp's graph skips RoPE on every 4th layer, a step no GGUF key can change
    for (int64_t l = 0; l < c.num_layers; l++)
        if (config_layer_rope(c, l) != ((l + 1) % 4 != 0))
            gguf_refuse(cfg_path, "no_rope_layers",
                        strf("llama.cpp's smollm3 skips RoPE on every 4th layer (3, 7, 11, ...), this model %s "
                             "layer %lld", config_layer_rope(c, l) ? "rotates" : "does not rotate", (long long)l));
    gguf_warn_no_window(c, "smollm3", meta);
}

extern const arch_def kArchSmolLM3 = {
    "smollm3", "SmolLM3ForCausalLM", /*default_max_positions=*/32768, /*default_head_dim=*/0, /*default_tied=*/true, /*default_rope_theta=*/2000000.0,
    smollm3_parse, smollm3_write, "smollm3", /*gguf_rope_pairs=*/true, smollm3_gguf,
};

}  // namespace lisa
