// Training: one full fine-tuning step against PyTorch, LISA's layer selection and memory, LoRA
// in PEFT format, resume and gradient-accumulation equivalence, interruption, NaN stop, and the
// bundled default run end to end.
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/error.h"
#include "io/fs.h"
#include "model/decoder.h"
#include "model/lora.h"
#include "data/dataset.h"
#include "tokenizer/tokenizer.h"
#include "train/layer_sampling.h"
#include "train/progress.h"
#include "train/trainer.h"
#include "test_util.h"

using namespace lisa;
using json = nlohmann::json;
using lisa_test::run_lisa;
using lisa_test::temp_dir;

#define NEED_ASSETS() \
    if (lisa_test::assets_dir().empty()) GTEST_SKIP() << "../shared/assets not found (set LISA_ASSETS)"

static std::string aidreams() { return lisa_test::assets_dir() + "/models/aidreams-260k"; }
static std::string data_dir() { return lisa_test::golden_dir("aidreams_data") + "/text_only"; }

static std::vector<json> read_log(const std::string& dir) {
    std::vector<json> v;
    std::istringstream in(fs_read_text(dir + "/trainer_log.jsonl"));
    std::string line;
    while (std::getline(in, line))
        if (!line.empty()) v.push_back(json::parse(line));
    return v;
}

static std::string train(const std::string& out, const std::string& args) {
    auto r = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + data_dir() +
                      " --output_model_path " + out + " --logging_steps 1 " + args);
    EXPECT_EQ(r.code, 0) << r.output;
    return r.output;
}

static bool same_bytes(const std::string& a, const std::string& b) { return fs_read_text(a) == fs_read_text(b); }

// One step of full fine-tuning with clipping and weight decay changes every weight exactly as
// PyTorch's AdamW does (eps 1e-3 keeps the update a smooth function of the gradient, so the
// comparison tests the gradient and not rounding at g ≈ 0). Tolerance 1e-6 absolute.
TEST(train, one_full_step_matches_pytorch_adamw) {
    NEED_ASSETS();
    temp_dir td;
    train(td.path, "--method full --max_steps 1 --per_device_train_batch_size 8 --learning_rate 1e-3 "
                   "--adam_epsilon 1e-3 --weight_decay 0.01 --max_grad_norm 1.0 --lr_scheduler_type constant");
    auto got = decoder_model_load(td.path);
    auto want = st_open(lisa_test::golden_dir("aidreams_data") + "/full_step_weights.safetensors");
    auto base = decoder_model_load(aidreams());
    json exp = json::parse(fs_read_text(lisa_test::golden_dir("aidreams_data") + "/expected.json"))["full_step"];
    const std::vector<float> got_p = got->params.host_copy(), base_p = base->params.host_copy();
    for (const auto& t : got->tensors) {
        std::vector<float> w = lisa_test::read_f32(*want, t.name);
        ASSERT_EQ(w.size(), t.numel);
        double err = 0, moved = 0;
        for (size_t i = 0; i < t.numel; i++) {
            err = std::max(err, (double)std::fabs(got_p[t.offset + i] - w[i]));
            moved = std::max(moved, (double)std::fabs(base_p[t.offset + i] - w[i]));
        }
        EXPECT_LT(err, 1e-6) << t.name;
        EXPECT_GT(moved, 1e-5) << t.name << " did not move in the reference";
    }
    auto log = read_log(td.path);
    ASSERT_EQ(log.size(), 1u);
    EXPECT_NEAR(log[0]["grad_norm"].get<double>(), exp["grad_norm"].get<double>(), 1e-4 * exp["grad_norm"].get<double>());
    EXPECT_NEAR(log[0]["loss"].get<double>(), exp["loss"].get<double>(), 1e-5 * exp["loss"].get<double>());
}

// Which tensors changed between two models: per tensor name, any element differs.
static std::set<std::string> changed(const decoder_model& a, const decoder_model& b) {
    std::set<std::string> s;
    const std::vector<float> pa = a.params.host_copy(), pb = b.params.host_copy();
    for (const auto& t : a.tensors)
        if (std::memcmp(pa.data() + t.offset, pb.data() + t.offset, t.numel * 4) != 0) s.insert(t.name);
    return s;
}

TEST(train, lisa_trains_exactly_gamma_layers_plus_embedding_norm_and_head) {
    NEED_ASSETS();
    temp_dir td;
    train(td.path, "--lisa_activated_layers 1 --max_steps 1 --learning_rate 1e-3 --per_device_train_batch_size 4");
    auto base = decoder_model_load(aidreams()), got = decoder_model_load(td.path);
    auto log = read_log(td.path);
    ASSERT_EQ(log.size(), 1u);
    // training_args.json records the options as used, defaults resolved
    json args = json::parse(fs_read_text(td.path + "/training_args.json"));
    EXPECT_EQ(args["method"], "lisa");
    EXPECT_EQ(args["learning_rate"].get<double>(), 1e-3);
    EXPECT_EQ(args["lisa_interval_steps"], 20);
    EXPECT_EQ(args["max_steps"], 1);
    EXPECT_TRUE(args["torch_dtype"].is_null());  // not set: the input's, as resolved below
    EXPECT_EQ(args["resolved"]["torch_dtype"], "float32");
    std::vector<int> active = log[0]["active_layers"].get<std::vector<int>>();
    ASSERT_EQ(active.size(), 1u);
    std::set<std::string> ch = changed(*base, *got);
    for (const auto& t : base->tensors) {
        bool should = t.layer < 0 || t.layer == active[0];  // embed (tied head), final norm, the active layer
        EXPECT_EQ(ch.count(t.name) > 0, should) << t.name << (should ? " should change" : " must stay bit-identical");
    }
    // frozen embedding and head: only the layers (and the final norm) move
    temp_dir td2;
    train(td2.path, "--lisa_activated_layers 2 --max_steps 1 --learning_rate 1e-3 --lisa_train_embeddings 0 "
                    "--lisa_train_head 0");
    auto got2 = decoder_model_load(td2.path);
    EXPECT_EQ(changed(*base, *got2).count("model.embed_tokens.weight"), 0u);
    int layers = 0;
    for (int l = 0; l < 4; l++) layers += changed(*base, *got2).count(strf("model.layers.%d.mlp.up_proj.weight", l));
    EXPECT_EQ(layers, 2);
}

