// Decoder configuration, read from a Hugging Face config.json. The fields every architecture
// shares are read here (config.cpp); what makes an architecture itself is read by its file in
// model/arch/. Only what the math needs is kept; anything that would change the math and is not
// implemented (another architecture or activation, a rope type, MLP bias, ...) is refused.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace lisa {

struct arch_def;  // model/arch/arch.h
enum class rope_kind { none, linear, llama3, longrope };
enum class activation { silu, gelu_tanh };  // the gated MLP's activation (SwiGLU / GeGLU)

struct rope_config {
    rope_kind kind = rope_kind::none;
    double    theta = 10000.0;                   // rope_theta
    double    factor = 1.0;                      // linear and llama3
    double    low_freq_factor = 1.0;             // llama3
    double    high_freq_factor = 4.0;            // llama3
    int64_t   original_max_position_embeddings = 8192;  // llama3, longrope: the pretraining context
    // longrope (Phi-3): per-frequency divisors [rope_dim/2] for sequences up to / past the
    // pretraining context, and the factor cos and sin are multiplied by
    std::vector<float> short_factor, long_factor;
    double             attention_factor = 1.0;
};

struct model_config {
    const arch_def* arch = nullptr;   // its architecture (set by config_parse; model/arch/arch.h)
    std::string model_type;           // "llama", "mistral", "qwen2", "qwen3", "gemma3_text", "smollm3"
    std::string architecture;         // "LlamaForCausalLM", ...
    int64_t vocab_size = 0;
    int64_t hidden_size = 0;          // D
    int64_t intermediate_size = 0;    // F (SwiGLU inner size)
    int64_t num_layers = 0;           // num_hidden_layers
    int64_t num_heads = 0;            // query heads
    int64_t num_kv_heads = 0;         // key/value heads (GQA when < num_heads)
    int64_t head_dim = 0;             // per-head size; hidden_size / num_heads unless given
    int64_t rope_dim = 0;             // values of a head that rotate (head_dim; less with Phi-3's partial_rotary_factor)
    int64_t max_position_embeddings = 2048;
    int64_t sliding_window = 0;       // the config's sliding_window (0 = none); which layers use it: layer_window
    double  rms_norm_eps = 1e-6;
    double  initializer_range = 0.02; // std of the normal init used by `lisa init`
    rope_config rope;
    bool    tie_word_embeddings = false;
    bool    qkv_bias = false;         // q/k/v projections carry a bias (Qwen2; Llama attention_bias)
    bool    o_bias = false;           // o_proj carries a bias (Llama attention_bias)
    bool    fused_qkv = false;        // q, k, v stored as one qkv_proj [Q + 2·KV, D] (Phi-3)
    bool    fused_gate_up = false;    // gate and up stored as one gate_up_proj [2F, D], gate first (Phi-3)
    dtype   torch_dtype = dtype::f32; // stored dtype the config declares
    // How architectures differ, as data: the decoder's blocks read these, so a new architecture is
    // a config plus the few blocks it really lacks. The Llama family uses the defaults.
    bool       qk_norm = false;           // per-head RMSNorm of q and k before RoPE (Qwen3, Gemma 3)
    double     norm_weight_offset = 0.0;  // RMSNorm scales by (offset + w) (Gemma: 1)
    bool       sandwich_norms = false;    // norms after attention and around the MLP (Gemma)
    activation hidden_act = activation::silu;
    double     embed_scale = 1.0;         // embeddings are multiplied by this (Gemma: sqrt(hidden_size))
    double     query_pre_attn_scalar = 0; // scores scaled by 1/sqrt(this) (Gemma); 0 = by 1/sqrt(head_dim)
    double     attn_logit_softcap = 0.0;  // scores soft-capped at this (0 = none)
    double     final_logit_softcap = 0.0; // logits soft-capped at this (0 = none)
    std::vector<int64_t> layer_window;    // per layer: attention window in tokens, 0 = full (empty: all 0)
    std::vector<uint8_t> layer_local_rope;// per layer: 1 = rope_local below instead of rope (empty: all 0)
    rope_config          rope_local;      // RoPE of local (sliding-window) layers (Gemma: rope_local_base_freq)
    std::vector<uint8_t> layer_no_rope;   // per layer: 1 = no RoPE at all (SmolLM3's NoPE layers; empty: all 0)
    std::vector<int64_t> bos_token_ids, eos_token_ids;  // possibly empty
};

// Layer l's attention window (0 = full causal attention) and whether it uses rope_local.
int64_t config_layer_window(const model_config& c, int64_t l);
bool    config_layer_local_rope(const model_config& c, int64_t l);
bool    config_any_local_rope(const model_config& c);
// Whether layer l rotates q and k at all (SmolLM3's NoPE layers do not).
bool    config_layer_rope(const model_config& c, int64_t l);
// The attention score scale: 1/sqrt(query_pre_attn_scalar) when set, else 1/sqrt(head_dim).
float config_attn_scale(const model_config& c);

// Bounds on what a config.json may declare (far above any released model; they keep every size
// product inside int64, and a file cannot make lisa.cpp allocate what it merely claims).
inline constexpr int64_t kMaxVocab = (int64_t)1 << 24;
inline constexpr int64_t kMaxHidden = (int64_t)1 << 17;
inline constexpr int64_t kMaxIntermediate = (int64_t)1 << 20;
inline constexpr int64_t kMaxLayers = 4096;
inline constexpr int64_t kMaxHeads = 4096;
inline constexpr int64_t kMaxHeadDim = (int64_t)1 << 14;
inline constexpr int64_t kMaxPositions = (int64_t)1 << 27;
inline constexpr int64_t kMaxParams = (int64_t)1 << 40;

// Parse config.json text; `path` is only used in error messages.
model_config config_parse(const std::string& text, const std::string& path);
model_config config_load(const std::string& path);
// The parsed config as config.json text. Fields of the original file that we do not model are
// kept when `original` is a JSON object text (so a saved model keeps e.g. its chat settings).
std::string config_to_json(const model_config& c, const std::string& original = "");

}  // namespace lisa
