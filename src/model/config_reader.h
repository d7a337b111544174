// Typed readers of config.json fields, shared by config_parse and the architecture files
// (model/arch/*.cpp). Every reader that finds something else fails with one line naming the
// file, the field and what was expected.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lisa {

struct config_reader {
    const nlohmann::json& j;     // the object read (config.json, or a nested object of it)
    const std::string&    path;  // for messages

    [[noreturn]] void bad(const char* key, const char* expected) const;
    bool has(const char* key) const { return j.contains(key) && !j[key].is_null(); }
    int64_t pos_int(const char* key) const;
    int64_t pos_int_or(const char* key, int64_t def) const { return has(key) ? pos_int(key) : def; }
    // sizes are bounded before anything is sized from them (a file may claim anything)
    int64_t pos_int_max(const char* key, int64_t max) const;
    int64_t pos_int_max_or(const char* key, int64_t max, int64_t def) const {
        return has(key) ? pos_int_max(key, max) : def;
    }
    double               num_or(const char* key, double def) const;
    bool                 bool_or(const char* key, bool def) const;
    std::string          str_or(const char* key, const std::string& def) const;
    std::vector<int64_t> ids_or_empty(const char* key) const;  // an integer or a list of them
};

// Shared parts of the architecture files.
// hidden_act must be "silu" (SwiGLU), the Llama family's only activation here.
void config_read_silu(const config_reader& r);
// An explicit layer_types list ("sliding_attention" / "full_attention" per layer) into sliding.
// Returns false when the config has none.
bool config_read_layer_types(const config_reader& r, int64_t num_layers, std::vector<uint8_t>& sliding);

}  // namespace lisa
