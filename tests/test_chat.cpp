// Chat templates end to end: the real templates of ../shared/assets and the ChatML / Mistral style
// ones of tests/golden/chat render byte-identical to Hugging Face's apply_chat_template (jinja2),
// tokenize to the ids of the Hugging Face tokenizers library, and train on what each assistant
// turn should teach (tests/golden/make_chat_golden.py writes all three from independent code).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/chat_template.h"
#include "data/dataset.h"
#include "io/fs.h"
#include "template/jinja.h"
#include "test_util.h"

using json = nlohmann::ordered_json;
using namespace lisa;
using namespace lisa_test;

namespace {

struct golden_template {
    const char* name;
    const char* file;       // tests/golden/chat/FILE, or nullptr: the tokenizer folder's own template
    const char* tokenizer;  // ../shared/assets/tokenizers/NAME
};
const golden_template kTemplates[] = {
    {"llama3", nullptr, "llama3"},     {"llama3_1", nullptr, "llama3_1"},
    {"qwen3", nullptr, "qwen3"},       {"gemma3", nullptr, "gemma3"},
    {"chatml", "chatml.jinja", "smollm2"}, {"chatml_generation", "chatml_generation.jinja", "smollm2"},
    {"mistral", "mistral.jinja", "mistral"},
};

void PrintTo(const golden_template& g, std::ostream* os) { *os << g.name; }


model_chat_template load_template(const golden_template& g, const tokenizer& tok) {
    std::string tok_dir = assets_dir() + "/tokenizers/" + g.tokenizer;
    model_chat_template t;
    if (g.file) t = model_chat_template_from_file(test_dir() + "/golden/chat/" + g.file, tok_dir);
    else EXPECT_TRUE(model_chat_template_load(tok_dir, &t)) << tok_dir;
    model_chat_template_probe(&t, tok);
    return t;
}

// Text compared without its leading whitespace and with runs of spaces as one: decoding a run of
// SentencePiece tokens drops the first token's space and doubles a "▁" before "▁word", as the
// Hugging Face decoder does too.
std::string lstrip(const std::string& s) {
    size_t k = 0;
    while (k < s.size() && (s[k] == ' ' || s[k] == '\n' || s[k] == '\t' || s[k] == '\r')) k++;
    std::string o;
    for (size_t i = k; i < s.size(); i++)
        if (!(s[i] == ' ' && !o.empty() && o.back() == ' ')) o += s[i];
    return o;
}

class ChatGolden : public ::testing::TestWithParam<golden_template> {};

}  // namespace

TEST_P(ChatGolden, RendersTokenizesAndLabelsAsHuggingFace) {
    const golden_template& g = GetParam();
    auto tok = tokenizer_load(assets_dir() + "/tokenizers/" + g.tokenizer);
    model_chat_template t = load_template(g, *tok);
    auto rows = read_jsonl(test_dir() + "/golden/chat/" + std::string(g.name) + ".jsonl");
    ASSERT_GE(rows.size(), 17u);
    for (size_t r = 0; r < rows.size(); r++) {
        const json& row = rows[r];
        SCOPED_TRACE(strf("%s row %zu: %s", g.name, r, row["messages"].dump().c_str()));
        bool gen = row["add_generation_prompt"];
        json tools = row.contains("tools") ? row["tools"] : json(nullptr);
        if (row.contains("error")) {
            try {
                model_chat_template_render(t, row["messages"], tools, gen);
                ADD_FAILURE() << "jinja2 fails (" << row["error"] << ") but lisa renders";
            } catch (const lisa::error& e) {
                // raise_exception's message reaches the user
                std::string want = row["error"].get<std::string>();
                want = want.substr(want.find(": ") + 2);
                EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
            }
            continue;
        }
        chat_render cr = model_chat_template_render(t, row["messages"], tools, gen);
        ASSERT_EQ(cr.text, row["text"].get<std::string>());
        EXPECT_EQ(tokenizer_encode(*tok, cr.text, false), row["ids"].get<std::vector<int32_t>>());
        if (gen || !row.contains("trained")) continue;
        // the trained byte ranges are the expected strings
        std::vector<std::string> want = row["trained"];
        ASSERT_EQ(cr.trained.size(), want.size());
        for (size_t k = 0; k < want.size(); k++)
            EXPECT_EQ(cr.text.substr(cr.trained[k].first, cr.trained[k].second - cr.trained[k].first), want[k]);
        if (row.contains("spans"))  // {% generation %} blocks: the same ranges as HF's assistant mask
            for (size_t k = 0; k < cr.trained.size(); k++) {
                EXPECT_EQ(cr.trained[k].first, row["spans"][k][0].get<size_t>());
                EXPECT_EQ(cr.trained[k].second, row["spans"][k][1].get<size_t>());
            }
        // labels: the HF ids, and the learned tokens decode to exactly those strings, run by run
        std::vector<int32_t> ids, labels;
        EXPECT_TRUE(chat_tokenize(*tok, cr, false, &ids, &labels)) << "ids not aligned with the text";
        EXPECT_EQ(ids, row["ids"].get<std::vector<int32_t>>());
        std::vector<std::string> runs;
        for (size_t a = 0; a < ids.size();) {
            size_t b = a;
            while (b < ids.size() && (labels[b] != -100) == (labels[a] != -100)) b++;
            if (labels[a] != -100) runs.push_back(tokenizer_decode(*tok, std::vector<int32_t>(ids.begin() + a, ids.begin() + b), false));
            a = b;
        }
        ASSERT_EQ(runs.size(), want.size());
        for (size_t k = 0; k < runs.size(); k++) EXPECT_EQ(lstrip(runs[k]), lstrip(want[k]));
        // --train_on_prompt: every token
        EXPECT_TRUE(chat_tokenize(*tok, cr, true, &ids, &labels));
        EXPECT_EQ(labels, ids);
    }
}

