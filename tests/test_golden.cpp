// Golden tests: logits, loss and every parameter gradient against PyTorch (tests/golden,
// written by make_golden.py from an independent PyTorch implementation).
// Tolerances (fp32 compute), relative to the largest magnitude of the reference tensor:
//   logits and loss <= 1e-4, gradients <= 1e-3.
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/fs.h"
#include "kernels/kernels.h"
#include "model/decoder.h"
#include "model/lora.h"
#include "infer/generate.h"
#include "tokenizer/tokenizer.h"
#include "train/optim.h"
#include "train/preference.h"
#include <set>
#include "test_util.h"

using namespace lisa;
using json = nlohmann::json;

struct golden_case {
    std::unique_ptr<decoder_model> model;
    std::unique_ptr<st_file>     gold;
    std::vector<int32_t>         ids, labels;
    std::vector<int64_t>         lengths;
    int64_t                      B, T, label_tokens;
};

// bf16 flavours load in half mode (matrices kept in bf16); everything that gets a gradient is
// materialised in fp32 first, except layer `keep_bf16_layer` (its backward then runs from bf16).
static golden_case load_case(const std::string& flavour, int keep_bf16_layer = -2) {
    golden_case c;
    std::string dir = lisa_test::golden_dir(flavour);
    c.model = decoder_model_load(dir + "/model");
    for (size_t i = 0; i < c.model->tensors.size(); i++)
        if (c.model->tensors[i].layer != keep_bf16_layer) decoder_materialize(c.model.get(), i, i);
    c.gold = st_open(dir + "/golden.safetensors");
    json b = json::parse(fs_read_text(dir + "/batch.json"));
    c.B = (int64_t)b["input_ids"].size();
    c.T = (int64_t)b["input_ids"][0].size();
    for (auto& row : b["input_ids"])
        for (auto& x : row) c.ids.push_back(x.get<int32_t>());
    for (auto& row : b["labels"])
        for (auto& x : row) c.labels.push_back(x.get<int32_t>());
    c.lengths = b["lengths"].get<std::vector<int64_t>>();
    c.label_tokens = b["label_tokens"].get<int64_t>();
    return c;
}

class golden : public ::testing::TestWithParam<const char*> {};

TEST_P(golden, logits_loss_and_every_gradient_match_pytorch) {
    golden_case c = load_case(GetParam());
    const decoder_model& m = *c.model;
    const int64_t V = m.cfg.vocab_size;
    decoder_acts a;
    decoder_acts_init(&a, m, c.B, c.T);
    decoder_grads gr;
    decoder_grads_init(&gr, m);
    int64_t n = 0;
    double sum = decoder_forward_backward(m, &a, &gr, c.ids.data(), c.labels.data(), 1.0f / (float)c.label_tokens, &n);
    ASSERT_EQ(n, c.label_tokens);
    double loss = sum / (double)n;
    float want_loss = lisa_test::read_f32(*c.gold, "loss")[0];
    EXPECT_NEAR(loss, want_loss, 1e-4 * std::fabs(want_loss)) << "loss";

    // logits at real (non-padding) positions
    std::vector<float> logits(c.B * c.T * V);
    decoder_logits(m, a, logits.data());
    std::vector<float> want = lisa_test::read_f32(*c.gold, "logits"), got_valid, want_valid;
    for (int64_t b = 0; b < c.B; b++)
        for (int64_t t = 0; t < c.lengths[b]; t++)
            for (int64_t v = 0; v < V; v++) {
                got_valid.push_back(logits[(b * c.T + t) * V + v]);
                want_valid.push_back(want[(b * c.T + t) * V + v]);
            }
    EXPECT_LT(lisa_test::rel_err(got_valid.data(), want_valid.data(), got_valid.size()), 1e-4) << "logits";

    for (size_t i = 0; i < m.tensors.size(); i++) {
        const auto& t = m.tensors[i];
        std::vector<float> g = lisa_test::read_f32(*c.gold, "grad." + t.name);
        ASSERT_EQ(g.size(), t.numel) << t.name;
        const float* mine = decoder_grad_of(gr, m, i);
        ASSERT_NE(mine, nullptr);
        EXPECT_LT(lisa_test::rel_err(device_read(*m.ctx.be, mine, t.numel).data(), g.data(), t.numel), 1e-3)
            << "gradient of " << t.name;
    }
}

// Frozen tensors get no weight gradient while input gradients still flow through them:
// with layer 0 frozen, the embedding gradient (which needs dX through layer 0) still matches.
TEST_P(golden, frozen_layers_compute_no_weight_gradient_but_pass_input_gradient) {
    golden_case c = load_case(GetParam(), 0);  // layer 0 stays bf16 where the model is bf16
    const decoder_model& m = *c.model;
    for (int variant = 0; variant < 2; variant++) {
        decoder_acts a;
        decoder_acts_init(&a, m, c.B, c.T);
        decoder_grads gr;
        decoder_grads_init(&gr, m);
        decoder_grads_freeze_layer(&gr, 0);
        if (variant == 1) gr.g.embed = nullptr;  // LISA with frozen embeddings: backward may stop early
        if (variant == 1 && m.cfg.tie_word_embeddings) continue;  // tied head shares the embedding
        decoder_forward_backward(m, &a, &gr, c.ids.data(), c.labels.data(), 1.0f / (float)c.label_tokens, nullptr);
        for (size_t i = 0; i < m.tensors.size(); i++) {
            const auto& t = m.tensors[i];
            bool frozen = t.layer == 0 || (variant == 1 && t.name == "model.embed_tokens.weight");
            const float* mine = decoder_grad_of(gr, m, i);
            if (frozen) {
                EXPECT_EQ(mine, nullptr) << t.name;
                // nothing was written into its slot either
                const std::vector<float> slot = gr.buf.read(t.offset, t.numel);
                for (size_t k = 0; k < t.numel; k++) ASSERT_EQ(slot[k], 0.0f) << t.name;
                continue;
            }
            std::vector<float> g = lisa_test::read_f32(*c.gold, "grad." + t.name);
            EXPECT_LT(lisa_test::rel_err(device_read(*m.ctx.be, mine, t.numel).data(), g.data(), t.numel), 1e-3)
                << "variant " << variant << ": " << t.name;
        }
    }
}

