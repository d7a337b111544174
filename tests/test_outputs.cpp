// A user's files (issue #25): one writer per output folder or file, with a lock that a crashed run
// does not leave stuck; a model, an adapter or an earlier run's checkpoints are replaced only when
// asked, and then whole; an interrupted run is resumed or refused, never restarted over itself;
// `latest` passes over a damaged checkpoint and says so; a replayed training_args.json lets the
// command line decide. Every case runs the real `lisa` program, concurrent cases as real processes.
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/fs.h"
#include "train/checkpoint.h"
#include "test_util.h"

using namespace lisa;
using json = nlohmann::json;
using lisa_test::run_lisa;
using lisa_test::temp_dir;
namespace stdfs = std::filesystem;

#define NEED_ASSETS() \
    if (lisa_test::assets_dir().empty()) GTEST_SKIP() << "../shared/assets not found (set LISA_ASSETS)"

static std::string aidreams() { return lisa_test::assets_dir() + "/models/aidreams-260k"; }
static std::string data_dir() { return lisa_test::golden_dir("aidreams_data") + "/text_only"; }
static std::string lisa_bin() { return LISA_BIN; }
static std::string tiny_config() { return lisa_test::test_dir() + "/../configs/tiny-llama.json"; }
static std::string tiny_tokenizer() { return lisa_test::test_dir() + "/../data/tokenizer"; }

static std::string train_args(const std::string& out) {
    return "train --model_name_or_path " + aidreams() + " --dataset_path " + data_dir() + " --output_model_path " + out +
           " --per_device_train_batch_size 2 --logging_steps 1 ";
}

// runs a shell script, returning its stdout + stderr
static std::string sh(const std::string& script) {
    FILE* p = popen(("sh -c '" + script + "' 2>&1").c_str(), "r");
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
    pclose(p);
    return out;
}

