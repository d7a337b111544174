// Checkpoints: OUTPUT/checkpoint-STEP holds the model (fp32 masters; bf16 models keep frozen
// tensors bf16, exactly), optimizer.safetensors (each trainable group's m and v, and a policy's
// extra state such as LoRA's weights) and trainer_state.json. A checkpoint is written under
// checkpoint-STEP.tmp and renamed into place, so a crash never leaves one that looks complete.
#pragma once
#include <functional>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/decoder.h"
#include "train/policy.h"

namespace lisa {

// --resume_from_checkpoint: a checkpoint folder, or "latest" (the highest checkpoint-N in the
// output folder that is complete: a damaged newer one is named through `note` and passed over).
// "" when nothing is requested. Fails naming the damage when nothing usable is left.
std::string checkpoint_resolve(const std::string& request, const std::string& output_dir,
                               const std::function<void(const std::string&)>& note = nullptr);
// What is wrong with a checkpoint folder ("" when it is complete): a missing or unreadable
// trainer_state.json, optimizer.safetensors or model file, or a truncated one.
std::string checkpoint_damage(const std::string& ckpt);
// Removes what an interrupted write left in the output folder: temporary files ("*.tmp.<pid>",
// at the top and inside checkpoint folders) and unfinished checkpoints ("checkpoint-N.tmp").
// None of them is ever complete. Returns the paths removed.
std::vector<std::string> checkpoint_clean_leftovers(const std::string& output_dir);
// Deletes complete checkpoints beyond the newest `keep` (by step), never `protect` (the best one
// under --load_best_model_at_end); returns the paths removed.
std::vector<std::string> checkpoint_prune(const std::string& output_dir, int64_t keep, const std::string& protect = "");

struct checkpoint_info {
    int64_t      step = 0, total_steps = 0;
    uint64_t     seed = 0;
    std::string  max_shard_size;  // as --max_shard_size
    std::string  tokenizer_from;  // folder whose tokenizer files the checkpoint carries
};
// Writes output_dir/checkpoint-STEP; returns its path. `moments`, if given, holds each group's
// whole m and v (in groups() order) for groups sharded across ranks (--zero_stage 1), so the
// checkpoint is the same whatever the sharding.
std::string checkpoint_save(const std::string& output_dir, const decoder_model& m, train_policy& policy,
                            const checkpoint_info& info,
                            const std::vector<std::pair<std::vector<float>, std::vector<float>>>* moments = nullptr);

// trainer_state.json of a checkpoint, checked to be written by `method`.
nlohmann::json checkpoint_read_state(const std::string& ckpt, train_method method);
// Loads the optimizer state of `groups` (a sharded group: its share) and the policy's extra state
// from a checkpoint, with the step counts recorded in `state`.
void checkpoint_load_optimizer(const std::string& ckpt, const nlohmann::json& state,
                               const std::vector<param_group*>& groups, const std::vector<state_span>& extra);

}  // namespace lisa
