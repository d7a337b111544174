#include "train/evaluate.h"

#include <algorithm>

#include "core/error.h"

namespace lisa {

int64_t resolve_block_size(int64_t requested, const model_config& c, std::string* warning) {
    const int64_t max_pos = c.max_position_embeddings;
    if (requested <= 0) return std::min<int64_t>(1024, max_pos);
    if (requested > max_pos) {  // as LMFlow and Hugging Face's run_clm: warn and use the model's maximum
        if (warning)
            *warning = strf("--block_size %lld is larger than the model's max_position_embeddings %lld; using %lld",
                            (long long)requested, (long long)max_pos, (long long)max_pos);
        return max_pos;
    }
    return requested;
}

int32_t resolve_eos_id(const tokenizer& tok, const model_config& c) {
    if (tokenizer_eos_id(tok) >= 0) return tokenizer_eos_id(tok);
    return c.eos_token_ids.empty() ? -1 : (int32_t)c.eos_token_ids[0];
}

int32_t resolve_pad_id(const tokenizer& tok, int32_t eos_id) {
    return tokenizer_pad_id(tok) >= 0 ? tokenizer_pad_id(tok) : std::max(0, eos_id);
}

void batch_plan(const dataset& d, int64_t batch_size, batch_layout layout, int64_t* B, int64_t* T) {
    std::vector<int64_t> lens;
    for (const sample& s : d.samples) lens.push_back(std::max<int64_t>(1, (int64_t)s.ids.size()));
    const int64_t n = std::max<int64_t>(1, std::min<int64_t>(batch_size, (int64_t)lens.size()));
    if (lens.empty()) lens.push_back(1);
    std::partial_sort(lens.begin(), lens.begin() + std::min<int64_t>(n, (int64_t)lens.size()), lens.end(),
                      std::greater<int64_t>());
    if (layout == batch_layout::padded) {
        *B = n;
        *T = lens[0];
        return;
    }
    *B = 1;
    *T = 0;
    for (int64_t i = 0; i < std::min<int64_t>(n, (int64_t)lens.size()); i++) *T += lens[i];
}

double evaluate_loss_sum(const decoder_model& m, const dataset& d, int64_t batch_size, int32_t pad_id, int64_t* tokens,
                         decoder_acts* acts, const std::function<void(int64_t, int64_t)>& on_batch,
                         batch_layout layout) {
    decoder_acts own;
    decoder_acts* a = acts ? acts : &own;
    int64_t B = 1, T = 1;
    batch_plan(d, batch_size, layout, &B, &T);
    if (a->cap_N < B * T || a->cap_T < T) decoder_acts_init(a, m, B, T);
    double sum = 0;
    int64_t n = 0;
    batch b;
    std::vector<size_t> idx;
    for (size_t i = 0; i < d.samples.size(); i += (size_t)batch_size) {
        idx.clear();
        for (size_t k = i; k < std::min(d.samples.size(), i + (size_t)batch_size); k++) idx.push_back(k);
        make_batch_into(&b, d, idx.data(), idx.size(), pad_id, layout);
        decoder_acts_shape(a, m, b.B, b.T, b.pos.empty() ? nullptr : b.pos.data());
        int64_t k = 0;
        sum += decoder_forward_backward(m, a, nullptr, b.ids.data(), b.labels.data(), 0.0f, &k);
        n += k;
        if (on_batch)
            on_batch((int64_t)(i / (size_t)batch_size) + 1, ((int64_t)d.samples.size() + batch_size - 1) / batch_size);
    }
    if (tokens) *tokens = n;
    return sum;
}

void batch_sample_spans(const batch& b, const dataset& d, const size_t* idx, size_t count,
                        std::vector<decoder_span>* spans) {
    spans->clear();
    int64_t at = 0;
    for (size_t i = 0; i < count; i++) {
        const int64_t len = (int64_t)d.samples[idx[i]].ids.size();
        if (b.B == 1 && count > 1) spans->push_back({at, len}), at += len;  // end to end in one row
        else spans->push_back({(int64_t)i * b.T, b.T});
    }
}

void evaluate_sample_logps(const decoder_model& m, const dataset& d, int64_t batch_size, int32_t pad_id,
                           std::vector<double>* logps, decoder_acts* acts,
                           const std::function<void(int64_t, int64_t)>& on_batch, batch_layout layout) {
    decoder_acts own;
    decoder_acts* a = acts ? acts : &own;
    int64_t B = 1, T = 1;
    batch_plan(d, batch_size, layout, &B, &T);
    if (a->cap_N < B * T || a->cap_T < T) decoder_acts_init(a, m, B, T);
    logps->assign(d.samples.size(), 0.0);
    batch b;
    std::vector<size_t> idx;
    std::vector<decoder_span> spans;
    std::vector<double> lp;
    for (size_t i = 0; i < d.samples.size(); i += (size_t)batch_size) {
        idx.clear();
        for (size_t k = i; k < std::min(d.samples.size(), i + (size_t)batch_size); k++) idx.push_back(k);
        make_batch_into(&b, d, idx.data(), idx.size(), pad_id, layout);
        decoder_acts_shape(a, m, b.B, b.T, b.pos.empty() ? nullptr : b.pos.data());
        batch_sample_spans(b, d, idx.data(), idx.size(), &spans);
        lp.resize(spans.size());
        decoder_span_logps(m, a, b.ids.data(), b.labels.data(), spans.data(), spans.size(), false, lp.data());
        for (size_t k = 0; k < idx.size(); k++) (*logps)[idx[k]] = lp[k];
        if (on_batch)
            on_batch((int64_t)(i / (size_t)batch_size) + 1, ((int64_t)d.samples.size() + batch_size - 1) / batch_size);
    }
}

pref_result evaluate_preference(const pref_options& o, const dataset& d, const std::vector<double>& logps,
                                const std::vector<double>& ref_logps) {
    LISA_ASSERT(logps.size() == d.samples.size() && d.samples.size() % 2 == 0, "evaluate_preference",
                "one log-probability per sample, samples in pairs");
    LISA_ASSERT(ref_logps.empty() || ref_logps.size() == logps.size(), "evaluate_preference",
                "the reference has one log-probability per sample");
    std::vector<pref_pair> pairs(d.samples.size() / 2);
    for (size_t i = 0; i < pairs.size(); i++) {
        pref_pair& p = pairs[i];
        p.logp_chosen = logps[2 * i];
        p.logp_rejected = logps[2 * i + 1];
        p.len_chosen = sample_label_tokens(d.samples[2 * i]);
        p.len_rejected = sample_label_tokens(d.samples[2 * i + 1]);
        if (!ref_logps.empty()) p.ref_chosen = ref_logps[2 * i], p.ref_rejected = ref_logps[2 * i + 1];
    }
    return pref_batch(o, pairs);
}

void evaluate_logp_margins(const dataset& d, const std::vector<double>& logps, double out[4]) {
    LISA_ASSERT(logps.size() == d.samples.size() && d.samples.size() % 2 == 0, "evaluate_logp_margins",
                "one log-probability per sample, samples in pairs");
    const size_t n = d.samples.size() / 2;
    double c = 0, r = 0, acc = 0;
    for (size_t i = 0; i < n; i++) {
        c += logps[2 * i], r += logps[2 * i + 1];
        acc += logps[2 * i] > logps[2 * i + 1] ? 1 : 0;
    }
    const double k = (double)std::max<size_t>(1, n);
    out[0] = c / k, out[1] = r / k, out[2] = acc / k, out[3] = (c - r) / k;
}

}  // namespace lisa
