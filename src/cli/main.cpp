// lisa: command-line entry point. A thin layer: parse flags, call the library, print errors
// as one line and exit non-zero.
#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <unistd.h>
#include <map>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/config_file.h"
#include "comm/comm.h"
#include "core/error.h"
#include "core/threads.h"
#include "kernels/vulkan/vulkan.h"

// libgomp reads its wait policy once, as it loads, before main. Its default has a worker thread
// that runs out of work spin for milliseconds, which on a machine where another program holds a
// core takes that core's time from the threads that do have work. So, unless the user chose
// (OMP_WAIT_POLICY or GOMP_SPINCOUNT), the process starts itself again, once, with a short spin
// in its environment. Where that cannot be done it goes on as it is.
static void set_wait_policy(char** argv) {
    if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
    if (setenv("GOMP_SPINCOUNT", lisa::kDefaultSpinCount, 0) != 0) return;
    char self[4096];  // the binary's own path, so that ps and top still show its name
    const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return;
    self[n] = 0;
    execv(self, argv);
}

namespace lisa {
static int g_threads = 0;
int cli_threads() { return g_threads; }
static std::string g_device = "cpu";
const std::string& cli_device() { return g_device; }
const backend& cli_backend() {
    if (g_device == "cpu") return backend_cpu();
    if (g_device == "vulkan") {
        // ranks of one machine (mpirun) each take their own device: the local rank's, modulo the
        // usable devices present
        const char* local = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
        if (!local) local = std::getenv("MPI_LOCALRANKID");
        int index = 0;
        if (local) {
            std::string why;
            std::vector<int> usable;
            for (const auto& d : vulkan_devices(&why))
                if (d.usable) usable.push_back(d.index);
            if (!usable.empty()) index = usable[(size_t)std::atoi(local) % usable.size()];
        }
        return backend_vulkan(index);
    }
    if (g_device.rfind("vulkan:", 0) == 0) {
        const backend* b = backend_by_name(g_device.c_str());
        if (b) return *b;
    }
    fail(strf("--device %s: expected cpu, vulkan or vulkan:N (lisa devices lists them)", g_device.c_str()));
}
}  // namespace lisa

// Edit distance, for "did you mean" (case-insensitive, small strings).
static size_t edit_distance(const std::string& a, const std::string& b) {
    std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
    for (size_t j = 0; j <= b.size(); j++) prev[j] = j;
    for (size_t i = 1; i <= a.size(); i++) {
        cur[0] = i;
        for (size_t j = 1; j <= b.size(); j++)
            cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1,
                               prev[j - 1] + (std::tolower((unsigned char)a[i - 1]) != std::tolower((unsigned char)b[j - 1]))});
        std::swap(prev, cur);
    }
    return prev[b.size()];
}

static std::string nearest(const std::string& word, const std::vector<std::string>& names) {
    std::string best;
    size_t best_d = SIZE_MAX;
    for (const auto& n : names) {
        const size_t d = edit_distance(word, n);
        if (d < best_d) best_d = d, best = n;
    }
    return best_d <= std::max<size_t>(2, word.size() / 3) ? best : "";
}

static std::vector<std::string> words_of(const std::string& flag) {
    std::vector<std::string> w;
    std::string cur;
    for (char c : flag.substr(flag.find_first_not_of('-'))) {
        if (c == '_' || c == '-') {
            if (!cur.empty()) w.push_back(cur);
            cur.clear();
        } else cur += c;
    }
    if (!cur.empty()) w.push_back(cur);
    return w;
}

// A misspelling of a flag: one edit anywhere, or the same words with small typos in them
// ("--lerning_rate"). Never a flag that only looks alike ("--batch_size" is not "--block_size").
static bool is_typo_of(const std::string& typed, const std::string& known) {
    if (edit_distance(typed, known) <= 1) return true;
    const std::vector<std::string> a = words_of(typed), b = words_of(known);
    if (a.size() != b.size()) return false;
    size_t total = 0;
    for (size_t i = 0; i < a.size(); i++) {
        const size_t d = edit_distance(a[i], b[i]);
        if (d > std::max<size_t>(1, b[i].size() / 4)) return false;
        total += d;
    }
    return total <= 2;
}

