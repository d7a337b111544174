// lisa merge-lora --model_name_or_path BASE --lora_model_path ADAPTER --output_model_path OUT
// Folds a PEFT LoRA adapter into the base weights and writes a full model (base dtype unless
// --torch_dtype).
#include <cstdio>

#include "cli/commands.h"
#include "cli/common.h"
#include "model/llama.h"
#include "model/lora.h"

namespace lisa {

command_fn cmd_merge_lora_register(CLI::App& app) {
    struct opts {
        std::string base, adapter, out, dtype_name, max_shard = "5GB";
    };
    auto o = std::make_shared<opts>();
    app.add_option("--model_name_or_path", o->base, "base model folder")->required();
    app.add_option("--lora_model_path", o->adapter, "PEFT adapter folder")->required();
    app.add_option("--output_model_path", o->out, "folder for the merged model")->required();
    app.add_option("--torch_dtype", o->dtype_name, "saved dtype (default: the base model's)");
    app.add_option("--max_shard_size", o->max_shard, "largest safetensors file before sharding (default 5GB)");
    return [o] {
        auto m = load_model_with_lora(o->base, o->adapter);
        llama_save_options so;
        so.out_dtype = o->dtype_name.empty() ? m->stored_dtype : parse_dtype_option(o->dtype_name);
        so.max_shard_bytes = parse_size_option(o->max_shard);
        llama_model_save(*m, o->out, so);
        std::printf("wrote %s\n", o->out.c_str());
    };
}

}  // namespace lisa
