// lisa init --config CONFIG.json --output_model_path DIR [--tokenizer_path DIR] [--seed N] [--dtype D]
#include <cstdio>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/error.h"
#include "io/fs.h"
#include "model/decoder.h"
#include "tokenizer/tokenizer.h"

namespace lisa {

command_fn cmd_init_register(CLI::App& app) {
    struct opts {
        std::string config, output, tokenizer, dtype_name, max_shard_size = "5GB";
        uint64_t    seed = 42;
        bool        overwrite = false;
    };
    auto o = std::make_shared<opts>();
    app.add_option("--config", o->config, "Hugging Face config.json describing the model shape")->required();
    app.add_option("--output_model_path", o->output, "folder to write the model to")->required();
    app.add_option("--tokenizer_path", o->tokenizer, "folder whose tokenizer files are copied into the model");
    app.add_option("--seed", o->seed, "random seed for the weights (default 42)");
    app.add_option("--dtype", o->dtype_name, "stored dtype: float32 | bfloat16 | float16 (default: config's torch_dtype)");
    app.add_option("--max_shard_size", o->max_shard_size, "largest safetensors file before sharding (default 5GB)");
    cli_add_bool(app, "--overwrite_output_dir", &o->overwrite,
                 "replace a model or adapter already in the folder (every file of it)");
    return [o] {
        // everything that can be refused is refused before the folder is touched
        model_config cfg = config_load(o->config);
        if (!o->tokenizer.empty()) {
            if (!fs_is_dir(o->tokenizer)) fail(strf("--tokenizer_path %s: not a folder", o->tokenizer.c_str()));
            const int64_t nv = tokenizer_vocab_size(*tokenizer_load(o->tokenizer));
            if (nv > cfg.vocab_size)
                fail(strf("--tokenizer_path %s: its tokenizer has %lld ids but %s has vocab_size %lld; the model "
                          "could not embed them (set vocab_size to at least %lld)", o->tokenizer.c_str(), (long long)nv,
                          o->config.c_str(), (long long)cfg.vocab_size, (long long)nv));
        }
        decoder_save_options so;
        so.out_dtype = o->dtype_name.empty() ? cfg.torch_dtype : parse_dtype_option(o->dtype_name);
        so.max_shard_bytes = parse_size_option(o->max_shard_size);
        so.tokenizer_from = o->tokenizer;
        output_lock lock;
        const bool created = claim_model_folder(&lock, o->output, "lisa init", o->overwrite);
        try {
            // a bf16 model is generated straight into bf16: a 7B model never needs 28 GB of fp32
            auto m = decoder_model_init(cfg, so.out_dtype == dtype::bf16);
            m->ctx.threads = cli_threads();
            decoder_model_init_random(m.get(), o->seed);
            clear_model_folder(o->output, "");
            decoder_model_save(*m, o->output, so);
        } catch (...) {
            drop_model_folder(&lock, o->output, created);
            throw;
        }
        std::printf("wrote %s: %s, %lld parameters, %s\n", o->output.c_str(), cfg.architecture.c_str(),
                    (long long)config_num_params(cfg), dtype_torch_name(so.out_dtype));
    };
}

}  // namespace lisa
