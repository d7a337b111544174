// Data-parallel training over MPI: 2 ranks (mpirun -np 2) against one process taking the same
// global batch (per-device batch x 2), for LISA, full fine-tuning and LoRA: the same losses, grad
// norms and final weights up to summation order; ranks agree on their weights; a resumed 2-rank
// run ends bit-identical to an uninterrupted one; a failing rank ends the job with one message;
// DPO over 2 ranks as one process.
// Skipped (and reported as skipped) when lisa was built without MPI or mpirun is missing.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "io/fs.h"
#include "io/safetensors.h"
#include "kernels/vulkan/vulkan.h"
#include "vulkan_validation.h"
#include "test_slowdown.h"
#include "test_util.h"

using json = nlohmann::json;
using namespace lisa;
using namespace lisa_test;

namespace {

#ifdef LISA_HAVE_MPI
constexpr bool kBuiltWithMpi = true;
#else
constexpr bool kBuiltWithMpi = false;
#endif

bool have_mpirun() { return system("command -v mpirun >/dev/null 2>&1") == 0; }

#define NEED_MPI()                                                                              \
    if (!kBuiltWithMpi) GTEST_SKIP() << "lisa was built without MPI (scripts/install-deps.sh installs OpenMPI)"; \
    if (!have_mpirun()) GTEST_SKIP() << "mpirun not found (openmpi-bin)"

// `mpirun -np 2 lisa ARGS` (root is allowed to run it in containers, as CI runs as root)
run_result run_ranks(int n, const std::string& args) {
    // a log of its own: ctest runs several of these tests at once
    static int calls = 0;
    const std::string out = std::string(LISA_BUILD_DIR) + "/mpi_run." + std::to_string(getpid()) + "." +
                            std::to_string(calls++) + ".log";
    // under the sanitizers, the ranks check memory but not leaks: OpenMPI's plugins keep
    // allocations until exit and are unloaded by then, so no suppression can name them
    const std::string asan = lisa_test::kSlowdown > 1 ? "ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 " : "";
    std::string cmd = asan + "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 timeout 300 mpirun -np " +
                      std::to_string(n) + " --oversubscribe " + std::string(LISA_BIN) + " " + args + " > " + out + " 2>&1";
    int rc = system(cmd.c_str());
    run_result r{WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, fs_read_text(out)};
    std::remove(out.c_str());
    return r;
}

std::vector<json> log_of(const std::string& dir) {
    std::vector<json> v;
    std::ifstream f(dir + "/trainer_log.jsonl");
    std::string line;
    while (std::getline(f, line))
        if (!line.empty()) v.push_back(json::parse(line));
    return v;
}

struct tiny_run {
    temp_dir    dir;
    std::string base;
    tiny_run() {
        base = dir.path + "/base";
        auto r = run_lisa("init --config " + test_dir() + "/../configs/tiny-llama.json --tokenizer_path " + test_dir() +
                          "/../data/tokenizer --output_model_path " + base + " --seed 5");
        EXPECT_EQ(r.code, 0) << r.output;
    }
    std::string common(const std::string& method) const {
        return "train --model_name_or_path " + base + " --dataset_path " + test_dir() + "/../data/train --method " +
               method + " --max_steps 6 --lisa_activated_layers 2 --lisa_interval_steps 2 --logging_steps 1 --seed 3 " +
               "--learning_rate 1e-3 --lora_r 4 --lora_dropout 0 ";  // dropout masks are drawn per rank
    }
};

class MpiMethods : public ::testing::TestWithParam<const char*> {};

}  // namespace

