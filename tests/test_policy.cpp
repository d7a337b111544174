// Training policies as units, with no model: a stand-in policy_env records what a policy asks
// of the model (groups made, layers bound and released), so LISA's rules are checked directly.
#include <algorithm>
#include <map>
#include <set>

#include "train/layer_sampling.h"
#include "train/policy.h"
#include "test_util.h"

using namespace lisa;

namespace {

// A model of L layers of `per_layer` values each, plus an embedding, a norm and a head.
class fake_env final : public policy_env {
  public:
    explicit fake_env(int L, bool tied = false) : L_(L), tied_(tied), storage_(backend_cpu(), L * kPerLayer + 1000) {}
    static constexpr size_t kPerLayer = 10;
    int  num_layers() const override { return L_; }
    bool tied() const override { return tied_; }
    param_group embed_group(bool sparse) override {
        made.push_back(sparse ? "embed(sparse)" : "embed");
        return param_group_make(backend_cpu(), "embed", storage_.data(), {{0, 100, true}}, sparse);
    }
    param_group norm_group() override {
        made.push_back("norm");
        return param_group_make(backend_cpu(), "norm", storage_.data(), {{0, 4, false}});
    }
    param_group head_group() override {
        made.push_back("head");
        return param_group_make(backend_cpu(), "head", storage_.data(), {{0, 100, true}});
    }
    param_group layer_group(int l) override {
        made.push_back("layer");
        bound.insert(l);
        return param_group_make(backend_cpu(), strf("layer.%d", l), layer_ptr(l), {{0, kPerLayer, true}});
    }
    void rebind_layer(param_group* g, int l) override {
        g->name = strf("layer.%d", l);
        g->param = layer_ptr(l);
        bound.insert(l);
        materialised.insert(l);
    }
    void unbind_layer(int l, bool release) override {
        bound.erase(l);
        if (release) {
            materialised.erase(l);
            released[l]++;
        }
    }
    decoder_model* model() override { return nullptr; }
    decoder_grads* grads() override { return nullptr; }
    void         info(const std::string& s) override { messages.push_back(s); }
    layer_outliers measure_layer_outliers(double threshold) override {
        measured_threshold = threshold;
        layer_outliers lo;
        lo.ratio = outlier_ratio;
        lo.prob = outlier_ratio;  // already normalised in the tests
        lo.tokens = 100;
        return lo;
    }
    std::vector<double> outlier_ratio;
    double              measured_threshold = 0;

    std::vector<std::string> made, messages;
    std::set<int>            bound, materialised;
    std::map<int, int>       released;

  private:
    float* layer_ptr(int l) { return storage_.data() + 1000 + l * kPerLayer; }
    int                L_;
    bool               tied_;
    device_array<float> storage_;
};

train_options lisa_opts(int gamma, int K) {
    train_options o;
    o.method = train_method::lisa;
    o.lisa_activated_layers = gamma;
    o.lisa_interval_steps = K;
    o.seed = 11;
    return o;
}

std::set<int> active_of(train_policy& p) {
    std::set<int> s;
    for (int l : p.state_json()["active_layers"].get<std::vector<int>>()) s.insert(l);
    return s;
}

}  // namespace

