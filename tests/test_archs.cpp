// The newer architectures end to end through the CLI: tiny Qwen3, Gemma 3, SmolLM3 and Phi-3 models made with
// `lisa init` (the aidreams tokenizer, windows shorter than the data) go through everything the
// Llama family does: LISA with checkpoints and an exact resume, gradient checkpointing, LoRA on
// every target with merge-lora preserving the loss, full fine-tuning, eval and generate. The math
// itself is checked against PyTorch in test_golden (flavours qwen3, gemma3, smollm3, phi3, phi3_short,
// mistral_window).
#include <nlohmann/json.hpp>

#include "io/fs.h"
#include "model/decoder.h"
#include "test_util.h"

using namespace lisa;
using json = nlohmann::json;
using lisa_test::run_lisa;
using lisa_test::temp_dir;

static std::string aidreams() { return lisa_test::assets_dir() + "/models/aidreams-260k"; }
static std::string data_dir() { return lisa_test::golden_dir("aidreams_data") + "/text_only"; }


class archs : public ::testing::TestWithParam<const char*> {
  protected:
    void SetUp() override {
        if (lisa_test::assets_dir().empty()) GTEST_SKIP() << "../shared/assets not found (set LISA_ASSETS)";
        lisa_test::write_file(cfg.path + "/config.json", lisa_test::tiny_arch_config(GetParam()).dump());
        auto r = run_lisa("init --config " + cfg.path + "/config.json --output_model_path " + base.path +
                          " --tokenizer_path " + aidreams() + " --seed 3");
        ASSERT_EQ(r.code, 0) << r.output;
    }
    std::string train(const std::string& out, const std::string& args, const std::string& model = "") {
        auto r = run_lisa("train --model_name_or_path " + (model.empty() ? base.path : model) + " --dataset_path " +
                          data_dir() + " --output_model_path " + out + " --logging_steps 1 --block_size 64 " + args);
        EXPECT_EQ(r.code, 0) << r.output;
        return r.output;
    }
    double eval_loss(const std::string& args) {
        auto e = run_lisa("eval --dataset_path " + data_dir() + " --block_size 64 " + args);
        EXPECT_EQ(e.code, 0) << e.output;
        return e.code == 0 ? json::parse(e.output)["loss"].get<double>() : 0.0;
    }
    temp_dir cfg, base;
};

TEST_P(archs, lisa_checkpoints_resume_exactly_and_checkpointing_changes_nothing) {
    auto m = decoder_model_load(base.path);
    const std::string arch = GetParam();
    EXPECT_EQ(m->half, arch == "gemma3" || arch == "smollm3");  // the bf16 models train in half mode
    temp_dir whole, again, ckpt;
    const std::string args = "--lisa_activated_layers 1 --lisa_interval_steps 2 --max_steps 6 "
                             "--per_device_train_batch_size 4 --learning_rate 1e-3";
    train(whole.path, args + " --save_steps 3");
    ASSERT_TRUE(fs_is_dir(whole.path + "/checkpoint-3"));
    train(again.path, args + " --resume_from_checkpoint " + whole.path + "/checkpoint-3");
    EXPECT_EQ(fs_read_text(whole.path + "/model.safetensors"), fs_read_text(again.path + "/model.safetensors"))
        << "6 steps != 3 + resume 3";
    train(ckpt.path, args + " --gradient_checkpointing");
    EXPECT_EQ(fs_read_text(whole.path + "/model.safetensors"), fs_read_text(ckpt.path + "/model.safetensors"))
        << "gradient checkpointing changed the weights";
    // the saved folder is the same architecture and learned something
    auto got = decoder_model_load(whole.path);
    EXPECT_EQ(got->cfg.architecture, m->cfg.architecture);
    EXPECT_EQ(got->cfg.layer_window, m->cfg.layer_window);
    EXPECT_LT(eval_loss("--model_name_or_path " + whole.path), eval_loss("--model_name_or_path " + base.path));
}