// A right-padded batch gives the same loss and gradients as each sequence computed alone.
TEST_P(golden, padded_batch_equals_each_sequence_alone) {
    golden_case c = load_case(GetParam());
    const decoder_model& m = *c.model;
    const float scale = 1.0f / (float)c.label_tokens;
    decoder_acts a;
    decoder_acts_init(&a, m, c.B, c.T);
    decoder_grads batched;
    decoder_grads_init(&batched, m);
    double lb = decoder_forward_backward(m, &a, &batched, c.ids.data(), c.labels.data(), scale, nullptr);
    decoder_grads alone;
    decoder_grads_init(&alone, m);
    double la = 0;
    for (int64_t b = 0; b < c.B; b++) {
        int64_t L = c.lengths[b];
        decoder_acts a1;
        decoder_acts_init(&a1, m, 1, L);
        la += decoder_forward_backward(m, &a1, &alone, c.ids.data() + b * c.T, c.labels.data() + b * c.T, scale, nullptr);
    }
    EXPECT_NEAR(lb, la, 1e-5 * std::fabs(la));
    EXPECT_LT(lisa_test::rel_err(batched.buf.host_copy().data(), alone.buf.host_copy().data(), alone.buf.size()), 1e-5);
}

// Padding-free (issue #27): the batch's sequences end to end in one row, positions restarting at
// each, attention confined to each: the logits, the loss and every gradient are PyTorch's (as the
// padded batch's are) and the padded batch's to float rounding, with checkpointing too. For each
// flavour: windows, soft caps, NoPE layers, longrope (chosen by the longest sample, as HF does).
struct packed_row {
    std::vector<int32_t> ids, labels, pos;
    std::vector<int64_t> start;  // where each sequence begins in the row
};
static packed_row pack_case(const golden_case& c) {
    packed_row r;
    for (int64_t b = 0; b < c.B; b++) {
        r.start.push_back((int64_t)r.ids.size());
        for (int64_t t = 0; t < c.lengths[b]; t++) {
            r.ids.push_back(c.ids[b * c.T + t]);
            r.labels.push_back(c.labels[b * c.T + t]);
            r.pos.push_back((int32_t)t);
        }
    }
    return r;
}

TEST_P(golden, padding_free_row_matches_pytorch_and_the_padded_batch) {
    golden_case c = load_case(GetParam());
    const decoder_model& m = *c.model;
    const int64_t V = m.cfg.vocab_size;
    const float scale = 1.0f / (float)c.label_tokens;
    decoder_acts a;
    decoder_acts_init(&a, m, c.B, c.T);
    decoder_grads padded;
    decoder_grads_init(&padded, m);
    const double lp = decoder_forward_backward(m, &a, &padded, c.ids.data(), c.labels.data(), scale, nullptr);
    const packed_row r = pack_case(c);
    const int64_t N = (int64_t)r.ids.size();
    const std::vector<float> want_logits = lisa_test::read_f32(*c.gold, "logits");
    const float want_loss = lisa_test::read_f32(*c.gold, "loss")[0];
    for (bool ckpt : {false, true}) {
        decoder_acts pa;
        decoder_acts_init(&pa, m, 1, N, ckpt);
        decoder_acts_shape(&pa, m, 1, N, r.pos.data());
        decoder_grads gr;
        decoder_grads_init(&gr, m);
        int64_t n = 0;
        const double sum = decoder_forward_backward(m, &pa, &gr, r.ids.data(), r.labels.data(), scale, &n);
        ASSERT_EQ(n, c.label_tokens) << "a token was trained to predict the next sequence's first";
        EXPECT_NEAR(sum / (double)n, want_loss, 1e-4 * std::fabs(want_loss)) << "loss, checkpointing " << ckpt;
        EXPECT_NEAR(sum, lp, 1e-5 * std::fabs(lp)) << "loss against the padded batch";
        std::vector<float> logits(N * V), got, want;
        decoder_logits(m, pa, logits.data());
        for (int64_t b = 0; b < c.B; b++)
            for (int64_t t = 0; t < c.lengths[b]; t++)
                for (int64_t v = 0; v < V; v++) {
                    got.push_back(logits[(r.start[b] + t) * V + v]);
                    want.push_back(want_logits[(b * c.T + t) * V + v]);
                }
        EXPECT_LT(lisa_test::rel_err(got.data(), want.data(), got.size()), 1e-4) << "logits";
        for (size_t i = 0; i < m.tensors.size(); i++) {
            const auto& t = m.tensors[i];
            const std::vector<float> g = lisa_test::read_f32(*c.gold, "grad." + t.name);
            const float* mine = decoder_grad_of(gr, m, i);
            ASSERT_NE(mine, nullptr);
            const std::vector<float> got_g = device_read(*m.ctx.be, mine, t.numel),
                                     padded_g = device_read(*m.ctx.be, (const float*)decoder_grad_of(padded, m, i), t.numel);
            EXPECT_LT(lisa_test::rel_err(got_g.data(), g.data(), t.numel), 1e-3) << "gradient of " << t.name;
            EXPECT_LT(lisa_test::rel_err(got_g.data(), padded_g.data(), t.numel), 1e-5)
                << "gradient of " << t.name << " against the padded batch, checkpointing " << ckpt;
        }
    }
    // the batch twice in one row (64 tokens, past phi3_short's 32-token original context): each
    // sequence still sees only itself, and RoPE's factors follow the longest sequence (14), not the
    // row: the same loss
    packed_row twice = r;
    for (size_t i = 0; i < r.ids.size(); i++) {
        twice.ids.push_back(r.ids[i]);
        twice.labels.push_back(r.labels[i]);
        twice.pos.push_back(r.pos[i]);
    }
    decoder_acts ta;
    decoder_acts_init(&ta, m, 1, 2 * N);
    decoder_acts_shape(&ta, m, 1, 2 * N, twice.pos.data());
    int64_t n2 = 0;
    const double sum2 = decoder_forward_backward(m, &ta, nullptr, twice.ids.data(), twice.labels.data(), 0.0f, &n2);
    ASSERT_EQ(n2, 2 * c.label_tokens);
    EXPECT_NEAR(sum2 / (double)n2, want_loss, 1e-4 * std::fabs(want_loss)) << "the batch twice in one row";
}

