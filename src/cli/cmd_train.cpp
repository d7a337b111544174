// lisa train: fine-tune with LISA (default), full fine-tuning or LoRA. Flags follow Hugging Face
// TrainingArguments and LMFlow names; every flag is read here, next to its help text.
#include <cmath>
#include <csignal>
#include <filesystem>
#include <cstdlib>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sys/ioctl.h>
#include <unistd.h>

#include "cli/commands.h"
#include "cli/common.h"
#include "comm/comm.h"
#include "core/error.h"
#include "core/threads.h"
#include "export/export_gguf.h"
#include "export/modelfile.h"
#include "io/fs.h"
#include "model/gguf_model.h"
#include "train/plot.h"
#include "train/progress.h"
#include "train/trainer.h"

namespace lisa {

static void on_signal(int sig) {
    train_request_stop();
    std::signal(sig, SIG_DFL);  // a second signal kills at once
}


CLI::Option* cli_add_bool(CLI::App& app, const std::string& name, bool* out, const std::string& help) {
    return app.add_option_function<std::string>(name, [name, out](const std::string& v) {
        std::string l;
        for (char c : v) l += (char)std::tolower((unsigned char)c);
        if (l.empty() || l == "1" || l == "true" || l == "yes") *out = true;
        else if (l == "0" || l == "false" || l == "no") *out = false;
        else fail(strf("%s %s: expected true or false (or 1 / 0)", name.c_str(), v.c_str()));
    }, help)->expected(0, 1);
}

// Flags of LMFlow's and Hugging Face's training scripts that have no meaning here. They are
// accepted, so those scripts run unchanged, and each says why in one line when it asks for
// something (a false / none / 0 value asks for nothing and is quiet).
struct inert_flag {
    const char* name;
    const char* why;
};
static const inert_flag kInertFlags[] = {
    {"--deepspeed", "DeepSpeed does not apply: lisa.cpp plans its own memory (LISA frees the optimizer state of frozen "
                    "layers); across machines use mpirun (docs/distributed.md)"},
    {"--dataloader_num_workers", "samples are tokenized once before training; there is no loader to parallelise"},
    {"--preprocessing_num_workers", "samples are tokenized once before training, on one thread"},
    {"--ddp_timeout", "MPI ranks have no timeout: an error on one rank ends them all at once"},
    {"--ddp_find_unused_parameters", "only what trains is summed across ranks; nothing to find"},
    {"--report_to", "metrics go to OUTPUT/trainer_log.jsonl (one JSON line per logged step)"},
    {"--logging_dir", "logs go to OUTPUT/trainer_log.jsonl"},
    {"--trust_remote_code", "architectures are implemented natively; no model code is ever loaded"},
    {"--use_flash_attention", "attention is lisa.cpp's own CPU kernel (no T x T score matrix is kept)"},
    {"--flash_attn", "attention is lisa.cpp's own CPU kernel (no T x T score matrix is kept)"},
    {"--tf32", "CPUs have no TF32: matrix products run in fp32"},
    {"--overwrite_cache", "no dataset cache is kept: data is read fresh each run"},
    {"--use_fast_tokenizer", "the tokenizer is tokenizer.json, run natively"},
    {"--ignore_data_skip", "resuming replays the data order from the seed; nothing is skipped by reading"},
    {"--do_eval", "eval_loss is computed when --eval_dataset_path or --validation_split_percentage is given"},
    {"--lazy_preprocess", "samples are tokenized once before training"},
};

// Flags of other tools that ask for something lisa.cpp does not do: refused, saying so (a false /
// none / 0 value asks for nothing and is accepted quietly).
struct refused_flag {
    const char* name;
    const char* why;
};
static const refused_flag kRefusedFlags[] = {
    {"--use_dora", "DoRA is not implemented; plain LoRA is (--method lora)"},
    {"--load_in_4bit", "quantized (QLoRA) bases are not implemented yet; the base trains in its own dtype (a bf16 "
                       "base keeps frozen weights in bf16)"},
    {"--load_in_8bit", "quantized bases are not implemented yet; the base trains in its own dtype"},
    {"--quantization_bit", "quantized bases are not implemented yet; the base trains in its own dtype"},
    {"--neftune_noise_alpha", "NEFTune embedding noise is not implemented"},
    {"--use_unsloth", "Unsloth's kernels are Python/Triton; lisa.cpp has its own"},
};

// A step count as Hugging Face reads it: N steps, or a fraction of all steps when below 1 (0.1).
static void add_steps(CLI::App& app, const std::string& name, int64_t* steps, double* fraction, const std::string& help) {
    app.add_option_function<std::string>(name, [name, steps, fraction](const std::string& v) {
        char* end = nullptr;
        const double x = std::strtod(v.c_str(), &end);
        if (v.empty() || *end != 0 || !(x >= 0))
            fail(strf("%s %s: expected a number of steps, or a fraction of all steps below 1 (0.1)", name.c_str(), v.c_str()));
        if (x > 0 && x < 1) *fraction = x, *steps = 0;
        else if (x != std::floor(x)) fail(strf("%s %s: expected a whole number of steps, or a fraction below 1", name.c_str(), v.c_str()));
        else *fraction = 0, *steps = (int64_t)x;
    }, help + " (a value below 1: that fraction of all steps)");
}

command_fn cmd_train_register(CLI::App& app) {
    struct opts {
        train_options t;
        int           use_lisa = -1, use_lora = -1, train_emb = 0, train_head = 0, aggregated = 0,
                      disable_group_texts = -1;
        bool          overwrite = false, do_train = false, bf16 = false, fp16 = false, no_bar = false, plot = false;
        std::string   run_name, method, schedule, save_gguf, optim = "adamw_torch", objective = "sft", loss_type = "sigmoid";
        std::vector<std::string> lora_targets;
        int64_t       batch_size = 0;
        bool          rslora = false;
        std::vector<std::pair<std::string, std::string>> refused;  // (flag, value) of kRefusedFlags given
        std::vector<std::pair<std::string, std::string>> inert;  // (flag, value) given, for warnings
    };
    auto o = std::make_shared<opts>();
    train_options& t = o->t;
    // flags spelled differently from train_options start from its defaults
    o->method = train_method_name(t.method);
    o->schedule = lr_schedule_name(t.lr_scheduler_type);
    // the help shows each default from train_options (stated there once)
    app.option_defaults()->always_capture_default();
    app.add_option("-m,--model_name_or_path", t.model_name_or_path, "Hugging Face model folder to fine-tune")->required();
    app.add_option("-d,--dataset_path", t.dataset_path, "a dataset file (.json / .jsonl) or a folder of them")->required();
    app.add_option("-o,--output_model_path,--output_dir", t.output_model_path, "folder for the fine-tuned model, logs and checkpoints")->required();
    app.add_option("--method", o->method, "lisa | full | lora");
    app.add_option("--use_lisa", o->use_lisa, "LMFlow spelling: 1 = --method lisa");
    app.add_option("--use_lora", o->use_lora, "LMFlow spelling: 1 = --method lora");
    app.add_option("--lisa_activated_layers", t.lisa_activated_layers, "decoder layers trained at a time");
    app.add_option("--lisa_interval_steps", t.lisa_interval_steps, "optimizer steps between layer draws");
    cli_add_bool(app, "--lisa_train_embeddings", &t.lisa_train_embeddings, "0 freezes the embedding under LISA");
    cli_add_bool(app, "--lisa_train_head", &t.lisa_train_head, "0 freezes the LM head under LISA");
    app.add_option("--lisa_layer_sampling", t.lisa_layer_sampling,
                   "uniform (LISA) | owlore (layers with more weight outliers drawn more often)");
    app.add_option("--lisa_outlier_threshold", t.lisa_outlier_threshold,
                   "owlore: a weight is an outlier when |W|*||X|| exceeds this many times its matrix's mean");
    app.add_option("--lora_r", t.lora_r, "LoRA rank");
    app.add_option("--lora_alpha", t.lora_alpha, "LoRA alpha; scale = alpha / r");
    app.add_option("--lora_dropout", t.lora_dropout, "dropout on the LoRA input");
    app.add_option_function<std::vector<std::string>>(
           "--lora_target_modules,--target_modules", [o](const std::vector<std::string>& v) { o->lora_targets = v; },
           "modules, comma- or space-separated (q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj), or all-linear")
        ->expected(1, -1);
    cli_add_bool(app, "--save_aggregated_lora", &t.save_aggregated_lora, "1 also writes the merged model (LMFlow's flag)");
    std::string config_unused;  // read by main.cpp before parsing (see config_file.h); listed here for --help
    app.add_option("--config", config_unused,
                   "FILE (JSON, e.g. a run's training_args.json, or flat YAML): flags of a run; the command line's win");
    app.add_option("--learning_rate,--lr", t.adam.lr, "peak learning rate");
    app.add_option("--adam_beta1", t.adam.beta1, "AdamW beta1");
    app.add_option("--adam_beta2", t.adam.beta2, "AdamW beta2");
    app.add_option("--adam_epsilon", t.adam.eps, "AdamW epsilon");
    app.add_option("--weight_decay", t.adam.weight_decay, "decoupled weight decay of matrices");
    app.add_option("--max_grad_norm", t.max_grad_norm, "clip the global gradient norm; 0 disables");
    app.add_option("--lr_scheduler_type", o->schedule, "linear | cosine | constant | constant_with_warmup");
    app.add_option("--warmup_steps", t.warmup_steps, "linear warmup steps");
    app.add_option("--warmup_ratio", t.warmup_ratio, "warmup as a fraction of all steps");
    app.add_option("--num_train_epochs,--num_epochs", t.num_train_epochs, "epochs");
    app.add_option("--max_steps", t.max_steps, "optimizer steps; overrides epochs when > 0");
    app.add_option("--per_device_train_batch_size,--micro_batch_size", t.per_device_train_batch_size, "sequences per micro-batch");
    app.add_option("--batch_size,--total_batch_size", o->batch_size,
                   "sequences per optimizer step in all (axolotl, alpaca-lora): sets --gradient_accumulation_steps to "
                   "it / (--per_device_train_batch_size x ranks)");
    app.add_option("--per_device_eval_batch_size", t.per_device_eval_batch_size, "sequences per eval batch");
    app.add_option("--gradient_accumulation_steps", t.gradient_accumulation_steps, "micro-batches per optimizer step");
    app.add_option("--block_size,--max_seq_length,--model_max_length,--cutoff_len,--sequence_len", t.block_size,
                   "truncate samples to N tokens (default min(1024, model context))");
    app.add_option("--conversation_template", t.conversation_template, cli_template_help());
    cli_add_bool(app, "--train_on_prompt", &t.train_on_prompt, "conversation: train on prompt turns too");
    cli_add_bool(app, "--group_texts", &t.group_texts,
                 "concatenate samples and cut into blocks of --block_size (LMFlow: samples attend across their "
                 "boundaries; --packing does not)");
    cli_add_bool(app, "--packing,--sample_packing", &t.packing,
                 "fill rows of --block_size with whole samples, each attending only to itself");
    cli_add_bool(app, "--padding_free", &t.padding_free,
                 "lay a micro-batch's samples end to end, attention kept inside each: no compute on padding "
                 "(default true; false: right-padded rows)");
    cli_add_bool(app, "--group_by_length", &t.group_by_length,
                 "batches of samples of similar length, still shuffled each epoch with --seed");
    cli_add_bool(app, "--gradient_checkpointing", &t.gradient_checkpointing,
             "keep only each layer's input and recompute its activations in the backward");
    app.add_option("--disable_group_texts", o->disable_group_texts, "LMFlow spelling: 0 = --group_texts");
    app.add_option("--seed", t.seed, "seed for data order, LISA draws and init");
    add_steps(app, "--logging_steps", &t.logging_steps, &t.logging_steps_fraction, "write a trainer_log.jsonl record every N steps");
    add_steps(app, "--save_steps", &t.save_steps, &t.save_steps_fraction,
                   "write DIR/checkpoint-STEP every N steps and at the last step (default: never)");
    app.add_option("--save_strategy", t.save_strategy, "steps (every --save_steps) | epoch | no");
    app.add_option("--eval_strategy,--evaluation_strategy", t.eval_strategy,
                   "steps (every --eval_steps) | epoch | no (default: every --eval_steps if set, and at the end)");
    cli_add_bool(app, "--load_best_model_at_end", &t.load_best_model_at_end,
             "save the checkpoint with the lowest eval_loss as the model (save and eval strategies must match)");
    app.add_option("--metric_for_best_model", t.metric_for_best_model, "eval_loss (the only metric computed)");
    app.add_option("--zero_stage", t.zero_stage,
                   "MPI ranks: 0 = every rank keeps all AdamW state; 1 = each keeps 1/N of it (parameters gathered "
                   "after each step)");
    app.add_option("--save_total_limit", t.save_total_limit,
                   "keep only the newest N checkpoints (default: all)")->check(CLI::NonNegativeNumber);
    app.add_option("--eval_dataset_path", t.eval_dataset_path, "folder of datasets (*.json / *.jsonl) for eval loss");
    add_steps(app, "--eval_steps", &t.eval_steps, &t.eval_steps_fraction, "log eval_loss every N steps");
    app.add_option("--resume_from_checkpoint", t.resume_from_checkpoint, "checkpoint folder, or latest");
    app.add_option("--torch_dtype", t.torch_dtype, "saved dtype: float32 | bfloat16 | float16 (default: the input's)");
    app.add_option("--base_quant", t.base_quant,
                   "hold the frozen decoder-layer matrices in ggml blocks: q8_0 | q4_0 | q4_K (QLoRA-style; CPU; a "
                   "quantized GGUF base keeps its own blocks without it)");
    app.add_option("--max_shard_size", t.max_shard_size, "largest safetensors file before sharding");
    cli_add_bool(app, "--overwrite_output_dir", &o->overwrite, "replace what an earlier run left in the folder (model, adapter, checkpoints, log): all of it");
    cli_add_bool(app, "--do_train", &o->do_train, "accepted for Hugging Face scripts (training is what this command does)");
    // Hugging Face / LMFlow flags with a meaning here
    cli_add_bool(app, "--bf16", &o->bf16, "save the model in bfloat16 (unless --torch_dtype says otherwise); a bf16 model "
                                      "trains in half mode (bf16 weights, fp32 masters of what trains)");
    cli_add_bool(app, "--plot_loss", &o->plot, "draw OUTPUT/training_loss.svg when training ends (also: lisa plot)");
    cli_add_bool(app, "--disable_tqdm", &o->no_bar, "no progress bar (it shows only on a terminal anyway)");
    cli_add_bool(app, "--fp16", &o->fp16, "save the model in float16 (unless --torch_dtype says otherwise)");
    app.add_option("--optim", o->optim, "adamw_torch | adamw_hf | adamw_torch_fused | paged_adamw_32bit: all AdamW");
    app.add_option("--validation_split_percentage", t.validation_split_percentage,
                   "hold out this percentage of the training samples for eval_loss (when no --eval_dataset_path)")
        ->check(CLI::Range(0.0, 99.0));
    for (const inert_flag& f : kInertFlags) {
        std::string name = f.name;
        app.add_option_function<std::string>(name, [o, name](const std::string& v) { o->inert.push_back({name, v}); },
                                             std::string("accepted for LMFlow / Hugging Face scripts, no effect: ") + f.why)
            ->expected(0, 1);
    }
    for (const refused_flag& f : kRefusedFlags) {
        std::string name = f.name;
        app.add_option_function<std::string>(name, [o, name](const std::string& v) {
            std::string l;
            for (char c : v) l += (char)std::tolower((unsigned char)c);
            if (l == "0" || l == "false" || l == "no" || l == "none") return;
            o->refused.push_back({name, v});
        }, std::string("refused: ") + f.why)->expected(0, 1);
    }
    cli_add_bool(app, "--use_rslora", &o->rslora, "rank-stabilised LoRA: scale adapters by lora_alpha / sqrt(r)");
    app.add_option("--run_name", o->run_name, "a name recorded in training_args.json");
    // preference tuning (TRL's names)
    app.add_option("--objective", o->objective,
                   "sft (supervised, the default) | dpo | orpo: DPO and ORPO train on preference data (records with "
                   "chosen and rejected)");
    app.add_option("--loss_type", o->loss_type, "DPO's loss: sigmoid | ipo | hinge");
    app.add_option("--beta", t.pref.beta, "DPO's temperature; ORPO's weight of the odds-ratio term");
    app.add_option("--label_smoothing", t.pref.label_smoothing,
                   "DPO sigmoid: the share of preferences taken as flipped (conservative DPO)");
    app.add_option("--save_gguf", o->save_gguf,
                   "also write OUTPUT/model-TYPE.gguf for llama.cpp / Ollama when training ends (TYPE: f32, f16, bf16, "
                   "q8_0; under LoRA the merged model), and OUTPUT/Modelfile for `ollama create`");
    return [o] {
        train_options& t = o->t;
        if (!train_method_parse(o->method, &t.method))
            fail(strf("--method \"%s\": expected lisa, full or lora", o->method.c_str()));
        t.pref.objective = pref_objective_parse(o->objective);
        t.pref.loss_type = pref_loss_type_parse(o->loss_type);
        // Hugging Face's cosine_with_restarts with its default one cycle is cosine at every step
        if (o->schedule == "cosine_with_restarts") o->schedule = "cosine";
        if (!lr_schedule_parse(o->schedule, &t.lr_scheduler_type))
            fail(strf("--lr_scheduler_type \"%s\": expected linear, cosine, cosine_with_restarts, constant or "
                      "constant_with_warmup", o->schedule.c_str()));
        static const char* kAdamW[] = {"adamw_torch", "adamw_hf", "adamw_torch_fused", "paged_adamw_32bit",
                                       "adamw_apex_fused"};
        bool adamw = false;
        for (const char* a : kAdamW) adamw |= o->optim == a;
        if (!adamw)
            fail(strf("--optim %s: only AdamW is implemented (adamw_torch, adamw_hf, adamw_torch_fused, "
                      "paged_adamw_32bit); 8-bit and other optimizers are not", o->optim.c_str()));
        if (o->bf16 && o->fp16) fail("--bf16 and --fp16: choose one");
        if (t.group_texts && t.packing)
            fail("--group_texts and --packing: choose one (--packing keeps samples whole and apart; --group_texts "
                 "cuts the stream of samples into blocks that attend across them, as LMFlow does)");
        if (t.torch_dtype.empty() && (o->bf16 || o->fp16)) t.torch_dtype = o->bf16 ? "bfloat16" : "float16";
        for (const auto& [flag, value] : o->inert) {
            std::string l;
            for (char c : value) l += (char)std::tolower((unsigned char)c);
            if (l == "0" || l == "false" || l == "no" || l == "none")
                continue;  // asks for nothing
            for (const inert_flag& f : kInertFlags)
                if (flag == f.name && comm_world().is_root())
                    std::fprintf(stderr, "lisa: warning: %s%s%s ignored: %s\n", flag.c_str(), value.empty() ? "" : " ",
                                 value.c_str(), f.why);
        }
        if (o->use_lora == 1) t.method = train_method::lora;
        else if (o->use_lisa == 1) t.method = train_method::lisa;
        else if (o->use_lisa == 0 && t.method == train_method::lisa) t.method = train_method::full;
        t.threads = cli_threads();
        t.device = &cli_backend();
        if (o->disable_group_texts >= 0) t.group_texts = o->disable_group_texts == 0;
        if (!o->lora_targets.empty()) {  // "q_proj v_proj", "q_proj,v_proj", or "all-linear"
            t.lora_target_modules.clear();
            for (const std::string& item : o->lora_targets) {
                size_t i = 0;
                while (i <= item.size()) {
                    size_t j = item.find(',', i);
                    if (j == std::string::npos) j = item.size();
                    std::string m = item.substr(i, j - i);
                    m.erase(0, m.find_first_not_of(" []\"'"));
                    m.erase(m.find_last_not_of(" []\"'") + 1);
                    if (m == "all-linear" || m == "all_linear")
                        for (const char* a : {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
                            t.lora_target_modules.push_back(a);
                    else if (!m.empty())
                        t.lora_target_modules.push_back(m);
                    i = j + 1;
                }
            }
        }
        for (const auto& [flag, value] : o->refused)
            for (const refused_flag& f : kRefusedFlags)
                if (flag == f.name) fail(strf("%s%s%s: %s", flag.c_str(), value.empty() ? "" : " ", value.c_str(), f.why));
        if (o->rslora) {  // rsLoRA scales by alpha / sqrt(r): the same as LoRA with alpha * sqrt(r) / ... = alpha' / r
            t.lora_alpha = t.lora_alpha * std::sqrt((double)t.lora_r);
            if (comm_world().is_root())
                std::fprintf(stderr, "lisa: note: --use_rslora: adapters scaled by lora_alpha / sqrt(r), saved as PEFT's "
                                     "equivalent lora_alpha %g (scale %g)\n", t.lora_alpha, t.lora_alpha / (double)t.lora_r);
        }
        if (o->batch_size > 0) {  // a total batch: accumulate up to it
            const int64_t per_step = t.per_device_train_batch_size * (int64_t)comm_world().size();
            if (o->batch_size % per_step != 0)
                fail(strf("--batch_size %lld: must be a multiple of --per_device_train_batch_size %lld%s", (long long)o->batch_size,
                          (long long)t.per_device_train_batch_size,
                          comm_world().size() > 1 ? strf(" x %d ranks", comm_world().size()).c_str() : ""));
            t.gradient_accumulation_steps = o->batch_size / per_step;
        }
        // what an earlier run left in the folder is refused, replaced or resumed by the trainer
        const std::string out = t.output_model_path;
        t.overwrite_output_dir = o->overwrite;
        t.run_name = o->run_name;
        if (!o->save_gguf.empty()) gguf_outtype(o->save_gguf);  // a bad type fails before training

        const bool tty = isatty(STDERR_FILENO) && comm_world().is_root() && !o->no_bar;  // one bar, rank 0's
        bool bar_drawn = false;
        auto clear_bar = [&] {
            if (bar_drawn) std::fprintf(stderr, "\r\033[K");
            bar_drawn = false;
        };
        train_callbacks cb;
        cb.on_info = [&](const std::string& s) {
            clear_bar();
            std::fprintf(stderr, "%s\n", s.c_str());
        };
        double reward_accuracy = -1;  // preference runs: the bar shows the last logged one
        cb.on_log = [&](const std::string& line) {  // on a terminal, rounded for reading
            clear_bar();
            if (tty && line.find("\"rewards/accuracies\"") != std::string::npos) {
                const auto j = nlohmann::json::parse(line, nullptr, false);
                if (j.is_object() && j.contains("rewards/accuracies") && j["rewards/accuracies"].is_number())
                    reward_accuracy = j["rewards/accuracies"].get<double>();
            }
            std::fprintf(stderr, "%s\n", tty ? progress_round_json(line).c_str() : line.c_str());
        };
        // the bar (only on a terminal: set only then, so the step loop builds no text otherwise),
        // as wide as the terminal is now (it may have been resized)
        if (tty) cb.on_progress = [&](int64_t step, int64_t total, double loss, double tps, double eta,
                                      const std::vector<int>* layers, size_t adam_bytes) {
            progress_state ps;
            ps.step = step, ps.total = total, ps.loss = loss, ps.tokens_per_s = tps, ps.eta_s = eta;
            ps.active_layers = layers, ps.optimizer_bytes = adam_bytes, ps.reward_accuracy = reward_accuracy;
            struct winsize ws {};
            const int cols = ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 ? ws.ws_col : 80;
            std::fprintf(stderr, "\r\033[K%s", progress_bar_line(ps, cols).c_str());
            bar_drawn = true;
        };
        const bool root = comm_world().is_root();  // with MPI ranks, rank 0 speaks and writes
        if (root) {  // the first line says how many threads compute, why that many, and how they wait
            const thread_choice c = threads_choose(t.threads);
            std::fprintf(stderr, "lisa: %d compute thread%s (%s; %s); %s\n", c.n, c.n == 1 ? "" : "s", c.why.c_str(),
                         c.fixed ? "fixed" : "fewer while other programs hold CPUs", c.wait.c_str());
        }
        std::signal(SIGINT, on_signal);
        std::signal(SIGTERM, on_signal);
        train_result r = train_run(t, cb);  // holds the folder's lock until we are done with it
        clear_bar();
        if (r.interrupted) {
            std::fprintf(stderr, "interrupted at step %lld: checkpoint written; continue with --resume_from_checkpoint latest\n",
                         (long long)r.global_step);
            r.lock.reset();  // std::exit runs no destructors of locals
            std::exit(130);
        }
        if (!root) return;  // rank 0 has written the model
        if (o->plot) std::fprintf(stderr, "plot: %s\n", plot_training_loss(out).c_str());
        std::fprintf(stderr, "done: %lld steps in %.1f s, train_loss %.4f, %.0f tokens/s, peak RSS %.0f MiB -> %s\n",
                     (long long)r.global_step, r.train_runtime, r.train_loss, r.tokens_per_second, r.peak_rss_mib,
                     out.c_str());
        if (!o->save_gguf.empty()) {  // the trained model (LoRA: the base with the adapter merged in) as GGUF
            gguf_export_options g;
            const bool lora = t.method == train_method::lora;
            g.model_dir = lora ? t.model_name_or_path : out;
            g.lora_dir = lora ? out : "";
            g.outtype = o->save_gguf;
            g.outfile = fs_join(out, "model-" + o->save_gguf + ".gguf");
            // a GGUF base: what training left unchanged keeps its original blocks
            if (model_path_is_gguf(t.model_name_or_path)) g.base_gguf = t.model_name_or_path;
            size_t kept = 0;
            g.kept = &kept;
            for (const std::string& w : export_gguf(g)) std::fprintf(stderr, "lisa: export-gguf: warning: %s\n", w.c_str());
            if (kept)
                std::fprintf(stderr, "lisa: %zu unchanged matri%s kept in their original blocks from %s\n", kept,
                             kept == 1 ? "x" : "ces", g.base_gguf.c_str());
            std::fprintf(stderr, "wrote %s\n", g.outfile.c_str());
            if (lora) {  // and the adapter alone, for llama.cpp's --lora on the base model's GGUF
                gguf_export_options a = g;
                a.lora_adapter = true;
                a.kept = nullptr;
                a.outfile = fs_join(out, "adapter.gguf");
                export_gguf(a);
                std::fprintf(stderr, "wrote %s (LoRA adapter: llama.cpp --lora)\n", a.outfile.c_str());
            }
            say_modelfile(fs_join(out, "Modelfile"), ollama_modelfile_write(fs_join(out, "Modelfile"), g.model_dir, out,
                                                                            g.outfile));  // for `ollama create`
        }
    };
}

}  // namespace lisa