TEST(train, lisa_switches_layers_with_constant_optimizer_memory_and_is_reproducible) {
    NEED_ASSETS();
    temp_dir a, b, c;
    const std::string args = "--lisa_activated_layers 2 --lisa_interval_steps 2 --max_steps 8 "
                             "--per_device_train_batch_size 2 --learning_rate 1e-3";
    train(a.path, args);
    train(b.path, args);
    train(c.path, args + " --seed 7");
    auto log = read_log(a.path);
    ASSERT_EQ(log.size(), 8u);
    std::set<std::vector<int>> sets;
    for (size_t i = 0; i < log.size(); i++) {
        auto act = log[i]["active_layers"].get<std::vector<int>>();
        EXPECT_EQ(act.size(), 2u);
        EXPECT_NE(act[0], act[1]);  // without replacement
        if (i % 2 == 1) {
            EXPECT_EQ(act, log[i - 1]["active_layers"].get<std::vector<int>>()) << "switch only every K";
        }
        sets.insert(act);
        EXPECT_EQ(log[i]["optimizer_state_bytes"], log[0]["optimizer_state_bytes"]) << "step " << i;
    }
    EXPECT_GE(sets.size(), 2u) << "the active set must change across 4 intervals";
    // optimizer state = m + v of embedding, final norm and two layers (tied head), in fp32
    auto m = decoder_model_load(aidreams());
    size_t layer = 0, global = 0;  // elements of one decoder layer, and of embedding + final norm
    for (const auto& t : m->tensors) {
        if (t.layer == 0) layer += t.numel;
        if (t.layer < 0) global += t.numel;
    }
    EXPECT_EQ(log[0]["optimizer_state_bytes"].get<size_t>(), 2 * 4 * (global + 2 * layer));
    // same seed: same draws and the same weights, bit for bit; another seed: other draws
    EXPECT_TRUE(same_bytes(a.path + "/model.safetensors", b.path + "/model.safetensors"));
    EXPECT_EQ(fs_read_text(a.path + "/trainer_log.jsonl").size() > 0, true);
    auto logc = read_log(c.path);
    bool differs = false;
    for (size_t i = 0; i < log.size(); i++) differs |= logc[i]["active_layers"] != log[i]["active_layers"];
    EXPECT_TRUE(differs);
}

TEST(train, lisa_draws_are_uniform_without_replacement) {
    std::vector<int> count(8, 0);
    for (int k = 0; k < 4000; k++) {
        auto d = lisa_draw_layers(42, k, 8, 3);
        ASSERT_EQ(d.size(), 3u);
        ASSERT_TRUE(std::is_sorted(d.begin(), d.end()));
        ASSERT_EQ(std::set<int>(d.begin(), d.end()).size(), 3u);
        for (int l : d) count[l]++;
    }
    for (int l = 0; l < 8; l++) EXPECT_NEAR(count[l], 4000 * 3 / 8.0, 4000 * 3 / 8.0 * 0.08) << "layer " << l;
    EXPECT_EQ(lisa_draw_layers(42, 5, 8, 3), lisa_draw_layers(42, 5, 8, 3));
}

// The outlier ratios of --lisa_layer_sampling owlore, on the trained asset model: probabilities
// sum to 1, the token count leaves padding out, a ratio does not change when a matrix is scaled
// by 2 (scores and their mean scale alike), and weights planted far above their matrix's mean
// raise that layer's ratio many times (by no more than their share) and make it the likeliest draw.
TEST(train, owlore_outlier_ratios_follow_the_weights) {
    NEED_ASSETS();
    auto m = decoder_model_load(aidreams());
    auto tok = tokenizer_load(aidreams());
    dataset_options dopt;
    dopt.eos_id = 2;
    dopt.block_size = 128;
    dataset d = dataset_load(data_dir(), *tok, dopt);
    ASSERT_GE(d.samples.size(), 3u);
    int64_t want_tokens = 0;
    for (size_t i = 0; i < 3; i++) want_tokens += (int64_t)d.samples[i].ids.size();
    layer_outliers a = layer_outliers_measure(*m, d, 0, 3, 2, 7.0);
    const int L = (int)m->cfg.num_layers;
    ASSERT_EQ((int)a.prob.size(), L);
    EXPECT_EQ(a.tokens, want_tokens);  // 3 samples in batches of 2: the padded rows are not counted
    double sum = 0;
    for (int l = 0; l < L; l++) {
        EXPECT_GE(a.ratio[l], 0.0);
        EXPECT_LT(a.ratio[l], 0.2) << "layer " << l;
        sum += a.prob[l];
    }
    EXPECT_NEAR(sum, 1.0, 1e-12);
    // the last layer's down_proj feeds no later layer: scaling it changes no input of any layer
    const int last = L - 1;
    size_t down = 0;
    for (size_t i = 0; i < m->tensors.size(); i++)
        if (m->tensors[i].layer == last && m->tensors[i].field == LT_DOWN) down = i;
    float* w = m->w.layers[last][LT_DOWN];
    const size_t n = m->tensors[down].numel;
    std::vector<float> wh = device_read(*m->ctx.be, (const float*)w, n);
    for (size_t i = 0; i < n; i++) wh[i] *= 2;
    device_write(*m->ctx.be, w, wh.data(), n);
    layer_outliers b = layer_outliers_measure(*m, d, 0, 3, 2, 7.0);
    EXPECT_EQ(a.ratio, b.ratio);
    // plant: every 16th weight of that matrix 1000 times larger
    size_t planted = 0;
    for (size_t i = 0; i < n; i += 16, planted++) wh[i] *= 1000;
    device_write(*m->ctx.be, w, wh.data(), n);
    layer_outliers c = layer_outliers_measure(*m, d, 0, 3, 2, 7.0);
    int64_t layer_weights = 0;
    for (const auto& t : m->tensors)
        if (t.layer == last && kLayerTensors[t.field].lora >= 0) layer_weights += (int64_t)t.numel;
    // (measured: 0.03% before, 0.9% after; the planted are 1.4% of the layer, and those on input
    // channels of small norm stay under the threshold)
    EXPECT_GT(c.ratio[last], 10 * a.ratio[last]);
    EXPECT_LT(c.ratio[last], (double)planted / layer_weights + a.ratio[last]);
    for (int l = 0; l < last; l++) {
        EXPECT_EQ(c.ratio[l], a.ratio[l]) << "layer " << l << " is untouched";
        EXPECT_GT(c.prob[last], c.prob[l]) << "layer " << l;
    }
}