static bool has(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

static std::vector<std::string> names_in(const std::string& dir) {
    std::vector<std::string> v;
    for (const auto& e : stdfs::directory_iterator(dir)) v.push_back(e.path().filename().string());
    std::sort(v.begin(), v.end());
    return v;
}

static void copy_dir(const std::string& from, const std::string& to) {
    stdfs::create_directories(to);
    for (const auto& e : stdfs::directory_iterator(from))
        stdfs::copy_file(e.path(), to + "/" + e.path().filename().string(), stdfs::copy_options::overwrite_existing);
    for (const auto& e : stdfs::directory_iterator(to))  // the assets are read-only; copies must not be
        stdfs::permissions(e.path(), stdfs::perms::owner_write, stdfs::perm_options::add);
}

// A second training into a folder a running one holds is refused at once, naming the folder
// and the process; the first run is unharmed and the folder holds its files only.
TEST(outputs, a_second_writer_is_refused_naming_the_process_that_holds_the_folder) {
    NEED_ASSETS();
    temp_dir td;
    const std::string out = td.path + "/run";
    const std::string script = lisa_bin() + " " + train_args(out) + "--method full --max_steps 1000000 > " + td.path +
                               "/a.txt 2>&1 & pid=$!; while [ ! -s " + out + "/trainer_log.jsonl ]; do sleep 0.05; done; " +
                               lisa_bin() + " " + train_args(out) + "--method lora --max_steps 2; echo rc=$?; echo pid=$pid; "
                               "kill -INT $pid; wait $pid; echo first=$?";
    const std::string r = sh(script);
    const std::string pid = r.substr(r.find("pid=") + 4, r.find('\n', r.find("pid=")) - r.find("pid=") - 4);
    EXPECT_TRUE(has(r, "rc=1")) << r;
    EXPECT_TRUE(has(r, "lisa: error: " + out + " is in use by lisa train (pid " + pid + " on ")) << r;
    EXPECT_TRUE(has(r, "; wait for it to end, or choose another --output_model_path")) << r;
    EXPECT_TRUE(has(r, "first=130")) << r << fs_read_text(td.path + "/a.txt");
    // the folder is the first run's alone: its arguments, its checkpoint, no adapter, no lock left
    json args = json::parse(fs_read_text(out + "/training_args.json"));
    EXPECT_EQ(args["method"], "full");
    EXPECT_FALSE(fs_is_file(out + "/adapter_model.safetensors"));
    EXPECT_FALSE(fs_is_file(out + "/adapter_config.json"));
    EXPECT_FALSE(fs_is_file(out + "/.lisa.lock"));
    std::string log = fs_read_text(out + "/trainer_log.jsonl");
    EXPECT_FALSE(has(log, "\"lora")) << "the refused LoRA run wrote into the log";
}

// Two trainings started together: whichever comes second is refused (by the lock, or by the
// model the first one finished), and the folder holds exactly one run's files.
TEST(outputs, two_trainings_started_together_never_mix) {
    NEED_ASSETS();
    temp_dir td;
    const std::string out = td.path + "/run";
    const std::string r = sh(lisa_bin() + " " + train_args(out) + "--method full --max_steps 20 > " + td.path +
                             "/full.txt 2>&1 & a=$!; " + lisa_bin() + " " + train_args(out) +
                             "--method lora --max_steps 20 > " + td.path + "/lora.txt 2>&1 & b=$!; "
                             "wait $a; echo full=$?; wait $b; echo lora=$?");
    const bool full_won = has(r, "full=0"), lora_won = has(r, "lora=0");
    ASSERT_NE(full_won, lora_won) << r << fs_read_text(td.path + "/full.txt") << fs_read_text(td.path + "/lora.txt");
    const std::string loser = fs_read_text(td.path + (full_won ? "/lora.txt" : "/full.txt"));
    EXPECT_TRUE(has(loser, "is in use by lisa train (pid") || has(loser, "already holds")) << loser;
    json args = json::parse(fs_read_text(out + "/training_args.json"));
    EXPECT_EQ(args["method"], full_won ? "full" : "lora");
    EXPECT_EQ(fs_is_file(out + "/config.json"), full_won);
    EXPECT_EQ(fs_is_file(out + "/adapter_config.json"), lora_won);
    EXPECT_EQ(fs_is_file(out + "/adapter_model.safetensors"), lora_won);
    std::istringstream log(fs_read_text(out + "/trainer_log.jsonl"));
    std::string line;
    int64_t last = 0;
    while (std::getline(log, line)) {  // one run's records: steps 1..20 in order, once each
        const int64_t s = json::parse(line).value("step", (int64_t)-1);
        EXPECT_EQ(s, last + 1) << line;
        last = s;
    }
    EXPECT_EQ(last, 20);
}

// A lock whose process died (SIGKILL, a machine that stopped) does not stop the next run: it is
// taken over, and the run says whose it was.
TEST(outputs, a_stale_lock_is_taken_over_and_reported) {
    NEED_ASSETS();
    temp_dir td;
    const std::string out = td.path + "/run";
    stdfs::create_directories(out);
    lisa_test::write_file(out + "/.lisa.lock",
                          R"({"pid": 999999, "host": "gone", "command": "lisa train", "started": "yesterday"})" "\n");
    auto r = run_lisa(train_args(out) + "--max_steps 2");
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_TRUE(has(r.output, "took over a stale lock left by lisa train (pid 999999 on gone, since yesterday)"))
        << r.output;
    EXPECT_FALSE(fs_is_file(out + "/.lisa.lock"));
    // and a SIGKILLed run's own lock likewise
    const std::string out2 = td.path + "/killed";
    sh(lisa_bin() + " " + train_args(out2) + "--max_steps 1000000 > /dev/null 2>&1 & pid=$!; while [ ! -s " + out2 +
       "/trainer_log.jsonl ]; do sleep 0.05; done; kill -KILL $pid; wait $pid");
    ASSERT_TRUE(fs_is_file(out2 + "/.lisa.lock"));
    r = run_lisa(train_args(out2) + "--max_steps 2 --overwrite_output_dir");
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_TRUE(has(r.output, "took over a stale lock left by lisa train (pid")) << r.output;
}

// init, merge-lora and export-gguf take the same lock (held here by flock(1), as any process could).
TEST(outputs, init_merge_and_export_refuse_a_held_output) {
    NEED_ASSETS();
    temp_dir td;
    const std::string dir = td.path + "/m", gguf = td.path + "/m.gguf";
    stdfs::create_directories(dir);
    auto held = [&](const std::string& lock, const std::string& cmd) {
        const std::string ready = td.path + "/ready", done = td.path + "/done";
        return sh("rm -f " + ready + " " + done + "; flock " + lock + " -c \"touch " + ready + "; while [ ! -e " + done +
                  " ]; do sleep 0.05; done\" & f=$!; while [ ! -e " + ready + " ]; do sleep 0.05; done; " + lisa_bin() +
                  " " + cmd + "; echo rc=$?; touch " + done + "; wait $f");
    };
    std::string r = held(dir + "/.lisa.lock", "init --config " + tiny_config() + " --output_model_path " + dir);
    EXPECT_TRUE(has(r, "lisa: error: " + dir + " is in use by another lisa process; wait for it to end, or choose "
                                                "another --output_model_path")) << r;
    EXPECT_TRUE(has(r, "rc=1")) << r;
    r = held(dir + "/.lisa.lock", "merge-lora --model_name_or_path " + aidreams() + " --lora_model_path " +
                                      lisa_test::golden_dir("aidreams_data") + "/lora_adapter --output_model_path " + dir);
    EXPECT_TRUE(has(r, dir + " is in use by another lisa process")) << r;
    EXPECT_FALSE(fs_is_file(dir + "/config.json"));
    r = held(gguf + ".lock", "export-gguf --model_name_or_path " + aidreams() + " --outfile " + gguf);
    EXPECT_TRUE(has(r, gguf + " is in use by another lisa process; wait for it to end, or choose another --outfile")) << r;
    EXPECT_FALSE(fs_is_file(gguf));
}

// merge-lora into a folder holding a model (the base itself here) needs --overwrite_output_dir;
// without it the base is untouched, byte for byte. With it, the folder is the merged model.
TEST(outputs, merge_lora_never_replaces_a_model_unasked) {
    NEED_ASSETS();
    temp_dir td;
    const std::string base = td.path + "/base", adapter = lisa_test::golden_dir("aidreams_data") + "/lora_adapter";
    copy_dir(aidreams(), base);
    const std::string before = fs_read_text(base + "/model.safetensors");
    auto r = run_lisa("merge-lora --model_name_or_path " + base + " --lora_model_path " + adapter +
                      " --output_model_path " + base);
    EXPECT_EQ(r.code, 1) << r.output;
    EXPECT_TRUE(has(r.output, "lisa: error: " + base + " already holds a model: pass --overwrite_output_dir to replace "
                              "it, or choose another --output_model_path")) << r.output;
    EXPECT_EQ(fs_read_text(base + "/model.safetensors"), before);
    EXPECT_TRUE(fs_is_file(base + "/config.json"));
    // the reference: the same merge into a new folder
    r = run_lisa("merge-lora --model_name_or_path " + base + " --lora_model_path " + adapter + " --output_model_path " +
                 td.path + "/merged");
    ASSERT_EQ(r.code, 0) << r.output;
    r = run_lisa("merge-lora --model_name_or_path " + base + " --lora_model_path " + adapter + " --output_model_path " +
                 base + " --overwrite_output_dir");
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_EQ(fs_read_text(base + "/model.safetensors"), fs_read_text(td.path + "/merged/model.safetensors"));
    EXPECT_EQ(names_in(base), names_in(td.path + "/merged"));  // the base's tokenizer kept, nothing else added
    // into an adapter's folder: refused too (an adapter is a user's result)
    temp_dir ad;
    copy_dir(adapter, ad.path);
    r = run_lisa("merge-lora --model_name_or_path " + base + " --lora_model_path " + ad.path + " --output_model_path " +
                 ad.path);
    EXPECT_EQ(r.code, 1) << r.output;
    EXPECT_TRUE(has(r.output, ad.path + " already holds a LoRA adapter")) << r.output;
}

// init into a folder that holds a trained model: refused; with --overwrite_output_dir the new
// model replaces every file of the old one (no old tokenizer or special_tokens_map.json beside
// new weights). A tokenizer larger than the configured vocabulary is refused naming both sizes.
TEST(outputs, init_replaces_every_file_of_the_previous_model) {
    NEED_ASSETS();
    temp_dir td;
    const std::string dir = td.path + "/m";
    copy_dir(aidreams(), dir);
    lisa_test::write_file(dir + "/special_tokens_map.json", "{\"eos_token\": \"</s>\"}\n");
    lisa_test::write_file(dir + "/notes.txt", "the user's own file\n");
    auto r = run_lisa("init --config " + tiny_config() + " --tokenizer_path " + tiny_tokenizer() + " --output_model_path " + dir);
    EXPECT_EQ(r.code, 1) << r.output;
    EXPECT_TRUE(has(r.output, dir + " already holds a model: pass --overwrite_output_dir")) << r.output;
    EXPECT_EQ(fs_read_text(dir + "/model.safetensors"), fs_read_text(aidreams() + "/model.safetensors"));
    r = run_lisa("init --config " + tiny_config() + " --tokenizer_path " + tiny_tokenizer() + " --output_model_path " +
                 dir + " --overwrite_output_dir");
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_FALSE(fs_is_file(dir + "/special_tokens_map.json"));
    EXPECT_EQ(fs_read_text(dir + "/tokenizer.json"), fs_read_text(tiny_tokenizer() + "/tokenizer.json"));
    EXPECT_EQ(fs_read_text(dir + "/notes.txt"), "the user's own file\n");  // not lisa's: left alone
    r = run_lisa("eval --model_name_or_path " + dir + " --dataset_path " + lisa_test::test_dir() + "/../data/eval");
    EXPECT_EQ(r.code, 0) << r.output;
    // without a tokenizer: the old one goes too
    r = run_lisa("init --config " + tiny_config() + " --output_model_path " + dir + " --overwrite_output_dir true");
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_FALSE(fs_is_file(dir + "/tokenizer.json"));
    EXPECT_FALSE(fs_is_file(dir + "/tokenizer_config.json"));
    // a 151k tokenizer onto a config of fewer rows
    const std::string big = lisa_test::assets_dir() + "/tokenizers/qwen3";
    r = run_lisa("init --config " + tiny_config() + " --tokenizer_path " + big + " --output_model_path " + td.path + "/q");
    EXPECT_EQ(r.code, 1) << r.output;
    EXPECT_TRUE(has(r.output, "--tokenizer_path " + big + ": its tokenizer has 151")) << r.output;
    EXPECT_TRUE(has(r.output, "has vocab_size ")) << r.output;
    EXPECT_FALSE(fs_is_dir(td.path + "/q"));
    // a folder made that way by hand is refused at load, naming both sizes, before any step
    copy_dir(dir, td.path + "/hand");
    stdfs::copy_file(big + "/tokenizer.json", td.path + "/hand/tokenizer.json", stdfs::copy_options::overwrite_existing);
    r = run_lisa("train --model_name_or_path " + td.path + "/hand --dataset_path " + lisa_test::test_dir() +
                 "/../data/train --output_model_path " + td.path + "/o --max_steps 1");
    EXPECT_EQ(r.code, 1) << r.output;
    EXPECT_TRUE(has(r.output, "/hand/tokenizer.json: the tokenizer has 151")) << r.output;
    EXPECT_TRUE(has(r.output, "/hand/config.json has vocab_size")) << r.output;
    r = run_lisa("eval --model_name_or_path " + td.path + "/hand --dataset_path " + lisa_test::test_dir() + "/../data/eval");
    EXPECT_EQ(r.code, 1) << r.output;
    EXPECT_TRUE(has(r.output, "/hand/config.json has vocab_size")) << r.output;
}

// Ctrl-C, then the same command again: refused, saying how to resume or start again; the log and
// checkpoint are untouched. Resuming continues the log; --overwrite_output_dir starts clean.
TEST(outputs, an_interrupted_run_is_resumed_or_restarted_never_mixed) {
    NEED_ASSETS();
    temp_dir td;
    const std::string out = td.path + "/run";
    const std::string cmd = lisa_bin() + " " + train_args(out) + "--max_steps 1000000";
    std::string r = sh(cmd + " > " + td.path + "/a.txt 2>&1 & pid=$!; while [ ! -s " + out +
                       "/trainer_log.jsonl ]; do sleep 0.05; done; kill -INT $pid; wait $pid; echo rc=$?");
    ASSERT_TRUE(has(r, "rc=130")) << r << fs_read_text(td.path + "/a.txt");
    std::vector<std::string> ckpts;
    for (const auto& n : names_in(out))
        if (n.rfind("checkpoint-", 0) == 0) ckpts.push_back(n);
    ASSERT_EQ(ckpts.size(), 1u);
    const std::string log_before = fs_read_text(out + "/trainer_log.jsonl");
    auto again = run_lisa(train_args(out) + "--max_steps 1000000");
    EXPECT_EQ(again.code, 1) << again.output;
    EXPECT_TRUE(has(again.output, "lisa: error: " + out + " holds an earlier run (" + ckpts[0] +
                                      "): continue it with --resume_from_checkpoint latest, or pass "
                                      "--overwrite_output_dir to start again")) << again.output;
    EXPECT_EQ(fs_read_text(out + "/trainer_log.jsonl"), log_before);
    EXPECT_TRUE(fs_is_dir(out + "/" + ckpts[0]));
    const int64_t at = std::stoll(ckpts[0].substr(11));
    // resume: the log goes on from the checkpoint's step
    auto res = run_lisa(train_args(out) + "--max_steps " + std::to_string(at + 2) + " --resume_from_checkpoint latest");
    ASSERT_EQ(res.code, 0) << res.output;
    const std::string log_after = fs_read_text(out + "/trainer_log.jsonl");
    EXPECT_EQ(log_after.rfind(log_before, 0), 0u) << "resuming must append to the log";
    // start again: the earlier run's checkpoint, model and log are gone, the new log starts at step 1
    auto fresh = run_lisa(train_args(out) + "--max_steps 2 --overwrite_output_dir");
    ASSERT_EQ(fresh.code, 0) << fresh.output;
    EXPECT_TRUE(has(fresh.output, "--overwrite_output_dir: removed a model and " + ckpts[0] + " of the earlier run"))
        << fresh.output;
    EXPECT_FALSE(fs_is_dir(out + "/" + ckpts[0]));
    std::istringstream log(fs_read_text(out + "/trainer_log.jsonl"));
    std::string first;
    std::getline(log, first);
    EXPECT_EQ(json::parse(first)["step"], 1) << first;
}

// --resume_from_checkpoint latest whose newest checkpoint is damaged: the damage is named, the
// newest complete one is used, and nothing is printed about the run before that is known.
TEST(outputs, latest_passes_over_a_damaged_checkpoint_and_says_so) {
    NEED_ASSETS();
    temp_dir td;
    const std::string out = td.path + "/run";
    auto r = run_lisa(train_args(out) + "--max_steps 6 --save_steps 2");
    ASSERT_EQ(r.code, 0) << r.output;
    // truncate the newest checkpoint's weights, drop the next one's optimizer state
    stdfs::resize_file(out + "/checkpoint-6/model.safetensors", stdfs::file_size(out + "/checkpoint-6/model.safetensors") / 2);
    r = run_lisa(train_args(out) + "--max_steps 8 --save_steps 2 --resume_from_checkpoint latest");
    ASSERT_EQ(r.code, 0) << r.output;
    const size_t warn = r.output.find("lisa: warning: --resume_from_checkpoint latest: " + out + "/checkpoint-6 is damaged (");
    ASSERT_NE(warn, std::string::npos) << r.output;
    EXPECT_TRUE(has(r.output, "resuming from " + out + "/checkpoint-4, the newest complete checkpoint")) << r.output;
    EXPECT_TRUE(has(r.output, "resumed from " + out + "/checkpoint-4 at step 4")) << r.output;
    EXPECT_EQ(r.output.find("active layers"), r.output.find("active layers", warn)) << "printed before the checkpoint was known";
    EXPECT_EQ(checkpoint_damage(out + "/checkpoint-6"), "") << "the resumed run rewrites checkpoint-6 whole";
    // a missing optimizer state and a missing trainer state
    stdfs::remove(out + "/checkpoint-8/optimizer.safetensors");
    stdfs::remove(out + "/checkpoint-6/trainer_state.json");
    r = run_lisa(train_args(out) + "--max_steps 9 --resume_from_checkpoint latest");
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_TRUE(has(r.output, out + "/checkpoint-8 is damaged (optimizer.safetensors is missing); resuming from " + out +
                              "/checkpoint-4")) << r.output;
    EXPECT_TRUE(has(r.output, "resumed from " + out + "/checkpoint-4 at step 4")) << r.output;
    // an explicit checkpoint that is damaged is named, not passed over
    r = run_lisa(train_args(out) + "--max_steps 10 --resume_from_checkpoint " + out + "/checkpoint-8");
    EXPECT_EQ(r.code, 1) << r.output;
    EXPECT_TRUE(has(r.output, "--resume_from_checkpoint " + out + "/checkpoint-8: the checkpoint is damaged: "
                              "optimizer.safetensors is missing")) << r.output;
    // nothing complete left: one line naming the newest damage
    for (const char* c : {"checkpoint-2", "checkpoint-4"}) stdfs::remove(out + "/" + c + "/trainer_state.json");
    r = run_lisa(train_args(out) + "--max_steps 10 --resume_from_checkpoint latest");
    EXPECT_EQ(r.code, 1) << r.output;
    EXPECT_TRUE(has(r.output, "lisa: error: --resume_from_checkpoint latest: no complete checkpoint in " + out + ": " +
                              out + "/checkpoint-8 is damaged (optimizer.safetensors is missing)")) << r.output;
}

// --config training_args.json with a flag on the command line: the flag wins, also over a value
// the file holds for another flag of the same choice (epochs vs steps); values the run derived
// are not pinned in the file, and its paths are absolute, so a replay works from anywhere.
TEST(outputs, a_replayed_run_takes_the_command_lines_flags_and_works_from_any_folder) {
    NEED_ASSETS();
    temp_dir td;
    copy_dir(data_dir(), td.path + "/data");
    auto r = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path data --output_model_path a "
                      "--num_train_epochs 2 --per_device_train_batch_size 2 --logging_steps 1", "cd " + td.path + " &&");
    ASSERT_EQ(r.code, 0) << r.output;
    json a = json::parse(fs_read_text(td.path + "/a/training_args.json"));
    EXPECT_TRUE(a["max_steps"].is_null()) << a.dump();
    EXPECT_EQ(a["resolved"]["max_steps"], 8) << a.dump();  // 8 samples / batch 2 = 4 steps an epoch
    EXPECT_EQ(a["dataset_path"], stdfs::canonical(td.path + "/data").string());
    EXPECT_EQ(a["output_model_path"], stdfs::canonical(td.path + "/a").string());
    // from another folder, one epoch instead of two
    r = run_lisa("train --config " + td.path + "/a/training_args.json --num_train_epochs 1 --output_dir " + td.path + "/b",
                 "cd / &&");
    ASSERT_EQ(r.code, 0) << r.output;
    json b = json::parse(fs_read_text(td.path + "/b/training_args.json"));
    EXPECT_EQ(b["resolved"]["max_steps"], 4) << b.dump();
    // a file that set --max_steps, and --num_train_epochs on the command line: the command line's
    r = run_lisa("train --config " + td.path + "/b/training_args.json --max_steps 3 --output_dir " + td.path + "/c");
    ASSERT_EQ(r.code, 0) << r.output;
    r = run_lisa("train --config " + td.path + "/c/training_args.json --num_train_epochs 1 --output_dir " + td.path + "/d");
    ASSERT_EQ(r.code, 0) << r.output;
    json d = json::parse(fs_read_text(td.path + "/d/training_args.json"));
    EXPECT_EQ(d["resolved"]["max_steps"], 4) << d.dump();
    EXPECT_TRUE(d["max_steps"].is_null()) << d.dump();
}

