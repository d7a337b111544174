// What lisa may do to a user's output folder or file: one writer at a time (a lock that a crashed
// run does not leave stuck), and never replace a model, an adapter or a run's checkpoints unless
// asked (--overwrite_output_dir), and then every file of the old one, so nothing is ever mixed.
#pragma once
#include <functional>
#include <string>
#include <vector>

namespace lisa {

// The files of a model folder that belong to its tokenizer (copied with it, replaced with it).
const std::vector<std::string>& tokenizer_file_names();

// An exclusive claim on an output path for one process. The lock is a kernel lock (flock) on
// a small file, so it ends when the process does, however it ends; the file holds who took it
// (pid, host, command, time) so a second writer can be told. A file left by a process that
// died is taken over, and `note` says so.
struct output_lock {
    int         fd = -1;
    std::string lock_path;  // DIR/.lisa.lock for a folder, FILE.lock for a file
    std::string target;     // what is locked, as the user named it

    output_lock() = default;
    output_lock(const output_lock&) = delete;
    output_lock& operator=(const output_lock&) = delete;
    ~output_lock();
};

// Locks a folder (created if absent) or a file about to be written (its folder must exist).
// `command` names the holder for others ("lisa train"); `flag` the option the user can change
// ("--output_model_path"). Fails with one line naming the path and the process that holds it.
void output_lock_acquire(output_lock* l, const std::string& target, bool is_dir, const std::string& command,
                         const std::string& flag, const std::function<void(const std::string&)>& note);
void output_lock_release(output_lock* l);  // unlink, then close; idempotent

// What an output folder already holds of lisa's.
struct output_dir_state {
    bool                     has_model = false;    // config.json (a full model)
    bool                     has_adapter = false;  // adapter_config.json or adapter_model.safetensors
    bool                     has_run = false;      // trainer_log.jsonl or training_args.json of a run
    std::vector<std::string> checkpoints;          // checkpoint-N folder names, oldest first
    bool any() const { return has_model || has_adapter || has_run || !checkpoints.empty(); }
    std::string describe() const;  // "a model, an adapter and 3 checkpoints (newest checkpoint-12)"
};
output_dir_state output_dir_scan(const std::string& dir);

// Removes the files that make a model folder (config.json first, so it never looks complete
// while half removed): weights, index, generation config, adapter, and the tokenizer files
// unless keep_tokenizer. Returns how many files went.
int output_dir_clear_model(const std::string& dir, bool keep_tokenizer);
// Removes everything a training run wrote: its model files (as above), checkpoints, log,
// arguments, results, plot and GGUF exports. Files lisa did not write are left alone.
int output_dir_clear_run(const std::string& dir);

}  // namespace lisa
