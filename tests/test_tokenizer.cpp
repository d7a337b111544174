// Tokenizer conformance: ids and decoded text must equal what the Hugging Face `tokenizers`
// library gives (../shared/assets/tokenizer_golden, 77 strings x 6 tokenizers), plus our own
// hard cases and round trips. Exact equality: no tolerance.
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/fs.h"
#include "tokenizer/tokenizer.h"
#include "test_util.h"

using namespace lisa;
using json = nlohmann::json;

static std::string tokenizer_dir(const std::string& name) {
    std::string a = lisa_test::assets_dir();
    if (a.empty()) return "";
    return name == "aidreams-260k" ? a + "/models/aidreams-260k" : a + "/tokenizers/" + name;
}

// Checks every case of a jsonl golden file (text, ids, ids_special, decoded and, where present,
// decoded_skip_special) against the tokenizer; reports the first few mismatches. Returns the count.
static int check_golden_cases(const tokenizer& tok, const std::string& file, const std::string& name) {
    std::istringstream in(fs_read_text(file));
    std::string line;
    int n = 0, bad = 0;
    while (std::getline(in, line)) {
        if (line.empty()) continue;
        json c = json::parse(line);
        std::string text = c["text"].get<std::string>();
        // the golden ids come from the `tokenizers` library, which applies the file's truncation
        auto ids = tokenizer_encode(tok, text, false, true);
        auto ids_sp = tokenizer_encode(tok, text, true, true);
        std::string dec = tokenizer_decode(tok, c["ids"].get<std::vector<int32_t>>(), false);
        bool skip = c.contains("decoded_skip_special");
        std::string dec_skip = skip ? tokenizer_decode(tok, c["ids_special"].get<std::vector<int32_t>>(), true) : "";
        if (ids != c["ids"].get<std::vector<int32_t>>() || ids_sp != c["ids_special"].get<std::vector<int32_t>>() ||
            dec != c["decoded"].get<std::string>() || (skip && dec_skip != c["decoded_skip_special"].get<std::string>())) {
            if (++bad <= 5)
                ADD_FAILURE() << name << " case " << n << " " << json(text).dump() << "\n  ids got " << json(ids).dump()
                              << "\n      want " << c["ids"].dump() << "\n  special got " << json(ids_sp).dump()
                              << "\n      want " << c["ids_special"].dump() << "\n  decoded got " << json(dec).dump()
                              << " want " << c["decoded"].dump()
                              << (skip ? "\n  skip got " + json(dec_skip).dump() + " want " + c["decoded_skip_special"].dump() : "");
        }
        n++;
    }
    EXPECT_EQ(bad, 0) << name;
    return n;
}

class tokenizer_golden : public ::testing::TestWithParam<const char*> {};

TEST_P(tokenizer_golden, every_case_matches_hugging_face) {
    std::string dir = tokenizer_dir(GetParam());
    if (dir.empty()) GTEST_SKIP() << "../shared/assets not found (set LISA_ASSETS): tokenizer golden not checked";
    auto tok = tokenizer_load(dir);
    std::string file = lisa_test::assets_dir() + "/tokenizer_golden/" + GetParam() + ".jsonl";
    EXPECT_EQ(check_golden_cases(*tok, file, GetParam()), 77);
}

INSTANTIATE_TEST_SUITE_P(assets, tokenizer_golden,
                         ::testing::Values("llama3", "qwen3", "mistral", "gpt2", "smollm2", "aidreams-260k", "gemma3", "llama3_1"),
                         [](const auto& info) {
                             std::string s = info.param;
                             for (auto& ch : s)
                                 if (!isalnum((unsigned char)ch)) ch = '_';
                             return s;
                         });

static const char* kCorpus[] = {
    "The quick brown fox jumps over the lazy dog.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
    "日本語の文章と、中文的句子，还有한국어 문장.",
    "עברית וערבית: مرحبا بالعالم",
    "हिन्दी में एक वाक्य। ภาษาไทยก็มี",
    "emoji: 👩‍🚀🧑🏿‍🤝‍🧑🏻 🏳️‍🌈 and flags 🇫🇷🇯🇵",
    "code:\n\tif (x <= 10) { return y->z; }\r\n",
    "          many spaces\n\n\n\nand newlines    \t\t",
    "e\xcc\x81 vs \xc3\xa9 (NFD vs NFC), ﬁ ligature, Å",
    "numbers 1234567890 ١٢٣ ½ ² Ⅻ",
    "",
};

TEST(tokenizer, byte_level_tokenizers_round_trip_a_multilingual_corpus) {
    if (lisa_test::assets_dir().empty()) GTEST_SKIP() << "../shared/assets not found";
    for (const char* name : {"llama3", "gpt2", "smollm2", "qwen3"}) {
        auto tok = tokenizer_load(tokenizer_dir(name));
        for (const char* text : kCorpus) {
            std::string want = text;
            if (std::string(name) == "qwen3") {  // NFC normalizer: compare with the composed text
                want = std::string(text);
                size_t p = want.find("e\xcc\x81");
                if (p != std::string::npos) want.replace(p, 3, "\xc3\xa9");
                p = want.find("A\xcc\x8a");
                if (p != std::string::npos) want.replace(p, 3, "\xc3\x85");
            }
            EXPECT_EQ(tokenizer_decode(*tok, tokenizer_encode(*tok, text, false), false), want)
                << name << ": " << text;
        }
    }
}

