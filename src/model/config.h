// Llama-family model configuration, read from a Hugging Face config.json.
// Only what the math needs is kept; anything that would change the math and is not
// implemented (another architecture or activation, a rope type, MLP bias, ...) is refused.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace lisa {

enum class model_arch { llama, mistral, qwen2 };
enum class rope_kind { none, linear, llama3 };

struct rope_config {
    rope_kind kind = rope_kind::none;
    double    theta = 10000.0;                   // rope_theta
    double    factor = 1.0;                      // linear and llama3
    double    low_freq_factor = 1.0;             // llama3
    double    high_freq_factor = 4.0;            // llama3
    int64_t   original_max_position_embeddings = 8192;  // llama3
};

struct llama_config {
    model_arch  arch = model_arch::llama;
    std::string model_type;           // "llama", "mistral", "qwen2"
    std::string architecture;         // "LlamaForCausalLM", ...
    int64_t vocab_size = 0;
    int64_t hidden_size = 0;          // D
    int64_t intermediate_size = 0;    // F (SwiGLU inner size)
    int64_t num_layers = 0;           // num_hidden_layers
    int64_t num_heads = 0;            // query heads
    int64_t num_kv_heads = 0;         // key/value heads (GQA when < num_heads)
    int64_t head_dim = 0;             // per-head size; hidden_size / num_heads unless given
    int64_t max_position_embeddings = 2048;
    int64_t sliding_window = 0;       // 0 = none; attention window in tokens when > 0
    double  rms_norm_eps = 1e-6;
    double  initializer_range = 0.02; // std of the normal init used by `lisa init`
    rope_config rope;
    bool    tie_word_embeddings = false;
    bool    qkv_bias = false;         // q/k/v projections carry a bias (Qwen2; Llama attention_bias)
    bool    o_bias = false;           // o_proj carries a bias (Llama attention_bias)
    dtype   torch_dtype = dtype::f32; // stored dtype the config declares
    std::vector<int64_t> bos_token_ids, eos_token_ids;  // possibly empty
};

// Parse config.json text; `path` is only used in error messages.
llama_config config_parse(const std::string& text, const std::string& path);
llama_config config_load(const std::string& path);
// The parsed config as config.json text. Fields of the original file that we do not model are
// kept when `original` is a JSON object text (so a saved model keeps e.g. its chat settings).
std::string config_to_json(const llama_config& c, const std::string& original = "");

int64_t config_num_params(const llama_config& c);

}  // namespace lisa