TEST(policy_lisa, draws_every_K_steps_binds_exactly_gamma_layers_and_releases_leavers) {
    const int L = 8, gamma = 3, K = 4;
    train_options o = lisa_opts(gamma, K);
    fake_env env(L);
    auto p = policy_make(o);
    p->setup(env);
    // embedding (sparse: untied), norm, head, and gamma slots: the groups never change in number
    EXPECT_EQ(env.made, (std::vector<std::string>{"embed(sparse)", "norm", "head", "layer", "layer", "layer"}));
    const size_t n_groups = p->groups().size();
    size_t bytes = 0;
    for (param_group* g : p->groups()) bytes += g->state.size();
    std::set<int> prev;
    for (int64_t step = 0; step < 40; step++) {
        p->begin_step(env, step);
        std::set<int> act = active_of(*p);
        ASSERT_EQ(act.size(), (size_t)gamma);
        EXPECT_EQ(env.bound, act) << "step " << step << ": only the active layers have gradients";
        std::vector<int> draw = lisa_draw_layers(o.seed, step / K, L, gamma);
        EXPECT_EQ(act, std::set<int>(draw.begin(), draw.end())) << "step " << step;
        if (step % K != 0) {
            EXPECT_EQ(act, prev) << "no switch inside an interval";
        }
        for (int l : prev) {  // a layer that left was written back and freed
            if (!act.count(l)) {
                EXPECT_EQ(env.materialised.count(l), 0u) << "layer " << l << " left at " << step;
            }
        }
        prev = act;
        EXPECT_EQ(p->groups().size(), n_groups);
        size_t now = 0;
        for (param_group* g : p->groups()) now += g->state.size();
        EXPECT_EQ(now, bytes) << "optimizer memory is constant";
    }
}

TEST(policy_lisa, entering_layers_start_with_fresh_state) {
    train_options o = lisa_opts(2, 3);
    fake_env env(6);
    auto p = policy_make(o);
    p->setup(env);
    p->begin_step(env, 0);
    for (param_group* g : p->groups()) {  // pretend two optimizer steps happened
        g->step = 2;
        const std::vector<float> ones(g->n, 1.0f);
        device_write(*g->state.be(), g->m(), ones.data(), g->n);
    }
    p->begin_step(env, 1);  // mid-interval: state kept
    for (param_group* g : p->groups()) EXPECT_EQ(g->step, 2) << g->name;
    p->begin_step(env, 3);  // a draw: slots fresh, the embedding / norm / head keep theirs
    for (param_group* g : p->groups()) {
        const bool slot = g->name.rfind("layer.", 0) == 0;
        EXPECT_EQ(g->step, slot ? 0 : 2) << g->name;
        EXPECT_EQ(device_read(*g->state.be(), g->m(), 1)[0], slot ? 0.0f : 1.0f) << g->name;
    }
}

TEST(policy_lisa, resume_redraws_and_loads_slot_state_only_mid_interval) {
    train_options o = lisa_opts(2, 5);
    for (int64_t step : {7, 10}) {
        fake_env env(6);
        auto p = policy_make(o);
        p->setup(env);
        std::vector<int> draw = lisa_draw_layers(o.seed, step / 5, 6, 2);
        nlohmann::json st = {{"active_layers", draw}};
        auto load = p->restore(env, st, step, "ckpt");
        EXPECT_EQ(active_of(*p), std::set<int>(draw.begin(), draw.end()));
        // boundary (10): the draw for the new interval starts fresh; mid-interval (7): all state
        EXPECT_EQ(load.size(), step % 5 == 0 ? p->groups().size() - 2 : p->groups().size()) << step;
        for (int l = 0; l < 6; l++) {
            if (!std::count(draw.begin(), draw.end(), l)) {
                EXPECT_EQ(env.materialised.count(l), 0u);
            }
        }
        if (step % 5 != 0) {  // a checkpoint from another seed's draw is refused, naming it
            fake_env env2(6);
            auto q = policy_make(o);
            q->setup(env2);
            std::vector<int> other = {0, 1};
            if (other == draw) other = {4, 5};
            EXPECT_THROW(q->restore(env2, {{"active_layers", other}}, step, "ckpt"), lisa::error);
        }
    }
}

TEST(policy_lisa, frozen_embedding_and_head_and_tied_models) {
    train_options o = lisa_opts(1, 2);
    o.lisa_train_embeddings = false;
    o.lisa_train_head = false;
    fake_env env(4);
    policy_make(o)->setup(env);
    EXPECT_EQ(env.made, (std::vector<std::string>{"norm", "layer"}));
    train_options t = lisa_opts(1, 2);
    t.lisa_train_embeddings = false;
    fake_env tied(4, true);
    policy_make(t)->setup(tied);
    EXPECT_EQ(tied.made, (std::vector<std::string>{"norm", "layer"}));
    ASSERT_EQ(tied.messages.size(), 1u);  // the tied head cannot train without the embedding: said once
    EXPECT_NE(tied.messages[0].find("tied"), std::string::npos);
    train_options bad = lisa_opts(5, 2);
    fake_env small(4);
    EXPECT_THROW(policy_make(bad)->setup(small), lisa::error);
}

