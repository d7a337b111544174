// Shared pieces of the commands that load a model for inference.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "model/llama.h"
#include "tokenizer/tokenizer.h"

namespace lisa {

// Model folder, with a PEFT adapter merged in when lora_dir is not empty.
std::unique_ptr<llama_model> load_model_with_lora(const std::string& dir, const std::string& lora_dir);
// tokenizer.json of a model folder (error naming the folder if absent).
std::unique_ptr<tokenizer> load_tokenizer_of(const std::string& dir);
// EOS of the tokenizer, else the config's first eos_token_id, else -1.
int32_t eos_id_of(const tokenizer& tok, const llama_model& m);
// --block_size default and check: min(1024, max_position_embeddings) when 0.
int64_t resolve_block_size(int64_t requested, const llama_model& m);

}  // namespace lisa
