// Parts several architecture files share: Qwen's window fields, and llama.cpp's common limits.
#include "model/arch/arch.h"

#include <algorithm>

#include "core/error.h"

namespace lisa {

using json = nlohmann::json;

void config_read_qwen_windows(const json_reader& r, model_config& c, std::vector<uint8_t>& sliding) {
    // as Hugging Face: with use_sliding_window, layers from max_window_layers on use the window
    if (r.bool_or("use_sliding_window", false)) {
        c.sliding_window = r.pos_int_or("sliding_window", 4096);
        const int64_t from = r.has("max_window_layers") ? (int64_t)r.num_or("max_window_layers", 28) : 28;
        for (int64_t l = std::max<int64_t>(0, from); l < c.num_layers; l++) sliding[l] = 1;
    }
    // an explicit layer_types list (newer configs) says it per layer
    if (config_read_layer_types(r, c.num_layers, sliding) && c.sliding_window == 0) {
        bool any = false;
        for (uint8_t sl : sliding) any |= sl != 0;
        if (any) c.sliding_window = r.pos_int_or("sliding_window", 4096);
    }
}

static json layer_types_of(const model_config& c) {
    json types = json::array();
    for (int64_t l = 0; l < c.num_layers; l++)
        types.push_back(config_layer_window(c, l) > 0 ? "sliding_attention" : "full_attention");
    return types;
}

void config_write_qwen_windows(const model_config& c, json& j) {
    j["layer_types"] = layer_types_of(c);
    const bool any = !c.layer_window.empty();
    j["use_sliding_window"] = any;
    j["sliding_window"] = any ? json(c.sliding_window) : json(nullptr);
    if (any) {  // the first windowed layer, so that configs without layer_types read the same
        int64_t first = 0;
        while (first < c.num_layers && config_layer_window(c, first) == 0) first++;
        j["max_window_layers"] = first;
    }
}

void gguf_refuse(const std::string& cfg_path, const char* field, const std::string& why) {
    fail(strf("%s: field '%s': %s, so llama.cpp would not compute this model as lisa.cpp does; not exported",
              cfg_path.c_str(), field, why.c_str()));
}

void gguf_refuse_o_bias(const model_config& c, const std::string& cfg_path, const char* gguf_name) {
    if (c.o_bias) gguf_refuse(cfg_path, "attention_bias", strf("llama.cpp's %s has no attn_output bias", gguf_name));
}

void gguf_warn_no_window(const model_config& c, const char* gguf_name, gguf_arch_meta& meta) {
    for (int64_t l = 0; l < c.num_layers; l++)
        if (config_layer_window(c, l) > 0) {
            meta.warnings.push_back(strf("llama.cpp's %s has no sliding window: its generations differ from "
                                         "lisa.cpp's once they pass %lld tokens",
                                         gguf_name, (long long)c.sliding_window));
            return;
        }
}

}  // namespace lisa
