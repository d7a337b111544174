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

namespace lisa {

command_fn cmd_eval_register(CLI::App& app) {
    struct opts {
        std::string model, data, lora, tmpl;
        int64_t     block_size = 0, batch_size = 8;
        bool        group_texts = false, train_on_prompt = false;
    };
    auto o = std::make_shared<opts>();
    app.add_option("--model_name_or_path", o->model, "Hugging Face model folder")->required();
    app.add_option("--dataset_path", o->data, "folder of LMFlow *.json files")->required();
    app.add_option("--block_size", o->block_size, "truncate sequences to N tokens (default min(1024, model context))");
    app.add_option("--per_device_eval_batch_size", o->batch_size, "sequences per forward pass (default 8)")
        ->check(CLI::PositiveNumber);
    app.add_option("--lora_model_path", o->lora, "PEFT adapter folder to apply");
    app.add_option("--conversation_template", o->tmpl, "chat template for conversation data");
    app.add_flag("--group_texts", o->group_texts, "pack samples into blocks of --block_size");
    app.add_flag("--train_on_prompt", o->train_on_prompt, "conversation: count prompt turns in the loss too");
    return [o] {
        auto m = load_model_with_lora(o->model, o->lora);
        auto tok = load_tokenizer_of(o->model);
        dataset_options dopt;
        dopt.block_size = resolve_block_size(o->block_size, *m);
        dopt.conversation_template = o->tmpl;
        dopt.train_on_prompt = o->train_on_prompt;
        dopt.eos_id = eos_id_of(*tok, *m);
        dataset d = dataset_load(o->data, *tok, dopt);
        if (o->group_texts) dataset_group_texts(&d, dopt.block_size);
        double sum = 0;
        int64_t tokens = 0;
        std::vector<size_t> order = epoch_order(d.samples.size(), 0, 0, false);
        for (size_t i = 0; i < order.size(); i += o->batch_size) {
            std::vector<size_t> idx(order.begin() + i, order.begin() + std::min(order.size(), i + o->batch_size));
            batch b = make_batch(d, idx, tokenizer_pad_id(*tok));
            llama_acts a;
            llama_acts_init(&a, *m, b.B, b.T);
            int64_t n = 0;
            sum += llama_forward_backward(*m, &a, nullptr, b.ids.data(), b.labels.data(), 0.0f, &n);
            tokens += n;
        }
        double loss = sum / (double)tokens;
        nlohmann::json j = {{"loss", loss}, {"perplexity", std::exp(loss)}, {"tokens", tokens},
                            {"samples", (int64_t)d.samples.size()}};
        std::printf("%s\n", j.dump().c_str());
    };
}

}  // namespace lisa
