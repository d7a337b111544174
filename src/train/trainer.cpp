// The training loop. What trains is the policy's business (policy.h), the update the optimizer's
// (optim.h), checkpoints checkpoint.h's: this file loads, plans, loops and logs.
#include "train/trainer.h"

#include <algorithm>
#include <map>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "comm/comm.h"
#include "core/error.h"
#include "core/threads.h"
#include "data/dataset.h"
#include "io/fs.h"
#include "io/ggml_quants.h"
#include "io/output_dir.h"
#include "model/decoder.h"
#include "tokenizer/tokenizer.h"
#include "train/checkpoint.h"
#include "train/evaluate.h"
#include "train/grad_sync.h"
#include "kernels/vulkan/vulkan.h"
#include "train/layer_sampling.h"
#include "train/policy.h"

namespace lisa {

using json = nlohmann::json;

static std::atomic<bool> g_stop{false};
void train_request_stop() { g_stop = true; }

static double proc_status_kib(const char* key) {
    std::ifstream f("/proc/self/status");
    std::string line;
    size_t k = std::strlen(key);
    while (std::getline(f, line))
        if (line.compare(0, k, key) == 0) return std::atof(line.c_str() + k);
    return 0;
}
double current_rss_mib() { return proc_status_kib("VmRSS:") / 1024.0; }
double peak_rss_mib() { return proc_status_kib("VmHWM:") / 1024.0; }


namespace {

// The model as the policies see it: groups over the size table, gradient pointers bound into
// the groups' state blocks, bf16 masters materialised for what trains.
class model_env final : public policy_env {
  public:
    model_env(decoder_model* m, decoder_grads* gr, decoder_embed_rows* rows, int64_t rows_capacity,
              const train_callbacks& cb, int shard, int shards, const dataset* data, int32_t pad_id)
        : m_(m), gr_(gr), rows_(rows), rows_capacity_(rows_capacity), cb_(cb), shard_(shard), shards_(shards),
          data_(data), pad_id_(pad_id) {
        const int L = (int)m->cfg.num_layers;
        layer_first_.assign(L + 1, 0);
        for (size_t i = 0; i < m->tensors.size(); i++) {
            const auto& t = m->tensors[i];
            if (t.layer >= 0 && (i == 0 || m->tensors[i - 1].layer != t.layer)) layer_first_[t.layer] = i;
            if (t.field == kFieldEmbed) embed_ = i;
            if (t.field == kFieldNorm) norm_ = layer_first_[L] = i;
            if (t.field == kFieldHead) head_ = i;
        }
        gr->g = decoder_weights{};
        gr->g.layers.assign(L, decoder_layer_weights{});
        gr->lora.assign(L, decoder_lora_layer{});
    }
    int  num_layers() const override { return (int)m_->cfg.num_layers; }
    bool tied() const override { return m_->cfg.tie_word_embeddings; }
    param_group embed_group(bool sparse) override {
        param_group g = make("embed", embed_, embed_, sparse);
        g.role = group_role::embed;
        if (sparse) {  // gradient rows for the step's tokens only
            rows_->init(*m_->ctx.be, m_->cfg.vocab_size, m_->cfg.hidden_size, rows_capacity_);
            gr_->embed_rows = rows_;
        } else {
            bind(g, embed_, embed_);
        }
        return g;
    }
    param_group norm_group() override { return bound("norm", norm_, norm_, group_role::norm); }
    param_group head_group() override { return bound("head", head_, head_, group_role::head); }
    param_group layer_group(int l) override {
        param_group g = bound(strf("layer.%d", l), layer_first_[l], layer_first_[l + 1] - 1, group_role::layer);
        g.layer = l;
        return g;
    }
    void rebind_layer(param_group* g, int l) override {
        decoder_materialize(m_, layer_first_[l], layer_first_[l + 1] - 1);
        g->name = strf("layer.%d", l);
        g->layer = l;
        g->param = m_->params.data() + m_->tensors[layer_first_[l]].offset;
        bind(*g, layer_first_[l], layer_first_[l + 1] - 1);
    }
    void unbind_layer(int l, bool release) override {
        gr_->g.layers[l] = decoder_layer_weights{};
        if (release) decoder_dematerialize(m_, layer_first_[l], layer_first_[l + 1] - 1);
    }
    decoder_model* model() override { return m_; }
    void         shard_info(int* shard, int* shards) const override {
        *shard = shard_;
        *shards = shards_;
    }
    decoder_grads* grads() override { return gr_; }
    void         info(const std::string& s) override {
        if (cb_.on_info && comm_world().is_root()) cb_.on_info(s);
    }
    layer_outliers measure_layer_outliers(double threshold) override {
        // a fixed sample count and batch: the same numbers whatever the run's batch size or ranks
        const int64_t kSamples = 128, kBatch = 8;
        layer_outliers lo = layer_outliers_measure(*m_, *data_, pad_id_, kSamples, kBatch, threshold);
        comm_world().broadcast(lo.prob.data(), lo.prob.size() * sizeof(double), 0);  // every rank draws as rank 0
        return lo;
    }

  private:
    param_group make(const std::string& name, size_t first, size_t last, bool sparse = false) {
        decoder_materialize(m_, first, last);  // bf16 models: fp32 masters of what trains
        const auto& t0 = m_->tensors[first];
        std::vector<param_group::span> spans;
        for (size_t i = first; i <= last; i++) {
            const auto& t = m_->tensors[i];
            spans.push_back({t.offset - t0.offset, t.numel, t.kind == tensor_kind::matrix});
        }
        // sharded moments: the sparse embedding's in whole rows, the rest in any split
        return param_group_make(*m_->ctx.be, name, m_->params.data() + t0.offset, std::move(spans), sparse, shard_, shards_,
                                sparse ? (size_t)m_->cfg.hidden_size : 1);
    }
    param_group bound(const std::string& name, size_t first, size_t last, group_role role) {
        param_group g = make(name, first, last);
        g.role = role;
        bind(g, first, last);
        return g;
    }
    // points the gradients of tensors [first, last] into a group's gradient block
    void bind(param_group& g, size_t first, size_t last) {
        const size_t base = m_->tensors[first].offset;
        for (size_t i = first; i <= last; i++)
            *decoder_weight_slot(&gr_->g, *m_, i) = g.grad() + (m_->tensors[i].offset - base);
        if (tied()) gr_->g.lm_head = gr_->g.embed;
    }