TEST(train, resume_gives_identical_weights) {
    NEED_ASSETS();
    // LISA is resumed once mid-interval (5 of K=3) and once at a boundary (K=5: the checkpoint was
    // written just before a switch)
    for (const char* method : {"lisa --lisa_interval_steps 3", "lisa --lisa_interval_steps 5", "lora --lora_dropout 0.2",
                               "full", "lisa --lisa_interval_steps 3 --lisa_layer_sampling owlore",
                               // issue #27: length-grouped batches of packed rows, and right-padded ones
                               "lisa --lisa_interval_steps 3 --group_by_length --packing --block_size 40",
                               "full --padding_free false --group_by_length"}) {
        temp_dir whole, resumed;
        std::string args = std::string("--method ") + method + " --max_steps 10 --per_device_train_batch_size 3 "
                           "--learning_rate 1e-3 --lr_scheduler_type cosine --warmup_steps 2";
        train(whole.path, args + " --save_steps 5");
        ASSERT_TRUE(fs_is_dir(whole.path + "/checkpoint-5")) << method;
        std::string out = train(resumed.path, args + " --resume_from_checkpoint " + whole.path + "/checkpoint-5");
        EXPECT_NE(out.find("resumed from"), std::string::npos) << out;
        const char* file = std::string(method).rfind("lora", 0) == 0 ? "/adapter_model.safetensors" : "/model.safetensors";
        EXPECT_TRUE(same_bytes(whole.path + file, resumed.path + file)) << method << ": 10 steps != 5 + resume 5";
        EXPECT_EQ(read_log(resumed.path).size(), 5u);
    }
}

TEST(train, gradient_accumulation_equals_a_larger_batch) {
    NEED_ASSETS();
    temp_dir big, acc;
    const std::string args = "--method full --max_steps 1 --learning_rate 1e-3 --adam_epsilon 1e-3 --max_grad_norm 0 ";
    train(big.path, args + "--per_device_train_batch_size 4 --gradient_accumulation_steps 1");
    train(acc.path, args + "--per_device_train_batch_size 1 --gradient_accumulation_steps 4");
    auto a = decoder_model_load(big.path), b = decoder_model_load(acc.path);
    double err = 0;
    const std::vector<float> pa = a->params.host_copy(), pb = b->params.host_copy();
    for (size_t i = 0; i < pa.size(); i++) err = std::max(err, (double)std::fabs(pa[i] - pb[i]));
    EXPECT_LT(err, 1e-6);  // float rounding only (the samples have different lengths)
    EXPECT_NEAR(read_log(big.path)[0]["loss"].get<double>(), read_log(acc.path)[0]["loss"].get<double>(), 1e-5);
}

TEST(train, lora_writes_a_peft_adapter_and_merging_preserves_the_loss) {
    NEED_ASSETS();
    temp_dir td, merged;
    train(td.path, "--method lora --lora_r 4 --lora_alpha 8 --lora_target_modules q_proj,v_proj,down_proj "
                   "--max_steps 4 --learning_rate 1e-2 --lora_dropout 0.1 --save_aggregated_lora 1");
    lora_adapter_config c = lora_config_load(td.path + "/adapter_config.json");
    EXPECT_EQ(c.r, 4);
    EXPECT_EQ(c.alpha, 8);
    EXPECT_EQ(c.target_modules, std::vector<std::string>({"q_proj", "v_proj", "down_proj"}));
    json cfg = json::parse(fs_read_text(td.path + "/adapter_config.json"));
    EXPECT_EQ(cfg["peft_type"], "LORA");
    EXPECT_EQ(cfg["task_type"], "CAUSAL_LM");
    auto f = st_open(td.path + "/adapter_model.safetensors");
    EXPECT_EQ(f->tensors.size(), 4u * 3 * 2);
    const st_tensor* A = st_find(*f, "base_model.model.model.layers.2.mlp.down_proj.lora_A.weight");
    const st_tensor* B = st_find(*f, "base_model.model.model.layers.2.mlp.down_proj.lora_B.weight");
    ASSERT_TRUE(A && B);
    EXPECT_EQ(A->shape, std::vector<int64_t>({4, 172}));  // [r, in]
    EXPECT_EQ(B->shape, std::vector<int64_t>({64, 4}));   // [out, r]
    // B moved away from its zero init: the adapter learned something
    std::vector<float> bv(B->numel);
    convert_to_f32(bv.data(), B->data, B->dt, B->numel);
    EXPECT_GT(*std::max_element(bv.begin(), bv.end()), 0.0f);
    // base + adapter == merged (from --save_aggregated_lora and from lisa merge-lora)
    auto r = run_lisa("merge-lora --model_name_or_path " + aidreams() + " --lora_model_path " + td.path +
                      " --output_model_path " + merged.path);
    ASSERT_EQ(r.code, 0) << r.output;
    auto loss = [&](const std::string& args) {
        auto e = run_lisa("eval --dataset_path " + data_dir() + " " + args);
        EXPECT_EQ(e.code, 0) << e.output;
        return json::parse(e.output)["loss"].get<double>();
    };
    double with_adapter = loss("--model_name_or_path " + aidreams() + " --lora_model_path " + td.path);
    EXPECT_NEAR(loss("--model_name_or_path " + merged.path), with_adapter, 1e-5 * with_adapter);
    EXPECT_NEAR(loss("--model_name_or_path " + td.path), with_adapter, 1e-5 * with_adapter);  // aggregated copy
    EXPECT_LT(with_adapter, loss("--model_name_or_path " + aidreams()));  // and it lowered the loss
}

TEST(train, interruption_writes_a_checkpoint_that_resumes) {
    NEED_ASSETS();
    temp_dir td;
    // start a long run, wait until it has finished a step, then send SIGINT
    std::string cmd = "sh -c '" + std::string(LISA_BIN) + " train --model_name_or_path " + aidreams() +
                      " --dataset_path " + data_dir() + " --output_model_path " + td.path +
                      " --max_steps 1000000 --per_device_train_batch_size 2 --logging_steps 1 > " + td.path +
                      "/out.txt 2>&1 & pid=$!; while [ ! -s " + td.path + "/trainer_log.jsonl ]; do sleep 0.05; done; "
                      "kill -INT $pid; wait $pid; echo rc=$?' 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    std::string rc;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) rc.append(buf, n);
    pclose(p);
    std::string out = fs_read_text(td.path + "/out.txt");
    EXPECT_NE(rc.find("rc=130"), std::string::npos) << rc << out;
    EXPECT_NE(out.find("interrupted at step"), std::string::npos) << out;
    EXPECT_FALSE(fs_is_file(td.path + "/config.json")) << "an interrupted run must not look finished";
    int ckpts = 0;
    for (auto& e : std::filesystem::directory_iterator(td.path))
        if (e.path().filename().string().rfind("checkpoint-", 0) == 0) {
            ckpts++;
            EXPECT_TRUE(fs_is_file(e.path().string() + "/trainer_state.json"));
        }
    EXPECT_EQ(ckpts, 1);
    // continue from it for a few more steps
    auto r = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + data_dir() +
                      " --output_model_path " + td.path + " --resume_from_checkpoint latest --max_steps 1000000 "
                      "--per_device_train_batch_size 2 --logging_steps 1000 --num_train_epochs 1 2>&1 | head -3");
    EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;
}

