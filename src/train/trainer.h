// The fine-tuning loop: LISA (default), full fine-tuning or LoRA, with AdamW, LR schedules,
// gradient accumulation and clipping, evaluation, checkpoints and resume.
//
// The rooms: the loop is here (trainer.cpp); parameter groups and AdamW in optim.h; what trains
// is a policy (policy.h: LISA, full, LoRA, each its own unit); checkpoints in checkpoint.h;
// evaluation and the data defaults shared with `lisa eval` in evaluate.h; ranks through comm.h.
//
// Memory: gradients and AdamW moments exist only for trainable tensors, in contiguous blocks
// (one per trainable group: embedding, final norm + head, each decoder layer, or all LoRA
// weights). LISA holds exactly γ layer blocks, allocated once and re-bound to the layers drawn
// at each switch (zeroed: entering layers start with fresh state), so its optimizer memory is
// constant over the run. Activations and batches are planned once for the largest batch: the
// step loop allocates nothing.
//
// The library never prints: progress and log records go to the callbacks.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "train/train_options.h"

namespace lisa {

struct output_lock;  // io/output_dir.h

struct train_result {
    int64_t global_step = 0;
    double  train_loss = 0;        // mean of the logged step losses of this run
    double  train_runtime = 0;     // seconds
    double  tokens_per_second = 0; // tokens processed (not padding) per second
    double  steps_per_second = 0;
    double  peak_rss_mib = 0;
    bool    interrupted = false;   // stopped by SIGINT/SIGTERM after writing a checkpoint
    std::shared_ptr<output_lock> lock;  // the output folder's lock (rank 0), held while the caller
                                               // still writes there (plot, GGUF); released when dropped
};

struct train_callbacks {
    std::function<void(const std::string& json_line)> on_log;      // every trainer_log.jsonl record
    // after each step, with what trains now (LISA's layers, else null) and the optimizer memory
    std::function<void(int64_t step, int64_t total, double loss, double tokens_per_s, double eta_s,
                       const std::vector<int>* active_layers, size_t optimizer_bytes)>
        on_progress;
    std::function<void(const std::string& message)> on_info;       // one-off notices (switches, saves)
};

// Runs the whole job; throws lisa::error on bad input or a non-finite loss (keeping the last
// checkpoint). Writes the output folder as documented in docs/training.md.
train_result train_run(const train_options& opt, const train_callbacks& cb);

// Requests a graceful stop (checkpoint, then return): what SIGINT/SIGTERM handlers call.
void train_request_stop();

double current_rss_mib();
double peak_rss_mib();

}  // namespace lisa
