// Shared pieces of the commands that load a model for inference.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "model/llama.h"
#include "tokenizer/tokenizer.h"

namespace lisa {

// Model folder, with a PEFT adapter merged in when lora_dir is not empty, computing with the
// --threads count.
std::unique_ptr<llama_model> load_model_with_lora(const std::string& dir, const std::string& lora_dir);
// tokenizer.json of a model folder (error naming the folder if absent).
std::unique_ptr<tokenizer> load_tokenizer_of(const std::string& dir);

}  // namespace lisa