// Flags of other tools' scripts that are not ours, and what says the same here.
struct flag_synonym {
    const char* theirs;
    const char* ours;
};
static const flag_synonym kFlagSynonyms[] = {
    {"--epochs", "--num_train_epochs"},          {"--train_batch_size", "--per_device_train_batch_size"},
    {"--eval_batch_size", "--per_device_eval_batch_size"}, {"--grad_accum", "--gradient_accumulation_steps"},
    {"--gradient_accumulation", "--gradient_accumulation_steps"}, {"--warmup", "--warmup_steps"},
    {"--model", "--model_name_or_path"},         {"--base_model", "--model_name_or_path"},
    {"--data_path", "--dataset_path"},           {"--train_file", "--dataset_path"},
    {"--dataset", "--dataset_path"},             {"--output_path", "--output_model_path"},
    {"--scheduler", "--lr_scheduler_type"},      {"--lr_scheduler", "--lr_scheduler_type"},
    {"--val_set_size", "--validation_split_percentage"}, {"--resume", "--resume_from_checkpoint"},
    {"--lora_rank", "--lora_r"},                 {"--lora_target", "--lora_target_modules"},
};

static std::string suggest_flag(const std::string& flag, const CLI::App* owner) {
    for (const flag_synonym& s : kFlagSynonyms)
        if (flag == s.theirs && owner->get_option_no_throw(s.ours)) return s.ours;
    for (const CLI::Option* o : owner->get_options())
        for (const std::string& n : o->get_lnames())
            if (is_typo_of(flag, "--" + n)) return "--" + n;
    return "";
}

// After CLI11 found arguments it does not expect: the first unknown command or flag, named first,
// with the nearest known one. Returns false when it finds nothing to say (CLI11's message then).
static bool explain_unknown(CLI::App& app, int argc, char** argv) {
    std::vector<std::string> commands;
    for (const CLI::App* s : app.get_subcommands([](CLI::App*) { return true; })) commands.push_back(s->get_name());
    CLI::App* sub = nullptr;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (!sub && a.rfind("-", 0) != 0) {
            for (CLI::App* s : app.get_subcommands([](CLI::App*) { return true; }))
                if (s->get_name() == a) sub = s;
            if (sub) continue;
            std::string list;
            for (const auto& c : commands) list += (list.empty() ? "" : ", ") + c;
            const std::string guess = nearest(a, commands);
            std::fprintf(stderr, "lisa: unknown command '%s'%s; commands: %s\n", a.c_str(),
                         guess.empty() ? "" : ("; did you mean '" + guess + "'?").c_str(), list.c_str());
            return true;
        }
        if (a.rfind("-", 0) != 0) continue;
        const std::string flag = a.substr(0, a.find('='));
        CLI::App* owner = sub ? sub : &app;
        const CLI::Option* known = owner->get_option_no_throw(flag);
        if (!known) known = app.get_option_no_throw(flag);
        if (known || flag == "--help" || flag == "-h") {
            // skip the flag's values, so `--threads 1 train` does not read "1" as a command
            if (known && a.find('=') == std::string::npos && known->get_expected_max() >= 1) {
                auto is_bool_word = [](std::string v) {
                    for (auto& c : v) c = (char)std::tolower((unsigned char)c);
                    return v == "true" || v == "false" || v == "1" || v == "0" || v == "yes" || v == "no";
                };
                const int max = known->get_expected_max();
                for (int k = 0; (max < 0 || k < max) && i + 1 < argc && argv[i + 1][0] != '-'; k++) {
                    if (known->get_expected_min() == 0 && !is_bool_word(argv[i + 1])) break;
                    i++;
                }
            }
            continue;
        }
        if (a.rfind("--", 0) != 0) {
            std::fprintf(stderr, "lisa%s%s: unknown flag %s\n", sub ? " " : "", sub ? sub->get_name().c_str() : "",
                         flag.c_str());
            return true;
        }
        const std::string guess = suggest_flag(flag, owner);
        std::fprintf(stderr, "lisa%s%s: unknown flag %s%s\n", sub ? " " : "", sub ? sub->get_name().c_str() : "",
                     flag.c_str(), guess.empty() ? "" : ("; did you mean " + guess + "?").c_str());
        return true;
    }
    return false;
}