TEST_P(MpiMethods, TwoRanksTrainAsOneProcessWithTheGlobalBatch) {
    NEED_MPI();
    const std::string method = GetParam();
    tiny_run t;
    // one process with right-padded batches, two ranks padding-free (the default): the same numbers
    auto one = run_lisa(t.common(method) + "--per_device_train_batch_size 4 --padding_free false --output_model_path " +
                        t.dir.path + "/one");
    ASSERT_EQ(one.code, 0) << one.output;
    auto two = run_ranks(2, t.common(method) + "--per_device_train_batch_size 2 --output_model_path " + t.dir.path + "/two");
    ASSERT_EQ(two.code, 0) << two.output;
    EXPECT_NE(two.output.find("x 2 ranks (MPI)"), std::string::npos) << two.output;
    EXPECT_NE(two.output.find("ranks: the trained weights are identical on all 2 ranks"), std::string::npos) << two.output;
    auto a = log_of(t.dir.path + "/one"), b = log_of(t.dir.path + "/two");
    ASSERT_EQ(a.size(), 6u);
    ASSERT_EQ(b.size(), 6u);
    for (size_t i = 0; i < a.size(); i++) {
        EXPECT_NEAR(a[i]["loss"].get<double>(), b[i]["loss"].get<double>(), 1e-5 * a[i]["loss"].get<double>()) << i;
        EXPECT_NEAR(a[i]["grad_norm"].get<double>(), b[i]["grad_norm"].get<double>(), 1e-4 * a[i]["grad_norm"].get<double>()) << i;
        if (a[i].contains("active_layers")) { EXPECT_EQ(a[i]["active_layers"], b[i]["active_layers"]); }  // same draws
        EXPECT_EQ(b[i]["world_size"], 2);
        EXPECT_EQ(a[i]["allreduce_bytes"], 0);
        EXPECT_GT(b[i]["allreduce_bytes"].get<int64_t>(), 0);
    }
    // all-reduced: what trains only. LISA (2 of 8 layers + embedding rows + norm + head) and LoRA
    // send less than full fine-tuning, which sends every parameter (1,583,232 floats).
    // (full: every parameter but the untied embedding, whose touched rows only are sent)
    const int64_t bytes = b[0]["allreduce_bytes"].get<int64_t>();
    if (method == "full") {
        EXPECT_LE(bytes, 1583232 * 4);
        EXPECT_GT(bytes, 1583232 * 4 * 9 / 10);
    } else {
        EXPECT_LT(bytes, 1583232 * 4 / 2) << method;
    }
    // Weights: summation order differs (two partial sums, then their sum), and AdamW's normalised
    // update turns a 1e-7 difference in a near-zero gradient into a visible step: tolerance 5% of
    // the largest total move (lr 1e-3 x 6 steps)
    const std::string file = method == "lora" ? "/adapter_model.safetensors" : "/model.safetensors";
    EXPECT_LT(max_weight_diff(t.dir.path + "/one" + file, t.dir.path + "/two" + file), 0.05 * 1e-3 * 6);
}

// Preference tuning (DPO, issue #30) over 2 ranks: pairs split between the ranks, the loss and
// TRL's metrics the means over the whole global batch, as one process taking it.
TEST(MpiPreference, TwoRanksDpoAsOneProcess) {
    NEED_MPI();
    if (lisa_test::assets_dir().empty()) GTEST_SKIP() << "../shared/assets not found (set LISA_ASSETS)";
    temp_dir d;
    std::string lines;
    const char* openings[] = {"Once upon a time", "One day", "The little girl", "A big dog", "The sun"};
    for (int i = 0; i < 16; i++)
        lines += json({{"prompt", openings[i % 5]}, {"chosen", i % 3 ? " she was happy." : " it was big."},
                       {"rejected", " he was sad."}}).dump() + "\n";
    lisa_test::write_file(d.path + "/pairs.jsonl", lines);
    const std::string common = "train --model_name_or_path " + lisa_test::assets_dir() + "/models/aidreams-260k --dataset_path " +
                               d.path + "/pairs.jsonl --objective dpo --method lisa --lisa_activated_layers 2 "
                               "--lisa_interval_steps 2 --max_steps 4 --logging_steps 1 --learning_rate 5e-3 --seed 3 ";
    auto one = run_lisa(common + "--per_device_train_batch_size 4 --output_model_path " + d.path + "/one");
    ASSERT_EQ(one.code, 0) << one.output;
    auto two = run_ranks(2, common + "--per_device_train_batch_size 2 --output_model_path " + d.path + "/two");
    ASSERT_EQ(two.code, 0) << two.output;
    auto a = log_of(d.path + "/one"), b = log_of(d.path + "/two");
    ASSERT_EQ(a.size(), 4u);
    ASSERT_EQ(b.size(), 4u);
    // step 1 computes on the starting weights: equal to summation order; later steps move apart
    // as AdamW's normalised update amplifies that order (see the weights above): 1e-4
    for (size_t i = 0; i < a.size(); i++)
        for (const char* k : {"loss", "rewards/margins", "rewards/accuracies", "logps/chosen"})
            EXPECT_NEAR(a[i][k].get<double>(), b[i][k].get<double>(),
                        (i == 0 ? 1e-6 : 1e-4) * std::max(1.0, std::fabs(a[i][k].get<double>())))
                << k << ", step " << i + 1;
}