    decoder_model*             m_;
    decoder_grads*             gr_;
    decoder_embed_rows*        rows_;
    int64_t                  rows_capacity_;
    const train_callbacks&   cb_;
    std::vector<size_t>      layer_first_;  // index of each layer's first tensor; [L] = final norm
    size_t                   embed_ = 0, norm_ = 0, head_ = 0;
    int                      shard_ = 0, shards_ = 1;  // --zero_stage 1: this rank's share of moments
    const dataset*           data_ = nullptr;  // the training samples (calibration for measurements)
    int32_t                  pad_id_ = 0;
};

// TRL's preference metrics, in the order pref_micro_batch sums them (ORPO's last three)
constexpr int kPrefMetrics = 9;
constexpr const char* kPrefMetricNames[kPrefMetrics] = {
    "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected",
    "nll_loss", "log_odds_ratio", "log_odds_chosen"};

struct trainer {
    train_options                 o;  // a copy: fractions of steps are resolved into it
    const train_callbacks&        cb;
    comm*                         world = &comm_world();  // ranks (one process: the identity)
    grad_sync                     sync;        // ranks: which sums start when (grad_sync.h)
    std::unique_ptr<decoder_model>  m;
    std::unique_ptr<tokenizer>    tok;
    model_chat_template           chat_template;  // the model's own, when conversations use it
    dataset                       data, eval_data;
    bool                          has_eval = false;
    dtype                         out_dtype = dtype::f32;
    int64_t                       block_size = 0;
    decoder_grads                   gr;
    decoder_embed_rows              embed_rows;  // sparse gradient of an untied embedding
    std::unique_ptr<model_env>    env;
    std::unique_ptr<train_policy> policy;
    decoder_acts                    acts, eval_acts;
    std::vector<batch>            mbs;         // the micro-batches of a step (reused)
    std::vector<size_t>           mb_first, mb_count;  // each micro-batch's samples: order[first .. first+count)
    std::vector<size_t>           order;       // the epoch's sample order (reused)
    // preference tuning (--objective dpo|orpo): samples come in pairs ([2i] chosen, [2i+1]
    // rejected) and are ordered and batched as pairs; the reference model's Σ log p of every
    // sample is computed once before training (DPO) and kept in OUTPUT/reference_logps.json
    bool                          pref = false;
    std::vector<size_t>           pair_order;  // the epoch's pair order (reused)
    std::vector<double>           ref_logp;    // [sample] the reference model's Σ log p (DPO)
    std::vector<double>           eval_ref_logp, eval_logp;  // the same of the evaluation samples; the model's
    std::vector<decoder_span>     spans;       // a micro-batch's samples as spans of rows (reused)
    std::vector<double>           span_logp, span_weight;
    std::vector<pref_pair>        pairs;
    pref_result                   pres;
    int64_t                       total_steps = 0, steps_per_epoch = 0, warmup = 0, step = 0;
    int32_t                       pad_id = 0;
    std::string                   last_checkpoint;
    std::FILE*                    log = nullptr;
    thread_choice                 threads;      // the compute threads at the start, and who chose them
    thread_governor               governor;     // the count step by step, unless the user fixed it
    std::string                   thread_note;  // why the governor changed the count (capacity reserved)

    trainer(const train_options& opt, const train_callbacks& c) : o(opt), cb(c) {}
    ~trainer() {
        if (log) std::fclose(log);
    }

    void info(const std::string& s) {
        if (cb.on_info && world->is_root()) cb.on_info(s);
    }
    void write_log(const json& j) {
        if (!world->is_root()) return;
        std::string line = j.dump();
        if (log) {
            std::fprintf(log, "%s\n", line.c_str());
            std::fflush(log);
        }
        if (cb.on_log) cb.on_log(line);
    }

    // ---------------------------------------------------------------- setup
    void validate() {
        if (o.output_model_path.empty()) fail("--output_model_path is required");
        if (o.per_device_train_batch_size < 1) fail("--per_device_train_batch_size must be at least 1");
        if (o.per_device_eval_batch_size < 1) fail("--per_device_eval_batch_size must be at least 1");
        for (const auto& [flag, v] : {std::pair<const char*, const std::string*>{"--save_strategy", &o.save_strategy},
                                      {"--eval_strategy", &o.eval_strategy}})
            if (*v != "steps" && *v != "epoch" && *v != "no" && !(v->empty() && flag[2] == 'e'))
                fail(strf("%s %s: expected steps, epoch or no", flag, v->c_str()));
        if (o.load_best_model_at_end) {
            if (o.metric_for_best_model != "eval_loss" && o.metric_for_best_model != "loss")
                fail(strf("--metric_for_best_model %s: only eval_loss is computed", o.metric_for_best_model.c_str()));
            if (o.eval_dataset_path.empty() && o.validation_split_percentage <= 0)
                fail("--load_best_model_at_end needs eval data: --eval_dataset_path or --validation_split_percentage");
            const std::string es = o.eval_strategy.empty() ? "steps" : o.eval_strategy;
            if (es != o.save_strategy || es == "no")
                fail(strf("--load_best_model_at_end: --save_strategy (%s) and --eval_strategy (%s) must be the same, "
                          "steps or epoch, so each checkpoint has an eval_loss", o.save_strategy.c_str(), es.c_str()));
            const bool eval_set = o.eval_steps > 0 || o.eval_steps_fraction > 0, save_set = o.save_steps > 0 || o.save_steps_fraction > 0;
            if (es == "steps" && (!eval_set || !save_set || (o.eval_steps > 0 && o.save_steps > 0 && o.save_steps % o.eval_steps != 0)))
                fail(strf("--load_best_model_at_end: --save_steps (%lld) must be a multiple of --eval_steps (%lld), "
                          "both set", (long long)o.save_steps, (long long)o.eval_steps));
        }
        if (o.zero_stage != 0 && o.zero_stage != 1)
            fail(strf("--zero_stage %d: expected 0 (every rank keeps all optimizer state) or 1 (AdamW state sharded "
                      "across ranks)", o.zero_stage));
        if (o.gradient_accumulation_steps < 1) fail("--gradient_accumulation_steps must be at least 1");
        if (!(o.adam.lr >= 0)) fail("--learning_rate must be >= 0");
        if (o.max_steps <= 0 && !(o.num_train_epochs > 0)) fail("--num_train_epochs must be > 0 (or set --max_steps)");
        if (o.warmup_ratio < 0 || o.warmup_ratio > 1) fail("--warmup_ratio must be in [0, 1]");
        policy_validate(o);  // the method's own options (policies.cpp)
    }

