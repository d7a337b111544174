// Chat templates for conversation datasets and `lisa generate`. Each turn is rendered as the
// Hugging Face chat template of that model family renders it; assistant content and the marker
// closing it are the trainable part. See docs/datasets.md for an example of each.
#include <map>

#include "core/error.h"
#include "data/dataset.h"

namespace lisa {

std::vector<std::string> chat_template_names() { return {"llama3", "chatml", "llama2", "mistral", "empty"}; }

std::vector<std::string> chat_template_stop_strings(const std::string& name) {
    if (name == "llama3") return {"<|eot_id|>"};
    if (name == "chatml") return {"<|im_end|>"};
    return {};
}

std::vector<chat_segment> chat_template_render(const std::string& name, const std::vector<chat_message>& msgs,
                                               bool add_generation_prompt) {
    std::vector<chat_segment> out;
    auto prompt = [&](const std::string& s) { out.push_back({s, false}); };
    auto train = [&](const std::string& s) { out.push_back({s, true}); };
    std::string system;
    size_t first = 0;
    if (!msgs.empty() && msgs[0].role == "system") {
        system = msgs[0].content;
        first = 1;
    }
    bool has_system = first == 1;
    if (name == "llama3") {
        prompt("<|begin_of_text|>");
        if (has_system) prompt("<|start_header_id|>system<|end_header_id|>\n\n" + system + "<|eot_id|>");
        for (size_t i = first; i < msgs.size(); i++) {
            prompt("<|start_header_id|>" + msgs[i].role + "<|end_header_id|>\n\n");
            if (msgs[i].role == "assistant") train(msgs[i].content + "<|eot_id|>");
            else prompt(msgs[i].content + "<|eot_id|>");
        }
        if (add_generation_prompt) prompt("<|start_header_id|>assistant<|end_header_id|>\n\n");
    } else if (name == "chatml") {
        if (has_system) prompt("<|im_start|>system\n" + system + "<|im_end|>\n");
        for (size_t i = first; i < msgs.size(); i++) {
            prompt("<|im_start|>" + msgs[i].role + "\n");
            if (msgs[i].role == "assistant") {
                train(msgs[i].content + "<|im_end|>");
                prompt("\n");
            } else {
                prompt(msgs[i].content + "<|im_end|>\n");
            }
        }
        if (add_generation_prompt) prompt("<|im_start|>assistant\n");
    } else if (name == "llama2") {
        bool first_user = true;
        for (size_t i = first; i < msgs.size(); i++) {
            if (msgs[i].role == "user") {
                std::string c = msgs[i].content;
                if (first_user && has_system) c = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + c;
                first_user = false;
                prompt("<s>[INST] " + c + " [/INST]");
            } else {
                train(" " + msgs[i].content + " </s>");
            }
        }
    } else if (name == "mistral") {
        prompt("<s>");
        bool first_user = true;
        for (size_t i = first; i < msgs.size(); i++) {
            if (msgs[i].role == "user") {
                std::string c = msgs[i].content;
                if (first_user && has_system) c = system + "\n\n" + c;
                first_user = false;
                prompt("[INST] " + c + " [/INST]");
            } else {
                train(msgs[i].content + "</s>");
            }
        }
    } else if (name == "empty") {
        if (has_system) prompt(system);
        for (size_t i = first; i < msgs.size(); i++) {
            if (msgs[i].role == "assistant") out.push_back({msgs[i].content, true, true});
            else prompt(msgs[i].content);
        }
    } else {
        std::string names;
        for (auto& n : chat_template_names()) names += (names.empty() ? "" : ", ") + n;
        fail(strf("--conversation_template \"%s\": unknown template (available: %s)", name.c_str(), names.c_str()));
    }
    return out;
}

}  // namespace lisa
