// lisa inspect-data --model_name_or_path DIR --dataset_path DIR [--conversation_template T]
//                   [--block_size N] [--limit N] [--json] [--train_on_prompt] [--group_texts | --packing]
//                   [--per_device_train_batch_size N] [--seed N]
// Shows exactly what `lisa train` would batch from a dataset (before its shuffle): each sample's
// text with the trained tokens marked, and a summary with the padding the run's batches would
// have; or, with --json, one line per sample {"input_ids": [...], "labels": [...]} with -100
// where nothing is learned (Hugging Face's convention: labels line up with input_ids, the model
// shifts them), and "position_ids" for a packed row (positions restart at each sample).
#include <unistd.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/error.h"
#include "data/dataset.h"
#include "io/fs.h"
#include "model/config.h"
#include "model/gguf_model.h"
#include "train/evaluate.h"
#include "train/train_options.h"

namespace lisa {

command_fn cmd_inspect_data_register(CLI::App& app) {
    struct opts {
        std::string model, data, tmpl;
        int64_t     block_size = 0, limit = 5;
        bool        json = false, train_on_prompt = false, group_texts = false, packing = false;
        int64_t     batch = train_options{}.per_device_train_batch_size;
        uint64_t    seed = train_options{}.seed;
    };
    auto o = std::make_shared<opts>();
    app.add_option("--model_name_or_path", o->model, "model folder (its tokenizer, chat template and context length)")
        ->required();
    app.add_option("--dataset_path", o->data, "folder of datasets (*.json / *.jsonl)")->required();
    app.add_option("--conversation_template", o->tmpl,
                   cli_template_help());
    app.add_option("--block_size", o->block_size, "truncate sequences to N tokens (0: min(1024, model context))");
    app.add_option("--limit", o->limit, "samples to show (default 5; 0 = all); the summary covers all")
        ->check(CLI::NonNegativeNumber);
    app.add_flag("--json", o->json, "one JSON line per sample: input_ids and labels (-100 = not learned)");
    cli_add_bool(app, "--train_on_prompt", &o->train_on_prompt, "conversation: count prompt turns in the loss too");
    cli_add_bool(app, "--group_texts", &o->group_texts, "concatenate samples into blocks of --block_size, as training would");
    cli_add_bool(app, "--packing,--sample_packing", &o->packing, "rows of whole samples, as training would");
    app.add_option("--per_device_train_batch_size", o->batch, "the batch whose padding the summary reports")
        ->check(CLI::PositiveNumber);
    app.add_option("--seed", o->seed, "the shuffle whose batches the summary reports");
    return [o] {
        std::string cfg_text;
        if (!model_text_file(o->model, "config.json", &cfg_text))
            fail(strf("%s: missing; expected a Hugging Face model folder or a GGUF file",
                      model_file_label(o->model, "config.json").c_str()));
        model_config cfg = config_parse(cfg_text, model_file_label(o->model, "config.json"));
        auto tok = load_tokenizer_of(o->model);
        cli_data_flags f{o->data, o->tmpl, o->block_size, o->group_texts, o->train_on_prompt, o->packing};
        dataset_options dopt;
        model_chat_template chat_template;
        dataset d = cli_load_dataset(f, o->model, *tok, cfg, &dopt, &chat_template);
        size_t shown = o->limit == 0 ? d.samples.size() : std::min<size_t>(d.samples.size(), (size_t)o->limit);
        if (o->json) {
            for (size_t i = 0; i < shown; i++) {
                nlohmann::json j = {{"input_ids", d.samples[i].ids}, {"labels", d.samples[i].labels}};
                if (!d.samples[i].pos.empty()) j["position_ids"] = d.samples[i].pos;
                std::printf("%s\n", j.dump().c_str());
            }
            return;
        }
        const bool colour = isatty(fileno(stdout)) && !getenv("NO_COLOR");
        const char* on = colour ? "\x1b[1;32m" : "[[";
        const char* off = colour ? "\x1b[0m" : "]]";
        for (size_t i = 0; i < shown; i++) {
            const sample& s = d.samples[i];
            int64_t parts = 0;
            for (int32_t p : s.pos) parts += p == 0;
            std::printf("--- sample %zu (%s): %zu tokens, %lld trained%s\n", i, d.sources[i].c_str(), s.ids.size(),
                        (long long)sample_label_tokens(s),
                        parts > 0 ? strf(", %lld samples apart", (long long)parts).c_str() : "");
            // runs of tokens with the same label state, decoded together
            size_t a = 0;
            while (a < s.ids.size()) {
                bool trained = s.labels[a] != -100;
                size_t b = a;
                while (b < s.ids.size() && (s.labels[b] != -100) == trained) b++;
                std::string text = tokenizer_decode(*tok, std::vector<int32_t>(s.ids.begin() + a, s.ids.begin() + b), false);
                if (trained) std::printf("%s%s%s", on, text.c_str(), off);
                else std::printf("%s", text.c_str());
                a = b;
            }
            std::printf("\n");
        }
        int64_t tokens = 0, trained = 0, longest = 0;
        for (const sample& s : d.samples) {
            tokens += (int64_t)s.ids.size();
            trained += sample_label_tokens(s);
            longest = std::max<int64_t>(longest, (int64_t)s.ids.size());
        }
        // (preference pairs in plain text have no template either; chat pairs use the one chosen)
        const bool chat = d.type == dataset_type::conversation ||
                          (d.type == dataset_type::preference && (dopt.model_template || !dopt.conversation_template.empty()));
        std::string tmpl = !chat ? "none (not conversations)"
                         : dopt.model_template ? dopt.model_template->where
                                               : "named: " + dopt.conversation_template;
        if (d.type == dataset_type::preference)
            std::printf("--- preference: %zu pairs (samples 2i chosen, 2i+1 rejected; only replies are scored)\n",
                        d.samples.size() / 2);
        std::printf("--- summary\n");
        std::printf("files: %zu   records: %lld   type: %s   chat template: %s\n", d.files.size(),
                    (long long)d.n_instances, dataset_type_name(d.type), tmpl.c_str());
        if (dopt.model_template && !dopt.model_template->end_of_turn.empty())
            std::printf("end of turn (trained after each reply): %s\n", nlohmann::json(dopt.model_template->end_of_turn).dump().c_str());
        std::printf("samples: %zu   tokens: %lld (longest %lld, block_size %lld)   trained tokens: %lld (%.1f%%)\n",
                    d.samples.size(), (long long)tokens, (long long)longest, (long long)dopt.block_size,
                    (long long)trained, tokens ? 100.0 * (double)trained / (double)tokens : 0.0);
        std::printf("truncated: %lld   dropped (nothing left to learn): %lld   tokenized piece by piece: %lld\n",
                    (long long)d.n_truncated, (long long)d.n_dropped, (long long)d.n_piecewise);
        // the padding of the first epoch's padded batches: what padding-free batches do not compute
        std::vector<size_t> order = epoch_order(d.samples.size(), o->seed, 0, true);
        const double shuffled = padding_fraction(d, order, (size_t)o->batch);
        order_group_by_length(&order, d, (size_t)(50 * o->batch));
        const double grouped = padding_fraction(d, order, (size_t)o->batch);
        std::printf("padding: padded batches of %lld (seed %llu, first epoch) would be %.1f%% padding, %.1f%% with "
                    "--group_by_length; padding-free batches (the default) compute none of it\n",
                    (long long)o->batch, (unsigned long long)o->seed, 100.0 * shuffled, 100.0 * grouped);
        if (!colour) std::printf("(trained tokens are shown [[like this]])\n");
    };
}

}  // namespace lisa