// Gradient checkpointing recomputes each layer's activations from its input: the same
// computation again, so every gradient is bit-identical (with LoRA and dropout too).
TEST_P(golden, gradient_checkpointing_gives_identical_gradients) {
    golden_case c = load_case(GetParam());
    decoder_model& m = *c.model;
    std::vector<float> plain;
    for (bool ckpt : {false, true}) {
        decoder_acts a;
        decoder_acts_init(&a, m, c.B, c.T, ckpt);
        EXPECT_EQ(a.layers.size(), ckpt ? 1u : (size_t)m.cfg.num_layers);
        decoder_grads gr;
        decoder_grads_init(&gr, m);
        double loss = decoder_forward_backward(m, &a, &gr, c.ids.data(), c.labels.data(), 0.1f, nullptr);
        (void)loss;
        if (!ckpt) plain = gr.buf.host_copy();
        else ASSERT_EQ(std::memcmp(plain.data(), gr.buf.host_copy().data(), plain.size() * 4), 0);
    }
}

TEST_P(golden, same_inputs_same_threads_give_bit_identical_gradients) {
    golden_case c = load_case(GetParam());
    const decoder_model& m = *c.model;
    std::vector<float> first;
    for (int run = 0; run < 2; run++) {
        decoder_acts a;
        decoder_acts_init(&a, m, c.B, c.T);
        decoder_grads gr;
        decoder_grads_init(&gr, m);
        decoder_forward_backward(m, &a, &gr, c.ids.data(), c.labels.data(), 0.1f, nullptr);
        if (run == 0) first = gr.buf.host_copy();
        else ASSERT_EQ(std::memcmp(first.data(), gr.buf.host_copy().data(), first.size() * 4), 0);
    }
}

// KV-cached decoding (the prompt in one chunk, then token by token, windowed layers reading only
// their window of the cache) gives the logits the full forward gives at every position.
TEST_P(golden, kv_cached_decoding_matches_the_full_forward) {
    golden_case c = load_case(GetParam());
    const decoder_model& m = *c.model;
    const int64_t V = m.cfg.vocab_size, L = c.lengths[0];
    std::vector<float> want = lisa_test::read_f32(*c.gold, "logits");  // PyTorch's, sequence 0
    decoder_kv_cache kv;
    decoder_kv_cache_init(&kv, m, L);
    std::vector<float> last(V);
    const int64_t prompt = 3;
    decoder_decode(m, &kv, c.ids.data(), prompt, last.data());
    EXPECT_LT(lisa_test::rel_err(last.data(), want.data() + (prompt - 1) * V, V), 1e-4) << "after the prompt";
    for (int64_t t = prompt; t < L; t++) {
        decoder_decode(m, &kv, c.ids.data() + t, 1, last.data());
        EXPECT_LT(lisa_test::rel_err(last.data(), want.data() + t * V, V), 1e-4) << "position " << t;
    }
    EXPECT_THROW(decoder_decode(m, &kv, c.ids.data(), 1, last.data()), lisa::error);  // the cache is full
}

INSTANTIATE_TEST_SUITE_P(flavours, golden,
                         ::testing::Values("llama2", "llama3", "qwen2", "mistral_window", "qwen3", "gemma3",
                                           "smollm3", "phi3", "phi3_short"));

// A bf16 model computes from its bf16 matrices tile by tile: the values are exactly the stored
// ones, so logits and loss match PyTorch as in fp32, with no fp32 copy of any matrix.
TEST(golden_io, bf16_model_in_half_mode_matches_pytorch_without_fp32_matrices) {
    std::string dir = lisa_test::golden_dir("llama3");
    auto m = decoder_model_load(dir + "/model");
    ASSERT_TRUE(m->half);
    EXPECT_EQ(m->w.layers[0][LT_Q], nullptr);
    EXPECT_TRUE(m->w16.layers[0][LT_Q].p != nullptr && m->w16.layers[0][LT_Q].is_bf16());
    auto gold = st_open(dir + "/golden.safetensors");
    json b = json::parse(fs_read_text(dir + "/batch.json"));
    std::vector<int32_t> ids, labels;
    for (auto& row : b["input_ids"])
        for (auto& x : row) ids.push_back(x.get<int32_t>());
    for (auto& row : b["labels"])
        for (auto& x : row) labels.push_back(x.get<int32_t>());
    decoder_acts a;
    decoder_acts_init(&a, *m, (int64_t)b["input_ids"].size(), (int64_t)b["input_ids"][0].size());
    int64_t n = 0;
    double loss = decoder_forward_backward(*m, &a, nullptr, ids.data(), labels.data(), 0.0f, &n) / (double)n;
    float want = lisa_test::read_f32(*gold, "loss")[0];
    EXPECT_NEAR(loss, want, 1e-4 * want);
    // materialise and write back: values survive the round trip bit for bit
    std::vector<float> before = decoder_tensor_values(*m, 3);
    decoder_materialize(m.get(), 0, m->tensors.size() - 1);
    decoder_dematerialize(m.get(), 0, m->tensors.size() - 1);
    EXPECT_EQ(decoder_tensor_values(*m, 3), before);
}