// export-gguf never replaces an existing file unless asked.
TEST(outputs, export_gguf_replaces_a_file_only_when_asked) {
    NEED_ASSETS();
    temp_dir td;
    const std::string f = td.path + "/m.gguf";
    lisa_test::write_file(f, "the user's file");
    auto r = run_lisa("export-gguf --model_name_or_path " + aidreams() + " --outfile " + f + " --outtype f32");
    EXPECT_EQ(r.code, 1) << r.output;
    EXPECT_TRUE(has(r.output, "lisa: error: --outfile " + f + ": the file exists; pass --overwrite to replace it")) << r.output;
    EXPECT_EQ(fs_read_text(f), "the user's file");
    r = run_lisa("export-gguf --model_name_or_path " + aidreams() + " --outfile " + f + " --outtype f32 --overwrite");
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_EQ(fs_read_text(f).substr(0, 4), "GGUF");
    EXPECT_FALSE(fs_is_file(f + ".lock"));
}

// ------------------------------------------------------------------ the other tools' habits

// Flags of LMFlow's script, Hugging Face, axolotl, PEFT and LLaMA-Factory users work as ours.
TEST(habits, other_tools_flags_work_as_ours) {
    NEED_ASSETS();
    temp_dir td;
    auto r = run_lisa("train -m " + aidreams() + " -d " + data_dir() + " -o " + td.path + "/a --lr 1e-3 --num_epochs 1 "
                      "--micro_batch_size 2 --batch_size 8 --cutoff_len 64 --method lora --lora_target_modules q_proj v_proj "
                      "--max_steps 1");
    ASSERT_EQ(r.code, 0) << r.output;
    json a = json::parse(fs_read_text(td.path + "/a/training_args.json"));
    EXPECT_EQ(a["learning_rate"], 1e-3);
    EXPECT_EQ(a["per_device_train_batch_size"], 2);
    EXPECT_EQ(a["gradient_accumulation_steps"], 4);  // 8 in all = 2 x 4
    EXPECT_EQ(a["block_size"], 64);
    json ad = json::parse(fs_read_text(td.path + "/a/adapter_config.json"));
    EXPECT_EQ(ad["target_modules"], json({"q_proj", "v_proj"}));
    for (const char* spelling : {"--max_seq_length 48", "--model_max_length 48"}) {
        const std::string out = td.path + "/b" + std::string(spelling).substr(2, 5);
        r = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + data_dir() + " --output_dir " +
                     out + " --max_steps 1 " + spelling);
        ASSERT_EQ(r.code, 0) << r.output;
        EXPECT_EQ(json::parse(fs_read_text(out + "/training_args.json"))["block_size"], 48) << spelling;
    }
    r = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + data_dir() + " --output_dir " +
                 td.path + "/c --method lora --lora_target_modules all-linear --max_steps 1");
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_EQ(json::parse(fs_read_text(td.path + "/c/adapter_config.json"))["target_modules"].size(), 7u);
    // --batch_size that the micro-batch does not divide
    r = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + data_dir() + " --output_dir " +
                 td.path + "/d --per_device_train_batch_size 3 --batch_size 8 --max_steps 1");
    EXPECT_EQ(r.code, 1) << r.output;
    EXPECT_TRUE(has(r.output, "lisa: error: --batch_size 8: must be a multiple of --per_device_train_batch_size 3"))
        << r.output;
}