TEST(train, a_diverging_run_stops_with_a_clear_error_and_no_model) {
    NEED_ASSETS();
    temp_dir td;
    auto r = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + data_dir() +
                      " --output_model_path " + td.path + " --method full --learning_rate 1e30 --max_grad_norm 0 "
                      "--max_steps 20 --save_steps 1");
    EXPECT_EQ(r.code, 1) << r.output;
    EXPECT_NE(r.output.find("lisa: error: step "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("The last checkpoint is"), std::string::npos) << r.output;
    EXPECT_FALSE(fs_is_file(td.path + "/config.json"));
}

TEST(train, bad_arguments_are_refused) {
    NEED_ASSETS();
    temp_dir td;
    auto err = [&](const std::string& args) {
        return run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + data_dir() +
                        " --output_model_path " + td.path + " " + args);
    };
    auto r = err("--lisa_activated_layers 9");
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.output.find("--lisa_activated_layers 9: expected 1..4"), std::string::npos) << r.output;
    r = err("--lisa_layer_sampling weighted");
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.output.find("--lisa_layer_sampling weighted: expected uniform or owlore"), std::string::npos) << r.output;
    r = err("--lisa_layer_sampling owlore --lisa_outlier_threshold 0");
    EXPECT_NE(r.output.find("--lisa_outlier_threshold 0: expected a number above 0"), std::string::npos) << r.output;
    r = err("--lr_scheduler_type wavy");
    EXPECT_NE(r.output.find("--lr_scheduler_type \"wavy\""), std::string::npos) << r.output;
    r = err("--method lora --lora_target_modules q_proj,attn");
    EXPECT_NE(r.output.find("unknown module \"attn\""), std::string::npos) << r.output;
    r = run_lisa("train --model_name_or_path meta-llama/Llama-2-7b-hf --dataset_path " + data_dir() +
                 " --output_model_path " + td.path);
    EXPECT_NE(r.output.find("download it first"), std::string::npos) << r.output;
    // a finished model is not overwritten by accident
    train(td.path, "--max_steps 1");
    r = err("--max_steps 1");
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.output.find("already holds a model"), std::string::npos) << r.output;
}

// The bundled default of run_finetune_with_lisa.sh: held-out loss goes down, and the script
// takes the seed's flags and refuses a hub id with a hint.
TEST(run_script, bundled_default_lowers_held_out_loss) {
    temp_dir td;
    std::string root = lisa_test::test_dir() + "/..";
    std::string cmd = "cd " + root + " && OUTPUT_ROOT=" + td.path + " ./run_finetune_with_lisa.sh 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    ASSERT_EQ(WEXITSTATUS(pclose(p)), 0) << out;
    std::vector<double> losses;
    size_t pos = 0;
    while ((pos = out.find("{\"loss\":", pos)) != std::string::npos) {
        losses.push_back(json::parse(out.substr(pos, out.find('\n', pos) - pos))["loss"].get<double>());
        pos++;
    }
    ASSERT_EQ(losses.size(), 2u) << out;
    EXPECT_LT(losses[1], 0.5 * losses[0]) << "held-out loss before " << losses[0] << ", after " << losses[1];
    EXPECT_TRUE(fs_is_file(td.path + "/finetuned/config.json"));
    EXPECT_NE(out.find("A dog says woof."), std::string::npos) << out;
    // the seed's interface, and a hub id
    std::string seed = "cd " + root + " && ./run_finetune_with_lisa.sh --model_name_or_path " + td.path +
                       "/default-base --dataset_path data/train --output_model_path " + td.path +
                       "/seed --lisa_activated_layers 1 --lisa_interval_steps 20 --max_steps 3 --logging_steps 1 2>&1";
    p = popen(seed.c_str(), "r");
    out.clear();
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    EXPECT_EQ(WEXITSTATUS(pclose(p)), 0) << out;
    auto log = read_log(td.path + "/seed");
    ASSERT_EQ(log.size(), 3u);
    EXPECT_EQ(log[0]["active_layers"].size(), 1u);
    p = popen(("cd " + root + " && ./run_finetune_with_lisa.sh --model_name_or_path meta-llama/Llama-2-7b-hf "
               "--dataset_path data/train --output_model_path " + td.path + "/hub 2>&1").c_str(), "r");
    out.clear();
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    EXPECT_EQ(WEXITSTATUS(pclose(p)), 1) << out;
    EXPECT_NE(out.find("download it first"), std::string::npos) << out;
}

// A bf16 model trains in half mode: frozen matrices stay bf16 (no fp32 copy), trained ones get
// fp32 masters; the output is bf16 with the untouched layers bit-identical, and a resumed run
// (masters restored from the checkpoint) ends on exactly the same weights.
TEST(train, lisa_on_a_bf16_model_keeps_frozen_layers_and_resumes_exactly) {
    NEED_ASSETS();
    temp_dir bf, whole, resumed;
    {
        auto m = decoder_model_load(aidreams());
        decoder_save_options so;
        so.out_dtype = dtype::bf16;
        so.tokenizer_from = aidreams();
        decoder_model_save(*m, bf.path, so);
    }
    auto run = [&](const std::string& out, const std::string& extra) {
        auto r = run_lisa("train --model_name_or_path " + bf.path + " --dataset_path " + data_dir() +
                          " --output_model_path " + out + " --logging_steps 1 --lisa_activated_layers 1 "
                          "--lisa_interval_steps 3 --max_steps 8 --per_device_train_batch_size 3 --learning_rate 1e-3 " + extra);
        EXPECT_EQ(r.code, 0) << r.output;
    };
    run(whole.path, "--save_steps 2");  // checkpoint-6 is at a boundary (K=3), checkpoint-4 inside one
    for (int at : {4, 6}) {
        temp_dir again;
        run(again.path, "--resume_from_checkpoint " + whole.path + strf("/checkpoint-%d", at));
        EXPECT_TRUE(same_bytes(whole.path + "/model.safetensors", again.path + "/model.safetensors")) << "from " << at;
    }
    run(resumed.path, "--resume_from_checkpoint " + whole.path + "/checkpoint-4");
    auto base = decoder_model_load(bf.path), got = decoder_model_load(whole.path);
    EXPECT_TRUE(got->half);
    EXPECT_EQ(got->stored_dtype, dtype::bf16);
    std::set<int> trained;
    for (auto& j : read_log(whole.path))
        for (int l : j["active_layers"]) trained.insert(l);
    for (size_t i = 0; i < base->tensors.size(); i++) {
        const auto& t = base->tensors[i];
        bool same = decoder_tensor_values(*base, i) == decoder_tensor_values(*got, i);
        if (t.layer < 0) continue;
        if (!trained.count(t.layer)) {
            EXPECT_TRUE(same) << t.name << " was never trained";
        } else if (t.is_matrix) {
            EXPECT_FALSE(same) << t.name;
        }
    }
    EXPECT_LT(trained.size(), 4u) << "the test needs a layer that was never drawn";
}

