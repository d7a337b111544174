#include "infer/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "core/rng.h"

namespace lisa {

int32_t sample_next(float* logits, int64_t V, const generate_options& o, rng* r) {
    if (o.temperature <= 0.0f) return (int32_t)(std::max_element(logits, logits + V) - logits);
    // candidates sorted by logit, cut by top-k, softmax at the temperature, cut by top-p
    std::vector<int32_t> idx(V);
    std::iota(idx.begin(), idx.end(), 0);
    int64_t k = o.top_k > 0 ? std::min<int64_t>(o.top_k, V) : V;
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) {
        return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    idx.resize(k);
    std::vector<double> p(k);
    double mx = logits[idx[0]], z = 0;
    for (int64_t i = 0; i < k; i++) z += (p[i] = std::exp((logits[idx[i]] - mx) / o.temperature));
    int64_t keep = k;
    if (o.top_p < 1.0f) {
        double cum = 0;
        for (int64_t i = 0; i < k; i++) {
            cum += p[i] / z;
            if (cum >= o.top_p) {
                keep = i + 1;
                break;
            }
        }
    }
    double total = 0;
    for (int64_t i = 0; i < keep; i++) total += p[i];
    double u = rng_uniform(r) * total;
    for (int64_t i = 0; i < keep; i++) {
        u -= p[i];
        if (u < 0) return idx[i];
    }
    return idx[keep - 1];
}

std::vector<int32_t> generate(const decoder_model& m, const std::vector<int32_t>& prompt, const generate_options& o,
                              const std::function<void(int32_t)>& on_token) {
    if (prompt.empty()) fail("generate: the prompt has no tokens (and the tokenizer adds no BOS)");
    decoder_kv_cache cache;
    // the context: prompt + new tokens, at most the model's (and no overflow for a huge request)
    const int64_t room = m.cfg.max_position_embeddings - (int64_t)prompt.size();
    int64_t ctx = (int64_t)prompt.size() + std::max<int64_t>(0, std::min<int64_t>(o.max_new_tokens, room));
    if (room <= 0)
        fail(strf("generate: the prompt has %zu tokens; the model's context (max_position_embeddings) is %lld",
                  prompt.size(), (long long)m.cfg.max_position_embeddings));
    decoder_kv_cache_init(&cache, m, ctx);
    rng r;
    rng_init(&r, o.seed);
    std::vector<float> logits(m.cfg.vocab_size);
    std::vector<int32_t> out;
    decoder_decode(m, &cache, prompt.data(), (int64_t)prompt.size(), logits.data());
    while ((int64_t)out.size() < o.max_new_tokens) {
        int32_t next = sample_next(logits.data(), m.cfg.vocab_size, o, &r);
        out.push_back(next);
        if (on_token) on_token(next);
        if (std::find(o.stop_ids.begin(), o.stop_ids.end(), next) != o.stop_ids.end()) break;
        if (cache.n_past >= cache.max_T) break;  // context full
        decoder_decode(m, &cache, &next, 1, logits.data());
    }
    return out;
}

}  // namespace lisa