    void load(const std::string& ckpt) {
        m = decoder_model_load(o.model_name_or_path, -1, o.device);
        if (!o.base_quant.empty()) {
            const ggml_type bq = o.base_quant == "q8_0" ? ggml_type::q8_0 : o.base_quant == "q4_0" ? ggml_type::q4_0
                                 : o.base_quant == "q4_K" ? ggml_type::q4_K : ggml_type::f32;
            if (bq == ggml_type::f32) fail("--base_quant " + o.base_quant + ": expected q8_0, q4_0 or q4_K");
            if (o.method == train_method::full) fail("--base_quant: full fine-tuning trains every matrix; nothing stays frozen");
            // the embedding and head too where they stay frozen (LoRA; LISA told not to train them)
            const bool lisa = o.method == train_method::lisa;
            decoder_model_quantize_base(m.get(), (uint32_t)bq, !lisa || !o.lisa_train_embeddings,
                                        !lisa || !o.lisa_train_head);
        }
        threads = threads_choose(o.threads);
        m->ctx.threads = m->ctx.max_threads = threads.n;
        thread_governor_init(&governor, threads.n);
        thread_note.reserve(256);  // the step loop allocates nothing
        out_dtype = o.torch_dtype.empty() ? m->stored_dtype : parse_dtype_option(o.torch_dtype);
        if (!ckpt.empty()) {  // weights as of the checkpoint (fp32), config and tokenizer from the base
            auto c = decoder_model_load(ckpt, m->half ? 1 : 0, m->ctx.be);  // the base's mode, masters exact
            if (c->params.size() != m->params.size())
                fail(strf("%s: checkpoint does not match --model_name_or_path %s", ckpt.c_str(),
                          o.model_name_or_path.c_str()));
            decoder_model_take_weights(m.get(), c.get());
        }
        std::string bs_warning;
        block_size = resolve_block_size(o.block_size, m->cfg, &bs_warning);
        if (!bs_warning.empty()) info("lisa: warning: " + bs_warning);
        if (o.train_data) {  // pre-tokenized samples (benchmarks)
            data = *o.train_data;
            pad_id = 0;
            return;
        }
        tok = tokenizer_load(o.model_name_or_path);
        tokenizer_check_fits(*tok, m->cfg.vocab_size, fs_join(o.model_name_or_path, "tokenizer.json"),
                             fs_join(o.model_name_or_path, "config.json"), [&](const std::string& s) { info("lisa: warning: " + s); });
        dataset_options dopt;
        dopt.block_size = block_size;
        dopt.truncate = !o.group_texts && !o.packing;  // packing keeps every token
        dataset_choose_template(o.conversation_template, o.model_name_or_path, *tok, &chat_template, &dopt);
        dopt.train_on_prompt = o.train_on_prompt;
        dopt.eos_id = resolve_eos_id(*tok, m->cfg);
        pad_id = resolve_pad_id(*tok, dopt.eos_id);
        data = dataset_load(o.dataset_path, *tok, dopt);
        for (const std::string& n : data.notes) info("lisa: note: " + n);
        pref = o.pref.objective != pref_objective::none;
        if (pref && data.type != dataset_type::preference)
            fail(strf("--objective %s: %s holds %s records; preference tuning needs records with \"chosen\" and "
                      "\"rejected\" (docs/datasets.md)", pref_objective_name(o.pref.objective), o.dataset_path.c_str(),
                      dataset_type_name(data.type)));
        if (!pref && data.type == dataset_type::preference)
            fail(strf("%s: preference records (\"chosen\" / \"rejected\") train with --objective dpo or orpo",
                      o.dataset_path.c_str()));
        if (pref) {
            const char* bad = o.group_texts ? "--group_texts" : o.packing ? "--packing" : nullptr;
            if (bad)
                fail(strf("%s: not with --objective %s (a pair's replies are scored as whole sequences, never cut "
                          "or packed together)", bad, pref_objective_name(o.pref.objective)));
            if (!(o.pref.beta > 0)) fail(strf("--beta %g: must be > 0", o.pref.beta));
            if (o.pref.label_smoothing < 0 || o.pref.label_smoothing >= 0.5)
                fail(strf("--label_smoothing %g: expected a value in [0, 0.5)", o.pref.label_smoothing));
            info(strf("data: %zu preference pairs; objective %s%s, beta %g", data.samples.size() / 2,
                      pref_objective_name(o.pref.objective),
                      o.pref.objective == pref_objective::dpo ? strf(" (%s)", pref_loss_type_name(o.pref.loss_type)).c_str() : "",
                      o.pref.beta));
        }
        if (data.type == dataset_type::conversation)
            info(strf("data: conversations rendered with %s", dopt.model_template ? dopt.model_template->where.c_str()
                                                                                 : ("the named template " + dopt.conversation_template).c_str()));
        if (data.n_piecewise > 0)
            info(strf("data: %lld conversations tokenized piece by piece (the tokenizer's normalizer rewrote their text)",
                      (long long)data.n_piecewise));
        if (o.group_texts) dataset_group_texts(&data, dopt.block_size);
        if (o.packing) dataset_pack(&data, dopt.block_size);
        if (data.n_truncated > 0 || data.n_dropped > 0)  // never silently: what the block size cost
            info(strf("data: %lld of %lld samples truncated to %lld tokens, %lld dropped (no label token left)",
                      (long long)data.n_truncated, (long long)data.n_instances, (long long)dopt.block_size,
                      (long long)data.n_dropped));
        if (o.eval_dataset_path.empty() && o.validation_split_percentage > 0) {
            // a seeded share of the samples, held out of training for eval_loss
            if (o.validation_split_percentage >= 100)
                fail(strf("--validation_split_percentage %g: must be below 100", o.validation_split_percentage));
            // (preference: whole pairs)
            const size_t u = (size_t)unit(), n_units = data.samples.size() / u;
            std::vector<size_t> order = epoch_order(n_units, o.seed ^ 0x5eed5a1177ull, 0, true);
            size_t n_eval = std::max<size_t>(1, (size_t)(n_units * o.validation_split_percentage / 100.0));
            if (n_eval >= n_units)
                fail(strf("--validation_split_percentage %g: would leave no training %s (%zu in all)",
                          o.validation_split_percentage, pref ? "pair" : "sample", n_units));
            std::vector<bool> held(n_units, false);
            for (size_t i = 0; i < n_eval; i++) held[order[i]] = true;
            dataset train_part;
            train_part.type = eval_data.type = data.type;
            for (size_t i = 0; i < data.samples.size(); i++)
                (held[i / u] ? eval_data : train_part).samples.push_back(std::move(data.samples[i]));
            data.samples = std::move(train_part.samples);
            data.sources.clear();
            has_eval = true;
            info(strf("data: %zu %s held out for eval_loss (--validation_split_percentage %g), %zu train",
                      eval_data.samples.size() / u, pref ? "pairs" : "samples", o.validation_split_percentage,
                      data.samples.size() / u));
        }
        if (!o.eval_dataset_path.empty()) {
            eval_data = dataset_load(o.eval_dataset_path, *tok, dopt);
            for (const std::string& n : eval_data.notes) info("lisa: note: " + n);
            if (o.group_texts) dataset_group_texts(&eval_data, dopt.block_size);
            if (o.packing) dataset_pack(&eval_data, dopt.block_size);
            if (pref != (eval_data.type == dataset_type::preference))
                fail(pref ? strf("--eval_dataset_path %s: holds %s records; with --objective %s it needs preference "
                                 "pairs (\"chosen\" / \"rejected\")", o.eval_dataset_path.c_str(),
                                 dataset_type_name(eval_data.type), pref_objective_name(o.pref.objective))
                          : strf("--eval_dataset_path %s: preference pairs evaluate with --objective dpo or orpo (or "
                                 "`lisa eval` on the trained model)", o.eval_dataset_path.c_str()));
            has_eval = true;
        }
        if (!has_eval && (o.eval_steps > 0 || o.eval_steps_fraction > 0 || o.eval_strategy == "steps" || o.eval_strategy == "epoch"))
            info(strf("lisa: warning: %s asks for evaluation, but there is no evaluation data (--eval_dataset_path or "
                      "--validation_split_percentage); no eval_loss will be logged",
                      o.eval_steps > 0 || o.eval_steps_fraction > 0 ? "--eval_steps"
                                       : ("--eval_strategy " + o.eval_strategy).c_str()));
    }

    // One optimizer step takes gradient_accumulation_steps micro-batches of the global batch
    // per_device_train_batch_size x world size (rank r gets its r-th slice of each).
    // Preference: the batch size counts pairs, two rows each.
    int64_t unit() const { return pref ? 2 : 1; }
    int64_t device_rows() const { return o.per_device_train_batch_size * unit(); }
    int64_t global_batch() const { return device_rows() * (int64_t)world->size(); }
    // The epoch's order of samples (preference: pairs shuffled, each pair's two samples together)
    void order_epoch(int64_t epoch) {
        if (!pref) {
            epoch_order_into(&order, data.samples.size(), o.seed, epoch, o.shuffle);
            if (o.group_by_length) order_group_by_length(&order, data, mega_batch());
            return;
        }
        epoch_order_into(&pair_order, data.samples.size() / 2, o.seed, epoch, o.shuffle);
        if (o.group_by_length) {  // as order_group_by_length, a pair's length its longer reply's
            const size_t mega = std::max<size_t>(1, mega_batch() / 2);
            auto len = [&](size_t p) { return std::max(data.samples[2 * p].ids.size(), data.samples[2 * p + 1].ids.size()); };
            for (size_t i = 0; i < pair_order.size(); i += mega)
                std::sort(pair_order.begin() + i, pair_order.begin() + std::min(pair_order.size(), i + mega),
                          [&](size_t a, size_t b) { return len(a) != len(b) ? len(a) > len(b) : a < b; });
        }
        order.resize(2 * pair_order.size());
        for (size_t i = 0; i < pair_order.size(); i++) order[2 * i] = 2 * pair_order[i], order[2 * i + 1] = 2 * pair_order[i] + 1;
    }
    // --group_by_length's megabatch: 50 global batches, as Hugging Face's LengthGroupedSampler
    size_t mega_batch() const { return (size_t)(50 * global_batch()); }

