// Text generation: KV-cached decoding with greedy / temperature / top-k / top-p sampling.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "model/decoder.h"

namespace lisa {

struct generate_options {
    int64_t              max_new_tokens = 128;
    float                temperature = 0.0f;  // 0 = greedy (argmax)
    float                top_p = 1.0f;        // nucleus: keep the smallest set with mass >= top_p
    int64_t              top_k = 0;           // 0 = no top-k cut
    uint64_t             seed = 42;
    std::vector<int32_t> stop_ids;            // generation ends after producing one of these
};

// Picks the next token from logits [V] (modified in place). Deterministic for a given rng state.
int32_t sample_next(float* logits, int64_t V, const generate_options& o, struct rng* r);

// Generates after `prompt`; on_token is called with each new id as it is produced (for
// streaming). Returns the new ids (the stop token included, if one was produced).
std::vector<int32_t> generate(const decoder_model& m, const std::vector<int32_t>& prompt, const generate_options& o,
                              const std::function<void(int32_t)>& on_token);

}  // namespace lisa
