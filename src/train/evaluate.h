// Evaluation and the data defaults that `lisa train` and `lisa eval` share, stated once.
#pragma once
#include <cstdint>
#include <functional>

#include "data/dataset.h"
#include "model/decoder.h"
#include "train/preference.h"
#include "tokenizer/tokenizer.h"

namespace lisa {

// --block_size: 0 (or less) = min(1024, max_position_embeddings); larger than the context = the
// context, with *warning saying so (as LMFlow and Hugging Face's run_clm).
int64_t resolve_block_size(int64_t requested, const model_config& c, std::string* warning = nullptr);
// EOS appended to samples: the tokenizer's, else the config's first eos_token_id, else -1.
int32_t resolve_eos_id(const tokenizer& tok, const model_config& c);
// Padding: the tokenizer's pad token, else EOS, else 0 (right padding never changes the loss).
int32_t resolve_pad_id(const tokenizer& tok, int32_t eos_id);

// Σ cross-entropy over every label token of a dataset, in batches of `batch_size` in file order
// laid out as `layout` says; *tokens receives the label-token count. Activations are planned
// once for the largest batch (acts, when given, is reused across calls).
double evaluate_loss_sum(const decoder_model& m, const dataset& d, int64_t batch_size, int32_t pad_id, int64_t* tokens,
                         decoder_acts* acts = nullptr,
                         const std::function<void(int64_t done, int64_t total)>& on_batch = nullptr,
                         batch_layout layout = batch_layout::padded);
// The activation plan (rows B of up to T tokens) that holds every batch of `batch_size` samples
// of d in `layout`: padded, the longest sample; padding-free, one row of the longest together.
void batch_plan(const dataset& d, int64_t batch_size, batch_layout layout, int64_t* B, int64_t* T);

// The samples idx[0..count) of batch b (make_batch_into's layout) as spans of its rows: padded, a
// row each; padding-free, each sample's stretch of the one row.
void batch_sample_spans(const batch& b, const dataset& d, const size_t* idx, size_t count,
                        std::vector<decoder_span>* spans);
// Σ log p of each sample's label tokens (a reply's log-likelihood; preference tuning's unit), in
// batches of `batch_size` in file order, without dropout: (*logps)[i] for sample i.
void evaluate_sample_logps(const decoder_model& m, const dataset& d, int64_t batch_size, int32_t pad_id,
                           std::vector<double>* logps, decoder_acts* acts = nullptr,
                           const std::function<void(int64_t done, int64_t total)>& on_batch = nullptr,
                           batch_layout layout = batch_layout::padded);
// A preference set's objective and TRL's metrics over all its pairs ([2i] chosen, [2i+1]
// rejected), from the policy's Σ log p of each sample and the reference's (DPO; empty for ORPO).
pref_result evaluate_preference(const pref_options& o, const dataset& d, const std::vector<double>& logps,
                                const std::vector<double>& ref_logps);
// Without an objective: how often and by how much the chosen reply is the likelier one —
// {"logps/chosen", "logps/rejected" (means of Σ log p), "logps/accuracies" (share of pairs with
// chosen > rejected), "logps/margins" (mean chosen − rejected)}, in that order.
void evaluate_logp_margins(const dataset& d, const std::vector<double>& logps, double out[4]);

}  // namespace lisa
