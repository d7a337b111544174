// lisa: command-line entry point. A thin layer: parse flags, call the library, print errors
// as one line and exit non-zero.
#include <cstdio>
#include <map>

#include "cli/commands.h"
#include "core/error.h"

namespace lisa {
static int g_threads = 0;
int cli_threads() { return g_threads; }
}  // namespace lisa

int main(int argc, char** argv) {
    CLI::App app{"lisa: fine-tune Llama-family models with LISA, full fine-tuning or LoRA"};
    app.require_subcommand(1);
    // a flag given twice takes its last value, so scripts can put defaults before the user's flags
    app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    int& threads = lisa::g_threads;
    app.add_option("--threads", threads, "CPU threads for compute (default: OMP_NUM_THREADS, else all cores)")
        ->check(CLI::NonNegativeNumber);
    std::map<CLI::App*, lisa::command_fn> commands;
    auto add = [&](const char* name, const char* help, lisa::command_fn (*reg)(CLI::App&)) {
        CLI::App* sub = app.add_subcommand(name, help);
        // accepted after the subcommand too (`lisa train ... --threads 2`), as users write it
        sub->add_option("--threads", threads, "CPU threads for compute (default: OMP_NUM_THREADS, else all cores)")
            ->check(CLI::NonNegativeNumber);
        commands[sub] = reg(*sub);
    };
    add("init", "write a randomly initialised model in Hugging Face format", lisa::cmd_init_register);
    add("info", "print a model folder's configuration and parameter count as JSON", lisa::cmd_info_register);
    add("tokenize", "encode text to ids (or --decode ids to text) with the model's tokenizer.json",
        lisa::cmd_tokenize_register);
    add("train", "fine-tune with LISA (default), full fine-tuning or LoRA", lisa::cmd_train_register);
    add("merge-lora", "fold a PEFT LoRA adapter into its base model", lisa::cmd_merge_lora_register);
    add("export-gguf", "write a GGUF file for llama.cpp / Ollama", lisa::cmd_export_gguf_register);
    add("eval", "loss and perplexity of a model on an LMFlow dataset", lisa::cmd_eval_register);
    add("generate", "generate text from a prompt (KV-cached; greedy at temperature 0)", lisa::cmd_generate_register);
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e);
    }
    try {
        for (auto& [sub, fn] : commands)
            if (sub->parsed()) fn();
    } catch (const lisa::error& e) {
        std::fprintf(stderr, "lisa: error: %s\n", e.what());
        return 1;
    } catch (const std::bad_alloc&) {
        std::fprintf(stderr, "lisa: error: out of memory\n");
        return 1;
    } catch (const std::exception& e) {  // a library's exception that escaped a check: still one line
        std::fprintf(stderr, "lisa: error: %s\n", lisa::cap_message(e.what()).c_str());
        return 1;
    }
    return 0;
}