TEST(tokenizer, hard_cases) {
    if (lisa_test::assets_dir().empty()) GTEST_SKIP() << "../shared/assets not found";
    auto l3 = tokenizer_load(tokenizer_dir("llama3"));
    auto mi = tokenizer_load(tokenizer_dir("mistral"));
    auto qw = tokenizer_load(tokenizer_dir("qwen3"));
    // special tokens inside text are single ids and never split; skip_special_tokens drops them
    auto ids = tokenizer_encode(*l3, "a<|eot_id|>b<|start_header_id|>", false);
    EXPECT_EQ(std::count(ids.begin(), ids.end(), tokenizer_token_to_id(*l3, "<|eot_id|>")), 1);
    EXPECT_EQ(ids.back(), tokenizer_token_to_id(*l3, "<|start_header_id|>"));
    EXPECT_EQ(tokenizer_decode(*l3, ids, true), "ab");
    EXPECT_EQ(tokenizer_decode(*l3, ids, false), "a<|eot_id|>b<|start_header_id|>");
    // NFC-sensitive input: decomposed and composed é give the same ids under an NFC normalizer
    EXPECT_EQ(tokenizer_encode(*qw, "caf\x65\xcc\x81", false), tokenizer_encode(*qw, "caf\xc3\xa9", false));
    // long whitespace runs and a long word do not blow up and round-trip
    std::string ws(5000, ' ');
    ws += "x";
    ws += std::string(3000, '\n');
    EXPECT_EQ(tokenizer_decode(*l3, tokenizer_encode(*l3, ws, false), false), ws);
    std::string word(20000, 'a');
    EXPECT_EQ(tokenizer_decode(*mi, tokenizer_encode(*mi, word, false), false), word);
    // byte fallback for characters outside the vocabulary (Mistral): decodes back exactly
    std::string rare = "\xf0\x9f\xa6\x99 \xe1\x9a\xa0 \xf0\x90\x8c\xb0";  // llama, runic, gothic
    auto rids = tokenizer_encode(*mi, rare, false);
    EXPECT_EQ(tokenizer_decode(*mi, rids, false), rare);
    // invalid UTF-8 is repaired to U+FFFD per invalid sequence, never a crash
    std::string bad = "ok\xff\xfe mid \xe2\x82 end \xc0\xaf";
    for (auto* t : {l3.get(), mi.get(), qw.get()}) {
        std::string d = tokenizer_decode(*t, tokenizer_encode(*t, bad, false), false);
        EXPECT_EQ(d, "ok\xef\xbf\xbd\xef\xbf\xbd mid \xef\xbf\xbd end \xef\xbf\xbd\xef\xbf\xbd");
    }
    // BOS from tokenizer_config.json where the file says add_bos_token (Mistral), none for Qwen
    EXPECT_EQ(tokenizer_encode(*mi, "hi", true).front(), tokenizer_bos_id(*mi));
    EXPECT_EQ(tokenizer_bos_id(*mi), 1);
    EXPECT_EQ(tokenizer_eos_id(*mi), 2);
    EXPECT_EQ(tokenizer_bos_id(*qw), -1);
    EXPECT_EQ(tokenizer_eos_id(*qw), tokenizer_token_to_id(*qw, "<|im_end|>"));
    EXPECT_EQ(tokenizer_vocab_size(*l3), 128256);
}

TEST(tokenizer, add_eos_token_in_config_is_honoured) {
    if (lisa_test::assets_dir().empty()) GTEST_SKIP() << "../shared/assets not found";
    lisa_test::temp_dir td;
    std::string src = tokenizer_dir("mistral");
    lisa_test::write_file(td.path + "/tokenizer.json", fs_read_text(src + "/tokenizer.json"));
    json cfg = json::parse(fs_read_text(src + "/tokenizer_config.json"));
    cfg["add_eos_token"] = true;
    cfg["add_bos_token"] = false;
    lisa_test::write_file(td.path + "/tokenizer_config.json", cfg.dump());
    auto tok = tokenizer_load(td.path);
    auto ids = tokenizer_encode(*tok, "hello", true);
    EXPECT_NE(ids.front(), 1);
    EXPECT_EQ(ids.back(), 2);
}