// ORPO's NLL is a mean over a micro-batch's chosen tokens (TRL; across ranks, DDP averages the
// ranks' losses): two ranks of 2 pairs equal one process accumulating two micro-batches of 2.
TEST(MpiPreference, TwoRanksOrpoAsOneProcessAccumulating) {
    NEED_MPI();
    if (lisa_test::assets_dir().empty()) GTEST_SKIP() << "../shared/assets not found (set LISA_ASSETS)";
    temp_dir d;
    std::string lines;
    const char* openings[] = {"Once upon a time", "One day", "The little girl", "A big dog", "The sun"};
    for (int i = 0; i < 16; i++)  // replies of different lengths, so the token means differ by micro-batch
        lines += json({{"prompt", openings[i % 5]}, {"chosen", i % 3 ? " she was very happy that day." : " it was big."},
                       {"rejected", " he was sad."}}).dump() + "\n";
    lisa_test::write_file(d.path + "/pairs.jsonl", lines);
    const std::string common = "train --model_name_or_path " + lisa_test::assets_dir() + "/models/aidreams-260k --dataset_path " +
                               d.path + "/pairs.jsonl --objective orpo --method full --max_steps 3 --logging_steps 1 "
                               "--learning_rate 5e-3 --seed 5 --per_device_train_batch_size 2 ";
    auto one = run_lisa(common + "--gradient_accumulation_steps 2 --output_model_path " + d.path + "/one");
    ASSERT_EQ(one.code, 0) << one.output;
    auto two = run_ranks(2, common + "--output_model_path " + d.path + "/two");
    ASSERT_EQ(two.code, 0) << two.output;
    auto a = log_of(d.path + "/one"), b = log_of(d.path + "/two");
    ASSERT_EQ(a.size(), 3u);
    ASSERT_EQ(b.size(), 3u);
    for (size_t i = 0; i < a.size(); i++)
        for (const char* k : {"loss", "nll_loss", "log_odds_ratio", "rewards/accuracies"})
            EXPECT_NEAR(a[i][k].get<double>(), b[i][k].get<double>(),
                        (i == 0 ? 1e-6 : 1e-4) * std::max(1.0, std::fabs(a[i][k].get<double>())))
                << k << ", step " << i + 1;
}

INSTANTIATE_TEST_SUITE_P(mpi, MpiMethods, ::testing::Values("lisa", "full", "lora", "lisa --lisa_layer_sampling owlore"),
                         [](const auto& info) {
                             std::string name = info.param;  // a test name: letters, digits, _
                             for (char& c : name)
                                 if (!std::isalnum((unsigned char)c)) c = '_';
                             return name;
                         });

