// A decoder model's parameters (Llama 2/3, Mistral, Qwen2/3, Gemma 3, SmolLM3, Phi-3; one file
// per architecture in model/arch/): the size table, the one fp32 allocation (and the bf16 one of
// half mode), LoRA adapters, where it computes, loading and saving.
//
// Parameters live in ONE fp32 allocation described by a size table (`tensors`), like llm.c;
// `decoder_weights` holds typed pointers into it. Gradients use the same pointer struct: a
// nullptr gradient means "frozen": no weight gradient is computed for that tensor, while
// input gradients still flow through it (what LISA needs for the layers it does not train).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/device_array.h"
#include "kernels/kernels.h"
#include "model/config.h"
#include "model/layer.h"

namespace lisa {

struct decoder_weights {
    float*                           embed = nullptr;    // [V, D]  model.embed_tokens.weight
    std::vector<decoder_layer_weights> layers;             // num_layers entries
    float*                           norm = nullptr;     // [D]     model.norm.weight
    float*                           lm_head = nullptr;  // [V, D]  lm_head.weight (== embed when tied)
    // the pointer of tensor t of the size table (no casts: a switch over the table's slot)
    float** slot(const struct decoder_tensor_info& t);
};

// One entry of the size table: where a Hugging Face tensor lives in the parameter buffer.
struct decoder_tensor_info {
    std::string          name;    // Hugging Face name, e.g. "model.layers.3.mlp.up_proj.weight"
    std::vector<int64_t> shape;
    size_t               offset;  // in floats, from the start of the buffer
    size_t               numel;
    int                  layer;   // decoder layer index, or -1 for embed / final norm / lm_head
    bool                 is_matrix;  // 2-D weight (normal init) vs norm/bias (ones/zeros)
    tensor_kind          kind;    // matrix / norm / bias
    int                  field;   // its pointer in decoder_weights: the layer_tensor for layer
                                  // tensors; kFieldEmbed / kFieldNorm / kFieldHead otherwise
};
enum { kFieldEmbed = -1, kFieldNorm = -2, kFieldHead = -3 };
// The size table of a config (names, shapes, offsets), in the order tensors are stored.
std::vector<decoder_tensor_info> decoder_tensor_table(const model_config& c);

// The frozen copies of the matrices of a model kept in bf16 ("half" mode), bf16 or ggml blocks
// (a quantized base), same layout as the fp32 pointers; null in fp32 mode.
struct decoder_weights16 {
    frozen_ptr                           embed;
    std::vector<decoder_layer_weights16> layers;
    frozen_ptr                           lm_head;
};

// LoRA adapters on the decoder's Linear layers, computed unmerged (y += s·B·A·x) so that only
// A and B need gradients. Pointers are owned elsewhere (the trainer's LoRA buffer); a null A
// means the module has no adapter.
struct decoder_lora_layer {
    float* A[LORA_N];  // [r, in]
    float* B[LORA_N];  // [out, r]
};
struct decoder_lora {
    int64_t                       r = 0;        // 0 = no adapters
    float                         scale = 1.0f; // lora_alpha / r
    float                         dropout = 0.0f;
    uint64_t                      dropout_seed = 0;  // set per micro-batch; masks are regenerated from it
    std::vector<decoder_lora_layer> layers;
};

// Where a model computes: the backend (chosen here, once) and its thread count (0 = the
// process default). Every library entry point that computes applies it for its duration.
struct compute_ctx {
    const backend* be = &backend_cpu();
    int            threads = 0;
    int            max_threads = 0;  // the most `threads` may become mid-run (a thread governor), 0 = threads
    void           apply() const { be->set_threads(threads); }
};

struct decoder_model {
    model_config                   cfg;
    compute_ctx                    ctx;           // backend and threads
    std::vector<decoder_tensor_info> tensors;       // size table, in a fixed order
    device_array<float>            params;        // the one fp32 allocation for all weights (pages
                                                  // are backed only where written)
    decoder_weights                  w;             // pointers into params; in half mode a matrix's
                                                  // pointer is null unless it is materialised
    // Half mode (a bf16 checkpoint): every matrix is held in bf16 in params16 (same offsets) and
    // computed from there tile by tile; fp32 copies exist only for materialised tensors (the
    // trainable ones: masters). Norms and biases are always fp32.
    bool                           half = false;
    device_array<uint16_t>         params16;
    decoder_weights16                w16;           // bf16 or block-type frozen matrices
    std::vector<bool>              materialized;  // per tensor, half mode: fp32 copy is current
    // A quantized base (a GGUF file's blocks, or --base_quant; issue #29; half mode, host-memory
    // backends): frozen matrices kept in their ggml block type in paramsq, each at q_offset[i]
    // bytes; q_type[i] is that type, or 0 for a matrix held in bf16 / fp32. A matrix that starts
    // training (a layer LISA draws, a trained embedding) is dequantized into its fp32 master and
    // its blocks are given back; when a LISA layer leaves, its master goes to bf16 (params16).
    device_array<uint8_t>          paramsq;
    std::vector<size_t>            q_offset;
    std::vector<uint32_t>          q_type;
    dtype                          stored_dtype;  // dtype of the loaded files (default for saving)
    std::string                    source_dir;    // folder it was loaded from ("" if made here)
    decoder_lora                     lora;          // unmerged adapters (training); empty otherwise
};

// Allocates a zero model for cfg and fills the size table and pointers.
// half: keep matrices in bf16 (see decoder_model::half).
// be: the backend whose device memory holds it (nullptr: backend_cpu()).
std::unique_ptr<decoder_model> decoder_model_init(const model_config& cfg, bool half = false,
                                                  const backend* be = nullptr);
// Re-points m->w (and w16) into the buffers (after they were replaced, or the model was copied).
void decoder_model_rebind(decoder_model* m);
// Half mode: make tensors [first, last] available in fp32 (bf16 -> fp32 into params), or write
// them back to bf16 and give their fp32 pages back. No-ops in fp32 mode.
void decoder_materialize(decoder_model* m, size_t first, size_t last);
// The weights of c (a checkpoint of m, loaded in m's mode) into m. A quantized base's matrices
// stay blocks where the checkpoint holds exactly their values in bf16 (not trained since).
void decoder_model_take_weights(decoder_model* m, decoder_model* c);
// --base_quant: the decoder layers' frozen matrices (rows of whole blocks) into ggml blocks of
// type t (q8_0, q4_0, q4_K), and the embedding / head too when `embed` / `head` (when they stay
// frozen: a trained one keeps its exact values for its fp32 master), the model switched to half
// mode if it was not; a matrix already in blocks keeps them. CPU backends only (fails naming the
// flag elsewhere).
void decoder_model_quantize_base(decoder_model* m, uint32_t type, bool embed, bool head);
// Whether tensor i is held in a ggml block type (a quantized base's frozen matrix).
bool decoder_tensor_quantized(const decoder_model& m, size_t i);
void decoder_dematerialize(decoder_model* m, size_t first, size_t last);
// A tensor's values in fp32, whatever the mode (for saving and tests).
std::vector<float> decoder_tensor_values(const decoder_model& m, size_t i);
// Loads a Hugging Face model folder (config.json + model.safetensors or shards with
// model.safetensors.index.json; F32/BF16/F16). Files are memory-mapped and converted once.
// half_mode: -1 (auto) keeps bf16 matrices in bf16 (half mode) when the files have some and no
// f16 ones; 0 converts everything to fp32; 1 forces half mode (fp32 matrices become masters).
// be: as decoder_model_init.
std::unique_ptr<decoder_model> decoder_model_load(const std::string& dir, int half_mode = -1,
                                                  const backend* be = nullptr);
// Random init as Hugging Face does: normal(0, initializer_range) for matrices and the
// embedding, ones for norms, zeros for biases. Deterministic in seed.
void decoder_model_init_random(decoder_model* m, uint64_t seed);

struct decoder_save_options {
    dtype       out_dtype = dtype::f32;
    size_t      max_shard_bytes = (size_t)5 << 30;  // like save_pretrained(max_shard_size="5GB")
    std::string tokenizer_from;                     // folder to copy tokenizer files from ("" = none)
    bool        native_dtypes = false;  // each tensor as held (fp32 masters, bf16 others): checkpoints
};
// Writes config.json, model.safetensors (or shards + index), generation_config.json and the
// tokenizer files. Each file is written atomically; config.json is removed first and written
// last, so an interrupted save never leaves a folder that looks loadable.
void decoder_model_save(const decoder_model& m, const std::string& dir, const decoder_save_options& opt);
// Copies the tokenizer files a model folder may hold (tokenizer.json, tokenizer_config.json, ...)
// from one folder to another, each atomically; absent ones are skipped.
void decoder_copy_tokenizer_files(const std::string& from, const std::string& dir);
dtype parse_dtype_option(const std::string& s);  // "float32" | "bfloat16" | "float16"; throws otherwise
size_t parse_size_option(const std::string& s);  // "5GB", "500MB", "100KB", "123" (bytes)

// Refuses a config whose per-layer fields do not fit it (hand-made configs), naming the field.
void decoder_check_supported(const model_config& c);

// Inverse rotary frequencies [head_dim/2] of a rope config (theta and scaling).
// dims: the rotated values of a head (rope_dim); long_ctx: longrope's long factors.
std::vector<float> decoder_rope_inv_freq(const rope_config& rope, int64_t dims, bool long_ctx = false);
// The config's (global) rope for sequences of T positions.
std::vector<float> decoder_rope_inv_freq(const model_config& c, int64_t T = 0);
// Whether sequences of T positions use longrope's long factors (past the pretraining context).
bool decoder_rope_long(const model_config& c, int64_t T);

}  // namespace lisa