// What cannot be honoured is refused saying why; misspellings get the flag meant, and nothing
// that only looks alike; every error is one line starting with "lisa"; global flags may come
// before the subcommand.
TEST(habits, refusals_suggestions_and_errors_are_one_clear_line) {
    NEED_ASSETS();
    temp_dir td;
    const std::string base = "train --model_name_or_path " + aidreams() + " --dataset_path " + data_dir() +
                             " --output_dir " + td.path + "/o --max_steps 1 ";
    struct expect {
        std::string flags, first_line;
    };
    for (const expect& e : std::vector<expect>{
             {"--use_dora", "lisa: error: --use_dora: DoRA is not implemented; plain LoRA is (--method lora)"},
             {"--use_dora true", "lisa: error: --use_dora true: DoRA is not implemented"},
             {"--load_in_4bit", "lisa: error: --load_in_4bit: quantized (QLoRA) bases are not implemented yet"},
             {"--lerning_rate 1e-3", "lisa train: unknown flag --lerning_rate; did you mean --learning_rate?"},
             {"--batch_sise 8", "lisa train: unknown flag --batch_sise; did you mean --batch_size?"},
             {"--epochs 2", "lisa train: unknown flag --epochs; did you mean --num_train_epochs?"},
             {"--bach 2", "lisa train: unknown flag --bach\n"},
             {"--max_steps abc", "lisa train: error: "},
             {"--eval_steps 1.5", "lisa: error: --eval_steps 1.5: expected a whole number of steps, or a fraction below 1"},
         }) {
        auto r = run_lisa(base + e.flags);
        EXPECT_NE(r.code, 0) << e.flags;
        EXPECT_EQ(r.output.find(e.first_line), 0u) << e.flags << "\n" << r.output;
        EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << e.flags << "\n" << r.output;
    }
    // a global flag before the subcommand is not read as a command
    auto r = run_lisa("--threads 1 " + base + "--lerning_rate 1e-3");
    EXPECT_EQ(r.output.find("lisa train: unknown flag --lerning_rate; did you mean --learning_rate?"), 0u) << r.output;
    r = run_lisa("--threads 1 " + base);
    EXPECT_EQ(r.code, 0) << r.output;
    EXPECT_TRUE(has(r.output, "lisa: 1 compute thread")) << r.output;
    // false values of refused flags ask for nothing
    r = run_lisa(base + "--use_dora false --load_in_8bit 0 --overwrite_output_dir");
    EXPECT_EQ(r.code, 0) << r.output;
}

