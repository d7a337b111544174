#include "cli/common.h"

#include "data/chat_template.h"

#include <chrono>
#include <cstdio>
#include <unistd.h>
#include <filesystem>

#include "cli/commands.h"

#include "core/error.h"
#include "export/modelfile.h"
#include "io/fs.h"
#include "model/lora.h"
#include "train/evaluate.h"

namespace lisa {

std::unique_ptr<decoder_model> load_model_with_lora(const std::string& dir, const std::string& lora_dir) {
    auto m = decoder_model_load(dir, -1, &cli_backend());
    m->ctx.threads = cli_threads();
    if (!lora_dir.empty()) lora_merge_adapter(m.get(), lora_dir);
    return m;
}

std::unique_ptr<tokenizer> load_tokenizer_of(const std::string& dir) {
    if (fs_is_dir(dir) && !fs_is_file(fs_join(dir, "tokenizer.json")))
        fail(strf("%s: no tokenizer.json in the model folder (copy the base model's tokenizer files there)",
                  dir.c_str()));
    auto tok = tokenizer_load(dir);
    if (fs_is_file(fs_join(dir, "config.json")))  // the model must embed every id its tokenizer makes
        tokenizer_check_fits(*tok, config_load(fs_join(dir, "config.json")).vocab_size, fs_join(dir, "tokenizer.json"),
                             fs_join(dir, "config.json"), [](const std::string& s) { cli_note("warning: " + s); });
    return tok;
}

cli_progress::cli_progress(std::string w) : tty(isatty(STDERR_FILENO) != 0), what(std::move(w)) {}
cli_progress::~cli_progress() { done(); }

void cli_progress::show(const std::string& state) {
    if (!tty) return;
    const double now = std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
    if (last >= 0 && now - last < 0.1) return;
    last = now;
    std::fprintf(stderr, "\r\033[K%s: %s", what.c_str(), state.c_str());
    std::fflush(stderr);
    drawn = true;
}

void cli_progress::done() {
    if (drawn) std::fprintf(stderr, "\r\033[K");
    drawn = false;
}

void say_modelfile(const std::string& path, const modelfile_info& mf) {
    std::fprintf(stderr, "wrote %s (%s: %s)\n", path.c_str(), mf.format == "plain" ? "plain prompts" : mf.format.c_str(),
                 mf.why.c_str());
}

dataset cli_load_dataset(const cli_data_flags& f, const std::string& model_dir, const tokenizer& tok,
                         const model_config& cfg, dataset_options* dopt_out, model_chat_template* chat_template) {
    dataset_options& dopt = *dopt_out;
    std::string bs_warning;
    dopt.block_size = resolve_block_size(f.block_size, cfg, &bs_warning);
    if (!bs_warning.empty()) cli_note("warning: " + bs_warning);
    dataset_choose_template(f.tmpl, model_dir, tok, chat_template, &dopt);
    dopt.train_on_prompt = f.train_on_prompt;
    dopt.eos_id = resolve_eos_id(tok, cfg);
    if (f.group_texts && f.packing) fail("--group_texts and --packing: choose one");
    dopt.truncate = !f.group_texts && !f.packing;  // packing keeps every token
    dataset d = dataset_load(f.path, tok, dopt);
    for (const std::string& n : d.notes) cli_note("note: " + n);
    if (f.group_texts) dataset_group_texts(&d, dopt.block_size);
    if (f.packing) dataset_pack(&d, dopt.block_size);
    return d;
}

void cli_note(const std::string& s) {
    if (isatty(STDERR_FILENO)) std::fputs("\r\033[K", stderr);  // over a progress line, if one is drawn
    std::fprintf(stderr, "lisa: %s\n", s.c_str());
}

bool claim_model_folder(output_lock* lock, const std::string& dir, const std::string& command, bool overwrite) {
    const bool created = !fs_is_dir(dir) && !fs_is_file(dir);
    output_lock_acquire(lock, dir, true, command, "--output_model_path", [](const std::string& s) { cli_note("note: " + s); });
    const output_dir_state st = output_dir_scan(dir);
    if ((st.has_model || st.has_adapter) && !overwrite)
        fail(strf("%s already holds %s: pass --overwrite_output_dir to replace it, or choose another --output_model_path",
                  dir.c_str(), st.describe().c_str()));
    return created;
}

void clear_model_folder(const std::string& dir, const std::string& source) {
    std::error_code ec;
    if (!source.empty() && std::filesystem::equivalent(dir, source, ec)) return;
    const output_dir_state st = output_dir_scan(dir);
    if (!st.has_model && !st.has_adapter) return;
    output_dir_clear_model(dir, false);
    cli_note(strf("--overwrite_output_dir: replacing %s in %s", st.describe().c_str(), dir.c_str()));
}

void drop_model_folder(output_lock* lock, const std::string& dir, bool created) {
    if (!created) return;
    output_lock_release(lock);
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
}

std::string cli_template_help() {
    std::string names;
    for (const std::string& n : chat_template_names()) names += (names.empty() ? "" : ", ") + n;
    return "chat template for conversation data: auto (the model's own, the default when it has one), one of LMFlow's "
           "(" + names + "; docs/datasets.md), or a .jinja file";
}

}  // namespace lisa
