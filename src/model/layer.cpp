#include "model/layer.h"

#include "core/error.h"

namespace lisa {

static bool always(const model_config&) { return true; }
static bool with_qkv_bias(const model_config& c) { return c.qkv_bias; }
static bool with_o_bias(const model_config& c) { return c.o_bias; }
static bool with_qk_norm(const model_config& c) { return c.qk_norm; }
static bool plain_norms(const model_config& c) { return !c.sandwich_norms; }
static bool sandwich(const model_config& c) { return c.sandwich_norms; }
static bool split_qkv(const model_config& c) { return !c.fused_qkv; }
static bool fused_qkv(const model_config& c) { return c.fused_qkv; }
static bool split_gate_up(const model_config& c) { return !c.fused_gate_up; }
static bool fused_gate_up(const model_config& c) { return c.fused_gate_up; }

using K = tensor_kind;
using R = dim_rule;
const layer_tensor_spec kLayerTensors[LT_COUNT] = {
    /* LT_ATTN_NORM      */ {"input_layernorm.weight", K::norm, R::hidden, R::none, always, -1},
    /* LT_QKV            */ {"self_attn.qkv_proj.weight", K::matrix, R::qkv_out, R::hidden, fused_qkv, LORA_QKV},
    /* LT_Q              */ {"self_attn.q_proj.weight", K::matrix, R::q_out, R::hidden, split_qkv, LORA_Q},
    /* LT_Q_BIAS         */ {"self_attn.q_proj.bias", K::bias, R::q_out, R::none, with_qkv_bias, -1},
    /* LT_K              */ {"self_attn.k_proj.weight", K::matrix, R::kv_out, R::hidden, split_qkv, LORA_K},
    /* LT_K_BIAS         */ {"self_attn.k_proj.bias", K::bias, R::kv_out, R::none, with_qkv_bias, -1},
    /* LT_V              */ {"self_attn.v_proj.weight", K::matrix, R::kv_out, R::hidden, split_qkv, LORA_V},
    /* LT_V_BIAS         */ {"self_attn.v_proj.bias", K::bias, R::kv_out, R::none, with_qkv_bias, -1},
    /* LT_Q_NORM         */ {"self_attn.q_norm.weight", K::norm, R::head, R::none, with_qk_norm, -1},
    /* LT_K_NORM         */ {"self_attn.k_norm.weight", K::norm, R::head, R::none, with_qk_norm, -1},
    /* LT_O              */ {"self_attn.o_proj.weight", K::matrix, R::hidden, R::q_out, always, LORA_O},
    /* LT_O_BIAS         */ {"self_attn.o_proj.bias", K::bias, R::hidden, R::none, with_o_bias, -1},
    /* LT_MLP_NORM       */ {"post_attention_layernorm.weight", K::norm, R::hidden, R::none, plain_norms, -1},
    /* LT_POST_ATTN_NORM */ {"post_attention_layernorm.weight", K::norm, R::hidden, R::none, sandwich, -1},
    /* LT_PRE_FF_NORM    */ {"pre_feedforward_layernorm.weight", K::norm, R::hidden, R::none, sandwich, -1},
    /* LT_POST_FF_NORM   */ {"post_feedforward_layernorm.weight", K::norm, R::hidden, R::none, sandwich, -1},
    /* LT_GATE_UP        */ {"mlp.gate_up_proj.weight", K::matrix, R::gate_up, R::hidden, fused_gate_up, LORA_GATE_UP},
    /* LT_GATE           */ {"mlp.gate_proj.weight", K::matrix, R::intermediate, R::hidden, split_gate_up, LORA_GATE},
    /* LT_UP             */ {"mlp.up_proj.weight", K::matrix, R::intermediate, R::hidden, split_gate_up, LORA_UP},
    /* LT_DOWN           */ {"mlp.down_proj.weight", K::matrix, R::hidden, R::intermediate, always, LORA_DOWN},
};

int64_t dim_size(const model_config& c, dim_rule d) {
    switch (d) {
        case R::none: return 1;
        case R::hidden: return c.hidden_size;
        case R::intermediate: return c.intermediate_size;
        case R::q_out: return c.num_heads * c.head_dim;
        case R::kv_out: return c.num_kv_heads * c.head_dim;
        case R::head: return c.head_dim;
        case R::qkv_out: return (c.num_heads + 2 * c.num_kv_heads) * c.head_dim;
        case R::gate_up: return 2 * c.intermediate_size;
    }
    return 0;
}

std::vector<int64_t> layer_tensor_shape(const model_config& c, int t) {
    const layer_tensor_spec& s = kLayerTensors[t];
    if (s.cols == R::none) return {dim_size(c, s.rows)};
    return {dim_size(c, s.rows), dim_size(c, s.cols)};
}

layer_tensor lora_target_tensor(int target) {
    for (int t = 0; t < LT_COUNT; t++)
        if (kLayerTensors[t].lora == target) return (layer_tensor)t;
    LISA_ASSERT(false, "lora_target_tensor", "no layer tensor carries this LoRA target");
}

const char* lora_target_name(int target) {
    static const char* names[LORA_N] = {"q_proj",    "k_proj",  "v_proj",    "o_proj",      "gate_proj",
                                        "up_proj",   "down_proj", "qkv_proj", "gate_up_proj"};
    LISA_ASSERT(target >= 0 && target < LORA_N, "lora_target_name", "target out of range");
    return names[target];
}

bool lora_target_present(const model_config& c, int target) {
    return kLayerTensors[lora_target_tensor(target)].present(c);
}

int lora_target_find(const model_config& c, const std::string& name) {
    for (int t = 0; t < LORA_N; t++) {
        if (name != lora_target_name(t)) continue;
        if (lora_target_present(c, t)) return t;
        if (c.fused_qkv && (t == LORA_Q || t == LORA_K || t == LORA_V)) return LORA_QKV;
        if (c.fused_gate_up && (t == LORA_GATE || t == LORA_UP)) return LORA_GATE_UP;
        return -1;
    }
    return -1;
}

layer_rows layer_proj_rows(const model_config& c, int t) {
    const int64_t D = c.hidden_size, Q = c.num_heads * c.head_dim, KV = c.num_kv_heads * c.head_dim;
    if (c.fused_qkv && (t == LT_Q || t == LT_K || t == LT_V))
        return {LT_QKV, t == LT_Q ? 0 : t == LT_K ? Q * D : (Q + KV) * D};
    if (c.fused_gate_up && (t == LT_GATE || t == LT_UP)) return {LT_GATE_UP, t == LT_GATE ? 0 : c.intermediate_size * D};
    return {t, 0};
}

int64_t config_num_params(const model_config& c) {
    int64_t layer = 0;
    for (int t = 0; t < LT_COUNT; t++) {
        if (!kLayerTensors[t].present(c)) continue;
        int64_t n = 1;
        for (int64_t d : layer_tensor_shape(c, t)) n *= d;
        layer += n;
    }
    return c.vocab_size * c.hidden_size * (c.tie_word_embeddings ? 1 : 2) + c.hidden_size + c.num_layers * layer;
}

}  // namespace lisa
