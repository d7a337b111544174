// The architectures lisa.cpp trains, one file each (model/arch/<name>.cpp), listed by the
// registry (model/arch/registry.cpp). An architecture's file holds what makes it itself: the
// names it answers to, how its config.json reads (and what it refuses), the config fields that
// switch the shared decoder's parts on (qk_norm, sandwich_norms, layer windows, ...), how the
// config writes back, and how llama.cpp names and runs it (GGUF metadata and refusals).
// The decoder's math is shared (model/blocks.cpp); an architecture adds a block only for math
// no other one has.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/config.h"
#include "model/config_reader.h"

namespace lisa {

// What an architecture adds to a GGUF file beyond the keys every architecture writes
// (export/export_gguf.cpp), and what llama.cpp will run differently (warnings).
struct gguf_arch_meta {
    struct kv {
        std::string key;     // after "<gguf_name>."
        bool        is_f32;  // else u32
        uint32_t    u32;
        float       f32;
    };
    std::vector<kv>          keys;      // in the order they are written
    std::vector<std::string> warnings;  // what llama.cpp computes differently on long sequences
    void add_u32(const std::string& k, uint32_t v) { keys.push_back({k, false, v, 0.0f}); }
    void add_f32(const std::string& k, float v) { keys.push_back({k, true, 0, v}); }
};

struct arch_def {
    const char* model_type;           // config.json "model_type"
    const char* cls;                  // config.json "architectures"[0]
    int64_t     default_max_positions;// max_position_embeddings when the file has none
    int64_t     default_head_dim;     // head_dim when the file has none (0: hidden_size / heads)
    bool        default_tied;         // tie_word_embeddings when the file has none
    double      default_rope_theta;   // rope_theta when the file has none
    // Reads the fields particular to this architecture into c (the shared ones are read already:
    // sizes, heads, eps, dtype, ids; RoPE after this); marks layers that attend through a window
    // in `sliding` (num_layers entries, all 0 on entry).
    void (*parse)(const json_reader& r, model_config& c, std::vector<uint8_t>& sliding);
    // Writes those fields back into a config.json object.
    void (*write)(const model_config& c, nlohmann::json& j);
    // llama.cpp's name of the architecture (general.architecture)
    const char* gguf_name;
    // llama.cpp rotates adjacent pairs (its "normal" RoPE) where Hugging Face rotates the two
    // halves of a head: q/k rows are interleaved on export
    bool gguf_rope_pairs;
    // Fails (naming the config field) on what llama.cpp's graph for gguf_name computes
    // differently; fills the architecture's own metadata and warnings.
    void (*gguf)(const model_config& c, const std::string& cfg_path, gguf_arch_meta& meta);
};

// The architecture of a parsed config.
const arch_def& arch_of(const model_config& c);
// All architectures, in the registry's order (for messages and tests).
const std::vector<const arch_def*>& arch_all();
// The architecture named by architectures[0] (cls, may be "") or model_type; nullptr if none.
const arch_def* arch_find(const std::string& cls, const std::string& model_type);
// Look-alikes that need math lisa.cpp lacks: the reason, or nullptr.
const char* arch_refused_why(const std::string& name);

// Shared parts for the architecture files (model/arch/shared.cpp)
// Qwen's windows: with use_sliding_window, layers from max_window_layers on (or as layer_types says).
void config_read_qwen_windows(const json_reader& r, model_config& c, std::vector<uint8_t>& sliding);
// Per-layer windows written back as layer_types (+ use_sliding_window / sliding_window /
// max_window_layers, so configs without layer_types read the same).
void config_write_qwen_windows(const model_config& c, nlohmann::json& j);
// Fails: llama.cpp's graph has no bias on attn_output.
void gguf_refuse_o_bias(const model_config& c, const std::string& cfg_path, const char* gguf_name);
// Warns once when some layer attends through a window (llama.cpp's graph attends to everything).
void gguf_warn_no_window(const model_config& c, const char* gguf_name, gguf_arch_meta& meta);
// Fails naming `field`: llama.cpp would not compute this model as lisa.cpp does.
[[noreturn]] void gguf_refuse(const std::string& cfg_path, const char* field, const std::string& why);

}  // namespace lisa