TEST(train, gradient_checkpointing_gives_the_same_weights) {
    NEED_ASSETS();
    temp_dir a, b;
    const std::string args = "--method full --max_steps 3 --per_device_train_batch_size 4 --learning_rate 1e-3";
    train(a.path, args);
    train(b.path, args + " --gradient_checkpointing");
    EXPECT_TRUE(same_bytes(a.path + "/model.safetensors", b.path + "/model.safetensors"));
}

// Evaluation never applies LoRA dropout: the eval_loss logged during training equals `lisa eval`
// of the saved adapter (the audit saw 3.6218 against 3.5855 with dropout 0.1).
TEST(train, lora_eval_during_training_applies_no_dropout) {
    NEED_ASSETS();
    temp_dir td;
    train(td.path, "--method lora --lora_r 4 --lora_dropout 0.3 --max_steps 4 --learning_rate 1e-2 "
                   "--per_device_train_batch_size 4 --eval_dataset_path " + data_dir() + " --eval_steps 4");
    double logged = -1;
    for (const json& j : read_log(td.path))
        if (j.contains("eval_loss")) logged = j["eval_loss"].get<double>();
    ASSERT_GT(logged, 0) << "no eval_loss logged";
    auto e = run_lisa("eval --model_name_or_path " + aidreams() + " --lora_model_path " + td.path + " --dataset_path " +
                      data_dir());
    ASSERT_EQ(e.code, 0) << e.output;
    EXPECT_NEAR(json::parse(e.output)["loss"].get<double>(), logged, 1e-5 * logged);
}

// Habits from the Hugging Face Trainer (issue #14): a checkpoint at the last step, the newest N
// kept, --threads after the subcommand, and a --block_size beyond the context used as the context.
TEST(train, hf_checkpoint_habits_threads_flag_and_block_size) {
    NEED_ASSETS();
    temp_dir a, b;
    std::string out = train(a.path, "--max_steps 6 --save_steps 3 --per_device_train_batch_size 4 --threads 1 "
                                    "--block_size 100000");
    EXPECT_TRUE(fs_is_dir(a.path + "/checkpoint-3"));
    EXPECT_TRUE(fs_is_dir(a.path + "/checkpoint-6")) << "no checkpoint at the last step";
    EXPECT_NE(out.find("lisa: 1 compute thread (--threads; fixed)"), std::string::npos) << out;
    EXPECT_NE(out.find("--block_size 100000 is larger than the model's max_position_embeddings 128; using 128"),
              std::string::npos) << out;
    train(b.path, "--max_steps 6 --save_steps 2 --save_total_limit 2 --per_device_train_batch_size 4");
    EXPECT_FALSE(fs_is_dir(b.path + "/checkpoint-2"));
    EXPECT_TRUE(fs_is_dir(b.path + "/checkpoint-4"));
    EXPECT_TRUE(fs_is_dir(b.path + "/checkpoint-6"));
    // the newest kept checkpoint resumes: latest finds checkpoint-6
    auto r = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + data_dir() +
                      " --output_model_path " + b.path + " --max_steps 6 --save_steps 2 --per_device_train_batch_size 4 "
                      "--resume_from_checkpoint latest");
    EXPECT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("checkpoint-6"), std::string::npos) << r.output;
}

// A run's numbers do not depend on the thread count (issue #17): one thread, two, three, and the
// default, whose count the governor may change from step to step, give byte-identical models. The
// first line says how many threads compute, why, and how idle threads wait.
TEST(train, the_thread_count_changes_speed_not_results) {
    NEED_ASSETS();
    temp_dir t1, t2, t3, td;
    const std::string args = "--max_steps 4 --per_device_train_batch_size 4 --method full";
    train(t1.path, args + " --threads 1");
    train(t2.path, args + " --threads 2");
    train(t3.path, args + " --threads 3");
    // the default: no --threads and no OMP_NUM_THREADS (the test environment sets it)
    auto r = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + data_dir() +
                      " --output_model_path " + td.path + " " + args, "env -u OMP_NUM_THREADS -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT");
    ASSERT_EQ(r.code, 0) << r.output;
    const std::string& out = r.output;
    EXPECT_NE(out.find("fewer while other programs hold CPUs); idle threads spin 300 rounds, then sleep"),
              std::string::npos) << out;
    for (const auto* d : {&t2, &t3, &td})
        EXPECT_TRUE(same_bytes(t1.path + "/model.safetensors", d->path + "/model.safetensors")) << d->path;
    EXPECT_EQ(read_log(t1.path).back()["threads"], 1);
}

// The progress bar never wraps (issue #17): at any terminal width it is one line of at most
// cols - 1 characters, and what it drops goes least useful first.
TEST(progress, the_bar_fits_any_terminal_width) {
    const std::vector<int> layers = {3, 17};
    progress_state s;
    s.step = 1234, s.total = 50000, s.loss = 2.718281828, s.tokens_per_s = 12345.6, s.eta_s = 4000;
    s.active_layers = &layers, s.optimizer_bytes = (size_t)300 << 20;
    const std::string wide = progress_bar_line(s, 200);
    EXPECT_EQ(wide, "1234/50000 [....................] loss 2.7183 | 12346 tok/s | Adam 300 MiB | layers [3, 17] | ETA 1:06:40");
    for (int cols = 1; cols <= 200; cols++) {
        const std::string line = progress_bar_line(s, cols);
        EXPECT_LE((int)line.size(), std::max(1, cols - 1)) << cols << ": " << line;
        EXPECT_EQ(line.find('\n'), std::string::npos);
        if (cols >= 40) { EXPECT_NE(line.find("loss 2.7183"), std::string::npos) << cols << ": " << line; }
    }
    EXPECT_EQ(progress_bar_line(s, 80).find("layers"), std::string::npos) << "the layers go first";
    EXPECT_NE(progress_bar_line(s, 80).find("tok/s"), std::string::npos) << progress_bar_line(s, 80);
    // preference tuning: TRL's reward accuracy beside the loss, and still never wider than the terminal
    s.reward_accuracy = 0.8125;
    EXPECT_NE(progress_bar_line(s, 200).find("loss 2.7183 rewards/accuracies 0.81 |"), std::string::npos)
        << progress_bar_line(s, 200);
    for (int cols = 1; cols <= 200; cols++) EXPECT_LE((int)progress_bar_line(s, cols).size(), std::max(1, cols - 1)) << cols;
}