// --eval_steps 0.25 is a quarter of the run (Hugging Face's reading); --eval_steps without eval
// data warns; a dataset can be one file; LLaMA-Factory's dataset_info.json is passed over.
TEST(habits, fractions_of_steps_dataset_files_and_dataset_info) {
    NEED_ASSETS();
    temp_dir td;
    auto r = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + data_dir() + "/data.json" +
                      " --eval_dataset_path " + data_dir() + " --output_dir " + td.path + "/a --max_steps 8 "
                      "--per_device_train_batch_size 2 --logging_steps 0.5 --eval_steps 0.25");
    ASSERT_EQ(r.code, 0) << r.output;
    std::istringstream log(fs_read_text(td.path + "/a/trainer_log.jsonl"));
    std::string line;
    std::vector<int64_t> evals, logs;
    while (std::getline(log, line)) {
        const json j = json::parse(line);
        (j.contains("eval_loss") ? evals : logs).push_back(j["step"]);
    }
    EXPECT_EQ(evals, (std::vector<int64_t>{2, 4, 6, 8}));
    EXPECT_EQ(logs, (std::vector<int64_t>{4, 8}));
    EXPECT_EQ(json::parse(fs_read_text(td.path + "/a/training_args.json"))["eval_steps"], 0.25);
    // no eval data
    r = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + data_dir() + " --output_dir " +
                 td.path + "/b --max_steps 2 --eval_steps 1");
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_TRUE(has(r.output, "lisa: warning: --eval_steps asks for evaluation, but there is no evaluation data")) << r.output;
    // a LLaMA-Factory folder: the data file and its dataset_info.json
    copy_dir(data_dir(), td.path + "/lf");
    lisa_test::write_file(td.path + "/lf/dataset_info.json", R"({"mine": {"file_name": "data.json"}})");
    r = run_lisa("eval --model_name_or_path " + aidreams() + " --dataset_path " + td.path + "/lf");
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_TRUE(has(r.output, "lisa: note: " + td.path + "/lf/dataset_info.json: LLaMA-Factory's description of "
                              "datasets, not data; skipped")) << r.output;
    r = run_lisa("eval --model_name_or_path " + aidreams() + " --dataset_path " + td.path + "/lf/notes.txt");
    EXPECT_EQ(r.code, 1) << r.output;
    EXPECT_TRUE(has(r.output, "notes.txt: no such dataset file or folder")) << r.output;
}