TEST(tokenizer, unsupported_components_and_bad_files_are_named) {
    lisa_test::temp_dir td;
    auto err = [&](const std::string& content) {
        lisa_test::write_file(td.path + "/tokenizer.json", content);
        try {
            tokenizer_load(td.path);
        } catch (const lisa::error& e) {
            return std::string(e.what());
        }
        return std::string();
    };
    std::string base = R"({"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]})";
    EXPECT_EQ(err(base + "}"), "");
    EXPECT_NE(err(R"({"model":{"type":"WordPiece","vocab":{}}})").find("field 'model.type': \"WordPiece\" is not supported"), std::string::npos);
    EXPECT_NE(err(base + R"(,"normalizer":{"type":"BertNormalizer"}})").find("normalizer \"BertNormalizer\""), std::string::npos);
    EXPECT_NE(err(base + R"(,"pre_tokenizer":{"type":"Whitespace"}})").find("pre_tokenizer \"Whitespace\""), std::string::npos);
    EXPECT_NE(err(base + R"(,"post_processor":{"type":"BertProcessing"}})").find("post_processor \"BertProcessing\""), std::string::npos);
    EXPECT_NE(err(base + R"(,"decoder":{"type":"WordPiece"}})").find("decoder \"WordPiece\""), std::string::npos);
    EXPECT_NE(err(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":["a c"]}})").find("merges[0]"), std::string::npos);
    EXPECT_NE(err("{not json").find("tokenizer.json: not valid JSON"), std::string::npos);
    std::filesystem::remove(td.path + "/tokenizer.json");
    EXPECT_NE(err("").find(""), std::string::npos);
    try {
        tokenizer_load(td.path + "/nothing");
        ADD_FAILURE();
    } catch (const lisa::error& e) {
        EXPECT_NE(std::string(e.what()).find("nothing"), std::string::npos);
    }
}

TEST(tokenizer, cli_tokenize_and_decode) {
    if (lisa_test::assets_dir().empty()) GTEST_SKIP() << "../shared/assets not found";
    std::string dir = tokenizer_dir("mistral");
    auto r = lisa_test::run_lisa("tokenize --model_name_or_path " + dir + " --text 'Hello world'");
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_EQ(json::parse(r.output)["ids"], json({1, 22557, 1526}));  // golden "Hello world" ids with BOS
    r = lisa_test::run_lisa("tokenize --model_name_or_path " + dir + " --text 'Hello world' --no_special_tokens");
    EXPECT_EQ(json::parse(r.output)["ids"], json({22557, 1526}));
    r = lisa_test::run_lisa("tokenize --model_name_or_path " + dir + " --decode --ids 1,22557,1526 --skip_special_tokens");
    EXPECT_EQ(json::parse(r.output)["text"], "Hello world");
    r = lisa_test::run_lisa("tokenize --model_name_or_path " + dir + " --decode --ids 1,99999");
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.output.find("--ids: \"99999\" is not a token id"), std::string::npos) << r.output;
}

// 250 random strings of hard characters per tokenizer, encoded/decoded by the Hugging Face
// library (tests/golden/make_tokenizer_fuzz.js): ids, ids with special tokens, decoding, and
// decoding with skip_special_tokens.
// (fuzz goldens exist for the tokenizers make_tokenizer_fuzz.js was run on)
class tokenizer_fuzz : public ::testing::TestWithParam<const char*> {};

TEST_P(tokenizer_fuzz, differential_fuzz_cases_match_hugging_face) {
    std::string dir = tokenizer_dir(GetParam());
    if (dir.empty()) GTEST_SKIP() << "../shared/assets not found (set LISA_ASSETS): tokenizer fuzz not checked";
    auto tok = tokenizer_load(dir);
    std::string file = lisa_test::golden_dir("tokenizer_fuzz") + "/" + GetParam() + ".jsonl";
    EXPECT_EQ(check_golden_cases(*tok, file, GetParam()), 250);
}

INSTANTIATE_TEST_SUITE_P(assets, tokenizer_fuzz,
                         ::testing::Values("llama3", "qwen3", "mistral", "gpt2", "smollm2", "aidreams-260k"),
                         [](const auto& info) {
                             std::string s = info.param;
                             for (auto& ch : s)
                                 if (!isalnum((unsigned char)ch)) ch = '_';
                             return s;
                         });

// Real tokenizers with components replaced (tests/golden/tokenizer_variants/variants.json), so
// that Metaspace, Lowercase, Strip, NFKC, Split behaviours, a Sequence post-processor and
// lstrip/rstrip/single_word are checked against the Hugging Face library too.
TEST(tokenizer, variants_match_hugging_face) {
    if (lisa_test::assets_dir().empty()) GTEST_SKIP() << "../shared/assets not found";
    std::string vdir = lisa_test::golden_dir("tokenizer_variants");
    json variants = json::parse(fs_read_text(vdir + "/variants.json"));
    for (auto& [name, v] : variants.items()) {
        json t = json::parse(fs_read_text(tokenizer_dir(v["base"].get<std::string>()) + "/tokenizer.json"));
        if (v.contains("set"))
            for (auto& [k, val] : v["set"].items()) t[k] = val;
        if (v.contains("added_flags"))
            for (auto& a : t["added_tokens"])
                if (v["added_flags"].contains(a["content"].get<std::string>()))
                    for (auto& [k, val] : v["added_flags"][a["content"].get<std::string>()].items()) a[k] = val;
        lisa_test::temp_dir td;
        lisa_test::write_file(td.path + "/tokenizer.json", t.dump());
        auto tok = tokenizer_load(td.path);
        EXPECT_EQ(check_golden_cases(*tok, vdir + "/" + name + ".jsonl", name), 200) << name;
    }
}