TEST(golden_io, flavours_load_with_their_stored_dtypes) {
    EXPECT_EQ(decoder_model_load(lisa_test::golden_dir("llama2") + "/model")->stored_dtype, dtype::f32);
    EXPECT_EQ(decoder_model_load(lisa_test::golden_dir("llama3") + "/model")->stored_dtype, dtype::bf16);
    auto q = decoder_model_load(lisa_test::golden_dir("qwen2") + "/model");  // two shards + index
    EXPECT_EQ(q->stored_dtype, dtype::f16);
    EXPECT_TRUE(q->cfg.tie_word_embeddings);
    EXPECT_EQ(q->w.lm_head, q->w.embed);
    auto g = decoder_model_load(lisa_test::golden_dir("gemma3") + "/model");  // bf16: half mode
    EXPECT_TRUE(g->half);
    EXPECT_EQ(g->cfg.model_type, "gemma3_text");
    EXPECT_EQ(g->w16.lm_head.p, g->w16.embed.p);
}

// The real trained model: greedy decoding from BOS gives PyTorch's tokens and text.
TEST(aidreams, greedy_decoding_matches_pytorch) {
    std::string assets = lisa_test::assets_dir();
    if (assets.empty()) GTEST_SKIP() << "../shared/assets not found (set LISA_ASSETS): aidreams-260k not checked";
    std::string dir = assets + "/models/aidreams-260k";
    auto m = decoder_model_load(dir);
    json want = json::parse(fs_read_text(lisa_test::golden_dir("") + "/aidreams_greedy.json"));
    std::vector<int32_t> ids = want["prompt_ids"].get<std::vector<int32_t>>();
    std::vector<int32_t> expect = want["generated_ids"].get<std::vector<int32_t>>();
    const int64_t V = m->cfg.vocab_size;
    for (size_t step = 0; step < expect.size(); step++) {
        decoder_acts a;
        decoder_acts_init(&a, *m, 1, (int64_t)ids.size());
        decoder_forward(*m, &a, ids.data());
        std::vector<float> logits(ids.size() * V);
        decoder_logits(*m, a, logits.data());
        const float* last = logits.data() + (ids.size() - 1) * V;
        ids.push_back((int32_t)(std::max_element(last, last + V) - last));
    }
    std::vector<int32_t> got(ids.begin() + 1, ids.end());
    EXPECT_EQ(got, expect);
    // decode with the model's own vocabulary (SentencePiece pieces: ▁ is a space, <0xNN> a byte)
    json tok = json::parse(fs_read_text(dir + "/tokenizer.json"));
    std::vector<std::string> vocab(V);
    for (auto it = tok["model"]["vocab"].begin(); it != tok["model"]["vocab"].end(); ++it)
        vocab[it.value().get<int>()] = it.key();
    std::string text;
    for (int32_t id : got) {
        const std::string& p = vocab[id];
        if (p.size() == 6 && p.rfind("<0x", 0) == 0) text += (char)std::stoi(p.substr(3, 2), nullptr, 16);
        else
            for (size_t i = 0; i < p.size(); i++) {
                if (p.compare(i, 3, "\xe2\x96\x81") == 0) {
                    text += ' ';
                    i += 2;
                } else text += p[i];
            }
    }
    if (!text.empty() && text[0] == ' ') text.erase(0, 1);
    EXPECT_EQ(text, want["text"].get<std::string>());
    EXPECT_NE(text.find("Echoes of vectors unfold"), std::string::npos) << text;
}

// LoRA computed unmerged: loss and the gradients of every A and B against PyTorch, with the
// base frozen (input gradients flow through frozen weights into the adapters below).
struct lora_fixture {
    std::vector<device_array<float>> store;  // A, B and their gradients, on the model's device
    decoder_grads                      gr;
};

static void attach_lora(decoder_model* m, lora_fixture* fx, const st_file* gold, float scale, float dropout) {
    m->lora.r = 2;
    m->lora.scale = scale;
    m->lora.dropout = dropout;
    m->lora.layers.assign(m->cfg.num_layers, decoder_lora_layer{});
    fx->gr.g = decoder_weights{};
    fx->gr.g.layers.assign(m->cfg.num_layers, decoder_layer_weights{});
    fx->gr.lora.assign(m->cfg.num_layers, decoder_lora_layer{});
    fx->store.reserve(4 * LORA_N * m->cfg.num_layers);
    for (int l = 0; l < (int)m->cfg.num_layers; l++)
        for (int t = 0; t < LORA_N; t++) {
            if (!lora_target_present(m->cfg, t)) continue;
            std::string mod = lora_module_name(l, t);
            const backend& be = *m->ctx.be;
            fx->store.emplace_back().assign(be, lisa_test::read_f32(*gold, "lora." + mod + ".A"));
            m->lora.layers[l].A[t] = fx->store.back().data();
            fx->store.emplace_back().assign(be, lisa_test::read_f32(*gold, "lora." + mod + ".B"));
            m->lora.layers[l].B[t] = fx->store.back().data();
            fx->store.emplace_back(be, fx->store[fx->store.size() - 2].size());
            fx->gr.lora[l].A[t] = fx->store.back().data();
            fx->store.emplace_back(be, fx->store[fx->store.size() - 2].size());
            fx->gr.lora[l].B[t] = fx->store.back().data();
        }
}