// Flags that decide the same thing, so one given on the command line replaces the file's other:
// epochs or steps, warmup ratio or steps, the method, the output dtype, packing.
static const std::vector<std::vector<std::string>> kSameChoice = {
    {"--max_steps", "--num_train_epochs"},
    {"--warmup_steps", "--warmup_ratio"},
    {"--method", "--use_lisa", "--use_lora"},
    {"--torch_dtype", "--bf16", "--fp16"},
    {"--group_texts", "--disable_group_texts", "--packing"},
};

// Whether the command line (args from `from` on, not --config's) gives `flag`, one of its
// spellings, or another flag of its choice group: then the file's value must not apply.
static bool overridden(CLI::App* train, const std::string& flag, const std::vector<std::string>& args, size_t from) {
    const CLI::Option* mine = train->get_option_no_throw(flag);
    std::vector<const CLI::Option*> group = {mine};
    for (const auto& g : kSameChoice) {
        bool in = false;
        for (const auto& f : g) in |= train->get_option_no_throw(f) == mine;
        if (in)
            for (const auto& f : g) group.push_back(train->get_option_no_throw(f));
    }
    for (size_t i = from; i < args.size(); i++) {
        if (args[i] == "--config") {
            i++;
            continue;
        }
        if (args[i].rfind("--", 0) != 0) continue;
        const CLI::Option* given = train->get_option_no_throw(args[i].substr(0, args[i].find('=')));
        if (!given) continue;
        for (const CLI::Option* g : group)
            if (g && g == given) return true;
    }
    return false;
}

// Replaces `--config FILE` after `train` with the file's flags, checked against train's own.
static std::vector<std::string> expand_config(CLI::App& app, const std::vector<std::string>& args) {
    size_t sub = 0;
    for (size_t i = 1; i < args.size() && !sub; i++)
        if (args[i] == "train") sub = i;
    if (!sub) return args;
    CLI::App* train = app.get_subcommand("train");
    std::vector<std::string> out(args.begin(), args.begin() + sub + 1), rest;
    std::vector<std::string> inserted;
    for (size_t i = sub + 1; i < args.size(); i++) {
        std::string file;
        if (args[i] == "--config") {
            if (i + 1 >= args.size()) lisa::fail("--config: expected a file (JSON or YAML)");
            file = args[++i];
        } else if (args[i].rfind("--config=", 0) == 0) {
            file = args[i].substr(9);
        } else {
            rest.push_back(args[i]);
            continue;
        }
        for (const auto& [key, value] : lisa::config_file_read(file)) {
            const std::string flag = "--" + key;
            if (overridden(train, flag, args, sub + 1)) continue;  // the command line says otherwise
            if (!train->get_option_no_throw(flag)) {
                std::vector<std::string> names;
                for (const CLI::Option* o : train->get_options())
                    for (const std::string& n : o->get_lnames()) names.push_back(n);
                const std::string guess = nearest(key, names);
                lisa::fail(lisa::strf("%s: key '%s' is not a flag of lisa train%s", file.c_str(), key.c_str(),
                                      guess.empty() ? "" : ("; did you mean '" + guess + "'?").c_str()));
            }
            inserted.push_back(flag);
            inserted.push_back(value);
        }
    }
    out.insert(out.end(), inserted.begin(), inserted.end());
    out.insert(out.end(), rest.begin(), rest.end());
    return out;
}

