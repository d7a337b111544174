// LISA (Pan et al. 2024): every K steps γ decoder layers are drawn uniformly without
// replacement (or with the probabilities of --lisa_layer_sampling owlore: train/layer_sampling.h);
// only they, plus the embedding, final norm and head, train until the next draw.
// The γ layer groups are allocated once and re-bound at each draw with fresh (zero) state;
// layers that leave are written back and their fp32 pages freed, so optimizer memory is O(γ).
#include <algorithm>
#include <cstdio>

#include "core/error.h"
#include "core/rng.h"
#include "train/layer_sampling.h"
#include "train/policy.h"

namespace lisa {

namespace {

class lisa_policy final : public train_policy {
  public:
    explicit lisa_policy(const train_options& o)
        : gamma_(o.lisa_activated_layers), interval_(o.lisa_interval_steps), seed_(o.seed),
          train_emb_(o.lisa_train_embeddings), train_head_(o.lisa_train_head),
          owlore_(o.lisa_layer_sampling == "owlore"), threshold_(o.lisa_outlier_threshold) {}

    train_method method() const override { return train_method::lisa; }

    void setup(policy_env& env) override {
        const int L = env.num_layers();
        if (env.tied() && train_head_ && !train_emb_)
            env.info("the LM head is tied to the embedding: it follows --lisa_train_embeddings 0 and stays frozen");
        if (train_emb_) fixed_.push_back(env.embed_group(!env.tied()));
        fixed_.push_back(env.norm_group());  // the final norm: D values, always trained
        if (!env.tied() && train_head_) fixed_.push_back(env.head_group());
        if (gamma_ < 1 || gamma_ > L)
            fail(strf("--lisa_activated_layers %lld: expected 1..%d (the model has %d decoder layers)",
                      (long long)gamma_, L, L));
        for (int64_t k = 0; k < gamma_; k++) {
            slots_.push_back(env.layer_group(0));  // sized like a layer; bound at the first draw
            env.unbind_layer(0, false);
        }
        active_.reserve(L);
        next_.reserve(L);
        draw_scratch_.reserve(L);
        note_.reserve(96 + 12 * (size_t)L);
    }

    void begin_step(policy_env& env, int64_t step) override {
        if (step % interval_ == 0 || active_.empty()) activate(env, step / interval_, step);
    }

    // --lisa_layer_sampling owlore: the draw probabilities from the base model's outlier ratios
    void prepare(policy_env& env) override {
        if (!owlore_) return;
        layer_outliers lo = env.measure_layer_outliers(threshold_);
        prob_ = lo.prob;
        std::string r, p;
        for (size_t l = 0; l < lo.prob.size(); l++) {
            r += strf("%s%.4f", l ? ", " : "", lo.ratio[l]);
            p += strf("%s%.3f", l ? ", " : "", lo.prob[l]);
        }
        env.info(strf("lisa: owlore sampling: outlier ratios [%s] over %lld tokens (threshold %g); draw probabilities "
                      "[%s]", r.c_str(), (long long)lo.tokens, threshold_, p.c_str()));
    }

    nlohmann::json state_json() const override {
        nlohmann::json j = {{"active_layers", active_}};
        if (!prob_.empty()) j["layer_probabilities"] = prob_;  // a resumed run draws as this one
        return j;
    }
    const std::vector<int>* active_layers() const override { return &active_; }

    std::vector<param_group*> restore(policy_env& env, const nlohmann::json& st, int64_t step,
                                      const std::string& ckpt) override {
        // A checkpoint at an interval boundary was written before that step's draw: the new draw
        // starts with fresh state, and the leaving layers' masters go back to bf16 exactly as the
        // switch would have done. Mid-interval, the slots' state comes from the checkpoint.
        const bool boundary = step % interval_ == 0;
        if (owlore_ != st.contains("layer_probabilities"))
            fail(strf("%s: written with --lisa_layer_sampling %s; resume with the same", ckpt.c_str(),
                      owlore_ ? "uniform" : "owlore"));
        if (st.contains("layer_probabilities")) {
            prob_ = st["layer_probabilities"].get<std::vector<double>>();
            if ((int)prob_.size() != env.num_layers())
                fail(strf("%s: trainer_state.json: layer_probabilities: expected %d values (one per layer)", ckpt.c_str(),
                          env.num_layers()));
        }
        activate(env, step / interval_, step);
        for (int l = 0; l < env.num_layers(); l++)
            if (std::find(active_.begin(), active_.end(), l) == active_.end()) env.unbind_layer(l, true);
        if (!boundary && st.value("active_layers", std::vector<int>{}) != active_)
            fail(strf("%s: checkpoint's active layers differ from the draw for step %lld (was --seed or "
                      "--lisa_interval_steps changed?)", ckpt.c_str(), (long long)step));
        std::vector<param_group*> load;
        for (auto& g : fixed_) load.push_back(&g);
        if (!boundary)
            for (auto& g : slots_) load.push_back(&g);
        return load;
    }

  private:
    // binds the slots to the layers of `interval`, with fresh (zero) state. Allocates nothing:
    // the draw and the notice use buffers sized in setup.
    void activate(policy_env& env, int64_t interval, int64_t step) {
        if (prob_.empty()) lisa_draw_layers_into(&next_, &draw_scratch_, seed_, interval, env.num_layers(), (int)gamma_);
        else lisa_draw_layers_weighted_into(&next_, &draw_scratch_, seed_, interval, prob_, (int)gamma_);
        for (int l : active_)  // leaving: bf16 models write the master back and free its pages
            env.unbind_layer(l, std::find(next_.begin(), next_.end(), l) == next_.end());
        active_.assign(next_.begin(), next_.end());
        for (size_t k = 0; k < slots_.size(); k++) {
            env.rebind_layer(&slots_[k], active_[k]);
            slots_[k].reset();
        }
        const size_t bytes = optim_state_bytes(groups());  // this rank's (a share under --zero_stage 1)
        char buf[64];
        note_.assign("lisa: step ");
        std::snprintf(buf, sizeof buf, "%lld: active layers [", (long long)step);
        note_.append(buf);
        for (size_t k = 0; k < active_.size(); k++) {
            std::snprintf(buf, sizeof buf, "%s%d", k ? ", " : "", active_[k]);
            note_.append(buf);
        }
        std::snprintf(buf, sizeof buf, "], optimizer state %.2f MiB", bytes / 1048576.0);
        note_.append(buf);
        env.info(note_);
    }

    int64_t          gamma_, interval_;
    std::vector<int> next_, draw_scratch_;  // the draw's buffers (sized in setup)
    std::string      note_;                 // the draw's notice (capacity reserved in setup)
    uint64_t         seed_;
    bool             train_emb_, train_head_, owlore_;
    double           threshold_;  // --lisa_outlier_threshold
    std::vector<int> active_;
    std::vector<double> prob_;  // per layer (owlore), or empty: uniform
};

}  // namespace

std::unique_ptr<train_policy> policy_make_lisa(const train_options& o) { return std::make_unique<lisa_policy>(o); }

void policy_validate_lisa(const train_options& o) {
    if (o.lisa_interval_steps < 1) fail("--lisa_interval_steps must be at least 1");
    layer_sampling ls;
    if (!layer_sampling_parse(o.lisa_layer_sampling, &ls))
        fail(strf("--lisa_layer_sampling %s: expected uniform or owlore", o.lisa_layer_sampling.c_str()));
    if (!(o.lisa_outlier_threshold > 0))
        fail(strf("--lisa_outlier_threshold %g: expected a number above 0", o.lisa_outlier_threshold));
}

}  // namespace lisa
