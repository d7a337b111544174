// Qwen3ForCausalLM: Qwen2 with a per-head RMSNorm of q and k before RoPE (qk_norm), biases only
// with attention_bias, head_dim 128 unless given.
#include "model/arch/arch.h"

namespace lisa {

static void qwen3_parse(const json_reader& r, model_config& c, std::vector<uint8_t>& sliding) {
    config_read_silu(r);
    c.qkv_bias = c.o_bias = r.bool_or("attention_bias", false);
    c.qk_norm = true;
    config_read_qwen_windows(r, c, sliding);
}

static void qwen3_write(const model_config& c, nlohmann::json& j) {
    j["hidden_act"] = "silu";
    j["attention_bias"] = c.qkv_bias;
    config_write_qwen_windows(c, j);
}

static void qwen3_gguf(const model_config& c, const std::string& cfg_path, gguf_arch_meta& meta) {
    gguf_refuse_o_bias(c, cfg_path, "qwen3");
    gguf_warn_no_window(c, "qwen3", meta);
}

extern const arch_def kArchQwen3 = {
    "qwen3", "Qwen3ForCausalLM", /*default_max_positions=*/32768, /*default_head_dim=*/128, /*default_tied=*/false, /*default_rope_theta=*/10000.0,
    qwen3_parse, qwen3_write, "qwen3", /*gguf_rope_pairs=*/false, qwen3_gguf,
};

}  // namespace lisa