// every adapter gradient against PyTorch's, 1e-3 relative
static void expect_lora_gradients_match(const decoder_model& m, const lora_fixture& fx, const golden_case& c) {
    for (int l = 0; l < (int)m.cfg.num_layers; l++)
        for (int t = 0; t < LORA_N; t++) {
            if (!lora_target_present(m.cfg, t)) continue;
            std::string mod = lora_module_name(l, t);
            for (const char* ab : {"A", "B"}) {
                std::vector<float> g = lisa_test::read_f32(*c.gold, "lora.grad." + mod + "." + ab);
                const float* mine = ab[0] == 'A' ? fx.gr.lora[l].A[t] : fx.gr.lora[l].B[t];
                const std::vector<float> got = device_read(*m.ctx.be, mine, g.size());
                EXPECT_LT(lisa_test::rel_err(got.data(), g.data(), g.size()), 1e-3) << mod << "." << ab;
            }
        }
}

class golden_lora_flavour : public ::testing::TestWithParam<const char*> {};

TEST_P(golden_lora_flavour, loss_and_adapter_gradients_match_pytorch) {
    golden_case c = load_case(GetParam());
    decoder_model& m = *c.model;
    lora_fixture fx;
    attach_lora(&m, &fx, c.gold.get(), 1.5f, 0.0f);
    decoder_acts a;
    decoder_acts_init(&a, m, c.B, c.T);
    double sum = decoder_forward_backward(m, &a, &fx.gr, c.ids.data(), c.labels.data(), 1.0f / (float)c.label_tokens, nullptr);
    float want = lisa_test::read_f32(*c.gold, "lora.loss")[0];
    EXPECT_NEAR(sum / c.label_tokens, want, 1e-4 * want);
    expect_lora_gradients_match(m, fx, c);
}

// The adapters' gradients from a padding-free row equal PyTorch's too.
TEST_P(golden_lora_flavour, padding_free_adapter_gradients_match_pytorch) {
    golden_case c = load_case(GetParam());
    decoder_model& m = *c.model;
    lora_fixture fx;
    attach_lora(&m, &fx, c.gold.get(), 1.5f, 0.0f);
    const packed_row r = pack_case(c);
    decoder_acts a;
    decoder_acts_init(&a, m, 1, (int64_t)r.ids.size());
    decoder_acts_shape(&a, m, 1, (int64_t)r.ids.size(), r.pos.data());
    double sum = decoder_forward_backward(m, &a, &fx.gr, r.ids.data(), r.labels.data(), 1.0f / (float)c.label_tokens, nullptr);
    float want = lisa_test::read_f32(*c.gold, "lora.loss")[0];
    EXPECT_NEAR(sum / c.label_tokens, want, 1e-4 * want);
    expect_lora_gradients_match(m, fx, c);
}

INSTANTIATE_TEST_SUITE_P(flavours, golden_lora_flavour,
                         ::testing::Values("llama2", "llama3", "qwen2", "mistral_window", "qwen3", "gemma3",
                                           "smollm3", "phi3", "phi3_short"));

// With dropout the mask is regenerated from a seed, so the loss is a deterministic function of
// A and B: central finite differences check the dropout backward (fp32 forward, eps 1e-2,
// tolerance 2e-2 relative over the sampled entries).
TEST(golden_lora, dropout_backward_matches_finite_differences) {
    golden_case c = load_case("llama2");
    decoder_model& m = *c.model;
    lora_fixture fx;
    attach_lora(&m, &fx, c.gold.get(), 1.5f, 0.3f);
    m.lora.dropout_seed = 1234;
    decoder_acts a;
    decoder_acts_init(&a, m, c.B, c.T);
    // the training loss (dropout on): a forward that a backward follows, here one with nothing to
    // compute (no gradient buffers); a loss-only call is evaluation and never drops
    decoder_grads none;
    none.g.layers.assign(m.cfg.num_layers, decoder_layer_weights{});
    auto loss = [&] {
        return decoder_forward_backward(m, &a, &none, c.ids.data(), c.labels.data(), 0.0f, nullptr) / c.label_tokens;
    };
    const double eval_with_dropout = decoder_forward_backward(m, &a, nullptr, c.ids.data(), c.labels.data(), 0.0f, nullptr);
    m.lora.dropout = 0.0f;
    const double eval_without = decoder_forward_backward(m, &a, nullptr, c.ids.data(), c.labels.data(), 0.0f, nullptr);
    m.lora.dropout = 0.3f;
    EXPECT_EQ(eval_with_dropout, eval_without) << "evaluation applied dropout";
    EXPECT_NE(loss() * c.label_tokens, eval_without) << "training did not apply dropout";
    decoder_forward_backward(m, &a, &fx.gr, c.ids.data(), c.labels.data(), 1.0f / (float)c.label_tokens, nullptr);
    std::vector<float> analytic, numeric;
    for (int t : {LORA_Q, LORA_DOWN})
        for (int which = 0; which < 2; which++) {
            float* p = which ? m.lora.layers[1].B[t] : m.lora.layers[1].A[t];
            const float* g = which ? fx.gr.lora[1].B[t] : fx.gr.lora[1].A[t];
            const backend& be = *m.ctx.be;
            for (int k = 0; k < 6; k++) {
                int i = k * 7 + which;
                float old = device_read(be, p + i, 1)[0], moved[2] = {old + 1e-2f, old - 1e-2f};
                device_write(be, p + i, &moved[0], 1);
                double lp = loss();
                device_write(be, p + i, &moved[1], 1);
                double lm = loss();
                device_write(be, p + i, &old, 1);
                numeric.push_back((float)((lp - lm) / 2e-2));
                analytic.push_back(device_read(be, g + i, 1)[0]);
            }
        }
    EXPECT_LT(lisa_test::rel_err(analytic.data(), numeric.data(), numeric.size()), 2e-2);
    // and with checkpointing the adapter gradients are the same, bit for bit
    lora_fixture fx2;
    attach_lora(&m, &fx2, c.gold.get(), 1.5f, 0.3f);
    m.lora.dropout_seed = 1234;
    decoder_acts ac;
    decoder_acts_init(&ac, m, c.B, c.T, true);
    decoder_forward_backward(m, &ac, &fx2.gr, c.ids.data(), c.labels.data(), 1.0f / (float)c.label_tokens, nullptr);
    lora_fixture fx3;
    attach_lora(&m, &fx3, c.gold.get(), 1.5f, 0.3f);
    decoder_acts_init(&a, m, c.B, c.T, false);
    decoder_forward_backward(m, &a, &fx3.gr, c.ids.data(), c.labels.data(), 1.0f / (float)c.label_tokens, nullptr);
    for (size_t k = 0; k < fx2.store.size(); k++) ASSERT_EQ(fx2.store[k], fx3.store[k]) << k;
}