    void set_steps() {
        int64_t n_batches = ((int64_t)data.samples.size() + global_batch() - 1) / global_batch();
        steps_per_epoch = std::max<int64_t>(1, n_batches / o.gradient_accumulation_steps);
        total_steps = o.max_steps > 0 ? o.max_steps : (int64_t)std::ceil(o.num_train_epochs * steps_per_epoch);
        warmup = o.warmup_steps > 0 ? o.warmup_steps : (int64_t)std::ceil(o.warmup_ratio * total_steps);
        for (auto [fraction, steps] : {std::pair{o.eval_steps_fraction, &o.eval_steps},
                                       std::pair{o.save_steps_fraction, &o.save_steps},
                                       std::pair{o.logging_steps_fraction, &o.logging_steps}})
            if (fraction > 0) *steps = std::max<int64_t>(1, (int64_t)std::ceil(fraction * (double)total_steps));
        if (o.load_best_model_at_end && o.save_strategy == "steps" && o.save_steps % std::max<int64_t>(1, o.eval_steps) != 0)
            fail(strf("--load_best_model_at_end: --save_steps (%lld) must be a multiple of --eval_steps (%lld) once "
                      "fractions are counted in steps", (long long)o.save_steps, (long long)o.eval_steps));
    }

    // Batches and the sparse-gradient rows, planned once for the largest batch (activations
    // too, once the policy has set the model up: LoRA adds its own). Padding-free: one row of at
    // most the micro-batch's longest samples together.
    int64_t plan_B = 0, plan_T = 0;
    batch_layout layout() const { return o.padding_free ? batch_layout::padding_free : batch_layout::padded; }
    int64_t plan() {
        int64_t max_T = 1;
        for (const sample& s : data.samples) max_T = std::max<int64_t>(max_T, (int64_t)s.ids.size());
        const int64_t B = std::min<int64_t>(device_rows(), std::max<size_t>(1, data.samples.size()));
        batch_plan(data, B, layout(), &plan_B, &plan_T);
        mbs.resize(o.gradient_accumulation_steps);
        mb_first.resize(o.gradient_accumulation_steps);
        mb_count.resize(o.gradient_accumulation_steps);
        for (batch& b : mbs) {
            b.ids.reserve(B * max_T);
            b.labels.reserve(B * max_T);
            b.pos.reserve(B * max_T);
        }
        order.reserve(data.samples.size());
        if (pref) {
            pair_order.reserve(data.samples.size() / 2);
            spans.reserve(B);
            span_logp.reserve(B);
            span_weight.reserve(B);
            pairs.reserve(B / 2 + 1);
            pres.dlogp_chosen.reserve(B / 2 + 1);
            pres.dlogp_rejected.reserve(B / 2 + 1);
        }
        // most distinct tokens one step can see (over every rank: the sparse rows are the union)
        return o.gradient_accumulation_steps * B * max_T * (int64_t)world->size();
    }

    // Every option of the run, written to training_args.json at the start so that `--config
    // training_args.json` repeats it from any folder: paths absolute, and values the run derives
    // (steps from epochs, warmup from its ratio, block size from the model, dtype from the input)
    // left null unless the user set them, so a flag given beside --config changes them as it
    // would have in the first run. What they came to is under "resolved" (not read by --config).
    json args_json(const std::string& ckpt) const {
        auto abs = [](const std::string& p) {
            std::error_code ec;
            if (p.empty() || !std::filesystem::exists(p, ec)) return p;
            const std::filesystem::path a = std::filesystem::absolute(p, ec);
            return ec ? p : a.lexically_normal().string();
        };
        auto user = [](auto v, bool set) { return set ? json(v) : json(nullptr); };
        return {{"method", train_method_name(o.method)},
                {"model_name_or_path", abs(o.model_name_or_path)},
                {"dataset_path", abs(o.dataset_path)},
                {"eval_dataset_path", abs(o.eval_dataset_path)},
                {"validation_split_percentage", o.validation_split_percentage},
                {"output_model_path", abs(o.output_model_path)},
                {"lisa_activated_layers", o.lisa_activated_layers},
                {"lisa_interval_steps", o.lisa_interval_steps},
                {"lisa_train_embeddings", o.lisa_train_embeddings},
                {"lisa_train_head", o.lisa_train_head},
                {"lisa_layer_sampling", o.lisa_layer_sampling},
                {"lisa_outlier_threshold", o.lisa_outlier_threshold},
                {"lora_r", o.lora_r},
                {"lora_alpha", o.lora_alpha},
                {"lora_dropout", o.lora_dropout},
                {"lora_target_modules", o.lora_target_modules},
                {"save_aggregated_lora", o.save_aggregated_lora},
                {"block_size", user(o.block_size, o.block_size > 0)},
                {"conversation_template", o.conversation_template.find(".jinja") != std::string::npos ? abs(o.conversation_template) : o.conversation_template},
                {"train_on_prompt", o.train_on_prompt},
                {"group_texts", o.group_texts},
                {"packing", o.packing},
                {"padding_free", o.padding_free},
                {"group_by_length", o.group_by_length},
                {"gradient_checkpointing", o.gradient_checkpointing},
                {"learning_rate", o.adam.lr},
                {"adam_beta1", o.adam.beta1},
                {"adam_beta2", o.adam.beta2},
                {"adam_epsilon", o.adam.eps},
                {"weight_decay", o.adam.weight_decay},
                {"max_grad_norm", o.max_grad_norm},
                {"lr_scheduler_type", lr_schedule_name(o.lr_scheduler_type)},
                {"warmup_steps", user(o.warmup_steps, o.warmup_steps > 0)},
                {"warmup_ratio", o.warmup_ratio},
                {"num_train_epochs", o.num_train_epochs},
                {"max_steps", user(o.max_steps, o.max_steps > 0)},
                {"per_device_train_batch_size", o.per_device_train_batch_size},
                {"world_size", world->size()},
                {"zero_stage", o.zero_stage},
                {"save_strategy", o.save_strategy},
                {"eval_strategy", o.eval_strategy},
                {"load_best_model_at_end", o.load_best_model_at_end},
                {"metric_for_best_model", o.metric_for_best_model},
                {"per_device_eval_batch_size", o.per_device_eval_batch_size},
                {"gradient_accumulation_steps", o.gradient_accumulation_steps},
                {"seed", o.seed},
                {"logging_steps", o.logging_steps_fraction > 0 ? json(o.logging_steps_fraction) : json(o.logging_steps)},
                {"save_steps", o.save_steps_fraction > 0 ? json(o.save_steps_fraction) : json(o.save_steps)},
                {"save_total_limit", o.save_total_limit},
                {"eval_steps", o.eval_steps_fraction > 0 ? json(o.eval_steps_fraction) : json(o.eval_steps)},
                {"torch_dtype", user(o.torch_dtype, !o.torch_dtype.empty())},
                {"base_quant", o.base_quant.empty() ? json(nullptr) : json(o.base_quant)},
                {"objective", pref_objective_name(o.pref.objective)},
                {"loss_type", pref_loss_type_name(o.pref.loss_type)},
                {"beta", o.pref.beta},
                {"label_smoothing", o.pref.label_smoothing},
                {"max_shard_size", o.max_shard_size},
                {"run_name", o.run_name},
                {"resolved", {{"max_steps", total_steps},
                              {"warmup_steps", warmup},
                              {"block_size", block_size},
                              {"torch_dtype", dtype_torch_name(out_dtype)},
                              {"dataset_type", o.train_data ? json(nullptr) : json(dataset_type_name(data.type))},
                              {"resumed_from", ckpt.empty() ? json(nullptr) : json(abs(ckpt))}}}};
    }

    // Preference: the objective and TRL's metrics over every evaluation pair (pairs of
    // --per_device_eval_batch_size per forward), logged with TRL's eval_ prefix.
    double eval_preference(json* metrics) {
        evaluate_sample_logps(*m, eval_data, o.per_device_eval_batch_size * 2, pad_id, &eval_logp, &eval_acts, nullptr,
                              layout());
        const pref_result r = evaluate_preference(o.pref, eval_data, eval_logp, eval_ref_logp);
        const double v[kPrefMetrics] = {r.rewards_chosen, r.rewards_rejected, r.rewards_accuracy, r.rewards_margin,
                                        r.logps_chosen,   r.logps_rejected,   r.nll_loss,         r.log_odds_ratio,
                                        r.log_odds_chosen};
        for (int i = 0; i < kPrefMetrics; i++)
            if (o.pref.objective == pref_objective::orpo || i < 6) (*metrics)[std::string("eval_") + kPrefMetricNames[i]] = v[i];
        return r.loss;
    }

