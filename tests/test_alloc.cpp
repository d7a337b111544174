// The step loop allocates nothing: activations, batches, gradient rows and kernel temporaries
// are planned once (or grown on the first step). Every operator new of this test binary is
// counted; between two progress callbacks of the real trainer (one optimizer step: batching,
// forward, backward, clipping, AdamW, LISA's draws every 3 steps, and on two MPI ranks the
// gradient sums) the count must not move.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // our operator new is malloc
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <new>

#include "comm/comm.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "io/fs.h"
#include "model/decoder.h"
#include "train/trainer.h"
#include "test_slowdown.h"
#include "test_util.h"

static std::atomic<long> g_news{0};
void* operator new(size_t n) {
    g_news++;
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
void* operator new[](size_t n) {
    g_news++;
    if (void* p = std::malloc(n ? n : 1)) return p;
    throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }

using namespace lisa;

static void check_method(const char* method, bool untied, bool checkpointing, const std::string& sampling = "uniform",
                         bool padding_free = true, bool group_by_length = false) {
    lisa_test::temp_dir dir;
    const std::string cfg_text = std::string(R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": 300, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
        "tie_word_embeddings": )") + (untied ? "false" : "true") + "}";
    auto m = decoder_model_init(config_parse(cfg_text, "test"));
    decoder_model_init_random(m.get(), 3);
    decoder_save_options so;
    decoder_model_save(*m, dir.path + "/base", so);
    // samples of several lengths, so batches change shape from step to step
    dataset d;
    rng r;
    rng_init(&r, 5);
    for (int i = 0; i < 64; i++) {
        sample s;
        const int T = 8 + (int)rng_below(&r, 40);
        for (int t = 0; t < T; t++) s.ids.push_back((int32_t)rng_below(&r, 300));
        s.labels = s.ids;
        d.samples.push_back(std::move(s));
    }
    train_options o;
    ASSERT_TRUE(train_method_parse(method, &o.method));
    o.model_name_or_path = dir.path + "/base";
    o.output_model_path = dir.path + "/out";
    o.train_data = &d;
    o.save_model = false;
    o.max_steps = 12;
    o.per_device_train_batch_size = 3;
    o.gradient_accumulation_steps = 2;
    o.lisa_activated_layers = 2;
    o.lisa_interval_steps = 3;    // draws at steps 0, 3, 6, 9: inside the counted steps
    o.lisa_layer_sampling = sampling;
    o.logging_steps = 1000;       // no log line until the last step
    o.lora_dropout = 0.1;
    o.gradient_checkpointing = checkpointing;
    o.padding_free = padding_free;
    o.group_by_length = group_by_length;  // 10 steps an epoch: the new epoch's order at step 11
    std::vector<long> at;  // allocation count at each progress callback
    at.reserve(64);
    train_callbacks cb;
    cb.on_progress = [&](int64_t, int64_t, double, double, double, const std::vector<int>*, size_t) {
        at.push_back(g_news.load());
    };
    train_run(o, cb);
    ASSERT_EQ(at.size(), 12u);
    const long before = g_news.load();
    { std::vector<int> probe(3); (void)probe; }
    ASSERT_EQ(g_news.load(), before + 1) << "the counter sees every allocation of this binary";
    for (size_t k = 2; k + 1 < at.size(); k++)  // steps 3..11 (the last one logs its JSON line)
        EXPECT_EQ(at[k + 1] - at[k], 0) << method << ": step " << k + 2 << " allocated";
}

TEST(no_allocation, lisa_step_loop) { check_method("lisa", true, false); }
TEST(no_allocation, full_step_loop_with_checkpointing) { check_method("full", false, true); }
TEST(no_allocation, lora_step_loop) { check_method("lora", true, false); }
TEST(no_allocation, lisa_owlore_step_loop) { check_method("lisa", false, false, "owlore"); }
TEST(no_allocation, padded_length_grouped_step_loop) { check_method("lisa", true, false, "uniform", false, true); }
TEST(no_allocation, padding_free_length_grouped_step_loop) { check_method("full", true, true, "uniform", true, true); }

// The same LISA run on two ranks: this test starts its own binary under mpirun, where each rank
// runs the check (gradients summed as the backward finishes each layer, the sparse embedding
// rows of the global step, the draws).
TEST(no_allocation, lisa_step_loop_on_two_ranks) {
    if (comm_world().size() > 1) {  // a rank of the run started below
        check_method("lisa", true, false);
        return;
    }
#ifndef LISA_HAVE_MPI
    GTEST_SKIP() << "lisa was built without MPI (scripts/install-deps.sh installs OpenMPI)";
#endif
    if (system("command -v mpirun >/dev/null 2>&1") != 0) GTEST_SKIP() << "mpirun not found (openmpi-bin)";
    const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
    lisa_test::temp_dir logdir;
    const std::string log = logdir.path + "/ranks.log";
    // under the sanitizers the ranks check memory but not leaks (OpenMPI's plugins, as in test_mpi)
    const std::string asan = lisa_test::kSlowdown > 1 ? "ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 " : "";
    const std::string cmd = asan + "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 timeout 300 "
                            "mpirun -np 2 --oversubscribe " + self +
                            " --gtest_color=no --gtest_filter=no_allocation.lisa_step_loop_on_two_ranks > " + log + " 2>&1";
    const int rc = system(cmd.c_str());
    const std::string out = fs_read_text(log);
    EXPECT_EQ(rc, 0) << out;
    // both ranks ran the check (gtest prints one PASSED line per process)
    size_t passed = 0;
    for (size_t p = out.find("[  PASSED  ] 1 test"); p != std::string::npos; p = out.find("[  PASSED  ] 1 test", p + 1))
        passed++;
    EXPECT_EQ(passed, 2u) << out;
}
