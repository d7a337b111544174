// `lisa export-gguf`: a Hugging Face model folder (optionally with a PEFT adapter merged in) to a
// GGUF file that llama.cpp, Ollama and LM Studio run, with the tokenizer inside so that llama.cpp
// tokenizes as Hugging Face does. Streams tensor by tensor from the memory-mapped safetensors:
// peak memory is a few rows, not the model.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "export/gguf.h"

namespace lisa {

struct gguf_export_options {
    std::string model_dir;   // Hugging Face folder (config.json, safetensors, tokenizer.json)
    std::string outfile;     // the .gguf to write (atomically)
    std::string outtype = "f16";  // f32 | f16 | bf16 | q8_0 | q4_0 | q4_K (llama.cpp's converter's default: f16)
    std::string lora_dir;    // PEFT adapter folder to merge in ("" = none)
    bool lora_adapter = false;  // write lora_dir alone as a GGUF LoRA adapter (llama.cpp's --lora) for model_dir
    std::string base_gguf;   // a GGUF file the model came from: its quantized matrices whose values the model
                             // still holds are copied as they are, not quantized again ("" = none; model_dir
                             // itself: all but what lora_dir changes)
    size_t* kept = nullptr;  // out (optional): how many matrices were copied in their original blocks
    std::function<void(size_t done, size_t total)> on_tensor;  // after each tensor is written (progress)
};

// Parses --outtype; throws naming the accepted values.
ggml_type gguf_outtype(const std::string& s);

// Writes the GGUF; throws lisa::error naming the file and field on anything llama.cpp could not
// run as lisa.cpp does (an unsupported tokenizer, a layer pattern llama.cpp cannot express).
// Returns the warnings (what llama.cpp will do differently, tensors kept at f16 under q8_0), for
// the caller to show: the library prints nothing.
std::vector<std::string> export_gguf(const gguf_export_options& o);

// What the reader (model/gguf_model.cpp) undoes, shared with the writer so the two agree:
struct decoder_tensor_info;
// llama.cpp's name of a tensor of the size table ("blk.3.ffn_up.weight")
std::string gguf_tensor_name(const decoder_tensor_info& t);
// Row r of an exported llama q/k projection is source row gguf_rope_pair_row(r): llama.cpp's
// llama rotates adjacent pairs, Hugging Face the two halves of a head.
int64_t gguf_rope_pair_row(int64_t r, int64_t head_dim);
// llama3 RoPE scaling as llama.cpp takes it: the rope_freqs tensor of per-frequency divisors.
struct model_config;
std::vector<float> gguf_llama3_rope_factors(const model_config& c);
// The Split regex of a byte-level pre-tokenizer by llama.cpp's name for it (tokenizer.ggml.pre),
// or nullptr when that family is not one a Split regex describes.
const char* gguf_pre_split_regex(const std::string& pre);

}  // namespace lisa
