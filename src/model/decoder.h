// The decoder's computation: forward, forward + backward into gradients, logits, and KV-cached
// decoding. The model (parameters) is model/model.h, its activations model/acts.h; the layer's
// blocks they run are model/blocks.h.
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "model/acts.h"
#include "model/model.h"

namespace lisa {

// Gradient of an untied embedding, kept for the touched rows only: a step sees at most
// batch × T distinct tokens of a vocabulary that may hold 128K rows.
struct decoder_embed_rows {
    std::vector<int32_t> row_of;  // [vocab]: position in `rows`, or -1 (untouched, gradient 0)
    std::vector<int32_t> rows;    // touched rows, in order of first touch
    device_array<float>  grad;    // [capacity, hidden]; the first rows.size() rows are in use
    device_array<int32_t> row_of_dev;  // row_of on the device (kernels read it), current when synced
    bool                 synced = true;
    int64_t              width = 0;
    // room for `capacity` rows of `width` (a step touches at most batch × T of them), in be's memory
    void init(const backend& be, int64_t vocab, int64_t width, int64_t capacity);
    void clear();                 // forget the rows of the last step (keeps the allocations)
    void sync();                  // row_of to the device if it changed
};
// Registers rows `ids` (zeroed) before a step's backward, in that order; data-parallel ranks touch
// the same union so their row buffers line up for one all-reduce.
void decoder_embed_rows_touch(decoder_embed_rows* er, const backend& K, const int32_t* ids, size_t n);

// Gradient buffer shaped like the parameters; `g` points into it. All tensors start
// trainable; set pointers to nullptr to freeze.
struct decoder_grads {
    device_array<float>           buf;
    decoder_weights                 g;
    std::vector<decoder_lora_layer> lora;  // gradients of the LoRA A/B (null = none)
    decoder_embed_rows*             embed_rows = nullptr;  // if set (and g.embed null): sparse embedding gradient
    // Called during the backward as gradients become final for this pass: num_layers when the
    // final norm's and an untied head's are, then l after decoder layer l's. (Data-parallel ranks
    // start summing a layer while the layers below it are still computing.)
    std::function<void(int64_t)>  layer_done;
};
void decoder_grads_init(decoder_grads* gr, const decoder_model& m);
void decoder_grads_zero(decoder_grads* gr);
void decoder_grads_freeze_layer(decoder_grads* gr, int layer);  // null every pointer of one layer
// Address of the pointer field for tensor i inside a pointer struct (params or grads), so a
// gradient can be bound to storage anywhere (the trainer's per-layer state blocks).
float** decoder_weight_slot(decoder_weights* w, const decoder_model& m, size_t tensor_index);
float* decoder_grad_of(const decoder_grads& gr, const decoder_model& m, size_t tensor_index);  // nullptr if frozen

// Runs the decoder on tokens [B*T] (row-major, right-padded) up to the final norm (acts.xn_f).
void decoder_forward(const decoder_model& m, decoder_acts* a, const int32_t* tokens);
// Full logits [B*T, V] for the last forward (for evaluation, generation and tests).
void decoder_logits(const decoder_model& m, const decoder_acts& a, float* logits);

// Forward + backward for a batch. labels [B*T] are aligned with tokens as in Hugging Face:
// position t is trained to predict labels[t+1]; -100 is ignored (padding, prompts).
// Gradients of grad_scale × Σ CE are ACCUMULATED into gr (pass 1/total label tokens of the whole
// accumulated batch to get the mean). Returns Σ CE and sets *n_tokens to the label-token count.
// gr == nullptr: loss only.
double decoder_forward_backward(const decoder_model& m, decoder_acts* a, decoder_grads* gr, const int32_t* tokens,
                              const int32_t* labels, float grad_scale, int64_t* n_tokens);

// Sequence-level objectives (preference tuning, train/preference.h) in two passes over one batch:
// a span is rows [row0, row0 + n) of the flattened [B*T] batch (one reply and the positions
// predicting it). decoder_span_logps runs the forward (training: with dropout) and writes each
// span's Σ log p of its label tokens (labels as above); decoder_span_backward then ACCUMULATES
// into gr the gradients of Σ_s weight[s] · logp[s], from the activations the forward kept.
struct decoder_span {
    int64_t row0 = 0, n = 0;
};
void decoder_span_logps(const decoder_model& m, decoder_acts* a, const int32_t* tokens, const int32_t* labels,
                        const decoder_span* spans, size_t n_spans, bool training, double* logp);
void decoder_span_backward(const decoder_model& m, decoder_acts* a, decoder_grads* gr, const int32_t* tokens,
                           const decoder_span* spans, size_t n_spans, const double* weight);

// KV cache for generation: keys (after RoPE) and values of every layer, for up to max_T positions,
// and the scratch of the blocks (grown to the largest chunk of tokens decoded at once).
struct decoder_kv_cache {
    int64_t             max_T = 0;
    int64_t             n_past = 0;  // positions already in the cache
    device_array<float> k, v;        // [num_layers, max_T, Hkv, hd]
    device_array<float> rope_cos, rope_sin;  // [max_T, hd/2]
    device_array<float> rope_cos_local, rope_sin_local;  // of rope_local, when some layer uses it
    device_array<float> scratch;     // the blocks' activations for up to scratch_rows tokens
    device_array<int32_t> tokens;    // [scratch_rows] the token ids being decoded
    device_array<float> logits;      // [vocab] of the last position
    int64_t             scratch_rows = 0;
};
void decoder_kv_cache_init(decoder_kv_cache* c, const decoder_model& m, int64_t max_T);
// Runs n new tokens at positions n_past.., appends them to the cache and writes the logits of
// the last one ([vocab_size]). Throws if the cache would overflow.
void decoder_decode(const decoder_model& m, decoder_kv_cache* c, const int32_t* tokens, int64_t n, float* logits_last);

}  // namespace lisa
