#include "export/modelfile.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/fs.h"
#include "tokenizer/tokenizer.h"

namespace lisa {

using json = nlohmann::json;

namespace {

struct format_spec {
    const char* name;
    const char* marker;       // a token only this format's template uses
    const char* stop;         // its end-of-turn marker
    const char* go_template;  // Ollama's TEMPLATE, one turn (Ollama repeats it for a conversation)
};

const format_spec kFormats[] = {
    {"chatml", "<|im_start|>", "<|im_end|>",
     "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ if .Prompt }}<|im_start|>user\n"
     "{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n{{ .Response }}<|im_end|>\n"},
    {"llama3", "<|start_header_id|>", "<|eot_id|>",
     "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}{{ if .Prompt }}"
     "<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}<|eot_id|>{{ end }}<|start_header_id|>assistant"
     "<|end_header_id|>\n\n{{ .Response }}<|eot_id|>"},
    {"gemma", "<start_of_turn>", "<end_of_turn>",
     "<start_of_turn>user\n{{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}<end_of_turn>\n<start_of_turn>model\n"
     "{{ .Response }}<end_of_turn>\n"},
    {"inst", "[INST]", "[INST]", "[INST] {{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }} [/INST]{{ .Response }}"},
};

// The model's own chat template text ("" if none): tokenizer_config.json's, or chat_template.jinja.
std::string own_template_text(const std::string& dir) {
    const std::string tc = fs_join(dir, "tokenizer_config.json");
    if (fs_is_file(tc)) {
        try {
            const json j = json::parse(fs_read_text(tc));
            if (j.is_object() && j.contains("chat_template")) {
                const json& ct = j["chat_template"];
                if (ct.is_string()) return ct.get<std::string>();
                if (ct.is_array())
                    for (const auto& e : ct)
                        if (e.is_object() && e.value("name", "") == "default" && e.contains("template") &&
                            e["template"].is_string())
                            return e["template"].get<std::string>();
            }
        } catch (const json::exception&) {
        }
    }
    const std::string jf = fs_join(dir, "chat_template.jinja");
    return fs_is_file(jf) ? fs_read_text(jf) : "";
}

}  // namespace

modelfile_info ollama_modelfile(const std::string& model_dir, const std::string& run_dir, const std::string& gguf,
                                const std::string& modelfile_dir) {
    std::error_code ec;
    std::filesystem::path rel = std::filesystem::relative(std::filesystem::absolute(gguf, ec),
                                                          std::filesystem::absolute(modelfile_dir.empty() ? "." : modelfile_dir, ec), ec);
    const std::string from = ec || rel.empty() ? std::filesystem::absolute(gguf, ec).string()
                                               : (rel.is_absolute() ? rel.string() : "./" + rel.string());
    modelfile_info r;
    r.format = "plain";
    // what training used: a fine-tune's training_args.json names its template
    std::string named;
    const std::string ta = fs_join(run_dir.empty() ? model_dir : run_dir, "training_args.json");
    if (fs_is_file(ta)) {
        try {
            const json j = json::parse(fs_read_text(ta));
            if (j.is_object() && j.contains("conversation_template") && j["conversation_template"].is_string())
                named = j["conversation_template"].get<std::string>();
            // trained on text or input/output pairs: no chat template was applied, so none is wanted
            if (j.is_object() && j.contains("resolved") && j["resolved"].is_object() &&
                j["resolved"].value("dataset_type", std::string("conversation")) != "conversation") {
                r.why = "trained on " + j["resolved"]["dataset_type"].get<std::string>() + " data, no chat template applied";
                named = "plain";
            }
        } catch (const json::exception&) {
        }
    }
    const format_spec* f = nullptr;
    // LMFlow's names by the format Ollama's template needs
    const std::string family = named == "qwen2" || named == "yi" || named == "internlm2" || named == "qwen2_5" ||
                                       named == "qwen2_5_1m" || named == "qwen2_5_math" || named == "qwen_qwq" ||
                                       named == "qwen3"
                                   ? "chatml"
                               : named == "gemma3" ? "gemma" : named;
    if (family == "chatml" || family == "llama3" || family == "gemma") {
        for (const format_spec& s : kFormats)
            if (family == s.name) f = &s;
        r.why = "training_args.json: conversation_template " + named;
    } else if (named == "llama2" || named == "mistral") {
        f = &kFormats[3];
        r.why = "training_args.json: conversation_template " + named;
    } else if (named == "empty" || named == "disable" || named == "empty_no_special_tokens") {
        r.why = "training_args.json: conversation_template empty (no chat wrapping)";
    } else if (named == "plain") {
    } else {
        const std::string own = own_template_text(model_dir);
        for (const format_spec& s : kFormats)
            if (!f && !own.empty() && own.find(s.marker) != std::string::npos) f = &s;
        r.why = own.empty() ? "the model has no chat template" : f ? "the model's chat template" : "";
        if (!own.empty() && !f)
            r.why = "the model's chat template is none Ollama's TEMPLATE is written for here (ChatML, Llama 3, Gemma, "
                    "[INST]); the prompt goes in as it is";
    }
    std::string t = "# Ollama Modelfile written by lisa export-gguf: ollama create NAME -f Modelfile\n";
    t += "FROM " + from + "\n";
    if (!f) {
        t += "# plain continuation (" + r.why + "): the prompt goes to the model as it is\n";
        t += "TEMPLATE \"\"\"{{ .Prompt }}\"\"\"\n";
        r.text = t;
        return r;
    }
    r.format = f->name;
    t += "# chat format: " + std::string(f->name) + " (" + r.why + ")\n";
    t += "TEMPLATE \"\"\"" + std::string(f->go_template) + "\"\"\"\n";
    // a stop only for a token the tokenizer has (llama.cpp stops at EOS by itself)
    if (fs_is_file(fs_join(model_dir, "tokenizer.json"))) {
        auto tok = tokenizer_load(model_dir);
        if (tokenizer_token_to_id(*tok, f->stop) >= 0) t += "PARAMETER stop \"" + std::string(f->stop) + "\"\n";
    }
    r.text = t;
    return r;
}

modelfile_info ollama_modelfile_write(const std::string& path, const std::string& model_dir, const std::string& run_dir,
                                      const std::string& gguf) {
    const std::string dir = std::filesystem::path(path).parent_path().string();
    const modelfile_info mf = ollama_modelfile(model_dir, run_dir, gguf, dir);
    fs_write_atomic(path, mf.text);
    return mf;
}

}  // namespace lisa