    double eval_loss() {
        int64_t n = 0;
        double sum = evaluate_loss_sum(*m, eval_data, o.per_device_eval_batch_size, pad_id, &n, &eval_acts, nullptr,
                                       layout());
        return sum / (double)n;
    }

    // Ranks hold the same weights (same data, same sums, same updates); checked wherever weights
    // are written, so a divergence (a rank on other data or code) is never saved silently.
    void check_ranks_agree() {
        if (world->size() == 1) return;
        uint64_t h = 1469598103934665603ull;  // FNV-1a over what trains
        for (param_group* g : policy->groups()) {
            const std::vector<float> w = device_read(*m->ctx.be, (const float*)g->param, g->n);
            const unsigned char* p = (const unsigned char*)w.data();
            for (size_t i = 0; i < g->n * sizeof(float); i++) h = (h ^ p[i]) * 1099511628211ull;
        }
        double mine = (double)(h >> 12), root = mine;  // 52 bits: exact in a double
        world->broadcast(&root, sizeof root, 0);
        double differ = mine != root ? 1.0 : 0.0;
        world->all_reduce_sum(&differ, 1);
        if (differ > 0)
            fail(strf("step %lld: the weights of %d of %d ranks differ from rank 0's; nothing is saved (are all ranks "
                      "running the same lisa and data?)", (long long)step, (int)differ, world->size()));
        info(strf("ranks: the trained weights are identical on all %d ranks", world->size()));
    }

    // --load_best_model_at_end: the eval_loss of the last evaluation, and the best checkpoint
    int64_t     last_eval_step = -1, best_step = -1;
    double      last_eval_loss = 0, best_loss = 0;
    std::string best_ckpt;

    // every N steps, each epoch's end, or never; and the last step under steps / epoch
    bool at_point(const std::string& strategy, int64_t every) const {
        if (strategy == "no") return false;
        if (strategy == "epoch") return step % steps_per_epoch == 0 || step == total_steps;
        return every > 0 && (step % every == 0 || step == total_steps);
    }

    // The weights (and LoRA's adapters) of a checkpoint, into the model being trained.
    void load_weights_from(const std::string& ckpt) {
        auto c = decoder_model_load(ckpt, m->half ? 1 : 0, m->ctx.be);
        decoder_model_take_weights(m.get(), c.get());
        if (o.method == train_method::lora)
            checkpoint_load_optimizer(ckpt, checkpoint_read_state(ckpt, o.method), {}, policy->extra_state());
    }

    void save_checkpoint() {
        check_ranks_agree();
        checkpoint_info ci;
        ci.step = step;
        ci.total_steps = total_steps;
        ci.seed = o.seed;
        ci.max_shard_size = o.max_shard_size;
        ci.tokenizer_from = o.model_name_or_path;
        // --zero_stage 1: each group's moments gathered whole (every rank takes part), so the
        // checkpoint does not depend on the sharding
        std::vector<std::pair<std::vector<float>, std::vector<float>>> moments;
        bool sharded = false;
        for (param_group* g : policy->groups()) sharded |= g->sharded();
        if (sharded) {
            moments.resize(policy->groups().size());
            for (size_t k = 0; k < moments.size(); k++)
                optim_gather_moments(*policy->groups()[k], *world, &moments[k].first, &moments[k].second);
        }
        if (world->is_root())
            last_checkpoint = checkpoint_save(o.output_model_path, *m, *policy, ci, sharded ? &moments : nullptr);
        world->barrier();
        info(strf("saved %s", last_checkpoint.c_str()));
        if (last_eval_step == step && o.load_best_model_at_end && (best_ckpt.empty() || last_eval_loss < best_loss)) {
            best_loss = last_eval_loss;  // the best checkpoint so far (eval_loss at its step)
            best_step = step;
            best_ckpt = last_checkpoint;
        }
        if (world->is_root() && o.save_total_limit > 0)  // the new one is complete: older ones may go
            for (const std::string& p : checkpoint_prune(o.output_model_path, o.save_total_limit, best_ckpt))
                info(strf("removed %s (--save_total_limit %lld)", p.c_str(), (long long)o.save_total_limit));
    }

    void resume(const std::string& ckpt) {
        json st = checkpoint_read_state(ckpt, o.method);
        step = st["global_step"].get<int64_t>();
        std::vector<param_group*> load = policy->restore(*env, st, step, ckpt);
        checkpoint_load_optimizer(ckpt, st, load, policy->extra_state());
        last_checkpoint = ckpt;
        info(strf("resumed from %s at step %lld", ckpt.c_str(), (long long)step));
    }

    // A micro-batch's samples as spans of rows: padded, a row each; padding-free, each sample's
    // stretch of the one row (make_batch_into lays them out in this order).
    void batch_spans(const batch& b, size_t first, size_t count) {
        batch_sample_spans(b, data, order.data() + first, count, &spans);
    }

    // Preference: one micro-batch's forward, the objective over its pairs, and the backward with
    // each reply's weight. Returns its loss times its share of the step's pairs (so the step's
    // loss is the mean over all pairs, as with one batch); adds the metrics likewise into sums.
    double pref_micro_batch(const batch& b, size_t first, size_t count, int64_t step_pairs, double* sums) {
        batch_spans(b, first, count);
        span_logp.resize(spans.size());
        decoder_span_logps(*m, &acts, b.ids.data(), b.labels.data(), spans.data(), spans.size(), true, span_logp.data());
        pairs.clear();
        for (size_t i = 0; i + 1 < count; i += 2) {
            const size_t c = order[first + i], r = order[first + i + 1];
            pref_pair p;
            p.logp_chosen = span_logp[i];
            p.logp_rejected = span_logp[i + 1];
            p.len_chosen = sample_label_tokens(data.samples[c]);
            p.len_rejected = sample_label_tokens(data.samples[r]);
            if (!ref_logp.empty()) p.ref_chosen = ref_logp[c], p.ref_rejected = ref_logp[r];
            pairs.push_back(p);
        }
        pref_batch_into(o.pref, pairs.data(), pairs.size(), &pres);
        const double share = (double)pairs.size() / (double)std::max<int64_t>(1, step_pairs);
        span_weight.resize(spans.size());
        for (size_t i = 0; i < pairs.size(); i++) {
            span_weight[2 * i] = pres.dlogp_chosen[i] * share;
            span_weight[2 * i + 1] = pres.dlogp_rejected[i] * share;
        }
        decoder_span_backward(*m, &acts, &gr, b.ids.data(), spans.data(), spans.size(), span_weight.data());
        const double v[kPrefMetrics] = {pres.rewards_chosen, pres.rewards_rejected, pres.rewards_accuracy,
                                        pres.rewards_margin, pres.logps_chosen, pres.logps_rejected,
                                        pres.nll_loss, pres.log_odds_ratio, pres.log_odds_chosen};
        for (int i = 0; i < kPrefMetrics; i++) sums[i] += v[i] * share;
        return pres.loss * share;
    }

