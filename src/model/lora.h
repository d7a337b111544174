// PEFT LoRA adapters on disk (adapter_config.json + adapter_model.safetensors).
// Tensor names follow PEFT: base_model.model.<module>.lora_A.weight [r, in] and
// base_model.model.<module>.lora_B.weight [out, r]; the update is W += scale · B·A with
// scale = lora_alpha / r (lora_alpha / sqrt(r) with use_rslora).
#pragma once
#include <map>
#include <string>
#include <vector>

#include "model/decoder.h"

namespace lisa {

struct lora_adapter_config {
    int64_t                  r = 8;
    double                   alpha = 16;
    double                   dropout = 0.0;
    bool                     use_rslora = false;
    std::vector<std::string> target_modules;  // short names: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj
                                              // (Phi-3: qkv_proj, o_proj, gate_up_proj, down_proj)
    double scale() const;
};

lora_adapter_config lora_config_load(const std::string& path);  // adapter_config.json
std::string         lora_config_to_json(const lora_adapter_config& c, const std::string& base_model);

// One adapted module of an adapter folder, in fp32: W[out,in] += scale · B[out,r]·A[r,in].
struct lora_module_delta {
    int64_t            r = 0, in = 0, out = 0;
    float              scale = 1.0f;
    std::vector<float> A, B;
    std::string        source;  // "file: 'tensor'", for error messages
};
// Reads and checks an adapter folder: module name ("model.layers.3.self_attn.q_proj") -> delta.
std::map<std::string, lora_module_delta> lora_adapter_read(const std::string& adapter_dir);

// Merges an adapter folder into the model's weights in memory (for eval, generate, merge-lora).
void lora_merge_adapter(decoder_model* m, const std::string& adapter_dir);

// The fp32 slot of the Linear weight a module name refers to ("model.layers.3.self_attn.q_proj"),
// with its shape and tensor index; nullptr if there is none. In half mode the slot holds values
// only once the tensor is materialised (decoder_materialize).
float* lora_module_weight(const decoder_model& m, const std::string& module, int64_t* out, int64_t* in,
                          size_t* index = nullptr);

// "model.layers.3.self_attn.q_proj": the module an adapter of (layer, lora_target) sits on.
std::string lora_module_name(int layer, int target);

// Folds unmerged adapters into a model's weights: W += scale · B·A for every adapter of `lora`
// (the trainer's --save_aggregated_lora). dst must not carry adapters itself.
void lora_fold_into(decoder_model* dst, const decoder_lora& lora);

}  // namespace lisa
