// lisa merge-lora --model_name_or_path BASE --lora_model_path ADAPTER --output_model_path OUT
// Folds a PEFT LoRA adapter into the base weights and writes a full model (base dtype unless
// --torch_dtype). A folder already holding a model (the base itself included) is replaced only
// with --overwrite_output_dir.
#include <cstdio>

#include "cli/commands.h"
#include "cli/common.h"
#include "model/decoder.h"
#include "model/lora.h"

namespace lisa {

command_fn cmd_merge_lora_register(CLI::App& app) {
    struct opts {
        std::string base, adapter, out, dtype_name, max_shard = "5GB";
        bool        overwrite = false;
    };
    auto o = std::make_shared<opts>();
    app.add_option("--model_name_or_path", o->base, "base model folder")->required();
    app.add_option("--lora_model_path", o->adapter, "PEFT adapter folder")->required();
    app.add_option("--output_model_path", o->out, "folder for the merged model")->required();
    app.add_option("--torch_dtype", o->dtype_name, "saved dtype (default: the base model's)");
    app.add_option("--max_shard_size", o->max_shard, "largest safetensors file before sharding (default 5GB)");
    cli_add_bool(app, "--overwrite_output_dir", &o->overwrite,
                 "replace a model or adapter already in the output folder (every file of it)");
    return [o] {
        decoder_save_options so;
        so.max_shard_bytes = parse_size_option(o->max_shard);
        if (!o->dtype_name.empty()) parse_dtype_option(o->dtype_name);  // refused before any work
        output_lock lock;
        const bool created = claim_model_folder(&lock, o->out, "lisa merge-lora", o->overwrite);
        try {
            cli_progress bar("lisa merge-lora");
            bar.show("loading " + o->base + " and merging " + o->adapter);
            auto m = load_model_with_lora(o->base, o->adapter);
            bar.show("writing " + o->out);
            so.out_dtype = o->dtype_name.empty() ? m->stored_dtype : parse_dtype_option(o->dtype_name);
            clear_model_folder(o->out, o->base);
            decoder_model_save(*m, o->out, so);
        } catch (...) {
            drop_model_folder(&lock, o->out, created);
            throw;
        }
        std::printf("wrote %s\n", o->out.c_str());
    };
}

}  // namespace lisa