    // DPO's reference: Σ log p of every training (and evaluation) sample under the model as it
    // starts (LoRA: the base, its adapters zero), without dropout, computed once and kept in the
    // output folder so a resumed run (whose model has trained) uses the same values.
    void reference_logps(bool resumed) {
        if (o.pref.objective != pref_objective::dpo) return;
        const std::string path = fs_join(o.output_model_path, "reference_logps.json");
        if (resumed) {
            if (!fs_is_file(path))
                fail(strf("%s: missing; a resumed DPO run needs the reference log-probabilities its first run "
                          "computed (start the run again without --resume_from_checkpoint)", path.c_str()));
            const json j = json::parse(fs_read_text(path));
            ref_logp = j.at("logps").get<std::vector<double>>();
            eval_ref_logp = j.value("eval_logps", std::vector<double>{});
            if (ref_logp.size() != data.samples.size() || eval_ref_logp.size() != eval_data.samples.size())
                fail(strf("%s: %zu + %zu values for %zu training and %zu evaluation samples: the data changed since "
                          "the run started", path.c_str(), ref_logp.size(), eval_ref_logp.size(), data.samples.size(),
                          eval_data.samples.size()));
            info(strf("dpo: reference log-probabilities of %zu replies from %s", ref_logp.size() + eval_ref_logp.size(),
                      path.c_str()));
            return;
        }
        const auto t0 = std::chrono::steady_clock::now();
        evaluate_sample_logps(*m, data, device_rows(), pad_id, &ref_logp, &acts, nullptr, layout());
        eval_ref_logp.clear();
        if (has_eval)
            evaluate_sample_logps(*m, eval_data, o.per_device_eval_batch_size * 2, pad_id, &eval_ref_logp, &eval_acts,
                                  nullptr, layout());
        if (world->is_root())
            fs_write_atomic(path, json({{"model", o.model_name_or_path}, {"dataset", o.dataset_path},
                                        {"logps", ref_logp}, {"eval_logps", eval_ref_logp}}).dump() + "\n");
        info(strf("dpo: reference log-probabilities of %zu replies computed in %.1f s (the model as it starts%s), kept "
                  "in %s", ref_logp.size() + eval_ref_logp.size(),
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                  o.method == train_method::lora ? ": the base, adapters zero" : "", path.c_str()));
    }

    // The micro-batches of this step, and the label tokens of all of them (the loss is the mean
    // over the whole accumulated batch). Returns how many micro-batches were filled.
    // Each micro-batch is this rank's slice of the global one; label_tokens counts the whole
    // global batch (every rank has the data, so no message is needed), as one process would.
    size_t fill_step_batches(int64_t in_epoch, int64_t* label_tokens) {
        size_t used = 0;
        *label_tokens = 0;
        const size_t B = (size_t)device_rows(), G = (size_t)global_batch();
        for (int64_t a = 0; a < o.gradient_accumulation_steps; a++) {
            size_t g0 = (size_t)(in_epoch * o.gradient_accumulation_steps + a) * G;
            if (g0 >= order.size()) break;
            size_t g1 = std::min(order.size(), g0 + G);
            if (pref) *label_tokens += (int64_t)(g1 - g0) / 2;  // preference: the loss is the mean over pairs
            else
                for (size_t i = g0; i < g1; i++) *label_tokens += sample_label_tokens(data.samples[order[i]]);
            size_t b0 = std::min(g1, g0 + (size_t)world->rank() * B), b1 = std::min(g1, b0 + B);
            if (b1 > b0) {
                mb_first[used] = b0, mb_count[used] = b1 - b0;
                make_batch_into(&mbs[used++], data, order.data() + b0, b1 - b0, pad_id, layout());
            }
        }
        return used;
    }

    // Ranks: the sparse embedding rows of every token of the global step, in id order, on every
    // rank, so the row buffers line up and one all-reduce sums them (never the whole vocabulary).
    std::vector<int32_t> global_ids;  // touch_global_rows' list (reused: its capacity stays)
    void touch_global_rows(int64_t in_epoch) {
        const size_t G = (size_t)global_batch();
        std::vector<int32_t>& ids = global_ids;
        ids.clear();
        for (int64_t a = 0; a < o.gradient_accumulation_steps; a++) {
            size_t g0 = (size_t)(in_epoch * o.gradient_accumulation_steps + a) * G;
            for (size_t i = g0; i < std::min(order.size(), g0 + G); i++) {
                const sample& s = data.samples[order[i]];
                ids.insert(ids.end(), s.ids.begin(), s.ids.end());
            }
        }
        ids.push_back(pad_id);  // right padding goes through the embedding too (a zero gradient)
        std::sort(ids.begin(), ids.end());
        ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
        decoder_embed_rows_touch(&embed_rows, *m->ctx.be, ids.data(), ids.size());
    }

    // ---------------------------------------------------------------- the loop
    // The output folder, rank 0's: locked for this run, and what an earlier run left there either
    // continued (--resume_from_checkpoint), replaced whole (--overwrite_output_dir) or refused, so
    // two runs never mix in one folder. Returns the checkpoint to resume from ("" for none).
    std::shared_ptr<output_lock> lock = std::make_shared<output_lock>();
    bool        created_folder = false;
    std::string claim_output() {
        const std::string& out = o.output_model_path;
        if (!world->is_root()) return "";
        std::error_code ec;
        if (fs_is_dir(out) && std::filesystem::equivalent(out, o.model_name_or_path, ec))
            fail(strf("--output_model_path %s is the model being fine-tuned (--model_name_or_path); choose another "
                      "folder, so the base stays as it is", out.c_str()));
        created_folder = !fs_is_dir(out);
        output_lock_acquire(lock.get(), out, true, "lisa train", "--output_model_path", [&](const std::string& s) { info("lisa: note: " + s); });
        for (const std::string& p : checkpoint_clean_leftovers(out))
            info(strf("removed %s (left by an interrupted write)", p.c_str()));
        const output_dir_state st = output_dir_scan(out);
        if (o.resume_from_checkpoint.empty() && st.any()) {
            if (!o.overwrite_output_dir) {
                if (!st.checkpoints.empty())
                    fail(strf("%s holds an earlier run (%s): continue it with --resume_from_checkpoint latest, or pass "
                              "--overwrite_output_dir to start again (its model, checkpoints and log are removed)",
                              out.c_str(), st.describe().c_str()));
                fail(strf("%s already holds %s: pass --overwrite_output_dir to replace it, or choose another "
                          "--output_model_path", out.c_str(), st.describe().c_str()));
            }
            const int n = output_dir_clear_run(out);
            info(strf("--overwrite_output_dir: removed %s of the earlier run in %s (%d files and folders)",
                      st.describe().c_str(), out.c_str(), n));
        }
        return checkpoint_resolve(o.resume_from_checkpoint, out, [&](const std::string& s) { info("lisa: warning: " + s); });
    }

    train_result run() {
        validate();
        std::string ckpt = claim_output();
        if (world->size() > 1) {  // every rank resumes the checkpoint rank 0 chose
            uint64_t n = ckpt.size();
            world->broadcast(&n, sizeof n, 0);
            ckpt.resize(n);
            if (n) world->broadcast(ckpt.data(), n, 0);
        }
        try {
            return run_claimed(ckpt);
        } catch (...) {
            // a run that fails before its first checkpoint or model leaves no folder it created
            if (created_folder && world->is_root()) {
                const output_dir_state st = output_dir_scan(o.output_model_path);
                if (st.checkpoints.empty() && !st.has_model && !st.has_adapter) {
                    output_lock_release(lock.get());
                    std::error_code ec;
                    std::filesystem::remove_all(o.output_model_path, ec);
                }
            }
            throw;
        }
    }

