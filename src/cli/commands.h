// The `lisa` subcommands. Each file cmd_<name>.cpp registers its flags on the app and returns
// the function that runs it; flags are read there, next to their help text.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>

#include "kernels/kernels.h"

namespace lisa {

using command_fn = std::function<void()>;

command_fn cmd_init_register(CLI::App& app);  // lisa init: write a randomly initialised model
command_fn cmd_info_register(CLI::App& app);  // lisa info: describe a model folder
command_fn cmd_tokenize_register(CLI::App& app);  // lisa tokenize: text <-> ids
command_fn cmd_eval_register(CLI::App& app);      // lisa eval: loss and perplexity on a dataset
command_fn cmd_inspect_data_register(CLI::App& app);  // lisa inspect-data: what training will batch
command_fn cmd_plot_register(CLI::App& app);          // lisa plot: training_loss.svg of a run
command_fn cmd_generate_register(CLI::App& app);  // lisa generate: sample a continuation
command_fn cmd_chat_register(CLI::App& app);      // lisa chat: a conversation on stdin
command_fn cmd_train_register(CLI::App& app);     // lisa train: LISA / full / LoRA fine-tuning
command_fn cmd_merge_lora_register(CLI::App& app);  // lisa merge-lora: fold an adapter into a model
command_fn cmd_export_gguf_register(CLI::App& app);  // lisa export-gguf: write a GGUF for llama.cpp

// The --threads flag (0 = all cores): each command gives it to the compute context of what it
// loads (decoder_model::ctx, train_options::threads); nothing sets threads process-wide.
int cli_threads();
// The --device flag: "cpu" (default), "vulkan" or "vulkan:N"; cli_backend() starts and returns its
// backend (one clear line when it cannot), which a command gives to what it loads.
const std::string& cli_device();
const backend& cli_backend();
command_fn cmd_devices_register(CLI::App& app);  // lisa devices: the compute devices of this machine

// A boolean as Hugging Face's and LMFlow's scripts pass it: `--name`, or `--name VALUE` with
// VALUE one of true/false, 1/0, yes/no (any case). Defined in cmd_train.cpp.
CLI::Option* cli_add_bool(CLI::App& app, const std::string& name, bool* out, const std::string& help);

}  // namespace lisa
