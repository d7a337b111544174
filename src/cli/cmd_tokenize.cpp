// lisa tokenize --model_name_or_path DIR --text STR [--no_special_tokens]
// lisa tokenize --model_name_or_path DIR --decode --ids 1,2,3 [--skip_special_tokens]
// One JSON line out, so templates can be debugged and compared with Hugging Face.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/error.h"
#include "tokenizer/tokenizer.h"

namespace lisa {

command_fn cmd_tokenize_register(CLI::App& app) {
    struct opts {
        std::string dir, text, ids;
        bool        no_special = false, decode = false, skip_special = false;
    };
    auto o = std::make_shared<opts>();
    app.add_option("--model_name_or_path", o->dir, "model folder (or tokenizer folder) holding tokenizer.json")->required();
    app.add_option("--text", o->text, "text to encode");
    app.add_flag("--no_special_tokens", o->no_special, "do not add the post-processor's special tokens (BOS, ...)");
    app.add_flag("--decode", o->decode, "decode --ids instead of encoding --text");
    app.add_option("--ids", o->ids, "comma-separated token ids to decode");
    app.add_flag("--skip_special_tokens", o->skip_special, "drop special tokens when decoding");
    return [o] {
        auto tok = tokenizer_load(o->dir);
        if (o->decode) {
            std::vector<int32_t> ids;
            size_t i = 0;
            while (i < o->ids.size()) {
                size_t j = o->ids.find(',', i);
                if (j == std::string::npos) j = o->ids.size();
                std::string s = o->ids.substr(i, j - i);
                char* end = nullptr;
                long v = std::strtol(s.c_str(), &end, 10);
                if (s.empty() || *end != '\0' || v < 0 || v >= tokenizer_vocab_size(*tok))
                    fail(strf("--ids: \"%s\" is not a token id in [0, %lld)", s.c_str(), (long long)tokenizer_vocab_size(*tok)));
                ids.push_back((int32_t)v);
                i = j + 1;
            }
            nlohmann::json j = {{"text", tokenizer_decode(*tok, ids, o->skip_special)}};
            std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
            return;
        }
        nlohmann::json j = {{"ids", tokenizer_encode(*tok, o->text, !o->no_special)}};
        std::printf("%s\n", j.dump().c_str());
    };
}

}  // namespace lisa
