// Llama-family decoder (Llama 2/3, Mistral, Qwen2, Qwen3, Gemma 3): parameters, activations,
// forward and backward.
//
// Parameters live in ONE fp32 allocation described by a size table (`tensors`), like llm.c;
// `llama_weights` holds typed pointers into it. Gradients use the same pointer struct: a
// nullptr gradient means "frozen": no weight gradient is computed for that tensor, while
// input gradients still flow through it (what LISA needs for the layers it does not train).
// Activations for one batch shape are one allocation too (`llama_acts`), sized up front.
#pragma once
#include <cstdint>
#include <functional>
#include <array>
#include <memory>
#include <string>
#include <vector>

#include "kernels/device_array.h"
#include "kernels/kernels.h"
#include "model/config.h"
#include "model/layer.h"

namespace lisa {

struct llama_weights {
    float*                           embed = nullptr;    // [V, D]  model.embed_tokens.weight
    std::vector<llama_layer_weights> layers;             // num_layers entries
    float*                           norm = nullptr;     // [D]     model.norm.weight
    float*                           lm_head = nullptr;  // [V, D]  lm_head.weight (== embed when tied)
    // the pointer of tensor t of the size table (no casts: a switch over the table's slot)
    float** slot(const struct llama_tensor_info& t);
};

// One entry of the size table: where a Hugging Face tensor lives in the parameter buffer.
struct llama_tensor_info {
    std::string          name;    // Hugging Face name, e.g. "model.layers.3.mlp.up_proj.weight"
    std::vector<int64_t> shape;
    size_t               offset;  // in floats, from the start of the buffer
    size_t               numel;
    int                  layer;   // decoder layer index, or -1 for embed / final norm / lm_head
    bool                 is_matrix;  // 2-D weight (normal init) vs norm/bias (ones/zeros)
    tensor_kind          kind;    // matrix / norm / bias
    int                  field;   // its pointer in llama_weights: the layer_tensor for layer
                                  // tensors; kFieldEmbed / kFieldNorm / kFieldHead otherwise
};
enum { kFieldEmbed = -1, kFieldNorm = -2, kFieldHead = -3 };
// The size table of a config (names, shapes, offsets), in the order tensors are stored.
std::vector<llama_tensor_info> llama_tensor_table(const llama_config& c);

// bf16 copies of the matrices of a model kept in bf16 ("half" mode), same layout as the fp32
// pointers; null in fp32 mode.
struct llama_weights16 {
    const uint16_t*                    embed = nullptr;
    std::vector<llama_layer_weights16> layers;
    const uint16_t*                    lm_head = nullptr;
};

// LoRA adapters on the decoder's Linear layers, computed unmerged (y += s·B·A·x) so that only
// A and B need gradients. Pointers are owned elsewhere (the trainer's LoRA buffer); a null A
// means the module has no adapter.
struct llama_lora_layer {
    float* A[LORA_N];  // [r, in]
    float* B[LORA_N];  // [out, r]
};
struct llama_lora {
    int64_t                       r = 0;        // 0 = no adapters
    float                         scale = 1.0f; // lora_alpha / r
    float                         dropout = 0.0f;
    uint64_t                      dropout_seed = 0;  // set per micro-batch; masks are regenerated from it
    std::vector<llama_lora_layer> layers;
};

// Where a model computes: the backend (chosen here, once) and its thread count (0 = the
// process default). Every library entry point that computes applies it for its duration.
struct compute_ctx {
    const backend* be = &backend_cpu();
    int            threads = 0;
    int            max_threads = 0;  // the most `threads` may become mid-run (a thread governor), 0 = threads
    void           apply() const { be->set_threads(threads); }
};

struct llama_model {
    llama_config                   cfg;
    compute_ctx                    ctx;           // backend and threads
    std::vector<llama_tensor_info> tensors;       // size table, in a fixed order
    device_array<float>            params;        // the one fp32 allocation for all weights (pages
                                                  // are backed only where written)
    llama_weights                  w;             // pointers into params; in half mode a matrix's
                                                  // pointer is null unless it is materialised
    // Half mode (a bf16 checkpoint): every matrix is held in bf16 in params16 (same offsets) and
    // computed from there tile by tile; fp32 copies exist only for materialised tensors (the
    // trainable ones: masters). Norms and biases are always fp32.
    bool                           half = false;
    device_array<uint16_t>         params16;
    llama_weights16                w16;
    std::vector<bool>              materialized;  // per tensor, half mode: fp32 copy is current
    dtype                          stored_dtype;  // dtype of the loaded files (default for saving)
    std::string                    source_dir;    // folder it was loaded from ("" if made here)
    llama_lora                     lora;          // unmerged adapters (training); empty otherwise
};

// Allocates a zero model for cfg and fills the size table and pointers.
// half: keep matrices in bf16 (see llama_model::half).
std::unique_ptr<llama_model> llama_model_init(const llama_config& cfg, bool half = false);
// Re-points m->w (and w16) into the buffers (after they were replaced, or the model was copied).
void llama_model_rebind(llama_model* m);
// Half mode: make tensors [first, last] available in fp32 (bf16 -> fp32 into params), or write
// them back to bf16 and give their fp32 pages back. No-ops in fp32 mode.
void llama_materialize(llama_model* m, size_t first, size_t last);
void llama_dematerialize(llama_model* m, size_t first, size_t last);
// A tensor's values in fp32, whatever the mode (for saving and tests).
std::vector<float> llama_tensor_values(const llama_model& m, size_t i);
// Loads a Hugging Face model folder (config.json + model.safetensors or shards with
// model.safetensors.index.json; F32/BF16/F16). Files are memory-mapped and converted once.
// half_mode: -1 (auto) keeps bf16 matrices in bf16 (half mode) when the files have some and no
// f16 ones; 0 converts everything to fp32; 1 forces half mode (fp32 matrices become masters).
std::unique_ptr<llama_model> llama_model_load(const std::string& dir, int half_mode = -1);
// Random init as Hugging Face does: normal(0, initializer_range) for matrices and the
// embedding, ones for norms, zeros for biases. Deterministic in seed.
void llama_model_init_random(llama_model* m, uint64_t seed);

struct llama_save_options {
    dtype       out_dtype = dtype::f32;
    size_t      max_shard_bytes = (size_t)5 << 30;  // like save_pretrained(max_shard_size="5GB")
    std::string tokenizer_from;                     // folder to copy tokenizer files from ("" = none)
    bool        native_dtypes = false;  // each tensor as held (fp32 masters, bf16 others): checkpoints
};
// Writes config.json, model.safetensors (or shards + index), generation_config.json and the
// tokenizer files. Each file is written atomically; config.json is removed first and written
// last, so an interrupted save never leaves a folder that looks loadable.
void llama_model_save(const llama_model& m, const std::string& dir, const llama_save_options& opt);
// Copies the tokenizer files a model folder may hold (tokenizer.json, tokenizer_config.json, ...)
// from one folder to another, each atomically; absent ones are skipped.
void llama_copy_tokenizer_files(const std::string& from, const std::string& dir);
dtype parse_dtype_option(const std::string& s);  // "float32" | "bfloat16" | "float16"; throws otherwise
size_t parse_size_option(const std::string& s);  // "5GB", "500MB", "100KB", "123" (bytes)

// Gradient of an untied embedding, kept for the touched rows only: a step sees at most
// batch × T distinct tokens of a vocabulary that may hold 128K rows.
struct llama_embed_rows {
    std::vector<int32_t> row_of;  // [vocab]: position in `rows`, or -1 (untouched, gradient 0)
    std::vector<int32_t> rows;    // touched rows, in order of first touch
    device_array<float>  grad;    // [capacity, hidden]; the first rows.size() rows are in use
    int64_t              width = 0;
    // room for `capacity` rows of `width` (a step touches at most batch × T of them)
    void init(int64_t vocab, int64_t width, int64_t capacity);
    void clear();                 // forget the rows of the last step (keeps the allocations)
};
// Registers rows `ids` (zeroed) before a step's backward, in that order; data-parallel ranks touch
// the same union so their row buffers line up for one all-reduce.
void llama_embed_rows_touch(llama_embed_rows* er, const backend& K, const int32_t* ids, size_t n);

// Gradient buffer shaped like the parameters; `g` points into it. All tensors start
// trainable; set pointers to nullptr to freeze.
struct llama_grads {
    device_array<float>           buf;
    llama_weights                 g;
    std::vector<llama_lora_layer> lora;  // gradients of the LoRA A/B (null = none)
    llama_embed_rows*             embed_rows = nullptr;  // if set (and g.embed null): sparse embedding gradient
    // Called during the backward as gradients become final for this pass: num_layers when the
    // final norm's and an untied head's are, then l after decoder layer l's. (Data-parallel ranks
    // start summing a layer while the layers below it are still computing.)
    std::function<void(int64_t)>  layer_done;
};
void llama_grads_init(llama_grads* gr, const llama_model& m);
void llama_grads_zero(llama_grads* gr);
void llama_grads_freeze_layer(llama_grads* gr, int layer);  // null every pointer of one layer
// Address of the pointer field for tensor i inside a pointer struct (params or grads), so a
// gradient can be bound to storage anywhere (the trainer's per-layer state blocks).
float** llama_weight_slot(llama_weights* w, const llama_model& m, size_t tensor_index);
float* llama_grad_of(const llama_grads& gr, const llama_model& m, size_t tensor_index);  // nullptr if frozen

// What a decoder layer's forward keeps for its backward (pointers into an activation buffer).
struct llama_layer_acts {
    float *x_mid, *rstd1, *xn1, *q, *k, *v, *att, *lse, *rstd2, *xn2, *gate, *up, *h;
    // qk_norm: q/k projections before their per-head norm, and its rstd [N·H] (else q_pre == q)
    float *q_pre, *k_pre, *rstd_q, *rstd_k;
    // sandwich norms: attention and MLP outputs before their norms, and rstd (else attn_o == x_mid;
    // mlp_o is then the layer's output)
    float *attn_o, *rstd_ao, *mlp_o, *rstd_mo;
};

// Activations: one allocation planned once for the largest batch (llama_acts_init), re-pointed
// for each smaller batch without allocating (llama_acts_shape).
struct llama_acts {
    int64_t B = 0, T = 0;          // the current batch shape
    int64_t cap_N = 0, cap_T = 0;  // the planned capacity (rows, sequence length)
    bool    checkpoint = false;  // gradient checkpointing: keep layer inputs only, recompute the rest
    bool    training = false;    // a backward follows this forward: LoRA dropout is applied (never in
                                 // evaluation or generation); set by llama_forward_backward
    device_array<float> buf;
    std::vector<llama_layer_acts> layers;  // per layer (one shared set when checkpointing)
    std::vector<float*> resid;  // num_layers + 1 residual streams: resid[0] = embeddings
    float *rstd_f, *xn_f;       // final norm
    // backward scratch
    float *dresid, *dxn, *dq, *dk, *dv, *datt, *dh, *dgate, *dup;
    float *dq_pre, *dk_pre;     // qk_norm: gradients before the per-head norms
    float *dpost;               // sandwich norms: gradient of a block output before its norm
    float *head_scratch;        // fused LM head + cross-entropy
    // LoRA: per layer and target, xa = dropout(x)·Aᵀ [N, r]; scratch for the backward
    std::vector<std::array<float*, LORA_N>> lora_xa;
    float *lora_dxa, *lora_xdrop, *lora_dx;
    int64_t head_chunk;
    float *rope_cos, *rope_sin; // [T, rope_dim/2] (room for [T, hd/2])
    float *rope_cos_local, *rope_sin_local;  // [T, hd/2] of rope_local (layers that use it; else unused)
    device_array<float>  inv_freq;         // [rope_dim/2] RoPE inverse frequencies of the config
    device_array<float>  inv_freq_long;    // [rope_dim/2] longrope's past the pretraining context (else empty)
    device_array<float>  inv_freq_local;   // [hd/2] of rope_local
    std::vector<int32_t> tokens, targets;  // [cap_N]
};
// Plans and allocates activations for batches of up to B sequences of up to T tokens, and sets
// the shape to (B, T). checkpoint: gradient checkpointing — only each layer's input is kept; the
// backward recomputes a layer's activations into one shared set (about a third more compute,
// activations / num_layers).
void llama_acts_init(llama_acts* a, const llama_model& m, int64_t B, int64_t T, bool checkpoint = false);
// Re-points the activations for a batch of B × T within the planned capacity (no allocation).
void llama_acts_shape(llama_acts* a, const llama_model& m, int64_t B, int64_t T);

// Runs the decoder on tokens [B*T] (row-major, right-padded) up to the final norm (acts.xn_f).
void llama_forward(const llama_model& m, llama_acts* a, const int32_t* tokens);
// Full logits [B*T, V] for the last forward (for evaluation, generation and tests).
void llama_logits(const llama_model& m, const llama_acts& a, float* logits);

// Forward + backward for a batch. labels [B*T] are aligned with tokens as in Hugging Face:
// position t is trained to predict labels[t+1]; -100 is ignored (padding, prompts).
// Gradients of grad_scale × Σ CE are ACCUMULATED into gr (pass 1/total label tokens of the whole
// accumulated batch to get the mean). Returns Σ CE and sets *n_tokens to the label-token count.
// gr == nullptr: loss only.
double llama_forward_backward(const llama_model& m, llama_acts* a, llama_grads* gr, const int32_t* tokens,
                              const int32_t* labels, float grad_scale, int64_t* n_tokens);

// KV cache for generation: keys (after RoPE) and values of every layer, for up to max_T positions,
// and the scratch of the blocks (grown to the largest chunk of tokens decoded at once).
struct llama_kv_cache {
    int64_t             max_T = 0;
    int64_t             n_past = 0;  // positions already in the cache
    device_array<float> k, v;        // [num_layers, max_T, Hkv, hd]
    device_array<float> rope_cos, rope_sin;  // [max_T, hd/2]
    device_array<float> rope_cos_local, rope_sin_local;  // of rope_local, when some layer uses it
    device_array<float> scratch;     // the blocks' activations for up to scratch_rows tokens
    int64_t             scratch_rows = 0;
};
void llama_kv_cache_init(llama_kv_cache* c, const llama_model& m, int64_t max_T);
// Runs n new tokens at positions n_past.., appends them to the cache and writes the logits of
// the last one ([vocab_size]). Throws if the cache would overflow.
void llama_decode(const llama_model& m, llama_kv_cache* c, const int32_t* tokens, int64_t n, float* logits_last);

// Refuses a config whose per-layer fields do not fit it (hand-made configs), naming the field.
void llama_check_supported(const llama_config& c);

// Inverse rotary frequencies [head_dim/2] of a rope config (theta and scaling).
// dims: the rotated values of a head (rope_dim); long_ctx: longrope's long factors.
std::vector<float> llama_rope_inv_freq(const rope_config& rope, int64_t dims, bool long_ctx = false);
// The config's (global) rope for sequences of T positions.
std::vector<float> llama_rope_inv_freq(const llama_config& c, int64_t T = 0);
// Whether sequences of T positions use longrope's long factors (past the pretraining context).
bool llama_rope_long(const llama_config& c, int64_t T);

}  // namespace lisa