    train_result run_claimed(const std::string& ckpt) {
        load(ckpt);
        set_steps();
        const int64_t rows_capacity = plan();
        if (world->size() > 1)  // the global step's tokens, at most (touch_global_rows)
            global_ids.reserve((size_t)global_batch() * (size_t)o.gradient_accumulation_steps * (size_t)plan_T + 1);
        const bool zero = o.zero_stage == 1 && world->size() > 1;
        env = std::make_unique<model_env>(m.get(), &gr, &embed_rows, rows_capacity, cb, zero ? world->rank() : 0,
                                          zero ? world->size() : 1, &data, pad_id);
        policy = policy_make(o);
        policy->setup(*env);
        if (ckpt.empty()) policy->prepare(*env);  // a resumed run restores what it measured
        decoder_acts_init(&acts, *m, plan_B, plan_T, o.gradient_checkpointing);
        if (pref) reference_logps(!ckpt.empty());
        if (!ckpt.empty()) resume(ckpt);
        if (world->is_root()) {
            fs_write_atomic(fs_join(o.output_model_path, "training_args.json"), args_json(ckpt).dump(2) + "\n");
            log = std::fopen(fs_join(o.output_model_path, "trainer_log.jsonl").c_str(), ckpt.empty() ? "w" : "a");
            if (!log) fail(strf("%s/trainer_log.jsonl: cannot open for writing", o.output_model_path.c_str()));
        }
        info(strf("train: %s, %zu samples, %lld steps (%lld per epoch), batch %lld x %lld accumulation%s",
                  train_method_name(o.method), data.samples.size(), (long long)total_steps, (long long)steps_per_epoch,
                  (long long)o.per_device_train_batch_size, (long long)o.gradient_accumulation_steps,
                  world->size() > 1 ? strf(" x %d ranks (MPI)", world->size()).c_str() : ""));
        if (std::string(m->ctx.be->name) == "vulkan") {
            uint64_t used = 0;
            vulkan_memory(&used);
            info(strf("device: %s; the model, its activations and optimizer state live there (%.1f MiB so far; "
                      "device_mib in the log); gradients of ranks are summed through the host",
                      vulkan_current_device().c_str(), (double)used / (1 << 20)));
        }
        if (m->paramsq.size() > 0) {  // a quantized base: what its frozen blocks take, and what training adds
            std::map<std::string, size_t> by_type;
            size_t n = 0, bytes = 0;
            std::string ends;  // the embedding and head: in blocks, trained, or bf16
            for (size_t i = 0; i < m->tensors.size(); i++) {
                const decoder_tensor_info& t = m->tensors[i];
                const bool q = decoder_tensor_quantized(*m, i);
                if (q) bytes += ggml_nbytes((ggml_type)m->q_type[i], (int64_t)t.numel);
                if (t.layer >= 0 && q) by_type[ggml_type_name((ggml_type)m->q_type[i])]++, n++;
                if (t.field != kFieldEmbed && t.field != kFieldHead) continue;
                const char* what = t.field == kFieldEmbed ? (m->cfg.tie_word_embeddings ? "embedding (tied head)" : "embedding")
                                                          : "head";
                ends += strf("; %s %s", what,
                             q ? strf("in %s blocks", ggml_type_name((ggml_type)m->q_type[i])).c_str()
                             : m->materialized[i] ? "trained (fp32 master)" : "in bf16");
            }
            std::string types;
            for (const auto& [t, k] : by_type) types += (types.empty() ? "" : ", ") + strf("%zu %s", k, t.c_str());
            info(strf("base: %zu frozen layer matrices held in ggml blocks (%s)%s; %.1f MiB of blocks; a layer that "
                      "trains gets an fp32 master and is held in bf16 after it leaves (2 bytes per value)",
                      n, types.c_str(), ends.c_str(), (double)bytes / (1 << 20)));
        }
        {  // what padding would cost on this data (the first epoch's batches)
            std::vector<size_t> first = epoch_order(data.samples.size(), o.seed, 0, o.shuffle);
            if (o.group_by_length) order_group_by_length(&first, data, mega_batch());
            const double pad = padding_fraction(data, first, (size_t)o.per_device_train_batch_size);
            info(strf("batches: %s%s; padded batches of %lld would be %.1f%% padding%s",
                      o.padding_free ? "padding-free (samples end to end, attention inside each)" : "right-padded",
                      o.packing ? strf(", rows packed to %lld tokens", (long long)block_size).c_str()
                      : o.group_texts ? strf(", --group_texts blocks of %lld", (long long)block_size).c_str() : "",
                      (long long)o.per_device_train_batch_size, 100.0 * pad,
                      o.padding_free ? ", computed on none of it" : (pad > 0.2 ? " (--padding_free computes none of it)" : "")));
        }

        const backend& K = *m->ctx.be;
        train_result res;
        const auto t_start = std::chrono::steady_clock::now();
        auto t_log = t_start;
        int64_t tokens_since_log = 0, tokens_total = 0, steps_this_run = 0, steps_since_log = 0;
        double loss_since_log = 0, loss_logged_sum = 0;
        double pref_since_log[kPrefMetrics] = {};
        int64_t logged = 0;
        int64_t cur_epoch = -1;
        adamw_hparams h = o.adam;
        grad_sync_init(&sync, world, m->cfg.num_layers);
        sync.be = m->ctx.be;
        const std::function<void(int64_t)> layer_done = [this](int64_t l) { grad_sync_layer_done(&sync, l); };
        while (step < total_steps) {
            const auto t_step = std::chrono::steady_clock::now();
            const double wait_before = threads.fixed ? -1 : threads_wait_seconds();
            policy->begin_step(*env, step);
            const std::vector<param_group*>& groups = policy->groups();
            const int64_t epoch = step / steps_per_epoch, in_epoch = step % steps_per_epoch;
            if (epoch != cur_epoch) {
                order_epoch(epoch);
                cur_epoch = epoch;
            }
            int64_t label_tokens = 0;
            const size_t n_mb = fill_step_batches(in_epoch, &label_tokens);
            optim_zero_grads(K, groups);
            embed_rows.clear();
            bool sparse_embed = false;
            for (param_group* g : groups) sparse_embed |= g->sparse;
            if (sparse_embed && world->size() > 1) touch_global_rows(in_epoch);
            double loss_sum = 0;
            double pref_sums[kPrefMetrics] = {};  // preference: TRL's metrics, weighted means over the step's pairs
            int64_t step_tokens = 0;  // this rank's tokens (not padding) in the step
            // ranks: what trains now is summed as the backward finishes it (grad_sync.h); a
            // single process: nothing to sum
            const bool ranks = world->size() > 1;
            const uint64_t reduced_before = world->reduced_bytes;
            if (ranks) grad_sync_plan(&sync, groups);
            for (size_t k = 0; k < n_mb; k++) {
                batch& b = mbs[k];
                m->lora.dropout_seed = o.seed * 0x2545f4914f6cdd1dull + (uint64_t)(step * 1000 + (int64_t)k);
                decoder_acts_shape(&acts, *m, b.B, b.T, b.pos.empty() ? nullptr : b.pos.data());
                if (ranks && k + 1 == n_mb) gr.layer_done = layer_done;
                if (pref)
                    loss_sum += pref_micro_batch(b, mb_first[k], mb_count[k], label_tokens, pref_sums);
                else
                    loss_sum += decoder_forward_backward(*m, &acts, &gr, b.ids.data(), b.labels.data(),
                                                         1.0f / (float)std::max<int64_t>(1, label_tokens), nullptr);
                gr.layer_done = nullptr;
                step_tokens += b.tokens;
            }
            if (ranks)
                grad_sync_finish(&sync, n_mb > 0, sparse_embed ? embed_rows.grad.data() : nullptr,
                                 embed_rows.rows.size() * (size_t)embed_rows.width);
            const uint64_t step_reduced = world->reduced_bytes - reduced_before;
            // with the loss: the tokens, and whether any rank was asked to stop (all stop at one step)
            double sums[3 + kPrefMetrics] = {loss_sum, (double)step_tokens, g_stop.load() ? 1.0 : 0.0};
            for (int i = 0; i < kPrefMetrics; i++) sums[3 + i] = pref_sums[i];
            world->all_reduce_sum(sums, pref ? 3 + kPrefMetrics : 3);
            loss_sum = sums[0];
            tokens_since_log += (int64_t)sums[1];
            const bool stop = sums[2] > 0;
            // preference: the micro-batches' losses are already means weighted by their share of pairs
            const double loss = pref ? loss_sum : loss_sum / (double)std::max<int64_t>(1, label_tokens);
            for (int i = 0; i < kPrefMetrics; i++) pref_since_log[i] += sums[3 + i];
            auto diverged = [&](const char* what) {
                fail(strf("step %lld: %s; stopping without saving a model. %s", (long long)step, what,
                          last_checkpoint.empty() ? "No checkpoint was written (see --save_steps)."
                                                  : ("The last checkpoint is " + last_checkpoint).c_str()));
            };
            if (!std::isfinite(loss)) diverged(std::isnan(loss) ? "the loss is NaN" : "the loss is infinite");
            embed_rows.sync();  // the row map on the device (a rank without a micro-batch has not sent it yet)
            const sparse_rows sr{embed_rows.grad.data(), embed_rows.row_of_dev.data(), m->cfg.vocab_size,
                                 m->cfg.hidden_size, (int64_t)embed_rows.rows.size()};
            const double norm = optim_grad_norm(K, groups, sr);
            const uint64_t gathered_before = world->gathered_bytes;
            if (!std::isfinite(norm)) diverged("the gradient norm is not finite");
            // clipping coefficient, applied inside the AdamW pass
            const float clip = o.max_grad_norm > 0 && norm > o.max_grad_norm ? (float)(o.max_grad_norm / (norm + 1e-6)) : 1.0f;
            h.lr = lr_at(o.lr_scheduler_type, o.adam.lr, step, warmup, total_steps);
            optim_step(K, groups, h, clip, sr, world);
            const uint64_t step_gathered = world->gathered_bytes - gathered_before;
            if (!threads.fixed) {  // the thread count for the next step, from how this one went
                double work = 0;  // tokens computed, padding included
                for (size_t k = 0; k < n_mb; k++) work += (double)(mbs[k].B * mbs[k].T);
                const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_step).count();
                const double wait_after = threads_wait_seconds();
                const int was = governor.cur;
                const int next = thread_governor_step(&governor, secs, work,
                                                      wait_before >= 0 && wait_after >= 0 ? std::max(0.0, wait_after - wait_before) : -1,
                                                      &thread_note);
                if (next != was) m->ctx.threads = next;  // each forward applies the model's count
                if (!thread_note.empty()) {
                    if (cb.on_info && world->is_root()) cb.on_info(strf("step %lld: %s", (long long)step + 1, thread_note.c_str()));
                    thread_note.clear();
                }
            }
            step++;
            steps_this_run++;
            steps_since_log++;
            loss_since_log += loss;
            auto now = std::chrono::steady_clock::now();
            double elapsed = std::chrono::duration<double>(now - t_start).count();
            if (cb.on_progress) {
                double per_step = elapsed / (double)steps_this_run;
                cb.on_progress(step, total_steps, loss, (tokens_total + tokens_since_log) / std::max(1e-9, elapsed),
                               per_step * (double)(total_steps - step), policy->active_layers(),
                               optim_state_bytes(groups));
            }
            if (step % std::max<int64_t>(1, o.logging_steps) == 0 || step == total_steps) {
                double dt = std::chrono::duration<double>(now - t_log).count();
                json j = {{"step", step},
                          {"epoch", (double)step / (double)steps_per_epoch},
                          {"loss", loss_since_log / (double)steps_since_log},
                          {"learning_rate", h.lr},
                          {"grad_norm", norm},
                          {"tokens_per_second", tokens_since_log / std::max(1e-9, dt)},
                          {"rss_mib", current_rss_mib()},
                          {"optimizer_state_bytes", optim_state_bytes(groups)},
                          {"threads", governor.cur},
                          {"world_size", world->size()},
                          {"allreduce_bytes", world->size() > 1 ? step_reduced : 0}};
                if (o.zero_stage == 1) j["allgather_bytes"] = step_gathered;
                if (std::string(m->ctx.be->name) == "vulkan") {  // what the model and its state hold on the GPU
                    uint64_t used = 0, dispatches = 0, submits = 0;
                    vulkan_memory(&used);
                    vulkan_counters(&dispatches, &submits);
                    j["device_mib"] = (double)used / (1 << 20);
                    j["device_dispatches"] = dispatches;
                    j["device_submits"] = submits;
                }
                if (pref)  // TRL's names
                    for (int i = 0; i < kPrefMetrics; i++) {
                        if (o.pref.objective != pref_objective::orpo && i >= 6) continue;
                        j[kPrefMetricNames[i]] = pref_since_log[i] / (double)steps_since_log;
                        pref_since_log[i] = 0;
                    }
                j.update(policy->state_json());
                write_log(j);
                loss_logged_sum += loss_since_log / (double)steps_since_log;
                logged++;
                tokens_total += tokens_since_log;
                tokens_since_log = 0;
                loss_since_log = 0;
                steps_since_log = 0;
                t_log = now;
            }
            // --eval_strategy (default: every eval_steps if set, and at the end of the run)
            const bool eval_now = o.eval_strategy.empty() ? (o.eval_steps > 0 && step % o.eval_steps == 0) || step == total_steps
                                                          : at_point(o.eval_strategy, o.eval_steps);
            if (has_eval && eval_now) {
                if (world->is_root()) {  // rank 0's; the others go on
                    json metrics = json::object();
                    last_eval_loss = pref ? eval_preference(&metrics) : eval_loss();
                    json line = {{"step", step}, {"eval_loss", last_eval_loss}};
                    line.update(metrics);
                    write_log(line);
                }
                last_eval_step = step;
            }
            // --save_strategy: every save_steps and at the last step (Hugging Face's checkpoint-MAX),
            // or each epoch; and on a stop
            if (at_point(o.save_strategy, o.save_steps) || (stop && step < total_steps))
                save_checkpoint();
            if (stop && step < total_steps) {
                res.interrupted = true;
                break;
            }
        }
        tokens_total += tokens_since_log;
        double runtime = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
        res.global_step = step;
        res.train_loss = logged ? loss_logged_sum / (double)logged : 0.0;
        res.train_runtime = runtime;
        res.tokens_per_second = tokens_total / std::max(1e-9, runtime);
        res.steps_per_second = steps_this_run / std::max(1e-9, runtime);
        res.peak_rss_mib = peak_rss_mib();
        res.lock = lock;
        if (!res.interrupted && o.save_model) check_ranks_agree();
        if (!res.interrupted && o.load_best_model_at_end && world->is_root()) {
            if (best_ckpt.empty()) {
                info("lisa: warning: --load_best_model_at_end: no checkpoint was written at an evaluation; keeping the last weights");
            } else if (best_step != step) {
                load_weights_from(best_ckpt);
                info(strf("loaded the best model: eval_loss %.6g at step %lld (%s)", best_loss, (long long)best_step,
                          best_ckpt.c_str()));
            }
        }
        if (res.interrupted || !o.save_model || !world->is_root()) return res;
        result_settings rs;
        rs.dir = o.output_model_path;
        rs.base_model = o.model_name_or_path;
        rs.out_dtype = out_dtype;
        rs.max_shard_bytes = parse_size_option(o.max_shard_size);
        // what makes the folder loadable (config.json; adapter_config.json under LoRA) is written
        // last, by save_result: it goes first, so no failure below leaves a folder that loads
        fs_remove(fs_join(o.output_model_path, "config.json"));
        fs_remove(fs_join(o.output_model_path, "adapter_config.json"));
        json r = {{"train_runtime", res.train_runtime},       {"train_loss", res.train_loss},
                  {"train_tokens_per_second", res.tokens_per_second}, {"train_steps_per_second", res.steps_per_second},
                  {"peak_rss_mib", res.peak_rss_mib},         {"global_step", res.global_step}};
        fs_write_atomic(fs_join(o.output_model_path, "train_results.json"), r.dump(2) + "\n");
        policy->save_result(*env, rs);
        return res;
    }
};

}  // namespace

train_result train_run(const train_options& opt, const train_callbacks& cb) {
    // a stop requested before the loop starts is honoured after the first step; the flag is
    // cleared when the run ends, so a library caller can train again
    struct clear_stop {
        ~clear_stop() { g_stop = false; }
    } clear;
    trainer t(opt, cb);
    return t.run();
}

}  // namespace lisa