TEST(mpi, a_resumed_two_rank_run_ends_bit_identical) {
    NEED_MPI();
    tiny_run t;
    const std::string args = t.common("lisa") + "--per_device_train_batch_size 2 --save_steps 3 ";
    auto full = run_ranks(2, args + "--output_model_path " + t.dir.path + "/a");
    ASSERT_EQ(full.code, 0) << full.output;
    std::filesystem::create_directories(t.dir.path + "/b");
    std::filesystem::copy(t.dir.path + "/a/checkpoint-3", t.dir.path + "/b/checkpoint-3",
                          std::filesystem::copy_options::recursive);
    auto resumed = run_ranks(2, args + "--output_model_path " + t.dir.path + "/b --resume_from_checkpoint " + t.dir.path +
                                    "/b/checkpoint-3");
    ASSERT_EQ(resumed.code, 0) << resumed.output;
    EXPECT_EQ(fs_read_text(t.dir.path + "/a/model.safetensors"), fs_read_text(t.dir.path + "/b/model.safetensors"));
}

TEST(mpi, a_failing_rank_ends_every_rank_with_one_message) {
    NEED_MPI();
    tiny_run t;
    auto r = run_ranks(2, t.common("lisa") + "--output_model_path " + t.dir.path + "/x --dataset_path /nonexistent");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.output.find("lisa: error (rank"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("/nonexistent"), std::string::npos) << r.output;
    EXPECT_FALSE(fs_is_file(t.dir.path + "/x/config.json"));
}

TEST(mpi, zero_stage_1_halves_adam_state_and_changes_no_number) {
    NEED_MPI();
    tiny_run t;
    for (const char* method : {"lisa", "full"}) {
        const std::string args = t.common(method) + "--per_device_train_batch_size 2 --save_steps 3 --output_model_path " +
                                 t.dir.path + "/" + method;
        auto z0 = run_ranks(2, args + "0");
        ASSERT_EQ(z0.code, 0) << z0.output;
        auto z1 = run_ranks(2, args + "1 --zero_stage 1");
        ASSERT_EQ(z1.code, 0) << z1.output;
        // AdamW is element-wise: each rank updating its half gives the very same numbers
        const std::string d0 = t.dir.path + "/" + method + "0", d1 = t.dir.path + "/" + method + "1";
        EXPECT_EQ(fs_read_text(d0 + "/model.safetensors"), fs_read_text(d1 + "/model.safetensors")) << method;
        auto a = log_of(d0), b = log_of(d1);
        ASSERT_EQ(a.size(), b.size());
        for (size_t i = 0; i < a.size(); i++) {
            const int64_t s0 = a[i]["optimizer_state_bytes"], s1 = b[i]["optimizer_state_bytes"];
            EXPECT_NEAR((double)s1, s0 / 2.0, 4096.0 * 8) << method << " step " << i;  // half, up to a row per group
            EXPECT_GT(b[i]["allgather_bytes"].get<int64_t>(), 0);
        }
        // the checkpoint holds whole moments: a sharded run's checkpoint is an unsharded one's
        EXPECT_EQ(fs_read_text(d0 + "/checkpoint-3/optimizer.safetensors"),
                  fs_read_text(d1 + "/checkpoint-3/optimizer.safetensors")) << method;
    }
    // and a run resumed with --zero_stage 1 from it ends where the uninterrupted one does
    std::filesystem::create_directories(t.dir.path + "/r");
    std::filesystem::copy(t.dir.path + "/lisa0/checkpoint-3", t.dir.path + "/r/checkpoint-3",
                          std::filesystem::copy_options::recursive);
    auto r = run_ranks(2, t.common("lisa") + "--per_device_train_batch_size 2 --zero_stage 1 --output_model_path " +
                              t.dir.path + "/r --resume_from_checkpoint " + t.dir.path + "/r/checkpoint-3");
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_EQ(fs_read_text(t.dir.path + "/lisa0/model.safetensors"), fs_read_text(t.dir.path + "/r/model.safetensors"));
}

