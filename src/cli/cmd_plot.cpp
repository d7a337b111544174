// lisa plot --output_model_path DIR: draws DIR/training_loss.svg from DIR/trainer_log.jsonl (train
// and eval loss, learning rate, LISA's layer switches); works on a run that is still going.
#include <cstdio>

#include "cli/commands.h"
#include "train/plot.h"

namespace lisa {

command_fn cmd_plot_register(CLI::App& app) {
    auto dir = std::make_shared<std::string>();
    app.add_option("--output_model_path,--output_dir", *dir, "a lisa train output folder (holding trainer_log.jsonl)")
        ->required();
    return [dir] { std::printf("%s\n", plot_training_loss(*dir).c_str()); };
}

}  // namespace lisa
