// Phi3ForCausalLM (Phi-3, Phi-3.5-mini, Phi-4-mini): q, k and v in one qkv_proj, gate and up in one
// gate_up_proj (gate rows first), RoPE on the first partial_rotary_factor of each head, longrope
// scaling (short/long factors and an attention factor; read with the shared RoPE fields), and
// Mistral's sliding window on every layer. No biases.
#include "model/arch/arch.h"

#include <cmath>

#include "core/error.h"

namespace lisa {

using json = nlohmann::json;

static void phi3_parse(const json_reader& r, model_config& c, std::vector<uint8_t>& sliding) {
    config_read_silu(r);
    c.fused_qkv = c.fused_gate_up = true;
    if (r.bool_or("attention_bias", false)) r.bad("attention_bias", "false (Phi-3's projections have no biases)");
    for (const char* p : {"resid_pdrop", "embd_pdrop"})
        if (r.num_or(p, 0.0) != 0.0) r.bad(p, "0 (dropout is not implemented)");
    const double part = r.num_or("partial_rotary_factor", 1.0);
    const int64_t rot = (int64_t)((double)c.head_dim * part);  // as Hugging Face: int(head_dim · factor)
    if (!(part > 0 && part <= 1) || rot < 2 || rot % 2 != 0)
        r.bad("partial_rotary_factor", strf("a number in (0, 1] giving an even count of rotated values of the %lld "
                                            "in a head", (long long)c.head_dim).c_str());
    c.rope_dim = rot;
    c.sliding_window = r.has("sliding_window") ? r.pos_int("sliding_window") : 0;  // every layer, as Mistral
    if (c.sliding_window > 0) sliding.assign(c.num_layers, 1);
}

static void phi3_write(const model_config& c, json& j) {
    j["hidden_act"] = "silu";
    const double part = (double)c.rope_dim / (double)c.head_dim;
    j["partial_rotary_factor"] = part;
    j["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
}

static void phi3_gguf(const model_config& c, const std::string& cfg_path, gguf_arch_meta& meta) {
    if (c.rope.kind != rope_kind::none && c.rope.kind != rope_kind::longrope)
        gguf_refuse(cfg_path, "rope_scaling", "llama.cpp's phi3 scales RoPE only the longrope way");
    if (c.head_dim * c.num_heads != c.hidden_size)
        gguf_refuse(cfg_path, "head_dim", "llama.cpp's phi3 takes the head size to be hidden_size / heads");
    if (c.rope.kind == rope_kind::longrope) {
        meta.add_u32("rope.scaling.original_context_length", (uint32_t)c.rope.original_max_position_embeddings);
        meta.add_f32("rope.scaling.attn_factor", (float)c.rope.attention_factor);
    }
    gguf_warn_no_window(c, "phi3", meta);  // llama.cpp disables Phi-3's window
}

extern const arch_def kArchPhi3 = {
    "phi3", "Phi3ForCausalLM", /*default_max_positions=*/4096, /*default_head_dim=*/0, /*default_tied=*/false,
    /*default_rope_theta=*/10000.0, phi3_parse, phi3_write, "phi3",
    /*gguf_rope_pairs=*/false,  // llama.cpp's phi3 rotates halves (NEOX), as Hugging Face
    phi3_gguf,
};

}  // namespace lisa