// issue #27: padding-free batches (the default) train what right-padded ones train, for LISA (with
// checkpointing and accumulation), full fine-tuning and LoRA: the same losses step by step, and
// weights whose updates differ by float rounding only (relative to how far training moved them;
// AdamW's eps 1e-3 keeps rounding in near-zero gradients from becoming whole steps). Saved in
// fp32 so the bf16 models' masters are compared, not their rounding to bf16.
TEST_P(archs, padding_free_batches_train_what_padded_batches_train) {
    const std::string common = "--max_steps 4 --per_device_train_batch_size 4 --learning_rate 1e-3 --adam_epsilon 1e-3 "
                               "--torch_dtype float32 --seed 5 ";
    struct variant {
        const char* name;
        std::string args, file;
    };
    for (const variant& v :
         {variant{"lisa", "--lisa_activated_layers 2 --lisa_interval_steps 2 --gradient_checkpointing "
                          "--gradient_accumulation_steps 2", "/model.safetensors"},
          variant{"full", "--method full", "/model.safetensors"},
          // dropout masks are drawn per place in the batch's buffer, which the layouts fill
          // differently (as ranks draw their own): equal in distribution, so compared without
          variant{"lora", "--method lora --lora_r 4 --lora_dropout 0", "/adapter_model.safetensors"}}) {
        temp_dir pf, pd;
        const std::string out = train(pf.path, common + v.args);
        EXPECT_NE(out.find("batches: padding-free"), std::string::npos) << out;
        EXPECT_NE(out.find("% padding, computed on none of it"), std::string::npos) << out;
        train(pd.path, common + v.args + " --padding_free false");
        auto a = lisa_test::read_jsonl(pf.path + "/trainer_log.jsonl"), b = lisa_test::read_jsonl(pd.path + "/trainer_log.jsonl");
        ASSERT_EQ(a.size(), b.size()) << v.name;
        for (size_t i = 0; i < a.size(); i++) {
            if (!a[i].contains("loss")) continue;
            EXPECT_NEAR(a[i]["loss"].get<double>(), b[i]["loss"].get<double>(), 1e-5 * b[i]["loss"].get<double>())
                << v.name << " step " << i;
            EXPECT_NEAR(a[i]["grad_norm"].get<double>(), b[i]["grad_norm"].get<double>(),
                        1e-4 * b[i]["grad_norm"].get<double>()) << v.name << " step " << i;
        }
        // the weights (or adapters) the two runs saved: lr 1e-3 x 4 steps moved them up to 4e-3
        EXPECT_LT(lisa_test::max_weight_diff(pf.path + v.file, pd.path + v.file), 1e-6) << v.name;
    }
    // lisa eval: the same loss from padding-free batches (its default) and padded ones
    const double pf_loss = eval_loss("--model_name_or_path " + base.path);
    EXPECT_NEAR(pf_loss, eval_loss("--model_name_or_path " + base.path + " --padding_free false"), 1e-6 * pf_loss);
}

TEST_P(archs, lora_on_every_target_merges_into_the_same_loss) {
    temp_dir ad, merged;
    train(ad.path, "--method lora --lora_r 4 --lora_alpha 8 --max_steps 4 --learning_rate 1e-2 "
                   "--lora_target_modules q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj");
    auto r = run_lisa("merge-lora --model_name_or_path " + base.path + " --lora_model_path " + ad.path +
                      " --output_model_path " + merged.path + " --torch_dtype float32");
    ASSERT_EQ(r.code, 0) << r.output;
    const double with_adapter = eval_loss("--model_name_or_path " + base.path + " --lora_model_path " + ad.path);
    EXPECT_NEAR(eval_loss("--model_name_or_path " + merged.path), with_adapter, 1e-4 * with_adapter);
    EXPECT_LT(with_adapter, eval_loss("--model_name_or_path " + base.path));
    // the adapter names the modules PEFT finds in this model: Phi-3's fused ones
    const json ac = json::parse(fs_read_text(ad.path + "/adapter_config.json"));
    const std::vector<std::string> want =
        std::string(GetParam()) == "phi3"
            ? std::vector<std::string>{"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}
            : std::vector<std::string>{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    EXPECT_EQ(ac["target_modules"].get<std::vector<std::string>>(), want);
    temp_dir bad;
    r = run_lisa("train --model_name_or_path " + base.path + " --dataset_path " + data_dir() + " --output_model_path " +
                 bad.path + " --method lora --lora_target_modules fc1");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.output.find("--lora_target_modules: unknown module \"fc1\" (this "), std::string::npos) << r.output;
}

TEST_P(archs, full_fine_tuning_then_generate) {
    temp_dir full;
    train(full.path, "--method full --max_steps 3 --per_device_train_batch_size 4 --learning_rate 1e-3");
    auto g = run_lisa("generate --model_name_or_path " + full.path + " --prompt Hello --max_new_tokens 12");
    EXPECT_EQ(g.code, 0) << g.output;
    EXPECT_FALSE(g.output.empty());
}

INSTANTIATE_TEST_SUITE_P(tiny, archs, ::testing::Values("qwen3", "gemma3", "smollm3", "phi3"));

// The configs/ shapes of the real models read as those models (parameter counts published by
// their makers: Qwen3-0.6B 0.6B incl. embeddings (596M), Gemma 3 270M and 1B, SmolLM3-3B's
// safetensors index: total_parameters 3075098624, Phi-3-mini 3,821,079,552, Phi-4-mini 3,836,021,760).
TEST(archs_configs, real_shapes_have_the_published_parameter_counts) {
    auto count = [](const char* name) {
        return config_num_params(config_load(lisa_test::test_dir() + "/../configs/" + name));
    };
    EXPECT_EQ(count("qwen3-0.6b.json"), 596049920);
    EXPECT_EQ(count("gemma-3-270m.json"), 268098176);
    EXPECT_EQ(count("gemma-3-1b.json"), 999885952);
    EXPECT_EQ(count("smollm3-3b.json"), 3075098624);
    EXPECT_EQ(count("phi-3-mini-4k.json"), 3821079552);
    EXPECT_EQ(count("phi-4-mini.json"), 3836021760);
}
