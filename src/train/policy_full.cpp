// Full fine-tuning, and the base every policy shares: a model-folder result.
#include "core/error.h"
#include "train/policy.h"

namespace lisa {

const std::vector<param_group*>& train_policy::groups() {
    if (all_.size() != fixed_.size() + slots_.size()) {  // groups are only added during setup
        all_.clear();
        for (auto& g : fixed_) all_.push_back(&g);
        for (auto& g : slots_) all_.push_back(&g);
    }
    return all_;
}

void train_policy::save_result(policy_env& env, const result_settings& s) {
    decoder_save_options so;
    so.out_dtype = s.out_dtype;
    so.max_shard_bytes = s.max_shard_bytes;
    so.tokenizer_from = s.base_model;
    decoder_model_save(*env.model(), s.dir, so);
}

namespace {

// Everything trains: embedding, every layer, final norm, head.
class full_policy final : public train_policy {
  public:
    train_method method() const override { return train_method::full; }
    void         setup(policy_env& env) override {
        fixed_.push_back(env.embed_group(!env.tied()));  // an untied embedding's gradient is sparse
        fixed_.push_back(env.norm_group());
        if (!env.tied()) fixed_.push_back(env.head_group());
        for (int l = 0; l < env.num_layers(); l++) fixed_.push_back(env.layer_group(l));
    }
};

}  // namespace

std::unique_ptr<train_policy> policy_make_full(const train_options& o) { return std::make_unique<full_policy>(); }

}  // namespace lisa