// The seed script: relative paths are the caller's; the bundled default takes extra flags
// (--threads on every command) and never replaces a model of the user's in its output folder.
TEST(habits, the_seed_script_keeps_the_callers_paths_and_flags) {
    NEED_ASSETS();
    temp_dir td;
    copy_dir(aidreams(), td.path + "/my-model");
    copy_dir(data_dir(), td.path + "/data");
    const std::string script = lisa_test::test_dir() + "/../run_finetune_with_lisa.sh";
    std::string r = sh("cd " + td.path + " && " + script + " -m my-model -d data -o out --max_steps 2; echo rc=$?");
    EXPECT_TRUE(has(r, "rc=0")) << r;
    EXPECT_TRUE(fs_is_file(td.path + "/out/config.json")) << r;
    // the bundled default, with flags
    r = sh("cd " + td.path + " && OUTPUT_ROOT=" + td.path + "/bundled " + script + " --threads 1 --max_steps 3; echo rc=$?");
    EXPECT_TRUE(has(r, "rc=0")) << r;
    EXPECT_GE(std::count(r.begin(), r.end(), '\n'), 5) << r;
    EXPECT_TRUE(has(r, "lisa: 1 compute thread (--threads")) << r;
    EXPECT_TRUE(has(r, "3 steps")) << r;
    // a model of the user's where the bundled default writes: refused, kept
    copy_dir(td.path + "/out", td.path + "/mine/finetuned");
    const std::string before = fs_read_text(td.path + "/mine/finetuned/model.safetensors");
    r = sh("cd " + td.path + " && OUTPUT_ROOT=" + td.path + "/mine " + script + " --max_steps 2; echo rc=$?");
    EXPECT_FALSE(has(r, "rc=0")) << r;
    EXPECT_TRUE(has(r, "already holds")) << r;
    EXPECT_EQ(fs_read_text(td.path + "/mine/finetuned/model.safetensors"), before);
}

