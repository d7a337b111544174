// A GGUF file (llama.cpp's, Ollama's, LM Studio's, or one `lisa export-gguf` wrote) read as the
// Hugging Face model it came from: its config.json, tokenizer.json and tokenizer_config.json
// rebuilt from the metadata, and each Hugging Face tensor's values with what llama.cpp's
// converter did undone exactly (dequantized, llama's q/k rows back in halves order, Gemma's
// stored 1 + w back to w). Anything lisa.cpp cannot read as llama.cpp runs it is refused naming
// the key or tensor.
#pragma once
#include <map>
#include <memory>
#include <string>

#include "io/gguf_read.h"
#include "model/config.h"
#include "model/model.h"

namespace lisa {

struct gguf_model {
    std::unique_ptr<gguf_file> file;
    model_config               cfg;
    std::string                config_json;            // config.json, as Hugging Face would write it
    std::string                tokenizer_json;         // tokenizer.json
    std::string                tokenizer_config_json;  // tokenizer_config.json (special tokens, BOS policy, chat template)
    std::map<std::string, const gguf_tensor_info*> tensors;  // Hugging Face name -> the file's tensor
    bool                       quantized = false;      // some matrix is stored in a block type
    bool                       half = false;           // matrices stored in bf16 or a block type: load in bf16
};

// Opens path and rebuilds config and tokenizer; checks every tensor the config implies is
// present with its shape, and refuses tensors it does not know.
std::unique_ptr<gguf_model> gguf_model_open(const std::string& path);

// info's values as fp32 (info.numel floats).
void gguf_model_read(const gguf_model& g, const decoder_tensor_info& info, float* out);

// info's stored type, and its raw bytes with the rows in Hugging Face order (llama's q/k rows
// moved back; blocks untouched): a quantized base kept as the file holds it.
ggml_type gguf_model_type(const gguf_model& g, const decoder_tensor_info& info);
void      gguf_model_read_raw(const gguf_model& g, const decoder_tensor_info& info, uint8_t* out);

// Whether a --model_name_or_path names a GGUF file (rather than a Hugging Face folder).
bool model_path_is_gguf(const std::string& path);

// The text of a model's file `name` (config.json, tokenizer.json, tokenizer_config.json): read
// from the folder, or rebuilt from the metadata when model_path is a GGUF file (opened once per
// process and kept). false when the model has no such file.
bool model_text_file(const std::string& model_path, const std::string& name, std::string* text);
// How messages name a file of a model: "DIR/name", or "FILE.gguf (name rebuilt from its metadata)".
std::string model_file_label(const std::string& model_path, const std::string& name);

// The three text files of a GGUF model written into dir (atomically): what a model saved or
// trained from a GGUF carries, so the folder stands on its own.
void gguf_model_write_text_files(const std::string& gguf_path, const std::string& dir);

}  // namespace lisa
