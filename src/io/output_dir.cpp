#include "io/output_dir.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "io/fs.h"

namespace lisa {

namespace fsys = std::filesystem;
using json = nlohmann::json;

const std::vector<std::string>& tokenizer_file_names() {
    static const std::vector<std::string> names = {
        "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "added_tokens.json",
        "vocab.json",     "merges.txt",            "chat_template.jinja",     "chat_template.json"};
    return names;
}

output_lock::~output_lock() { output_lock_release(this); }

static std::string read_fd(int fd) {
    std::string s;
    char buf[1024];
    ssize_t n;
    if (lseek(fd, 0, SEEK_SET) < 0) return s;
    while (s.size() < 8192 && (n = read(fd, buf, sizeof buf)) > 0) s.append(buf, (size_t)n);
    return s;
}

// "lisa train (pid 1234 on host, since 2026-12-04 22:10:05 UTC)" from a lock file's text
static std::string describe_holder(const std::string& text, long* pid_out) {
    *pid_out = 0;
    try {  // any other process may have written the file: take only fields of the right type
        const json j = json::parse(text);
        if (!j.is_object()) return "";
        auto str = [&](const char* k, const char* dflt) {
            return j.contains(k) && j[k].is_string() ? cap_message(j[k].get<std::string>(), 80) : std::string(dflt);
        };
        const long pid = j.contains("pid") && j["pid"].is_number_integer() ? j["pid"].get<long>() : 0;
        *pid_out = pid;
        return strf("%s (pid %ld on %s, since %s)", str("command", "lisa").c_str(), pid, str("host", "?").c_str(),
                    str("started", "?").c_str());
    } catch (const json::exception&) {
        return "";
    }
}

void output_lock_acquire(output_lock* l, const std::string& target, bool is_dir, const std::string& command,
                         const std::string& flag, const std::function<void(const std::string&)>& note) {
    output_lock_release(l);
    if (is_dir) {
        if (fs_is_file(target)) fail(strf("%s %s: is a file, expected a folder", flag.c_str(), target.c_str()));
        fs_mkdirs(target);
    }
    const std::string path = is_dir ? fs_join(target, ".lisa.lock") : target + ".lock";
    for (int attempt = 0;; attempt++) {
        const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0)
            fail(strf("%s: cannot create the lock file %s (%s)", target.c_str(), path.c_str(), std::strerror(errno)));
        if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
            const int e = errno;
            long pid;
            const std::string holder = describe_holder(read_fd(fd), &pid);
            close(fd);
            if (e == EWOULDBLOCK)
                fail(strf("%s is in use by %s; wait for it to end, or choose another %s", target.c_str(),
                          holder.empty() ? "another lisa process" : holder.c_str(), flag.c_str()));
            fail(strf("%s: cannot lock %s (%s)", target.c_str(), path.c_str(), std::strerror(e)));
        }
        // the holder may have released (and unlinked) between our open and our lock: then this
        // fd is on a file no longer at `path`, and the lock means nothing; start again
        struct stat a {}, b {};
        if (fstat(fd, &a) != 0 || stat(path.c_str(), &b) != 0 || a.st_ino != b.st_ino || a.st_dev != b.st_dev) {
            close(fd);
            if (attempt > 100) fail(strf("%s: the lock file %s keeps changing", target.c_str(), path.c_str()));
            continue;
        }
        // a released lock's file is unlinked; one still here with a holder's text was left by a
        // process that ended without releasing (killed, or its machine stopped)
        const std::string old = read_fd(fd);
        if (!old.empty() && note) {
            long pid;
            const std::string holder = describe_holder(old, &pid);
            note(strf("%s: took over a stale lock left by %s, which ended without releasing it", target.c_str(),
                      holder.empty() ? "an earlier process" : holder.c_str()));
        }
        char host[256] = "?";
        gethostname(host, sizeof host - 1);
        host[sizeof host - 1] = 0;
        char when[64];
        const std::time_t now = std::time(nullptr);
        std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&now));
        const std::string text =
            json{{"pid", (long)getpid()}, {"host", host}, {"command", command}, {"started", when}}.dump() + "\n";
        if (ftruncate(fd, 0) != 0 || pwrite(fd, text.data(), text.size(), 0) != (ssize_t)text.size()) {
            const int e = errno;
            close(fd);
            fail(strf("%s: cannot write the lock file %s (%s)", target.c_str(), path.c_str(), std::strerror(e)));
        }
        l->fd = fd;
        l->lock_path = path;
        l->target = target;
        return;
    }
}

