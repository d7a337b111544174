// Shared pieces of the commands that load a model for inference.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "io/output_dir.h"
#include "data/dataset.h"
#include "model/decoder.h"
#include "tokenizer/tokenizer.h"

namespace lisa {

// Model folder, with a PEFT adapter merged in when lora_dir is not empty, computing with the
// --threads count.
std::unique_ptr<decoder_model> load_model_with_lora(const std::string& dir, const std::string& lora_dir);
// tokenizer.json of a model folder (error naming the folder if absent).
std::unique_ptr<tokenizer> load_tokenizer_of(const std::string& dir);

// Claims an output folder for a command that writes a model there (init, merge-lora): locks it
// (created if absent) and refuses a folder that already holds a model or an adapter unless
// `overwrite`. Returns whether the folder was created here (so a failure can remove it).
bool claim_model_folder(output_lock* lock, const std::string& dir, const std::string& command, bool overwrite);
// Just before writing the model: with `overwrite`, removes the previous model's files (all of
// them, so the new one is never mixed with the old), unless the folder is `source` itself,
// whose files the save replaces one by one (config first, its tokenizer kept).
void clear_model_folder(const std::string& dir, const std::string& source);
// Removes a folder created by claim_model_folder after a failure, so nothing half-written is left.
void drop_model_folder(output_lock* lock, const std::string& dir, bool created);
// Progress of long silent work on stderr, only when it is a terminal: one line ("lisa eval:
// batch 12 of 96"), redrawn at most ten times a second, erased by done() or the destructor.
struct cli_progress {
    explicit cli_progress(std::string what);
    ~cli_progress();
    void show(const std::string& state);  // e.g. "writing 3 of 29 tensors"
    void done();
    bool        tty = false;
    bool        drawn = false;
    std::string what;
    double      last = -1;
};

// "wrote PATH (FORMAT: why)" for a Modelfile just written.
struct modelfile_info;  // export/modelfile.h
void say_modelfile(const std::string& path, const modelfile_info& mf);

// The dataset flags `lisa eval` and `lisa inspect-data` share with training, read as training
// reads them: block size from the model (warning when cut to its context), the chat template,
// the EOS appended, packing with --group_texts (whole samples, then blocks). Notes and the
// block-size warning go to stderr.
struct cli_data_flags {
    std::string path, tmpl;
    int64_t     block_size = 0;
    bool        group_texts = false, train_on_prompt = false;
    bool        packing = false;  // --packing: rows of whole samples, each attending to itself
};
// dopt_out->model_template points into *chat_template (the caller keeps both).
dataset cli_load_dataset(const cli_data_flags& f, const std::string& model_dir, const tokenizer& tok,
                         const model_config& cfg, dataset_options* dopt_out, model_chat_template* chat_template);

// A note to stderr, one line, starting with "lisa: ".
void cli_note(const std::string& s);

// --conversation_template's help: auto, the named templates (LMFlow's names), or a .jinja file.
std::string cli_template_help();

}  // namespace lisa