// An untied embedding's gradient kept for the touched rows only equals PyTorch's dense one
// (whose other rows are zero), and AdamW over the rows equals AdamW over the dense gradient.
TEST(golden_sparse_embedding, rows_match_pytorch_and_adamw_matches_dense) {
    golden_case c = load_case("llama2");
    const decoder_model& m = *c.model;
    decoder_acts a;
    decoder_acts_init(&a, m, c.B, c.T);
    decoder_grads gr;
    decoder_grads_init(&gr, m);
    decoder_embed_rows rows;
    rows.init(*m.ctx.be, m.cfg.vocab_size, m.cfg.hidden_size, c.B * c.T);
    gr.g.embed = nullptr;
    gr.embed_rows = &rows;
    decoder_forward_backward(m, &a, &gr, c.ids.data(), c.labels.data(), 1.0f / (float)c.label_tokens, nullptr);
    const int64_t V = m.cfg.vocab_size, D = m.cfg.hidden_size;
    std::vector<float> want = lisa_test::read_f32(*c.gold, "grad.model.embed_tokens.weight");
    std::vector<float> dense(V * D, 0.0f);
    const std::vector<float> grad_rows = rows.grad.host_copy();
    for (size_t k = 0; k < rows.rows.size(); k++)
        std::copy(grad_rows.begin() + k * D, grad_rows.begin() + (k + 1) * D, dense.begin() + rows.rows[k] * D);
    EXPECT_LT(lisa_test::rel_err(dense.data(), want.data(), dense.size()), 1e-3);
    std::set<int32_t> uniq(c.ids.begin(), c.ids.end());
    EXPECT_EQ(rows.rows.size(), uniq.size());
    // AdamW: rows form vs dense form, two steps, bit for bit
    adamw_hparams h;
    h.lr = 1e-2;
    h.weight_decay = 0.1;
    const backend& be = *m.ctx.be;
    device_array<float> p1, m1(be, V * D), v1(be, V * D), g1;
    p1.assign(be, std::vector<float>(V * D, 0.5f));
    g1.assign(be, dense);
    device_array<float> p2 = p1, m2 = m1, v2 = v1;
    rows.sync();
    for (int step = 1; step <= 2; step++) {
        be.adamw_update(p1.data(), g1.data(), m1.data(), v1.data(), V * D, h, step, true, 0.7f);
        be.adamw_update_rows(p2.data(), rows.grad.data(), rows.row_of_dev.data(), m2.data(), v2.data(), V, D, h, step, true, 0.7f);
    }
    EXPECT_EQ(p1.host_copy(), p2.host_copy());
    EXPECT_EQ(m1.host_copy(), m2.host_copy());
    rows.clear();
    EXPECT_TRUE(rows.rows.empty());
    EXPECT_EQ(std::count(rows.row_of.begin(), rows.row_of.end(), -1), V);
}