INSTANTIATE_TEST_SUITE_P(Templates, ChatGolden, ::testing::ValuesIn(kTemplates),
                         [](const auto& info) { return std::string(info.param.name); });

// The sentinel-diff spans agree with the {% generation %} markers: the same template with its
// markers removed must train on the same bytes.
TEST(ChatSpans, DiffMethodMatchesGenerationMarkers) {
    auto tok = tokenizer_load(assets_dir() + "/tokenizers/smollm2");
    std::string src = fs_read_text(test_dir() + "/golden/chat/chatml_generation.jinja");
    // the markers become a plain if, so whitespace control stays as it was
    for (auto [tag, plain] : std::vector<std::pair<std::string, std::string>>{{"{%- generation %}", "{%- if true %}"},
                                                                              {"{% endgeneration %}", "{% endif %}"}}) {
        size_t p;
        while ((p = src.find(tag)) != std::string::npos) src.replace(p, tag.size(), plain);
    }
    std::string path = std::string(LISA_BUILD_DIR) + "/chatml_no_markers.jinja";
    fs_write_atomic(path, src);
    model_chat_template plain = model_chat_template_from_file(path, assets_dir() + "/tokenizers/smollm2");
    model_chat_template_probe(&plain, *tok);
    EXPECT_EQ(plain.end_of_turn, "<|im_end|>");
    ASSERT_FALSE(jinja_has_generation(*plain.tmpl));
    size_t checked = 0;
    for (const json& row : read_jsonl(test_dir() + "/golden/chat/chatml_generation.jsonl")) {
        if (!row.contains("spans") || row["add_generation_prompt"].get<bool>()) continue;
        chat_render cr = model_chat_template_render(plain, row["messages"], nullptr, false);
        ASSERT_EQ(cr.text, row["text"].get<std::string>());
        ASSERT_EQ(cr.trained.size(), row["spans"].size()) << row["messages"].dump();
        for (size_t k = 0; k < cr.trained.size(); k++) {
            EXPECT_EQ(cr.trained[k].first, row["spans"][k][0].get<size_t>());
            EXPECT_EQ(cr.trained[k].second, row["spans"][k][1].get<size_t>());
        }
        checked++;
    }
    EXPECT_GT(checked, 10u);
}

TEST(ChatSpans, EndOfTurnMarkersOfTheRealTemplates) {
    for (auto [dir, marker] : std::vector<std::pair<std::string, std::string>>{
             {"llama3", "<|eot_id|>"}, {"llama3_1", "<|eot_id|>"}, {"qwen3", "<|im_end|>"}, {"gemma3", "<end_of_turn>"}}) {
        auto tok = tokenizer_load(assets_dir() + "/tokenizers/" + dir);
        model_chat_template t;
        ASSERT_TRUE(model_chat_template_load(assets_dir() + "/tokenizers/" + dir, &t));
        model_chat_template_probe(&t, *tok);
        EXPECT_EQ(t.end_of_turn, marker) << dir;
    }
}