// generate says when the context, not --max_new_tokens, ended it; chat without a template names
// what to pass; eval shows progress on a terminal only; a q8_0 export warns once.
TEST(habits, long_work_and_limits_are_told) {
    NEED_ASSETS();
    temp_dir td;
    auto r = run_lisa("generate --model_name_or_path " + aidreams() + " --prompt 'Once' --max_new_tokens 600");
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_TRUE(has(r.output, "lisa: note: stopped after ")) << r.output;
    EXPECT_TRUE(has(r.output, "fill the model's context of 128 tokens (max_position_embeddings), short of "
                              "--max_new_tokens 600")) << r.output;
    r = run_lisa("generate --model_name_or_path " + aidreams() + " --prompt 'Once' --max_new_tokens 5");
    EXPECT_FALSE(has(r.output, "stopped after")) << r.output;
    r = run_lisa("chat --model_name_or_path " + aidreams() + " < /dev/null");
    EXPECT_EQ(r.code, 1) << r.output;
    EXPECT_TRUE(has(r.output, "has no chat template (no chat_template in tokenizer_config.json, no chat_template.jinja): "
                              "pass --conversation_template with one of LMFlow's names (llama3, chatml")) << r.output;
    // progress: on a terminal (a pseudo-terminal from script(1)) and not in a pipe
    const std::string eval = std::string(LISA_BIN) + " eval --model_name_or_path " + aidreams() + " --dataset_path " +
                             data_dir();
    const std::string tty = sh("script -qec \"" + eval + "\" /dev/null");
    EXPECT_TRUE(has(tty, "lisa eval: loading ")) << tty;
    r = run_lisa(eval.substr(eval.find(" eval") + 1));
    EXPECT_FALSE(has(r.output, "lisa eval:")) << r.output;
    EXPECT_FALSE(has(r.output, "\033[K")) << r.output;
    r = run_lisa("export-gguf --model_name_or_path " + aidreams() + " --outfile " + td.path + "/m.gguf --outtype q8_0");
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 2) << r.output;  // the summary and "wrote"
    EXPECT_TRUE(has(r.output, "lisa: export-gguf: warning: 4 tensors with rows that are not whole q8_0 blocks of 32 "
                              "values are written as f16: blk.0.ffn_down.weight (rows of 172) and 3 more")) << r.output;
}

