// Hard stops and hostile sizes (issue #15): a run killed with SIGKILL at any moment (also while it
// writes a checkpoint or the final model) leaves nothing that loads but is wrong, and resuming
// from `latest` always continues from the last complete checkpoint, ending where an uninterrupted
// run ends, byte for byte; a disk that fills up and an output folder that cannot be written give
// one clear error and nothing that looks complete; a 100k-instance dataset and a 5 MB instance
// load with bounded memory and say what they truncated.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "io/fs.h"
#include "io/safetensors.h"
#include "test_slowdown.h"
#include "test_util.h"

using namespace lisa;
using lisa_test::run_lisa;
using lisa_test::temp_dir;
using json = nlohmann::json;
namespace stdfs = std::filesystem;

static std::string aidreams() { return lisa_test::assets_dir() + "/models/aidreams-260k"; }
static std::string data_dir() { return lisa_test::golden_dir("aidreams_data") + "/text_only"; }

#define NEED_ASSETS() \
    if (lisa_test::assets_dir().empty()) GTEST_SKIP() << "../shared/assets not found"

// `lisa ARGS` in a child process, killed with SIGKILL after `after_ms` (if still running).
// Returns true if it was killed, false if it had finished.
static bool run_and_kill(const std::string& args, int after_ms) {
    const pid_t pid = fork();
    if (pid == 0) {
        const int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execl("/bin/sh", "sh", "-c", ("exec " + std::string(LISA_BIN) + " " + args).c_str(), (char*)nullptr);
        _exit(127);
    }
    const auto t0 = std::chrono::steady_clock::now();
    int st = 0;
    while (std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(after_ms)) {
        if (waitpid(pid, &st, WNOHANG) == pid) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return WIFSIGNALED(st);
}

// Everything in the output folder that claims to be complete is: each checkpoint-N has a config,
// weights that open, optimizer state that opens and a trainer_state.json for step N; a config.json
// at the top comes with weights that open. Returns the checkpoints' steps.
static std::vector<long> check_complete(const std::string& out) {
    std::vector<long> steps;
    if (!stdfs::is_directory(out)) return steps;
    for (const auto& e : stdfs::directory_iterator(out)) {
        const std::string n = e.path().filename().string();
        if (n.rfind("checkpoint-", 0) != 0 || n.find(".tmp") != std::string::npos) continue;
        const std::string d = e.path().string();
        EXPECT_TRUE(fs_is_file(d + "/config.json")) << d;
        EXPECT_NO_THROW(st_open(d + "/model.safetensors")) << d;
        EXPECT_NO_THROW(st_open(d + "/optimizer.safetensors")) << d;
        json st;
        EXPECT_NO_THROW(st = json::parse(fs_read_text(d + "/trainer_state.json"))) << d;
        EXPECT_EQ(st.value("global_step", -1L), std::stol(n.substr(11))) << d;
        steps.push_back(std::stol(n.substr(11)));
    }
    if (fs_is_file(out + "/config.json")) {
        EXPECT_NO_THROW(st_open(out + "/model.safetensors")) << out;
        EXPECT_TRUE(fs_is_file(out + "/train_results.json")) << "config.json is written last";
    }
    return steps;
}

TEST(hard_stop, sigkill_at_any_moment_resumes_to_the_uninterrupted_result) {
    NEED_ASSETS();
    temp_dir ref, out;
    const std::string common = "train --model_name_or_path " + aidreams() + " --dataset_path " + data_dir() +
                               " --max_steps 24 --save_steps 1 --per_device_train_batch_size 4 --lisa_interval_steps 5"
                               " --seed 3 --logging_steps 1 --threads 1 --output_model_path ";
    const auto t0 = std::chrono::steady_clock::now();
    auto r = run_lisa(common + ref.path);
    ASSERT_EQ(r.code, 0) << r.output;
    const double whole = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    // kills at moments spread over a run (its steps, its checkpoint writes, its final save), each
    // run resuming from the last complete checkpoint; the moments add up to under the whole run,
    // so every attempt is cut short; then one run to the end
    int kills = 0;
    const double fractions[] = {0.02, 0.05, 0.08, 0.03, 0.10, 0.06, 0.12, 0.04, 0.09, 0.07, 0.11};
    for (double f : fractions) {
        const bool resumable = !check_complete(out.path).empty();
        kills += run_and_kill(common + out.path + " --overwrite_output_dir" +
                                  (resumable ? " --resume_from_checkpoint latest" : ""),
                              (int)(f * whole));
        check_complete(out.path);
    }
    EXPECT_GE(kills, 8) << "the runs ended before their kill (a whole run: " << whole << " ms)";
    const bool resumable = !check_complete(out.path).empty();
    r = run_lisa(common + out.path + " --overwrite_output_dir" + (resumable ? " --resume_from_checkpoint latest" : ""));
    ASSERT_EQ(r.code, 0) << r.output;
    check_complete(out.path);
    EXPECT_EQ(fs_read_text(ref.path + "/model.safetensors"), fs_read_text(out.path + "/model.safetensors"))
        << "killed and resumed " << kills << " times, the model differs from the uninterrupted run's";
}

// The disk fills up (a file size limit, RLIMIT_FSIZE, makes writes fail with EFBIG as a full disk
// fails them with ENOSPC): one line naming the file, exit 1, no loadable model, no checkpoint.
TEST(hard_stop, a_full_disk_gives_one_clear_error_and_nothing_that_looks_complete) {
    NEED_ASSETS();
    temp_dir out;
    // 600 KiB: the 260k-parameter model's weights (1 MB) do not fit
    auto r = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + data_dir() + " --output_model_path " +
                          out.path + " --max_steps 3 --save_steps 2 --per_device_train_batch_size 4 --threads 1",
                      "sh -c 'trap \"\" XFSZ; ulimit -f 1200; exec \"$0\" \"$@\"'");
    EXPECT_EQ(r.code, 1) << r.output;
    EXPECT_NE(r.output.find("lisa: error:"), std::string::npos) << r.output;
    EXPECT_TRUE(r.output.find("File too large") != std::string::npos || r.output.find("No space") != std::string::npos)
        << r.output;
    EXPECT_FALSE(fs_is_file(out.path + "/config.json")) << "a model that looks complete";
    EXPECT_TRUE(check_complete(out.path).empty()) << "a checkpoint that looks complete";
}