// Log records on the terminal are rounded for reading; integers and strings stay as they are.
TEST(progress, records_on_the_terminal_are_rounded_and_the_file_is_not) {
    const std::string line = R"({"step":20,"epoch":0.9523809523809523,"loss":4.123456789012345,"learning_rate":1.9987654321e-05,"grad_norm":0.31415926535,"note":"x"})";
    EXPECT_EQ(progress_round_json(line),
              R"({"step":20,"epoch":0.95238,"loss":4.1235,"learning_rate":1.9988e-05,"grad_norm":0.31416,"note":"x"})");
    EXPECT_EQ(progress_round_json("not json"), "not json");
    // a run on a terminal (a pseudo-terminal of 40 columns, by script(1)): the log keeps full precision
    if (std::system("command -v script >/dev/null 2>&1") != 0) GTEST_SKIP() << "script(1) not installed (util-linux)";
    NEED_ASSETS();
    temp_dir t;
    const std::string cmd = "script -qec \"stty cols 40; " + std::string(LISA_BIN) + " train --model_name_or_path " +
                            aidreams() + " --dataset_path " + data_dir() + " --output_model_path " + t.path +
                            " --max_steps 6 --logging_steps 3 --per_device_train_batch_size 4\" /dev/null";
    FILE* p = popen(cmd.c_str(), "r");
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    ASSERT_EQ(pclose(p), 0) << out;
    // every bar drawn ("\r\033[K" then "step/total ...") fits in 39 columns
    int bars = 0;
    for (size_t at = out.find("\r\033[K"); at != std::string::npos; at = out.find("\r\033[K", at + 1)) {
        const size_t from = at + 4, to = out.find_first_of("\r\n", from);
        const std::string bar = out.substr(from, to == std::string::npos ? std::string::npos : to - from);
        if (bar.empty() || !std::isdigit((unsigned char)bar[0])) continue;  // a log line after a cleared bar
        bars++;
        EXPECT_LE(bar.size(), 39u) << bar;
    }
    EXPECT_GE(bars, 6);
    const auto log = read_log(t.path);
    ASSERT_GE(log.size(), 2u);
    const double loss = log[0]["loss"].get<double>();
    char rounded[64];
    std::snprintf(rounded, sizeof rounded, "\"loss\":%.5g", loss);
    EXPECT_NE(out.find(rounded), std::string::npos) << "the terminal shows " << rounded << "\n" << out;
    char full[64];
    std::snprintf(full, sizeof full, "%.5g", loss);
    EXPECT_NE(std::strtod(full, nullptr), loss) << "the file keeps more digits than the terminal";
}

// The documentation shows a run that happened (issue #17): every line of docs/training.md's
// example of the bundled default is in the recorded run (docs/runs/bundled-default.txt, written
// by scripts/record_default_run.sh), and the date and time it quotes are the recording's.
TEST(docs, the_bundled_default_example_is_a_recorded_run) {
    const std::string root = std::string(LISA_TEST_DIR) + "/..";
    const std::string doc = fs_read_text(root + "/docs/training.md");
    const std::string rec = fs_read_text(root + "/docs/runs/bundled-default.txt");
    const size_t at = doc.find("$ ./run_finetune_with_lisa.sh");
    ASSERT_NE(at, std::string::npos);
    const std::string block = doc.substr(at, doc.find("```", at) - at);
    std::istringstream lines(block);
    std::string line;
    std::getline(lines, line);  // "$ ./run_finetune_with_lisa.sh   # recorded DATE: N CPUs, S s in all"
    const size_t date = line.find("recorded ");
    ASSERT_NE(date, std::string::npos) << line;
    EXPECT_NE(rec.find("date: " + line.substr(date + 9, 10)), std::string::npos) << line;
    const size_t secs = line.find(", ", date);
    ASSERT_NE(secs, std::string::npos) << line;
    const std::string wall = line.substr(secs + 2, line.find(" s in all") - secs - 2);
    EXPECT_NE(rec.find("wall: " + wall + " s"), std::string::npos) << "the quoted time " << wall;
    int quoted = 0;
    while (std::getline(lines, line)) {
        if (line.empty() || line == "...") continue;
        EXPECT_NE(rec.find(line), std::string::npos) << "not in the recorded run: " << line;
        quoted++;
    }
    EXPECT_GE(quoted, 5);
}

// CLI rough edges (issue #17): the typo named first with the nearest known name, a version, and an
// adapter folder given as the model says which flag it belongs to.
TEST(cli, typos_version_and_an_adapter_given_as_the_model) {
    NEED_ASSETS();
    auto r = run_lisa("trian --max_steps 1");
    EXPECT_EQ(r.code, 2);
    EXPECT_EQ(r.output.rfind("lisa: unknown command 'trian'; did you mean 'train'?", 0), 0u) << r.output;
    r = run_lisa("train --learnig_rate 1e-3 --model_name_or_path " + aidreams());
    EXPECT_EQ(r.code, 2);
    EXPECT_EQ(r.output.rfind("lisa train: unknown flag --learnig_rate; did you mean --learning_rate?", 0), 0u)
        << r.output;
    r = run_lisa("--version");
    EXPECT_EQ(r.code, 0);
    EXPECT_EQ(r.output.rfind("lisa 0.4, commit ", 0), 0u) << r.output;
    temp_dir ad;
    train(ad.path, "--method lora --lora_r 2 --max_steps 1");
    r = run_lisa("eval --model_name_or_path " + ad.path + " --dataset_path " + data_dir());
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.output.find("is a LoRA adapter (adapter_config.json), not a model: pass its base model as "
                            "--model_name_or_path and this folder as --lora_model_path"), std::string::npos)
        << r.output;
}

