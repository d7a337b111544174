// lisa info --model_name_or_path DIR: load a model folder (validating every tensor) and describe it.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "model/decoder.h"

namespace lisa {

command_fn cmd_info_register(CLI::App& app) {
    auto dir = std::make_shared<std::string>();
    app.add_option("--model_name_or_path", *dir, "Hugging Face model folder")->required();
    return [dir] {
        auto m = decoder_model_load(*dir);
        const model_config& c = m->cfg;
        nlohmann::json j = {{"architecture", c.architecture},
                            {"parameters", (int64_t)m->params.size()},
                            {"stored_dtype", dtype_torch_name(m->stored_dtype)},
                            {"vocab_size", c.vocab_size},
                            {"hidden_size", c.hidden_size},
                            {"intermediate_size", c.intermediate_size},
                            {"num_hidden_layers", c.num_layers},
                            {"num_attention_heads", c.num_heads},
                            {"num_key_value_heads", c.num_kv_heads},
                            {"head_dim", c.head_dim},
                            {"tie_word_embeddings", c.tie_word_embeddings}};
        std::printf("%s\n", j.dump().c_str());
    };
}

}  // namespace lisa
