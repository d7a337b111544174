// The architectures lisa.cpp trains, and the look-alikes it refuses. Adding an architecture: its
// file in this folder defines an arch_def; one line here lists it.
#include "model/arch/arch.h"

#include "core/error.h"

namespace lisa {

extern const arch_def kArchLlama, kArchMistral, kArchQwen2, kArchQwen3, kArchGemma3, kArchSmolLM3,
    kArchPhi3;

const std::vector<const arch_def*>& arch_all() {
    static const std::vector<const arch_def*> all = {&kArchLlama, &kArchMistral, &kArchQwen2,
                                                     &kArchQwen3, &kArchGemma3, &kArchSmolLM3, &kArchPhi3};
    return all;
}

const arch_def& arch_of(const model_config& c) {
    LISA_ASSERT(c.arch, "arch_of", "a config without an architecture (configs come from config_parse)");
    return *c.arch;
}

const arch_def* arch_find(const std::string& cls, const std::string& model_type) {
    for (const arch_def* a : arch_all())
        if (cls == a->cls || (cls.empty() && model_type == a->model_type)) return a;
    return nullptr;
}

const char* arch_refused_why(const std::string& name) {
    static const char* kMoe = "a mixture-of-experts model; expert layers are not implemented";
    static const char* kGemma3Mm = "the multimodal Gemma 3 (vision tower + text); lisa.cpp trains the text-only "
                                   "Gemma3ForCausalLM (model_type gemma3_text)";
    static const char* kGemma2 = "Gemma 2, not implemented (Gemma 3 is: Gemma3ForCausalLM)";
    static const struct { const char *name, *why; } kRefused[] = {
        {"Gemma3ForConditionalGeneration", kGemma3Mm}, {"gemma3", kGemma3Mm},
        {"Qwen3MoeForCausalLM", kMoe}, {"qwen3_moe", kMoe}, {"Qwen2MoeForCausalLM", kMoe}, {"qwen2_moe", kMoe},
        {"MixtralForCausalLM", kMoe}, {"mixtral", kMoe},
        {"Gemma2ForCausalLM", kGemma2}, {"gemma2", kGemma2},
    };
    for (const auto& rf : kRefused)
        if (name == rf.name) return rf.why;
    return nullptr;
}

}  // namespace lisa
