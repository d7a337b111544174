// A picture of a run: OUTPUT/training_loss.svg drawn from OUTPUT/trainer_log.jsonl (train loss,
// eval loss, learning rate, and where LISA switched layers). `lisa train --plot_loss` draws it at
// the end; `lisa plot` draws it for any run, also one still running.
#pragma once
#include <string>

namespace lisa {

// Writes output_dir/training_loss.svg (atomically) and returns its path. Throws lisa::error if
// the log is missing or has no training step yet.
std::string plot_training_loss(const std::string& output_dir);

}  // namespace lisa