// Training into the base model's own folder is refused even with --overwrite_output_dir: the
// base is read after the folder is cleared, so it would be lost.
TEST(outputs, training_into_the_base_models_folder_is_refused) {
    NEED_ASSETS();
    temp_dir td;
    copy_dir(aidreams(), td.path + "/base");
    const std::string before = fs_read_text(td.path + "/base/model.safetensors");
    auto r = run_lisa("train --model_name_or_path " + td.path + "/base --dataset_path " + data_dir() +
                      " --output_model_path " + td.path + "/base/. --overwrite_output_dir --max_steps 1");
    EXPECT_EQ(r.code, 1) << r.output;
    EXPECT_TRUE(has(r.output, "is the model being fine-tuned (--model_name_or_path); choose another folder")) << r.output;
    EXPECT_EQ(fs_read_text(td.path + "/base/model.safetensors"), before);
    EXPECT_TRUE(fs_is_file(td.path + "/base/tokenizer.json"));
}

// lisa eval reads datasets exactly as training and inspect-data do (one loader): with
// --group_texts whole samples are packed, so the tokens it scores are those of the packed blocks
// (it used to cut each sample to --block_size first, losing every long sample's tail).
TEST(habits, eval_packs_whole_samples_as_training_does) {
    NEED_ASSETS();
    const std::string flags = " --model_name_or_path " + aidreams() + " --dataset_path " + data_dir() +
                              " --group_texts true --block_size 8";
    auto ins = run_lisa("inspect-data --json --limit 0" + flags + " 2>/dev/null");
    ASSERT_EQ(ins.code, 0) << ins.output;
    std::istringstream lines(ins.output);
    std::string line;
    int64_t want = 0, all_ids = 0;
    while (std::getline(lines, line)) {
        const json j = json::parse(line);
        const auto labels = j["labels"].get<std::vector<int64_t>>();
        for (size_t i = 1; i < labels.size(); i++) want += labels[i] != -100;  // the shifted loss
        all_ids += (int64_t)labels.size();
    }
    auto plain = run_lisa("inspect-data --json --limit 0 --model_name_or_path " + aidreams() + " --dataset_path " +
                          data_dir() + " 2>/dev/null");
    int64_t unpacked_ids = 0;
    std::istringstream pl(plain.output);
    while (std::getline(pl, line)) unpacked_ids += (int64_t)json::parse(line)["input_ids"].size();
    EXPECT_GT(all_ids, unpacked_ids - 8) << "packing must keep every sample's tokens (but a last partial block)";
    auto ev = run_lisa("eval" + flags);
    ASSERT_EQ(ev.code, 0) << ev.output;
    EXPECT_EQ(json::parse(ev.output.substr(ev.output.rfind('{')))["tokens"], want) << ev.output;
}