// The real TinyStories-656K, exactly as Hugging Face saved it: its tied embedding is stored once,
// as lm_head.weight (the file's metadata names model.embed_tokens.weight as its alias). It loads,
// its tokenizer gives the Hugging Face library's ids, `lisa eval` gives PyTorch's loss and greedy
// decoding PyTorch's tokens and the library's decoded text (tests/golden/make_tinystories.py).
TEST(tinystories, loads_tokenizes_evaluates_and_generates_as_pytorch) {
    std::string assets = lisa_test::assets_dir();
    if (assets.empty()) GTEST_SKIP() << "../shared/assets not found (set LISA_ASSETS): tinystories-656k not checked";
    const std::string dir = assets + "/models/tinystories-656k";
    const json gold = json::parse(fs_read_text(lisa_test::golden_dir("") + "/tinystories.json"));
    auto m = decoder_model_load(dir);
    EXPECT_TRUE(m->cfg.tie_word_embeddings);
    auto tok = tokenizer_load(dir);
    lisa_test::temp_dir td;
    json inst = json::array();
    for (const auto& t : gold["texts"]) {
        EXPECT_EQ(tokenizer_encode(*tok, t["text"], true), t["ids"].get<std::vector<int32_t>>()) << t["text"];
        inst.push_back({{"text", t["text"]}});
    }
    lisa_test::write_file(td.path + "/stories.json", json({{"type", "text_only"}, {"instances", inst}}).dump());
    // a dataset given as a file, not a folder
    auto r = lisa_test::run_lisa("eval --model_name_or_path " + dir + " --dataset_path " + td.path + "/stories.json");
    ASSERT_EQ(r.code, 0) << r.output;
    const json ev = json::parse(r.output.substr(r.output.rfind("{")));
    const double want = gold["text_only_loss"];
    EXPECT_NEAR(ev["loss"].get<double>(), want, 1e-4 * want) << r.output;
    // greedy from the prompt: PyTorch's ids, and the text the Hugging Face library decodes
    std::vector<int32_t> prompt = gold["greedy"]["prompt_ids"].get<std::vector<int32_t>>();
    generate_options go;
    go.max_new_tokens = 40;
    EXPECT_EQ(generate(*m, prompt, go, [](int32_t) {}), gold["greedy"]["generated_ids"].get<std::vector<int32_t>>());
    r = lisa_test::run_lisa("generate --model_name_or_path " + dir + " --prompt '" +
                            gold["greedy"]["prompt"].get<std::string>() + "' --max_new_tokens 40");
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find(gold["greedy"]["text"].get<std::string>()), std::string::npos) << r.output;
}

// LISA, LoRA and full fine-tuning of the real checkpoint: each lowers the loss on its data, and
// what it writes loads back (a full model with the embedding under its own name; an adapter).
TEST(tinystories, lisa_lora_and_full_fine_tunes_train_and_load) {
    std::string assets = lisa_test::assets_dir();
    if (assets.empty()) GTEST_SKIP() << "../shared/assets not found (set LISA_ASSETS): tinystories-656k not checked";
    const std::string dir = assets + "/models/tinystories-656k";
    const json gold = json::parse(fs_read_text(lisa_test::golden_dir("") + "/tinystories.json"));
    lisa_test::temp_dir td;
    json inst = json::array();
    for (const auto& t : gold["texts"]) inst.push_back({{"text", t["text"]}});
    lisa_test::write_file(td.path + "/stories.jsonl", inst[0].dump() + "\n" + inst[1].dump() + "\n" + inst[2].dump() + "\n");
    const double before = gold["text_only_loss"];
    for (const char* method : {"lisa", "lora", "full"}) {
        const std::string out = td.path + "/" + method;
        auto r = lisa_test::run_lisa("train --model_name_or_path " + dir + " --dataset_path " + td.path +
                                     "/stories.jsonl --output_model_path " + out + " --method " + method +
                                     " --lisa_activated_layers 1 --max_steps 10 --learning_rate " +
                                     (std::string(method) == "lora" ? "1e-2" : "3e-3") + " --per_device_train_batch_size 3");
        ASSERT_EQ(r.code, 0) << method << ": " << r.output;
        const std::string model = std::string(method) == "lora" ? dir + " --lora_model_path " + out : out;
        r = lisa_test::run_lisa("eval --model_name_or_path " + model + " --dataset_path " + td.path + "/stories.jsonl");
        ASSERT_EQ(r.code, 0) << method << ": " << r.output;
        const double after = json::parse(r.output.substr(r.output.rfind("{")))["loss"];
        EXPECT_LT(after, 0.9 * before) << method << ": 10 steps on three stories must lower their loss";
    }
}

// ------------------------------------------------------------------ preference objectives (issue #30)
// DPO (sigmoid, label-smoothed, hinge, IPO) and ORPO on pairs of replies to shared prompts,
// against PyTorch's autograd of the published formulas (make_golden.py make_preference): the
// loss, TRL's metrics, every gradient of full fine-tuning, and LoRA's adapter gradients.
// Chosen and rejected replies differ in length; each pair's rows are right-padded.
struct pref_case {
    std::vector<int32_t>      ids, labels;
    int64_t                   B = 0, T = 0;
    std::vector<pref_pair>    pairs;  // lengths and reference sums (the policy's filled in per run)
    json                      meta;
};

static pref_case load_pref_case() {
    pref_case c;
    c.meta = json::parse(fs_read_text(lisa_test::golden_dir("preference") + "/pairs.json"));
    std::vector<std::vector<int32_t>> rows, labs;
    for (size_t i = 0; i < c.meta["pairs"].size(); i++) {
        const json& p = c.meta["pairs"][i];
        const auto prompt = p["prompt"].get<std::vector<int32_t>>();
        pref_pair pp;
        for (const char* k : {"chosen", "rejected"}) {
            const auto reply = p[k].get<std::vector<int32_t>>();
            std::vector<int32_t> ids = prompt, lab(prompt.size(), -100);
            ids.insert(ids.end(), reply.begin(), reply.end());
            lab.insert(lab.end(), reply.begin(), reply.end());
            rows.push_back(ids);
            labs.push_back(lab);
            (k[0] == 'c' ? pp.len_chosen : pp.len_rejected) = (int64_t)reply.size();
        }
        pp.ref_chosen = c.meta["ref_chosen"][i].get<double>();
        pp.ref_rejected = c.meta["ref_rejected"][i].get<double>();
        c.pairs.push_back(pp);
    }
    c.B = (int64_t)rows.size();
    for (const auto& r : rows) c.T = std::max(c.T, (int64_t)r.size());
    for (int64_t b = 0; b < c.B; b++) {
        rows[b].resize(c.T, 0);
        labs[b].resize(c.T, -100);
        c.ids.insert(c.ids.end(), rows[b].begin(), rows[b].end());
        c.labels.insert(c.labels.end(), labs[b].begin(), labs[b].end());
    }
    return c;
}

