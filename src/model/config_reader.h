// Readers of config.json fields shared by config_parse and the architecture files
// (model/arch/*.cpp), over io/json_reader.h's typed reads.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/json_reader.h"

namespace lisa {

// Shared parts of the architecture files.
// hidden_act must be "silu" (SwiGLU), the Llama family's only activation here.
void config_read_silu(const json_reader& r);
// An explicit layer_types list ("sliding_attention" / "full_attention" per layer) into sliding.
// Returns false when the config has none.
bool config_read_layer_types(const json_reader& r, int64_t num_layers, std::vector<uint8_t>& sliding);

}  // namespace lisa