// A run that fails before training leaves no empty output folder behind (issue #17).
TEST(cli, a_run_failing_before_training_leaves_no_output_folder) {
    NEED_ASSETS();
    temp_dir td, empty_data;
    const std::string out = td.path + "/never_made";
    auto r = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + empty_data.path +
                      " --output_model_path " + out + " --max_steps 1");
    EXPECT_EQ(r.code, 1) << r.output;
    EXPECT_FALSE(fs_is_dir(out)) << r.output;
}

// LMFlow's own run_finetune_with_lisa.sh flags, verbatim, run through ours: flags with a meaning
// here take it (--bf16 saves bf16, --validation_split_percentage holds out eval data,
// cosine_with_restarts is cosine, booleans take 0/1), the rest are accepted with one line saying
// why they do not apply, and none fails the run.
TEST(train, lmflow_script_flags_are_honoured_or_explained) {
    NEED_ASSETS();
    temp_dir a;
    auto r = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + data_dir() +
                      " --output_dir " + a.path + " --overwrite_output_dir --trust_remote_code 0 --use_lisa 1 "
                      "--lisa_activated_layers 1 --lisa_interval_steps 20 --disable_group_texts 1 --num_train_epochs 1 "
                      "--block_size 512 --per_device_train_batch_size 1 --gradient_accumulation_steps 1 "
                      "--learning_rate 2e-5 --lr_scheduler_type cosine_with_restarts --bf16 --torch_dtype bfloat16 "
                      "--validation_split_percentage 10 --logging_steps 20 --do_train --ddp_timeout 72000 "
                      "--save_steps 5000 --use_flash_attention 0 --gradient_checkpointing 0 --dataloader_num_workers 8 "
                      "--report_to wandb --run_name finetune_lisa --seed 42 --max_steps 4 --optim adamw_torch "
                      "--deepspeed configs/ds_config_zero2.json");
    ASSERT_EQ(r.code, 0) << r.output;
    for (const char* w : {"--dataloader_num_workers 8 ignored: samples are tokenized once",
                          "--ddp_timeout 72000 ignored: MPI ranks have no timeout",
                          "--report_to wandb ignored: metrics go to OUTPUT/trainer_log.jsonl",
                          "--deepspeed configs/ds_config_zero2.json ignored: DeepSpeed does not apply"})
        EXPECT_NE(r.output.find(std::string("lisa: warning: ") + w), std::string::npos) << w << "\n" << r.output;
    // flags set to 0 / false ask for nothing and say nothing
    EXPECT_EQ(r.output.find("--use_flash_attention"), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("--trust_remote_code"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("samples held out for eval_loss (--validation_split_percentage 10)"), std::string::npos)
        << r.output;
    json cfg = json::parse(fs_read_text(a.path + "/config.json"));
    EXPECT_EQ(cfg["torch_dtype"], "bfloat16");
    auto log = read_log(a.path);
    ASSERT_FALSE(log.empty());
    EXPECT_TRUE(log.back().contains("eval_loss")) << log.back();  // the held-out share, at the end
    json args = json::parse(fs_read_text(a.path + "/training_args.json"));
    EXPECT_EQ(args["lr_scheduler_type"], "cosine");
    EXPECT_EQ(args["gradient_checkpointing"], false);
    // what cannot be honoured is refused, not ignored
    for (auto [flags, msg] : std::vector<std::pair<std::string, std::string>>{
             {"--optim adamw_bnb_8bit", "--optim adamw_bnb_8bit: only AdamW is implemented"},
             {"--gradient_checkpointing maybe", "--gradient_checkpointing maybe: expected true or false"},
             {"--bf16 --fp16", "--bf16 and --fp16: choose one"}}) {
        temp_dir b;
        auto bad = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + data_dir() +
                            " --output_dir " + b.path + " --max_steps 1 " + flags);
        EXPECT_EQ(bad.code, 1) << flags;
        EXPECT_NE(bad.output.find(msg), std::string::npos) << bad.output;
    }
}

// --save_strategy / --eval_strategy / --load_best_model_at_end as Hugging Face's Trainer: with a
// learning rate that overshoots, the lowest eval_loss comes before the end, and the saved model
// (LISA: the model; LoRA: the adapter) evaluates to exactly that loss.
TEST(train, load_best_model_at_end_saves_the_best_checkpoint) {
    NEED_ASSETS();
    for (const char* method : {"lisa", "lora"}) {
        const bool lora = std::string(method) == "lora";
        temp_dir a;
        // trained on text_only, evaluated on text2text: at this rate eval_loss turns up again
        const std::string eval_data = lisa_test::golden_dir("aidreams_data") + "/text2text";
        auto r = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + data_dir() +
                          " --eval_dataset_path " + eval_data + " --output_dir " + a.path + " --method " + method +
                          " --max_steps " + (lora ? "4" : "12") + " --per_device_train_batch_size 4 --learning_rate " +
                          (lora ? "1.0" : "0.02") + " --lr_scheduler_type constant"
                          " --lisa_activated_layers 4 --lora_r 8 --lora_dropout 0 --eval_strategy steps --eval_steps 2"
                          " --save_strategy steps --save_steps 2 --save_total_limit 1 --load_best_model_at_end"
                          " --metric_for_best_model eval_loss");
        ASSERT_EQ(r.code, 0) << r.output;
        double best = 1e30;
        int64_t best_step = -1, last_step = 0;
        for (const json& j : read_log(a.path))
            if (j.contains("eval_loss")) {
                last_step = j["step"];
                if (j["eval_loss"].get<double>() < best) best = j["eval_loss"], best_step = j["step"];
            }
        ASSERT_LT(best_step, last_step) << method << ": the overshooting run should peak before its end\n" << r.output;
        EXPECT_NE(r.output.find(strf("loaded the best model: eval_loss %.6g at step %lld", best, (long long)best_step)),
                  std::string::npos) << r.output;
        // the best checkpoint survives --save_total_limit 1 beside the newest
        EXPECT_TRUE(fs_is_dir(a.path + "/checkpoint-" + std::to_string(best_step))) << method;
        EXPECT_TRUE(fs_is_dir(a.path + "/checkpoint-" + std::to_string(last_step))) << method;
        std::string eval = "eval --model_name_or_path " + (std::string(method) == "lora" ? aidreams() + " --lora_model_path " + a.path : a.path) +
                           " --dataset_path " + eval_data + " --per_device_eval_batch_size 4";
        auto e = run_lisa(eval);
        ASSERT_EQ(e.code, 0) << e.output;
        EXPECT_NEAR(json::parse(e.output)["loss"].get<double>(), best, 1e-5 * best) << method;
    }
    // mismatched strategies are refused up front, as Hugging Face does
    temp_dir b;
    auto bad = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + data_dir() +
                        " --eval_dataset_path " + data_dir() + " --output_dir " + b.path +
                        " --max_steps 4 --eval_steps 2 --save_steps 3 --load_best_model_at_end");
    EXPECT_EQ(bad.code, 1);
    EXPECT_NE(bad.output.find("--save_steps (3) must be a multiple of --eval_steps (2)"), std::string::npos) << bad.output;
}

