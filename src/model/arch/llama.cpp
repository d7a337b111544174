// LlamaForCausalLM (Llama 2, Llama 3.x, SmolLM2, TinyLlama, ...): the plain decoder every other
// architecture varies. attention_bias puts biases on q/k/v and o; MLP biases are refused.
#include "model/arch/arch.h"

namespace lisa {

static void llama_parse(const json_reader& r, model_config& c, std::vector<uint8_t>&) {
    config_read_silu(r);
    c.qkv_bias = c.o_bias = r.bool_or("attention_bias", false);
    if (r.bool_or("mlp_bias", false)) r.bad("mlp_bias", "false (MLP biases are not implemented)");
}

static void llama_write(const model_config& c, nlohmann::json& j) {
    j["hidden_act"] = "silu";
    j["attention_bias"] = c.qkv_bias;
    j["mlp_bias"] = false;
}

static void llama_gguf(const model_config&, const std::string&, gguf_arch_meta&) {}

extern const arch_def kArchLlama = {
    "llama", "LlamaForCausalLM", /*default_max_positions=*/2048, /*default_head_dim=*/0, /*default_tied=*/false, /*default_rope_theta=*/10000.0,
    llama_parse, llama_write, "llama", /*gguf_rope_pairs=*/true, llama_gguf,
};

}  // namespace lisa
