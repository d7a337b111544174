// lisa eval --model_name_or_path DIR --dataset_path DIR [--block_size N]
//           [--per_device_eval_batch_size N] [--lora_model_path DIR] [--conversation_template T]
// Prints {"loss", "perplexity", "tokens", "samples"}: mean cross-entropy over all label tokens.
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/error.h"
#include "data/dataset.h"
#include "train/evaluate.h"
#include "train/trainer.h"

namespace lisa {

command_fn cmd_eval_register(CLI::App& app) {
    struct opts {
        std::string model, data, lora, tmpl;
        int64_t     block_size = 0, batch_size = train_options{}.per_device_eval_batch_size;  // train's default
        bool        group_texts = false, train_on_prompt = false, packing = false;
        bool        padding_free = train_options{}.padding_free;
    };
    auto o = std::make_shared<opts>();
    app.option_defaults()->always_capture_default();
    app.add_option("--model_name_or_path", o->model, "Hugging Face model folder")->required();
    app.add_option("--dataset_path", o->data, "folder of *.json / *.jsonl datasets")->required();
    app.add_option("--block_size", o->block_size, "truncate sequences to N tokens (0: min(1024, model context))");
    app.add_option("--per_device_eval_batch_size", o->batch_size, "sequences per forward pass")
        ->check(CLI::PositiveNumber);
    app.add_option("--lora_model_path", o->lora, "PEFT adapter folder to apply");
    app.add_option("--conversation_template", o->tmpl, "chat template for conversation data: auto (the model's own, the default when it has one), llama3, chatml, llama2, mistral, empty, or a .jinja file");
    cli_add_bool(app, "--group_texts", &o->group_texts, "concatenate samples and cut into blocks of --block_size");
    cli_add_bool(app, "--packing,--sample_packing", &o->packing,
                 "fill rows of --block_size with whole samples, each attending only to itself");
    cli_add_bool(app, "--padding_free", &o->padding_free,
                 "a batch's samples end to end, attention kept inside each (default true; false: padded rows)");
    cli_add_bool(app, "--train_on_prompt", &o->train_on_prompt, "conversation: count prompt turns in the loss too");
    return [o] {
        cli_progress bar("lisa eval");
        bar.show("loading " + o->model);
        auto m = load_model_with_lora(o->model, o->lora);
        auto tok = load_tokenizer_of(o->model);
        bar.show("tokenizing " + o->data);
        cli_data_flags f{o->data, o->tmpl, o->block_size, o->group_texts, o->train_on_prompt, o->packing};
        dataset_options dopt;
        model_chat_template chat_template;
        dataset d = cli_load_dataset(f, o->model, *tok, m->cfg, &dopt, &chat_template);
        bar.done();
        int64_t tokens = 0;
        const double sum = evaluate_loss_sum(*m, d, o->batch_size, resolve_pad_id(*tok, dopt.eos_id), &tokens, nullptr,
                                             [&](int64_t done, int64_t total) {
                                                 bar.show(strf("batch %lld of %lld (%zu samples)", (long long)done,
                                                               (long long)total, d.samples.size()));
                                             },
                                             o->padding_free ? batch_layout::padding_free : batch_layout::padded);
        bar.done();
        double loss = sum / (double)tokens;
        nlohmann::ordered_json j = {{"loss", loss}, {"perplexity", std::exp(loss)}, {"tokens", tokens},
                            {"samples", (int64_t)d.samples.size()}, {"records", d.n_instances},
                            {"truncated", d.n_truncated}, {"dropped", d.n_dropped}};
        if (d.n_truncated > 0 || d.n_dropped > 0)
            std::fprintf(stderr, "lisa: warning: %lld of %lld samples truncated to --block_size %lld, %lld dropped (no "
                                 "label token left)\n", (long long)d.n_truncated, (long long)d.n_instances,
                         (long long)dopt.block_size, (long long)d.n_dropped);
        std::printf("%s\n", j.dump().c_str());
    };
}

}  // namespace lisa