// An output folder that cannot be written (as root, permission bits do not stop writes: the run
// is made as the unprivileged user `nobody` with setpriv(1)).
TEST(hard_stop, a_read_only_output_folder_gives_one_clear_error) {
    NEED_ASSETS();
    temp_dir base;
    const std::string out = base.path + "/out";
    fs_mkdirs(out);
    std::string prefix;
    if (geteuid() == 0) {
        if (std::system("command -v setpriv >/dev/null 2>&1") != 0) GTEST_SKIP() << "setpriv(1) not installed";
        prefix = "setpriv --reuid=65534 --regid=65534 --clear-groups";
        stdfs::permissions(base.path, stdfs::perms::owner_all | stdfs::perms::others_read | stdfs::perms::others_exec);
        // the checkout may sit where nobody cannot reach it (a home folder): then this cannot be tested
        const auto probe = run_lisa("info --model_name_or_path " + aidreams(), prefix);
        if (probe.code != 0) GTEST_SKIP() << "the user nobody cannot run lisa on the assets here: " << probe.output;
    }
    stdfs::permissions(out, stdfs::perms::owner_read | stdfs::perms::owner_exec | stdfs::perms::others_read |
                                stdfs::perms::others_exec);
    auto r = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + data_dir() +
                          " --output_model_path " + out + " --max_steps 2 --threads 1",
                      prefix);
    stdfs::permissions(out, stdfs::perms::owner_all);
    EXPECT_EQ(r.code, 1) << r.output;
    EXPECT_NE(r.output.find(out), std::string::npos) << "the error names the folder: " << r.output;
    EXPECT_NE(r.output.find("Permission denied"), std::string::npos) << r.output;
    EXPECT_LT(std::count(r.output.begin(), r.output.end(), '\n'), 6) << r.output;
    EXPECT_FALSE(fs_is_file(out + "/config.json"));
}

static json results_of(const std::string& out) { return json::parse(fs_read_text(out + "/train_results.json")); }

// 100,000 instances, and instances of 5 MB: both load, memory stays bounded (peak RSS well
// under what the raw text would cost several times over), the long one is truncated and said so.
TEST(hard_stop, a_100k_instance_dataset_and_a_5_mb_instance_load_with_bounded_memory) {
    NEED_ASSETS();
    temp_dir d;
    fs_mkdirs(d.path + "/many");
    {
        std::ofstream f(d.path + "/many/train.json");
        f << "{\"type\": \"text2text\", \"instances\": [";
        for (int i = 0; i < 100000; i++)
            f << (i ? "," : "") << "{\"input\": \"Question number " << i << "?\", \"output\": \"Answer " << i % 97 << ".\"}";
        f << "]}";
    }
    auto r = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + d.path + "/many --output_model_path " +
                      d.path + "/o1 --max_steps 2 --per_device_train_batch_size 2 --threads 1");
    ASSERT_EQ(r.code, 0) << r.output.substr(0, 2000);
    EXPECT_NE(r.output.find("100000 samples"), std::string::npos) << r.output.substr(0, 2000);
    EXPECT_LT(results_of(d.path + "/o1")["peak_rss_mib"].get<double>(), 400.0 * lisa_test::kMemoryFactor);

    fs_mkdirs(d.path + "/long");
    {
        std::ofstream f(d.path + "/long/train.json");
        std::string words;
        for (int i = 0; (int)words.size() < (5 << 20); i++) words += "word" + std::to_string(i % 1000) + " ";
        std::string run;  // and 5 MB without a space: one pre-token for the BPE to merge
        while ((int)run.size() < (5 << 20)) run += "ab";
        f << "{\"type\": \"text_only\", \"instances\": [{\"text\": \"" << words << "\"}, {\"text\": \"" << run
          << "\"}, {\"text\": \"short\"}]}";
    }
    const auto t0 = std::chrono::steady_clock::now();
    r = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + d.path + "/long --output_model_path " +
                 d.path + "/o2 --max_steps 1 --block_size 64 --threads 1");
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ASSERT_EQ(r.code, 0) << r.output.substr(0, 2000);
    EXPECT_NE(r.output.find("data: 2 of 3 samples truncated to 64 tokens"), std::string::npos) << r.output.substr(0, 2000);
    EXPECT_LT(results_of(d.path + "/o2")["peak_rss_mib"].get<double>(), 400.0 * lisa_test::kMemoryFactor);
    EXPECT_LT(secs, 60.0 * lisa_test::kSlowdown) << "a 5 MB instance took " << secs << " s";
}