int main(int argc, char** argv) {
    set_wait_policy(argv);
    CLI::App app{"lisa: fine-tune Llama-family models with LISA, full fine-tuning or LoRA"};
    app.require_subcommand(1);
    // a flag given twice takes its last value, so scripts can put defaults before the user's flags
    app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    int& threads = lisa::g_threads;
    app.add_option("--threads", threads, "CPU threads for compute (default: OMP_NUM_THREADS, else all cores)")
        ->check(CLI::NonNegativeNumber);
    std::string& device = lisa::g_device;
    const char* device_help = "where to compute: cpu (default), vulkan or vulkan:N (lisa devices lists them)";
    app.add_option("--device", device, device_help);
    std::map<CLI::App*, lisa::command_fn> commands;
    auto add = [&](const char* name, const char* help, lisa::command_fn (*reg)(CLI::App&)) {
        CLI::App* sub = app.add_subcommand(name, help);
        // accepted after the subcommand too (`lisa train ... --threads 2`), as users write it
        sub->add_option("--threads", threads, "CPU threads for compute (default: OMP_NUM_THREADS, else all cores)")
            ->check(CLI::NonNegativeNumber);
        sub->add_option("--device", device, device_help);
        commands[sub] = reg(*sub);
    };
    add("init", "write a randomly initialised model in Hugging Face format", lisa::cmd_init_register);
    add("info", "print a model folder's configuration and parameter count as JSON", lisa::cmd_info_register);
    add("tokenize", "encode text to ids (or --decode ids to text) with the model's tokenizer.json",
        lisa::cmd_tokenize_register);
    add("train", "fine-tune with LISA (default), full fine-tuning or LoRA", lisa::cmd_train_register);
    add("merge-lora", "fold a PEFT LoRA adapter into its base model", lisa::cmd_merge_lora_register);
    add("export-gguf", "write a GGUF file for llama.cpp / Ollama", lisa::cmd_export_gguf_register);
    add("eval", "loss and perplexity of a model on a dataset", lisa::cmd_eval_register);
    add("inspect-data", "show what training will learn from a dataset: texts with trained tokens marked, or ids and labels",
        lisa::cmd_inspect_data_register);
    add("plot", "draw training_loss.svg (loss, eval loss, learning rate, LISA switches) from a run's trainer_log.jsonl",
        lisa::cmd_plot_register);
    add("generate", "generate text from a prompt (KV-cached; greedy at temperature 0)", lisa::cmd_generate_register);
    add("chat", "talk with a model in its chat template, turn by turn (stdin)", lisa::cmd_chat_register);
    add("devices", "list the compute devices: the CPU and each Vulkan device with its memory", lisa::cmd_devices_register);
    app.set_version_flag("--version", std::string("lisa ") + LISA_VERSION);
    // `train --config FILE`: the file's flags go in front of the command line's, so those win
    std::vector<std::string> args(argv, argv + argc);
    try {
        args = expand_config(app, args);
    } catch (const lisa::error& e) {
        std::fprintf(stderr, "lisa: error: %s\n", e.what());
        return 1;
    }
    std::vector<char*> argv2;
    for (auto& a : args) argv2.push_back(a.data());
    argc = (int)argv2.size();
    argv = argv2.data();
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const bool asked = dynamic_cast<const CLI::CallForHelp*>(&e) || dynamic_cast<const CLI::CallForAllHelp*>(&e) ||
                           dynamic_cast<const CLI::CallForVersion*>(&e);
        // a misspelt command or flag: named first, with the nearest known one (before CLI11's
        // "required" or "not expected" messages, which would hide the typo)
        if (!asked && explain_unknown(app, argc, argv)) return 2;
        if (asked) return app.exit(e);
        // every error is one line that starts with "lisa"
        std::string what = e.what(), where;
        for (const CLI::App* s : app.get_subcommands([](CLI::App*) { return true; }))
            if (s->parsed()) where = " " + s->get_name();
        std::fprintf(stderr, "lisa%s: error: %s (lisa%s --help lists the flags)\n", where.c_str(),
                     lisa::cap_message(what).c_str(), where.c_str());
        return 2;  // a usage error, as for an unknown flag
    } catch (const lisa::error& e) {  // a flag's value refused while it was read
        std::fprintf(stderr, "lisa: error: %s\n", e.what());
        return 1;
    }
    // An error on one of several ranks ends them all (the others would wait in a collective),
    // after its one line, which names the rank.
    auto failed = [](const std::string& msg) {
        lisa::comm& w = lisa::comm_world();
        if (w.size() > 1) {
            std::fprintf(stderr, "lisa: error (rank %d of %d): %s\n", w.rank(), w.size(), msg.c_str());
            std::fflush(stderr);
            w.abort(1);
        }
        std::fprintf(stderr, "lisa: error: %s\n", msg.c_str());
        return 1;
    };
    try {
        for (auto& [sub, fn] : commands)
            if (sub->parsed()) fn();
    } catch (const lisa::error& e) {
        return failed(e.what());
    } catch (const std::bad_alloc&) {
        return failed("out of memory");
    } catch (const std::exception& e) {  // a library's exception that escaped a check: still one line
        return failed(lisa::cap_message(e.what()));
    }
    return 0;
}