void output_lock_release(output_lock* l) {
    if (l->fd < 0) return;
    unlink(l->lock_path.c_str());  // before unlocking: a waiter that then locks sees the path gone
    close(l->fd);
    l->fd = -1;
}

static bool is_checkpoint_name(const std::string& n, long long* step) {
    if (n.rfind("checkpoint-", 0) != 0 || n.size() == 11) return false;
    char* end;
    *step = std::strtoll(n.c_str() + 11, &end, 10);
    return *end == '\0';
}

output_dir_state output_dir_scan(const std::string& dir) {
    output_dir_state s;
    s.has_model = fs_is_file(fs_join(dir, "config.json"));
    s.has_adapter = fs_is_file(fs_join(dir, "adapter_config.json")) || fs_is_file(fs_join(dir, "adapter_model.safetensors"));
    s.has_run = fs_is_file(fs_join(dir, "trainer_log.jsonl")) || fs_is_file(fs_join(dir, "training_args.json"));
    std::vector<std::pair<long long, std::string>> ck;
    std::error_code ec;
    for (const auto& e : fsys::directory_iterator(dir, ec)) {
        long long step;
        const std::string n = e.path().filename().string();
        if (is_checkpoint_name(n, &step) && e.is_directory(ec)) ck.emplace_back(step, n);
    }
    std::sort(ck.begin(), ck.end());
    for (auto& [step, n] : ck) s.checkpoints.push_back(n);
    return s;
}

std::string output_dir_state::describe() const {
    std::vector<std::string> parts;
    if (has_model) parts.push_back("a model");
    if (has_adapter) parts.push_back("a LoRA adapter");
    if (!checkpoints.empty())
        parts.push_back(checkpoints.size() == 1 ? checkpoints[0]
                                                : strf("%zu checkpoints (newest %s)", checkpoints.size(),
                                                       checkpoints.back().c_str()));
    if (has_run && parts.empty()) parts.push_back("an earlier run's log");
    std::string s;
    for (size_t i = 0; i < parts.size(); i++)
        s += (i == 0 ? "" : i + 1 == parts.size() ? " and " : ", ") + parts[i];
    return s;
}

static int remove_if_there(const std::string& p) {
    std::error_code ec;
    if (!fsys::exists(fsys::symlink_status(p, ec))) return 0;
    const auto n = fsys::remove_all(p, ec);
    if (ec) fail(strf("%s: cannot remove (%s)", p.c_str(), ec.message().c_str()));
    return n > 0 ? 1 : 0;
}

static bool ends_with(const std::string& s, const std::string& e) {
    return s.size() >= e.size() && s.compare(s.size() - e.size(), e.size(), e) == 0;
}

int output_dir_clear_model(const std::string& dir, bool keep_tokenizer) {
    int n = remove_if_there(fs_join(dir, "config.json"));  // first: the folder no longer loads
    n += remove_if_there(fs_join(dir, "adapter_config.json"));
    std::error_code ec;
    std::vector<std::string> names;
    for (const auto& e : fsys::directory_iterator(dir, ec)) names.push_back(e.path().filename().string());
    for (const std::string& f : names) {
        const bool weights = f == "model.safetensors" || f == "model.safetensors.index.json" ||
                             (f.rfind("model-", 0) == 0 && ends_with(f, ".safetensors")) ||
                             f == "adapter_model.safetensors" || f == "generation_config.json";
        const bool tok = std::find(tokenizer_file_names().begin(), tokenizer_file_names().end(), f) !=
                         tokenizer_file_names().end();
        if (weights || (tok && !keep_tokenizer)) n += remove_if_there(fs_join(dir, f));
    }
    return n;
}

int output_dir_clear_run(const std::string& dir) {
    int n = output_dir_clear_model(dir, false);
    std::error_code ec;
    std::vector<std::string> names;
    for (const auto& e : fsys::directory_iterator(dir, ec)) names.push_back(e.path().filename().string());
    for (const std::string& f : names) {
        long long step;
        const bool ours = is_checkpoint_name(f, &step) || f == "trainer_log.jsonl" || f == "training_args.json" ||
                          f == "train_results.json" || f == "training_loss.svg" ||
                          (f.rfind("model-", 0) == 0 && ends_with(f, ".gguf")) || f == "Modelfile";
        if (ours) n += remove_if_there(fs_join(dir, f));
    }
    return n;
}

}  // namespace lisa
