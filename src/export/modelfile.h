// An Ollama Modelfile for an exported GGUF: FROM the file, the chat format the model was trained
// in as Ollama's TEMPLATE (a Go template, written raw between triple quotes: real newlines), and
// its end-of-turn marker as PARAMETER stop, only where the tokenizer has that token. A model
// trained on plain text or input/output pairs gets its prompt as it is, with no chat wrapping.
#pragma once
#include <string>

namespace lisa {

struct modelfile_info {
    std::string text;    // the Modelfile
    std::string format;  // chatml | llama3 | gemma | inst | plain: what TEMPLATE says
    std::string why;     // where the format was read ("training_args.json: conversation_template chatml")
};

// model_dir: the exported model's folder (its tokenizer files and chat template); run_dir: the
// fine-tune's output folder whose training_args.json names the template it trained with (the
// adapter's folder for a LoRA merged on export; model_dir otherwise); gguf: the exported file.
// FROM names it relative to the Modelfile's folder `modelfile_dir`.
modelfile_info ollama_modelfile(const std::string& model_dir, const std::string& run_dir, const std::string& gguf,
                                const std::string& modelfile_dir);
// Writes it atomically to `path`; returns what was written (the caller says which format).
modelfile_info ollama_modelfile_write(const std::string& path, const std::string& model_dir, const std::string& run_dir,
                            const std::string& gguf);

}  // namespace lisa
