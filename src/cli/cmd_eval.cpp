// lisa eval --model_name_or_path DIR --dataset_path DIR [--block_size N]
//           [--per_device_eval_batch_size N] [--lora_model_path DIR] [--conversation_template T]
//           [--objective dpo|orpo [--beta B] [--loss_type T] [--ref_model_path DIR]]
// Prints {"loss", "perplexity", "tokens", "samples"}: mean cross-entropy over all label tokens.
// On preference pairs: TRL's metrics ("rewards/…", "logps/…") and the objective's loss with
// --objective; without one, how often and by how much the chosen reply is the likelier.
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/error.h"
#include "data/dataset.h"
#include "train/evaluate.h"
#include "train/preference.h"
#include "train/trainer.h"

namespace lisa {

namespace {

struct opts {
    std::string model, data, lora, tmpl, ref_model, objective = "sft", loss_type = "sigmoid";
    pref_options pref;
    int64_t     block_size = 0, batch_size = train_options{}.per_device_eval_batch_size;  // train's default
    bool        group_texts = false, train_on_prompt = false, packing = false;
    bool        padding_free = train_options{}.padding_free;
};

void print_preference(const opts& o, const dataset& d, const std::vector<double>& logps, const std::vector<double>& ref);

// lisa eval on preference pairs: each reply's Σ log p under the model (and, for DPO, the
// reference's, computed first so only one model is in memory at a time).
void eval_preference(const opts& o) {
    cli_progress bar("lisa eval");
    auto tok = load_tokenizer_of(o.model);
    const batch_layout layout = o.padding_free ? batch_layout::padding_free : batch_layout::padded;
    const bool dpo = o.pref.objective == pref_objective::dpo;
    if (dpo && o.ref_model.empty() && o.lora.empty())
        fail("lisa eval --objective dpo: needs the reference model: --ref_model_path DIR (the model before preference "
             "tuning), or --lora_model_path (then the base is the reference)");
    auto score = [&](const std::string& model, const std::string& lora, const char* what, dataset* d,
                     std::vector<double>* logps) {
        bar.show("loading " + model);
        auto m = load_model_with_lora(model, lora);
        if (d->samples.empty()) {
            bar.show("tokenizing " + o.data);
            cli_data_flags f{o.data, o.tmpl, o.block_size, o.group_texts, o.train_on_prompt, o.packing};
            dataset_options dopt;
            model_chat_template chat_template;
            *d = cli_load_dataset(f, o.model, *tok, m->cfg, &dopt, &chat_template);
            if (d->type != dataset_type::preference)
                fail(strf("%s: holds %s records; --objective %s evaluates preference pairs (\"chosen\" / "
                          "\"rejected\")", o.data.c_str(), dataset_type_name(d->type), o.objective.c_str()));
            if (o.group_texts || o.packing)
                fail("lisa eval: --group_texts / --packing: not on preference pairs (each reply is scored whole)");
            if (d->n_dropped > 0)
                std::fprintf(stderr, "lisa: warning: %lld pairs dropped (no room for a reply at --block_size %lld)\n",
                             (long long)d->n_dropped, (long long)dopt.block_size);
        }
        evaluate_sample_logps(*m, *d, o.batch_size * 2, resolve_pad_id(*tok, resolve_eos_id(*tok, m->cfg)), logps,
                              nullptr, [&](int64_t done, int64_t total) {
                                  bar.show(strf("%s: batch %lld of %lld (%zu pairs)", what, (long long)done,
                                                (long long)total, d->samples.size() / 2));
                              }, layout);
    };
    dataset d;
    std::vector<double> logps, ref;
    if (dpo) score(o.ref_model.empty() ? o.model : o.ref_model, "", "reference", &d, &ref);
    score(o.model, o.lora, "model", &d, &logps);
    bar.done();
    print_preference(o, d, logps, ref);
}

// The metrics of pairs scored by logps (and ref, DPO), one JSON line on stdout.
void print_preference(const opts& o, const dataset& d, const std::vector<double>& logps, const std::vector<double>& ref) {
    nlohmann::ordered_json j;
    if (o.pref.objective == pref_objective::none) {
        double v[4];
        evaluate_logp_margins(d, logps, v);
        j = {{"logps/chosen", v[0]}, {"logps/rejected", v[1]}, {"logps/accuracies", v[2]}, {"logps/margins", v[3]}};
    } else {
        const pref_result r = evaluate_preference(o.pref, d, logps, ref);
        j = {{"loss", r.loss},
             {"rewards/chosen", r.rewards_chosen},
             {"rewards/rejected", r.rewards_rejected},
             {"rewards/accuracies", r.rewards_accuracy},
             {"rewards/margins", r.rewards_margin},
             {"logps/chosen", r.logps_chosen},
             {"logps/rejected", r.logps_rejected}};
        if (o.pref.objective == pref_objective::orpo)
            j.update({{"nll_loss", r.nll_loss}, {"log_odds_ratio", r.log_odds_ratio}, {"log_odds_chosen", r.log_odds_chosen}});
    }
    j.update({{"pairs", (int64_t)d.samples.size() / 2}, {"records", d.n_instances}, {"truncated", d.n_truncated},
              {"dropped", d.n_dropped}});
    std::printf("%s\n", j.dump().c_str());
}

}  // namespace

command_fn cmd_eval_register(CLI::App& app) {
    auto o = std::make_shared<opts>();
    app.option_defaults()->always_capture_default();
    app.add_option("--model_name_or_path", o->model, "Hugging Face model folder")->required();
    app.add_option("--dataset_path", o->data, "folder of *.json / *.jsonl datasets")->required();
    app.add_option("--block_size", o->block_size, "truncate sequences to N tokens (0: min(1024, model context))");
    app.add_option("--per_device_eval_batch_size", o->batch_size, "sequences per forward pass")
        ->check(CLI::PositiveNumber);
    app.add_option("--lora_model_path", o->lora, "PEFT adapter folder to apply");
    app.add_option("--conversation_template", o->tmpl, cli_template_help());
    cli_add_bool(app, "--group_texts", &o->group_texts, "concatenate samples and cut into blocks of --block_size");
    cli_add_bool(app, "--packing,--sample_packing", &o->packing,
                 "fill rows of --block_size with whole samples, each attending only to itself");
    cli_add_bool(app, "--padding_free", &o->padding_free,
                 "a batch's samples end to end, attention kept inside each (default true; false: padded rows)");
    cli_add_bool(app, "--train_on_prompt", &o->train_on_prompt, "conversation: count prompt turns in the loss too");
    app.add_option("--objective", o->objective,
                   "on preference pairs: dpo | orpo, the objective's loss and TRL's metrics (default: the chosen "
                   "reply's log-likelihood margin only)");
    app.add_option("--loss_type", o->loss_type, "DPO's loss: sigmoid | ipo | hinge");
    app.add_option("--beta", o->pref.beta, "DPO's temperature; ORPO's weight of the odds-ratio term");
    app.add_option("--label_smoothing", o->pref.label_smoothing, "DPO sigmoid: conservative DPO's flipped share");
    app.add_option("--ref_model_path", o->ref_model,
                   "DPO's reference model (the model before preference tuning); with --lora_model_path the base "
                   "is the reference when this is not given");
    return [o] {
        o->pref.objective = pref_objective_parse(o->objective);
        o->pref.loss_type = pref_loss_type_parse(o->loss_type);
        if (o->pref.objective != pref_objective::none) return eval_preference(*o);
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
        if (d.type == dataset_type::preference) {  // no objective: the chosen reply's margin
            if (o->group_texts || o->packing)
                fail("lisa eval: --group_texts / --packing: not on preference pairs (each reply is scored whole)");
            std::vector<double> logps;
            evaluate_sample_logps(*m, d, o->batch_size * 2, resolve_pad_id(*tok, dopt.eos_id), &logps, nullptr,
                                  [&](int64_t done, int64_t total) {
                                      bar.show(strf("batch %lld of %lld (%zu pairs)", (long long)done,
                                                    (long long)total, d.samples.size() / 2));
                                  },
                                  o->padding_free ? batch_layout::padding_free : batch_layout::padded);
            bar.done();
            return print_preference(*o, d, logps, {});
        }
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
