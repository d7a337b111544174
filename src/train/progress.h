// What `lisa train` shows on a terminal: a one-line progress bar that fits the terminal's width,
// and the log records printed between bar updates with their numbers rounded for reading (the
// trainer_log.jsonl file keeps full precision).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lisa {

struct progress_state {
    int64_t                 step = 0, total = 0;
    double                  loss = 0;
    double                  tokens_per_s = 0;
    double                  eta_s = -1;               // < 0: unknown
    const std::vector<int>* active_layers = nullptr;  // LISA's trained layers now, else null
    size_t                  optimizer_bytes = 0;
    double                  reward_accuracy = -1;     // preference tuning: the last logged rewards/accuracies; < 0: none
};

// The bar as one line of at most cols - 1 characters (so it never wraps), without the carriage
// return. What does not fit goes, least useful first: the layers, the optimizer memory, width of
// the bar, tokens/s; below that only "step/total loss" is left, cut to the width.
std::string progress_bar_line(const progress_state& s, int cols);

// A trainer_log.jsonl record with each non-integer number rounded to `digits` significant digits.
std::string progress_round_json(const std::string& json_line, int digits = 5);

}  // namespace lisa
