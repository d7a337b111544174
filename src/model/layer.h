// A decoder layer's tensors, defined once. `kLayerTensors` is the single list of what a layer
// holds: its Hugging Face key, kind, shape rule and when it is present. The size table, the
// parameter count, the fp32 / bf16 / gradient pointer sets and the LoRA targets are all generated
// from it, so a new tensor (Qwen3's q_norm, Gemma's extra norms) is one row here and its use in
// a block.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace lisa {

// Every tensor a decoder layer may hold, in the order the size table (and saved files) list them.
enum layer_tensor : int {
    LT_ATTN_NORM,      // input_layernorm.weight            [D]
    LT_QKV,            // self_attn.qkv_proj.weight         [(Hq+2Hkv)*hd, D]  q, k, v rows fused (fused_qkv: Phi-3)
    LT_Q,              // self_attn.q_proj.weight           [Hq*hd, D]
    LT_Q_BIAS,         // self_attn.q_proj.bias             [Hq*hd]   (qkv_bias)
    LT_K,              // self_attn.k_proj.weight           [Hkv*hd, D]
    LT_K_BIAS,         // self_attn.k_proj.bias             [Hkv*hd]  (qkv_bias)
    LT_V,              // self_attn.v_proj.weight           [Hkv*hd, D]
    LT_V_BIAS,         // self_attn.v_proj.bias             [Hkv*hd]  (qkv_bias)
    LT_Q_NORM,         // self_attn.q_norm.weight           [hd]      (qk_norm: Qwen3, Gemma 3)
    LT_K_NORM,         // self_attn.k_norm.weight           [hd]      (qk_norm)
    LT_O,              // self_attn.o_proj.weight           [D, Hq*hd]
    LT_O_BIAS,         // self_attn.o_proj.bias             [D]       (o_bias)
    LT_MLP_NORM,       // post_attention_layernorm.weight   [D]       the MLP's input norm (Llama family)
    LT_POST_ATTN_NORM, // post_attention_layernorm.weight   [D]       norm of the attention output (sandwich)
    LT_PRE_FF_NORM,    // pre_feedforward_layernorm.weight  [D]       the MLP's input norm (sandwich)
    LT_POST_FF_NORM,   // post_feedforward_layernorm.weight [D]       norm of the MLP output (sandwich)
    LT_GATE_UP,        // mlp.gate_up_proj.weight           [2F, D]   gate rows, then up rows (fused_gate_up: Phi-3)
    LT_GATE,           // mlp.gate_proj.weight              [F, D]
    LT_UP,             // mlp.up_proj.weight                [F, D]
    LT_DOWN,           // mlp.down_proj.weight              [D, F]
    LT_COUNT
};

// The norm in front of the MLP: Llama calls it post_attention_layernorm, Gemma (whose
// post_attention_layernorm normalises the attention output) pre_feedforward_layernorm.
inline layer_tensor mlp_input_norm(const model_config& c) { return c.sandwich_norms ? LT_PRE_FF_NORM : LT_MLP_NORM; }

enum class tensor_kind { matrix, norm, bias };  // init: normal / ones / zeros; decay: matrices only
enum class dim_rule { none, hidden, intermediate, q_out, kv_out, head, qkv_out, gate_up };  // D, F, Hq*hd, Hkv*hd, hd,
                                                                                             // (Hq+2Hkv)*hd, 2F

// LoRA adapters go on a layer's Linear weights, named as PEFT names the modules. A model has either
// the split projections or the fused ones (Phi-3: qkv_proj, gate_up_proj).
enum lora_target { LORA_Q, LORA_K, LORA_V, LORA_O, LORA_GATE, LORA_UP, LORA_DOWN, LORA_QKV, LORA_GATE_UP, LORA_N };
// The slot of a target in the dropout-mask key (layer · kLoraMaskSlots + slot + 1). Fixed: saved
// runs resume with the same masks. A fused target takes the slot of the first projection it fuses
// (a model never has both).
inline constexpr int kLoraMaskSlots = 7;
inline int lora_mask_slot(int target) {
    return target == LORA_QKV ? LORA_Q : target == LORA_GATE_UP ? LORA_GATE : target;
}

struct layer_tensor_spec {
    const char* key;       // Hugging Face name after "model.layers.N."
    tensor_kind kind;
    dim_rule    rows, cols;  // shape [rows] or [rows, cols]
    bool (*present)(const model_config&);
    int         lora;      // lora_target of a Linear weight, or -1
};
extern const layer_tensor_spec kLayerTensors[LT_COUNT];

int64_t              dim_size(const model_config& c, dim_rule d);
std::vector<int64_t> layer_tensor_shape(const model_config& c, int t);

// The Linear weight a LoRA target adapts, and the target's PEFT short name ("q_proj", ...).
layer_tensor lora_target_tensor(int lora_target);
const char*  lora_target_name(int lora_target);
// Whether a model with this config has the target's weight.
bool lora_target_present(const model_config& c, int lora_target);
// The target of a PEFT module name in this model, or -1: split names (q_proj, gate_proj, ...) name
// the fused module that holds them in a model that fuses them (Phi-3: qkv_proj, gate_up_proj).
int lora_target_find(const model_config& c, const std::string& name);

// Where a projection's rows are: its own tensor, or its rows of the fused one (offset in floats
// from the fused tensor's start). Works on every pointer set (fp32, bf16, gradients).
struct layer_rows {
    int     tensor;  // layer_tensor holding the rows
    int64_t offset;  // first element of the rows
};
layer_rows layer_proj_rows(const model_config& c, int t);  // t: LT_Q/K/V/GATE/UP (others: themselves)

// One layer's tensors as pointers, indexed by layer_tensor: the weights (fp32), their gradients
// (nullptr = frozen: no weight gradient, input gradient still flows), or a bf16 copy.
template <typename P>
struct layer_set {
    P t[LT_COUNT] = {};
    P&       operator[](int i) { return t[i]; }
    const P& operator[](int i) const { return t[i]; }
    // projection t's weight: its own, or its rows in the fused tensor (null when that is null)
    P proj(const model_config& c, int tt) const {
        const layer_rows r = layer_proj_rows(c, tt);
        return t[r.tensor] ? t[r.tensor] + r.offset : nullptr;
    }
    bool     any() const {
        for (const P& p : t)
            if (p) return true;
        return false;
    }
};
// A frozen matrix as the model holds it: bf16 values, or rows of ggml blocks (a quantized base,
// issue #29: io/ggml_quants.h). Null when the matrix is not frozen-only.
struct frozen_ptr {
    const void* p = nullptr;
    uint32_t    type = 30;  // ggml_type: 30 = bf16, else a block type
    frozen_ptr() = default;
    frozen_ptr(const uint16_t* b) : p(b) {}  // bf16
    frozen_ptr(const uint8_t* q, uint32_t t) : p(q), type(t) {}
    explicit operator bool() const { return p != nullptr; }
    bool            is_bf16() const { return type == 30; }
    const uint16_t* bf16() const { return (const uint16_t*)p; }
    // rows of a fused bf16 tensor (an offset in values); block types are never fused
    frozen_ptr operator+(int64_t values) const {
        if (values == 0) return *this;
        return frozen_ptr(bf16() + values);
    }
};
using decoder_layer_weights = layer_set<float*>;
using decoder_layer_weights16 = layer_set<frozen_ptr>;

// Parameters of a model with this config, counted from the layer table (defined in layer.cpp).
int64_t config_num_params(const model_config& c);

}  // namespace lisa