// Gradient accumulation, and an epoch whose last global batch leaves rank 1 nothing (336 samples
// in global batches of 22: the 16th has 6, all on rank 0): still one process's run.
TEST(mpi, accumulation_and_an_uneven_last_batch_match_one_process) {
    NEED_MPI();
    tiny_run t;
    struct setup {
        const char* name;
        int         per_device, accumulation, steps;
    };
    for (const setup& s : {setup{"accumulate", 3, 2, 4}, setup{"uneven", 11, 1, 16}}) {
        std::string args = "train --model_name_or_path " + t.base + " --dataset_path " + test_dir() +
                           "/../data/train --max_steps " + std::to_string(s.steps) + " --gradient_accumulation_steps " +
                           std::to_string(s.accumulation) + " --lisa_activated_layers 2 --lisa_interval_steps 3 " +
                           "--logging_steps 1 --seed 4 --learning_rate 1e-3 ";
        auto one = run_lisa(args + "--per_device_train_batch_size " + std::to_string(2 * s.per_device) +
                            " --output_model_path " + t.dir.path + "/one-" + s.name);
        ASSERT_EQ(one.code, 0) << one.output;
        // two ranks with right-padded batches against one padding-free process
        auto two = run_ranks(2, args + "--per_device_train_batch_size " + std::to_string(s.per_device) +
                                    " --padding_free false --output_model_path " + t.dir.path + "/two-" + s.name);
        ASSERT_EQ(two.code, 0) << two.output;
        auto a = log_of(t.dir.path + "/one-" + s.name), b = log_of(t.dir.path + "/two-" + s.name);
        ASSERT_EQ(a.size(), (size_t)s.steps);
        ASSERT_EQ(b.size(), (size_t)s.steps);
        for (size_t i = 0; i < a.size(); i++)
            EXPECT_NEAR(a[i]["loss"].get<double>(), b[i]["loss"].get<double>(), 1e-5 * a[i]["loss"].get<double>())
                << s.name << " step " << i;
        EXPECT_LT(rel_update_diff(t.base + "/model.safetensors", t.dir.path + "/one-" + s.name + "/model.safetensors",
                                  t.dir.path + "/two-" + s.name + "/model.safetensors"),
                  0.01) << s.name;
    }
}

// Two ranks each driving a Vulkan device (here both on Mesa's lavapipe), gradients summed through
// the host: the losses of one CPU process with the global batch.
TEST(mpi, two_ranks_on_vulkan_train_as_one_cpu_process) {
    NEED_MPI();
    lisa_test::vulkan_validation_on();  // the ranks inherit it; their output must carry no message
    std::string why;
    bool usable = false;
    for (const auto& d : vulkan_devices(&why)) usable |= d.usable;
    if (!usable) GTEST_SKIP() << "no usable Vulkan device: " << (why.empty() ? "none listed" : why);
    tiny_run t;
    auto one = run_lisa(t.common("lisa") + "--per_device_train_batch_size 4 --output_model_path " + t.dir.path + "/one");
    ASSERT_EQ(one.code, 0) << one.output;
    auto two = run_ranks(2, t.common("lisa") + "--device vulkan --per_device_train_batch_size 2 --output_model_path " +
                                t.dir.path + "/two");
    ASSERT_EQ(two.code, 0) << two.output;
    EXPECT_NE(two.output.find("device: vulkan:0"), std::string::npos) << two.output;
    EXPECT_EQ(two.output.find("vulkan validation"), std::string::npos) << two.output;
    EXPECT_NE(two.output.find("ranks: the trained weights are identical on all 2 ranks"), std::string::npos) << two.output;
    auto a = log_of(t.dir.path + "/one"), b = log_of(t.dir.path + "/two");
    ASSERT_EQ(a.size(), 6u);
    ASSERT_EQ(b.size(), 6u);
    for (size_t i = 0; i < a.size(); i++) {
        EXPECT_NEAR(a[i]["loss"].get<double>(), b[i]["loss"].get<double>(), 1e-4 * a[i]["loss"].get<double>()) << i;
        EXPECT_GT(b[i]["device_mib"].get<double>(), 0.0) << i;
    }
}