TEST(policy_full, trains_everything_with_a_sparse_untied_embedding) {
    train_options o;
    o.method = train_method::full;
    fake_env env(3);
    auto p = policy_make(o);
    p->setup(env);
    EXPECT_EQ(env.made, (std::vector<std::string>{"embed(sparse)", "norm", "head", "layer", "layer", "layer"}));
    EXPECT_EQ(env.bound, (std::set<int>{0, 1, 2}));
    for (int64_t s = 0; s < 5; s++) p->begin_step(env, s);  // nothing moves
    EXPECT_EQ(env.bound, (std::set<int>{0, 1, 2}));
    EXPECT_TRUE(p->state_json().empty());
}

// Outlier-weighted draws: each layer is drawn in proportion to its probability (γ = 1), the
// picks are distinct, a layer of probability 0 is never drawn while others can be, and the
// policy uses the probabilities it is given and keeps them in its state for a resume.
TEST(policy_lisa, owlore_draws_follow_the_layer_probabilities) {
    const std::vector<double> prob = {0.1, 0.2, 0.3, 0.4, 0.0};
    std::vector<int> count(5, 0);
    const int n = 20000;
    for (int k = 0; k < n; k++) {
        auto d = lisa_draw_layers_weighted(7, k, prob, 1);
        ASSERT_EQ(d.size(), 1u);
        count[d[0]]++;
    }
    for (int l = 0; l < 5; l++)  // binomial: 4 standard deviations at most ~0.014
        EXPECT_NEAR(count[l] / (double)n, prob[l], 0.015) << "layer " << l;
    EXPECT_EQ(count[4], 0);
    for (int k = 0; k < 500; k++) {
        auto d = lisa_draw_layers_weighted(7, k, prob, 3);
        ASSERT_EQ(std::set<int>(d.begin(), d.end()).size(), 3u);
        ASSERT_TRUE(std::is_sorted(d.begin(), d.end()));
        EXPECT_EQ(std::count(d.begin(), d.end(), 4), 0);
    }
    EXPECT_EQ(lisa_draw_layers_weighted(7, 3, prob, 5), (std::vector<int>{0, 1, 2, 3, 4}));  // γ = L: all
    EXPECT_EQ(lisa_draw_layers_weighted(7, 9, prob, 2), lisa_draw_layers_weighted(7, 9, prob, 2));

    train_options o = lisa_opts(1, 2);
    o.lisa_layer_sampling = "owlore";
    o.lisa_outlier_threshold = 7;
    fake_env env(5);
    env.outlier_ratio = {0, 0, 1, 0, 0};
    auto p = policy_make(o);
    p->setup(env);
    p->prepare(env);  // the measurement, once before the first step
    EXPECT_EQ(env.measured_threshold, 7);
    for (int64_t step = 0; step < 10; step++) {
        p->begin_step(env, step);
        EXPECT_EQ(active_of(*p), std::set<int>({2})) << "step " << step;
    }
    EXPECT_EQ(p->state_json()["layer_probabilities"].get<std::vector<double>>(), (std::vector<double>{0, 0, 1, 0, 0}));
    // a checkpoint of the other sampling is refused by name
    auto q = policy_make(lisa_opts(1, 2));
    fake_env env2(5);
    q->setup(env2);
    try {
        q->restore(env2, p->state_json(), 4, "ckpt");
        FAIL() << "a uniform run resumed an owlore checkpoint";
    } catch (const error& e) {
        EXPECT_NE(std::string(e.what()).find("ckpt: written with --lisa_layer_sampling owlore"), std::string::npos)
            << e.what();
    }
}
