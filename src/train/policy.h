// Training policies: what trains, and when. LISA, full fine-tuning and LoRA are each one small
// unit behind `train_policy`; the trainer's loop is the same for all three. A policy sees the
// model only through `policy_env` (the trainer implements it over a decoder_model), so LISA's and
// full fine-tuning's rules are testable with a stand-in env and no model at all.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/decoder.h"
#include "train/layer_sampling.h"
#include "train/optim.h"
#include "train/train_options.h"

namespace lisa {

// The model as a policy sees it. Every group it returns has its fp32 masters materialised (bf16
// models) and its gradient pointers bound to the group's gradient block.
class policy_env {
  public:
    virtual ~policy_env() = default;
    virtual int  num_layers() const = 0;
    virtual bool tied() const = 0;                    // the LM head is the embedding
    virtual param_group embed_group(bool sparse) = 0; // sparse: gradient rows of the step's tokens only
    virtual param_group norm_group() = 0;             // the final norm
    virtual param_group head_group() = 0;             // an untied LM head
    virtual param_group layer_group(int l) = 0;       // decoder layer l
    // Re-points a group made by layer_group at layer l (layers are alike: same size and spans).
    virtual void rebind_layer(param_group* g, int l) = 0;
    // Layer l stops training: its gradient pointers are nulled; with release, its fp32 master goes
    // back to the stored dtype and its pages are freed (bf16 models).
    virtual void unbind_layer(int l, bool release) = 0;
    virtual decoder_model* model() = 0;  // LoRA attaches its adapters here (null in a stand-in env)
    // --zero_stage 1: which share of optimizer state this rank keeps (groups made by a policy
    // itself use it too); one process or stage 0: shard 0 of 1.
    virtual void shard_info(int* shard, int* shards) const {
        *shard = 0;
        *shards = 1;
    }
    virtual decoder_grads* grads() = 0;
    virtual void info(const std::string& message) = 0;
    // Every layer's outlier ratio on the first training samples (forward only; the same numbers
    // on every rank): what LISA's owlore sampling draws by. train/layer_sampling.h.
    virtual layer_outliers measure_layer_outliers(double threshold) = 0;
};

// A named span of extra state a checkpoint must keep (LoRA's adapter weights).
struct state_span {
    std::string name;
    float*      data;  // device memory of be
    size_t      n;
    const backend* be;
};

// Where and how the final result is written.
struct result_settings {
    std::string dir;             // the output folder
    std::string base_model;      // --model_name_or_path (tokenizer files, adapter config)
    dtype       out_dtype = dtype::f32;
    size_t      max_shard_bytes = (size_t)5 << 30;
};

class train_policy {
  public:
    virtual ~train_policy() = default;
    virtual train_method method() const = 0;
    // Creates the trainable groups (held by the policy).
    virtual void setup(policy_env& env) = 0;
    // Once before the first step of a run that does not resume (a resumed run restores what this
    // measured from its checkpoint): measurements the policy needs (LISA owlore: outlier ratios).
    virtual void prepare(policy_env& env) {}
    // Before each optimizer step's forward (LISA draws at its interval boundaries).
    virtual void begin_step(policy_env& env, int64_t step) {}
    // Every group that trains now (the same list for the whole run: LISA re-binds its slots).
    const std::vector<param_group*>& groups();
    // Its own fields of trainer_state.json (LISA: the active layers).
    virtual nlohmann::json state_json() const { return nlohmann::json::object(); }
    // The decoder layers training now (LISA), or null: for progress displays, without allocating.
    virtual const std::vector<int>* active_layers() const { return nullptr; }
    // On resume at `step`, after setup: re-creates the policy's state for that step and returns
    // the groups whose optimizer state the checkpoint holds and must be loaded. `ckpt` names the
    // checkpoint in errors.
    virtual std::vector<param_group*> restore(policy_env& env, const nlohmann::json& st, int64_t step,
                                              const std::string& ckpt) {
        return groups();
    }
    // Extra state a checkpoint keeps besides the model and the optimizer moments.
    virtual std::vector<state_span> extra_state() { return {}; }
    // Writes the final result: a model folder (LISA, full) or a PEFT adapter (LoRA).
    virtual void save_result(policy_env& env, const result_settings& s);

  protected:
    std::vector<param_group> fixed_;  // groups that train for the whole run
    std::vector<param_group> slots_;  // LISA: groups re-bound at each draw

  private:
    std::vector<param_group*> all_;   // fixed_ then slots_, built once they exist
};

// The policy of o.method (the table in policies.cpp), and the check of that method's options.
std::unique_ptr<train_policy> policy_make(const train_options& o);
void                          policy_validate(const train_options& o);

}  // namespace lisa
