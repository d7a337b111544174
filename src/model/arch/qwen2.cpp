// Qwen2ForCausalLM (Qwen2, Qwen2.5): biases on q/k/v (never on o), windows from
// max_window_layers on when use_sliding_window.
#include "model/arch/arch.h"

namespace lisa {

static void qwen2_parse(const json_reader& r, model_config& c, std::vector<uint8_t>& sliding) {
    config_read_silu(r);
    c.qkv_bias = true;  // Qwen2 always has q/k/v biases and no o_proj bias
    config_read_qwen_windows(r, c, sliding);
}

static void qwen2_write(const model_config& c, nlohmann::json& j) {
    j["hidden_act"] = "silu";
    config_write_qwen_windows(c, j);
}

static void qwen2_gguf(const model_config& c, const std::string& cfg_path, gguf_arch_meta& meta) {
    gguf_refuse_o_bias(c, cfg_path, "qwen2");
    gguf_warn_no_window(c, "qwen2", meta);
}

extern const arch_def kArchQwen2 = {
    "qwen2", "Qwen2ForCausalLM", /*default_max_positions=*/32768, /*default_head_dim=*/0, /*default_tied=*/false, /*default_rope_theta=*/10000.0,
    qwen2_parse, qwen2_write, "qwen2", /*gguf_rope_pairs=*/false, qwen2_gguf,
};

}  // namespace lisa