// one step of the objective: the loss and metrics; gradients accumulated into gr
static pref_result pref_step(const decoder_model& m, const pref_case& c, const pref_options& o, decoder_grads* gr) {
    decoder_acts a;
    decoder_acts_init(&a, m, c.B, c.T);
    std::vector<decoder_span> spans;
    for (int64_t b = 0; b < c.B; b++) spans.push_back({b * c.T, c.T});
    std::vector<double> logp(spans.size());
    decoder_span_logps(m, &a, c.ids.data(), c.labels.data(), spans.data(), spans.size(), true, logp.data());
    std::vector<pref_pair> pairs = c.pairs;
    for (size_t i = 0; i < pairs.size(); i++) pairs[i].logp_chosen = logp[2 * i], pairs[i].logp_rejected = logp[2 * i + 1];
    pref_result r = pref_batch(o, pairs);
    std::vector<double> w(spans.size());
    for (size_t i = 0; i < pairs.size(); i++) w[2 * i] = r.dlogp_chosen[i], w[2 * i + 1] = r.dlogp_rejected[i];
    decoder_span_backward(m, &a, gr, c.ids.data(), spans.data(), spans.size(), w.data());
    return r;
}

class golden_preference : public ::testing::TestWithParam<const char*> {};

TEST_P(golden_preference, loss_metrics_and_every_gradient_match_pytorch) {
    const std::string name = GetParam();
    const pref_case c = load_pref_case();
    const json& v = c.meta["variants"][name];
    pref_options o;
    o.objective = pref_objective_parse(v["objective"].get<std::string>());
    o.loss_type = pref_loss_type_parse(v["loss_type"].get<std::string>());
    o.beta = v["beta"].get<double>();
    o.label_smoothing = v["label_smoothing"].get<double>();
    auto gold = st_open(lisa_test::golden_dir("preference") + "/golden.safetensors");
    // full fine-tuning: every parameter's gradient
    auto m = decoder_model_load(lisa_test::golden_dir("llama2") + "/model");
    decoder_grads gr;
    decoder_grads_init(&gr, *m);
    const pref_result r = pref_step(*m, c, o, &gr);
    const float want = lisa_test::read_f32(*gold, name + ".loss")[0];
    EXPECT_NEAR(r.loss, want, 1e-4 * std::fabs(want)) << name << " loss";
    for (const char* k : {"rewards_chosen", "rewards_rejected", "rewards_margin", "logps_chosen", "logps_rejected"}) {
        const double got = std::string(k) == "rewards_chosen"     ? r.rewards_chosen
                           : std::string(k) == "rewards_rejected" ? r.rewards_rejected
                           : std::string(k) == "rewards_margin"   ? r.rewards_margin
                           : std::string(k) == "logps_chosen"     ? r.logps_chosen
                                                                  : r.logps_rejected;
        EXPECT_NEAR(got, v[k].get<double>(), 1e-4 * std::max(1.0, std::fabs(v[k].get<double>()))) << name << " " << k;
    }
    EXPECT_EQ(r.rewards_accuracy, v["rewards_accuracy"].get<double>()) << name;
    for (size_t i = 0; i < m->tensors.size(); i++) {
        const auto& t = m->tensors[i];
        const std::vector<float> g = lisa_test::read_f32(*gold, name + ".grad." + t.name);
        const float* mine = decoder_grad_of(gr, *m, i);
        ASSERT_NE(mine, nullptr);
        EXPECT_LT(lisa_test::rel_err(device_read(*m->ctx.be, mine, t.numel).data(), g.data(), t.numel), 1e-3)
            << name << ": gradient of " << t.name;
    }
    if (name != "dpo_sigmoid" && name != "orpo") return;
    // LoRA (r 2, scale 1.5, every Linear): the adapters' gradients, the base frozen
    auto ml = decoder_model_load(lisa_test::golden_dir("llama2") + "/model");
    lora_fixture fx;
    attach_lora(ml.get(), &fx, gold.get(), 1.5f, 0.0f);
    const pref_result rl = pref_step(*ml, c, o, &fx.gr);
    const float want_l = lisa_test::read_f32(*gold, name + ".lora.loss")[0];
    EXPECT_NEAR(rl.loss, want_l, 1e-4 * std::fabs(want_l)) << name << " LoRA loss";
    for (int l = 0; l < (int)ml->cfg.num_layers; l++)
        for (int t = 0; t < LORA_N; t++) {
            if (!lora_target_present(ml->cfg, t)) continue;
            const std::string mod = lora_module_name(l, t);
            for (const char* ab : {"A", "B"}) {
                const std::vector<float> g = lisa_test::read_f32(*gold, name + ".lora.grad." + mod + "." + ab);
                const float* mine = ab[0] == 'A' ? fx.gr.lora[l].A[t] : fx.gr.lora[l].B[t];
                const std::vector<float> got = device_read(*ml->ctx.be, mine, g.size());
                EXPECT_LT(lisa_test::rel_err(got.data(), g.data(), g.size()), 1e-3) << name << " LoRA " << mod << "." << ab;
            }
        }
}

INSTANTIATE_TEST_SUITE_P(objectives, golden_preference,
                         ::testing::Values("dpo_sigmoid", "dpo_smoothed", "dpo_hinge", "dpo_ipo", "orpo"));