// --config FILE: a run's training_args.json repeats it exactly; a flat YAML file works the same;
// flags on the command line win; a key that is no flag is named with the file.
TEST(train, config_file_repeats_a_run_and_flags_override_it) {
    NEED_ASSETS();
    temp_dir a, b, c, d;
    auto r = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + data_dir() + " --output_dir " +
                      a.path + " --max_steps 4 --per_device_train_batch_size 2 --learning_rate 3e-3 "
                      "--lisa_activated_layers 2 --seed 9 --lisa_train_head 0 --overwrite_output_dir");
    ASSERT_EQ(r.code, 0) << r.output;
    r = run_lisa("train --config " + a.path + "/training_args.json --output_dir " + b.path);
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_EQ(fs_read_text(a.path + "/model.safetensors"), fs_read_text(b.path + "/model.safetensors"));
    // YAML, with a list, a comment and quotes; --max_steps on the command line wins over the file's
    lisa_test::write_file(c.path + "/run.yaml", "# a LoRA run\nmodel_name_or_path: " + aidreams() + "\ndataset_path: '" + data_dir() +
                                         "'\nmethod: \"lora\"  # adapters\nlora_target_modules: [q_proj, v_proj]\nmax_steps: 2\n");
    r = run_lisa("train --config " + c.path + "/run.yaml --output_dir " + c.path + "/out --max_steps 3");
    ASSERT_EQ(r.code, 0) << r.output;
    json args = json::parse(fs_read_text(c.path + "/out/training_args.json"));
    EXPECT_EQ(args["method"], "lora");
    EXPECT_EQ(args["max_steps"], 3);
    EXPECT_EQ(args["lora_target_modules"], json({"q_proj", "v_proj"}));
    lisa_test::write_file(d.path + "/bad.yaml", "max_stepz: 2\n");
    r = run_lisa("train --config " + d.path + "/bad.yaml --output_dir " + d.path + "/out");
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.output.find("bad.yaml: key 'max_stepz' is not a flag of lisa train; did you mean 'max_steps'?"),
              std::string::npos) << r.output;
}

// --plot_loss / lisa plot: training_loss.svg holds every logged loss, the eval points and one mark
// per LISA draw; `lisa plot` redraws it from a log still being written.
static std::string plotted_run(const std::string& dir) {
    auto r = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + data_dir() +
                      " --eval_dataset_path " + data_dir() + " --output_dir " + dir + " --max_steps 12 --logging_steps 2"
                      " --eval_steps 4 --lisa_activated_layers 1 --lisa_interval_steps 4 --per_device_train_batch_size 4"
                      " --plot_loss");
    EXPECT_EQ(r.code, 0) << r.output;
    return r.output;
}

TEST(plot, training_loss_svg_shows_the_run) {
    NEED_ASSETS();
    temp_dir a;
    std::string out = plotted_run(a.path);
    EXPECT_NE(out.find("plot: " + a.path + "/training_loss.svg"), std::string::npos) << out;
    std::string svg = fs_read_text(a.path + "/training_loss.svg");
    auto points_of = [&](const std::string& cls) {
        size_t p = svg.find("class=\"" + cls + "\" points=\"");
        if (p == std::string::npos) return -1;
        p = svg.find("points=\"", p) + 8;
        std::string pts = svg.substr(p, svg.find('"', p) - p);
        return (int)std::count(pts.begin(), pts.end(), ',');
    };
    int losses = 0, evals = 0;
    std::set<std::string> draws;
    for (const json& j : read_log(a.path)) {
        losses += j.contains("loss");
        evals += j.contains("eval_loss");
        if (j.contains("active_layers")) draws.insert(j["active_layers"].dump());
    }
    EXPECT_EQ(losses, 6);
    EXPECT_EQ(points_of("train-loss"), losses);
    EXPECT_EQ(points_of("eval-loss"), evals);
    EXPECT_EQ(points_of("learning-rate"), losses);
    size_t marks = 0;
    for (size_t p = svg.find("lisa-switch"); p != std::string::npos; p = svg.find("lisa-switch", p + 1)) marks++;
    EXPECT_GE(marks, 2u);  // 12 steps at interval 4: three draws (two may repeat a layer)
    EXPECT_LE(marks, 3u);
    // a log still being written (half a line at its end) is drawn from what is complete
    {
        std::ofstream f(a.path + "/trainer_log.jsonl", std::ios::app);
        f << "{\"step\": 13, \"loss\": 1.";
    }
    auto r = run_lisa("plot --output_model_path " + a.path);
    EXPECT_EQ(r.code, 0) << r.output;
    r = run_lisa("plot --output_model_path " + a.path + "/nothing");
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.output.find("no trainer_log.jsonl"), std::string::npos) << r.output;
}

// Looked at as a user would: rendered to PNG by librsvg (Debian's rsvg-convert), it is a picture,
// not a blank page (far larger than the same canvas with nothing drawn).
TEST(plot, renders_to_a_non_empty_png) {
    NEED_ASSETS();
    if (system("command -v rsvg-convert >/dev/null 2>&1") != 0)
        GTEST_SKIP() << "rsvg-convert not found (librsvg2-bin, installed by scripts/install-deps.sh)";
    temp_dir a;
    plotted_run(a.path);
    lisa_test::write_file(a.path + "/blank.svg", "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"960\" height=\"540\">"
                                                 "<rect width=\"960\" height=\"540\" fill=\"white\"/></svg>");
    ASSERT_EQ(system(("rsvg-convert -b white " + a.path + "/training_loss.svg -o " + a.path + "/plot.png").c_str()), 0);
    ASSERT_EQ(system(("rsvg-convert -b white " + a.path + "/blank.svg -o " + a.path + "/blank.png").c_str()), 0);
    size_t plot = fs_read_text(a.path + "/plot.png").size(), blank = fs_read_text(a.path + "/blank.png").size();
    EXPECT_GT(plot, 10 * blank) << "plot " << plot << " bytes, blank canvas " << blank;
    EXPECT_EQ(fs_read_text(a.path + "/plot.png").substr(1, 3), "PNG");
}
