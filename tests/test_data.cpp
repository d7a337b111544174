// Datasets, templates, batching, and the eval / generate commands.
// Expected token ids are built from the Hugging Face tokenizer goldens (not from our tokenizer);
// eval losses and greedy text are checked against PyTorch (tests/golden/aidreams_data).
#include <nlohmann/json.hpp>

#include <fstream>
#include <set>

#include "core/error.h"
#include "data/chat_template.h"
#include "data/dataset.h"
#include "io/fs.h"
#include "test_util.h"

using namespace lisa;
using json = nlohmann::json;
using ids_t = std::vector<int32_t>;

// golden ids of the shared strings for one tokenizer: text -> {ids, ids_special}
static std::map<std::string, json> golden_ids(const std::string& name) {
    std::map<std::string, json> m;
    std::istringstream in(fs_read_text(lisa_test::assets_dir() + "/tokenizer_golden/" + name + ".jsonl"));
    std::string line;
    while (std::getline(in, line))
        if (!line.empty()) {
            json j = json::parse(line);
            m[j["text"].get<std::string>()] = j;
        }
    return m;
}

static std::string write_dataset(const lisa_test::temp_dir& td, const std::string& file, const json& j) {
    lisa_test::write_file(td.path + "/" + file, j.dump());
    return td.path;
}

static ids_t cat(std::initializer_list<ids_t> parts) {
    ids_t r;
    for (auto& p : parts) r.insert(r.end(), p.begin(), p.end());
    return r;
}

#define NEED_ASSETS() \
    if (lisa_test::assets_dir().empty()) GTEST_SKIP() << "../shared/assets not found (set LISA_ASSETS)"

TEST(dataset, text_only_and_text2text_ids_and_label_masks) {
    NEED_ASSETS();
    auto tok = tokenizer_load(lisa_test::assets_dir() + "/tokenizers/mistral");
    auto g = golden_ids("mistral");
    ids_t hw_sp = g["Hello world"]["ids_special"], hw2 = g["Hello, world!"]["ids"];
    dataset_options o;
    o.eos_id = 2;  // Mistral </s>
    {
        lisa_test::temp_dir td;
        write_dataset(td, "a.json", {{"type", "text_only"}, {"instances", {{{"text", "Hello world"}}}}});
        dataset d = dataset_load(td.path, *tok, o);
        ASSERT_EQ(d.samples.size(), 1u);
        EXPECT_EQ(d.samples[0].ids, cat({hw_sp, {2}}));  // BOS ... EOS
        EXPECT_EQ(d.samples[0].labels, cat({hw_sp, {2}}));
    }
    {
        lisa_test::temp_dir td;
        write_dataset(td, "a.json",
                      {{"type", "text2text"}, {"instances", {{{"input", "Hello world"}, {"output", "Hello, world!"}}}}});
        dataset d = dataset_load(td.path, *tok, o);
        ASSERT_EQ(d.samples.size(), 1u);
        EXPECT_EQ(d.samples[0].ids, cat({hw_sp, hw2, {2}}));
        EXPECT_EQ(d.samples[0].labels, cat({ids_t(hw_sp.size(), -100), hw2, {2}}));
        EXPECT_EQ(sample_label_tokens(d.samples[0]), (int64_t)hw2.size() + 1);
    }
}

// --group_texts packs whole samples: a sample longer than a block continues into the next block
// (LMFlow tokenizes without truncation before grouping); only the stream's remainder is dropped.
TEST(dataset, group_texts_packs_samples_whole_not_cut_to_the_block_first) {
    NEED_ASSETS();
    auto tok = tokenizer_load(lisa_test::assets_dir() + "/tokenizers/mistral");
    auto g = golden_ids("mistral");
    ids_t hw_sp = g["Hello world"]["ids_special"];
    const std::string text = "Hello world";
    lisa_test::temp_dir td;
    json inst = json::array();
    for (int i = 0; i < 3; i++) inst.push_back({{"text", text}});
    write_dataset(td, "a.json", {{"type", "text_only"}, {"instances", inst}});
    const int64_t per = (int64_t)hw_sp.size() + 1;  // BOS ... EOS
    dataset_options o;
    o.eos_id = 2;
    o.block_size = per - 1;  // every sample is one token longer than a block
    o.truncate = false;
    dataset d = dataset_load(td.path, *tok, o);
    EXPECT_EQ(d.n_truncated, 0);
    dataset_group_texts(&d, o.block_size);
    EXPECT_EQ((int64_t)d.samples.size(), 3 * per / (per - 1));  // every token is in some block
    ASSERT_GE(d.samples.size(), 2u);
    EXPECT_EQ(d.samples[1].ids[0], 2);  // the second block starts with the first sample's EOS
    o.truncate = true;                  // without packing, samples are cut (and counted)
    dataset cut = dataset_load(td.path, *tok, o);
    EXPECT_EQ(cut.n_truncated, 3);
    EXPECT_EQ((int64_t)cut.samples[0].ids.size(), per - 1);
}

TEST(dataset, conversation_trains_on_assistant_turns_as_lmflow_labels_them) {
    NEED_ASSETS();
    auto tok = tokenizer_load(lisa_test::assets_dir() + "/tokenizers/llama3");
    auto g = golden_ids("llama3");
    json conv = {{"type", "conversation"},
                 {"instances",
                  {{{"system", "Be brief."},
                    {"messages",
                     {{{"role", "user"}, {"content", "Hello world"}},
                      {{"role", "assistant"}, {"content", "Hello, world!"}},
                      {{"role", "user"}, {"content", "3333"}},
                      {{"role", "assistant"}, {"content", "Hello World!"}}}}}}}};
    lisa_test::temp_dir td;
    write_dataset(td, "c.json", conv);
    dataset_options o;
    o.conversation_template = "llama3";
    dataset d = dataset_load(td.path, *tok, o);
    ASSERT_EQ(d.samples.size(), 1u);
    const sample& s = d.samples[0];
    ids_t trained;
    for (size_t i = 0; i < s.ids.size(); i++)
        if (s.labels[i] != -100) trained.push_back(s.labels[i]);
    // LMFlow's llama3: each assistant turn learned whole, its header too; the text between the
    // special tokens encoded as Hugging Face encodes it (the goldens); "assistant" one vocabulary entry
    const int32_t eot = 128009, start = 128006, end = 128007;  // <|eot_id|>, <|start_header_id|>, <|end_header_id|>
    const int32_t assistant = tokenizer_token_to_id(*tok, "assistant");
    ASSERT_GE(assistant, 0);
    const ids_t header = cat({{start, assistant, end}, g["\n\n"]["ids"]});
    EXPECT_EQ(trained, cat({header, g["Hello, world!"]["ids"], {eot}, header, g["Hello World!"]["ids"], {eot}}));
    EXPECT_EQ(s.ids.front(), 128000);  // <|begin_of_text|>: the tokenizer's BOS, LMFlow's special_starter
    // train_on_prompt: every token is a label
    o.train_on_prompt = true;
    dataset all = dataset_load(td.path, *tok, o);
    EXPECT_EQ(all.samples[0].labels, all.samples[0].ids);
}

// LMFlow's documented renderings (docs/source/examples/supported_conversation_template.md,
// "Multiple rounds"), with its placeholders filled by S, U1, A1, U2, A2 and BOS / EOS shown as
// the model family's tokens: each named template writes the same text. LMFlow's labels: every
// piece of an assistant turn, its header and end marker included.
TEST(chat_template, each_template_renders_as_lmflow_documents_it) {
    std::vector<chat_message> m = {{"system", "S"}, {"user", "U1"}, {"assistant", "A1"}, {"user", "U2"}, {"assistant", "A2"}};
    auto render = [&](const char* name, const char* bos, const char* eos, std::string* trained = nullptr,
                      bool gen = false) {
        std::string all;
        auto msgs = m;
        if (gen) msgs.pop_back();
        for (auto& s : chat_template_render(name, msgs, gen)) {
            const std::string t = s.kind == chat_segment::bos ? bos : s.kind == chat_segment::eos ? eos : s.text;
            all += t;
            if (trained && s.trainable) *trained += "[" + t + "]";
        }
        return all;
    };
    struct doc {
        const char *name, *bos, *eos, *text;
    };
    const doc docs[] = {
        {"chatglm3", "", "", "[gMASK]sop<|system|>\n S<|user|>\n U1<|assistant|>\n A1<|user|>\n U2<|assistant|>\n A2"},
        {"chatml", "", "", "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
                           "<|im_start|>user\nU2<|im_end|>\n<|im_start|>assistant\nA2<|im_end|>\n"},
        {"deepseek_v2", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>",
         "<｜begin▁of▁sentence｜>S\n\nUser: U1\n\nAssistant: A1<｜end▁of▁sentence｜>User: U2\n\nAssistant: A2<｜end▁of▁sentence｜>"},
        {"gemma", "<bos>", "<eos>", "<bos>S<start_of_turn>user\nU1<end_of_turn>\n<start_of_turn>model\nA1<end_of_turn>\n"
                                    "<start_of_turn>user\nU2<end_of_turn>\n<start_of_turn>model\nA2<end_of_turn>\n"},
        {"internlm2", "<s>", "</s>", "<s><|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\n"
                                     "A1<|im_end|>\n<|im_start|>user\nU2<|im_end|>\n<|im_start|>assistant\nA2<|im_end|>\n"},
        {"llama3", "<|begin_of_text|>", "<|end_of_text|>",
         "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
         "U1<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nA1<|eot_id|><|start_header_id|>user<|end_header_id|>"
         "\n\nU2<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nA2<|eot_id|>"},
        {"phi3", "<s>", "<|endoftext|>", "<s><|system|>\nS<|end|>\n<|user|>\nU1<|end|>\n<|assistant|>\nA1<|end|>\n<|user|>\nU2<|end|>\n"
                                         "<|assistant|>\nA2<|end|>\n<|endoftext|>"},
        {"qwen2", "", "", "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
                          "<|im_start|>user\nU2<|im_end|>\n<|im_start|>assistant\nA2<|im_end|>\n"},
        {"yi", "", "", "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
                       "<|im_start|>user\nU2<|im_end|>\n<|im_start|>assistant\nA2<|im_end|>\n"},
        {"yi1_5", "", "", "S<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nU2<|im_end|>\n"
                          "<|im_start|>assistant\nA2<|im_end|>\n"},
        // (the docs print the reply after "[/INST]" with the space SentencePiece decodes; the
        // text LMFlow encodes has none: the tokenizer's dummy prefix makes it)
        {"llama2", "<s>", "</s>", "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU1 [/INST]A1</s><s>[INST] U2 [/INST]A2</s>"},
        {"zephyr", "", "</s>", "<|system|>\nS</s>\n<|user|>\nU1</s>\n<|assistant|>\nA1</s>\n<|user|>\nU2</s>\n<|assistant|>\nA2</s>"},
    };
    for (const doc& d : docs) EXPECT_EQ(render(d.name, d.bos, d.eos), d.text) << d.name;
    // LMFlow's labels: the assistant turns whole, and the stopper after the last
    std::string trained;
    render("llama3", "<BOS>", "<EOS>", &trained);
    EXPECT_EQ(trained, "[<|start_header_id|>assistant<|end_header_id|>\n\nA1<|eot_id|>]"
                       "[<|start_header_id|>assistant<|end_header_id|>\n\nA2<|eot_id|>]");
    trained.clear();
    render("phi3", "<s>", "<EOS>", &trained);
    EXPECT_EQ(trained, "[<|assistant|>\nA1<|end|>\n][<|assistant|>\nA2<|end|>\n][<EOS>]");
    // aliases, and zephyr without a system prompt: no newline before the first user turn
    EXPECT_EQ(render("deepseek", "<B>", "<E>"), render("deepseek_v2", "<B>", "<E>"));
    std::vector<chat_message> no_sys = {{"user", "U1"}, {"assistant", "A1"}};
    ASSERT_EQ(chat_template_render("disable", no_sys, false).front().kind, chat_segment::bos);  // = empty
    std::string z;
    for (auto& s : chat_template_render("zephyr", no_sys, false)) z += s.kind == chat_segment::eos ? "</s>" : s.text;
    EXPECT_EQ(z, "<|user|>\nU1</s>\n<|assistant|>\nA1</s>");
    // a trailing user turn is dropped; a blank system prompt is none; an empty reply is a space
    std::vector<chat_message> odd = {{"system", "  "}, {"user", "U1"}, {"assistant", ""}, {"user", "U2"}};
    std::string c;
    for (auto& s : chat_template_render("chatml", odd, false)) c += s.text;
    EXPECT_EQ(c, "<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n");
    c.clear();
    for (auto& s : chat_template_render("llama2", {{"user", "U1"}, {"assistant", ""}}, false)) c += s.text;
    EXPECT_EQ(c, "[INST] U1 [/INST] ");
    // generation prompt: the assistant's opening after the last user turn
    EXPECT_EQ(render("chatml", "", "", nullptr, true),
              "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n"
              "<|im_start|>user\nU2<|im_end|>\n<|im_start|>assistant\n");
    // hymba: the system turn always, the tools listed in it, its separator id stripped from the last reply
    const nlohmann::ordered_json tools = {"tool_1_desc"};
    std::vector<chat_segment> h = chat_template_render("hymba", no_sys, false, &tools);
    ASSERT_FALSE(h.empty());
    EXPECT_EQ(h[0].text, "<extra_id_0>System\n<tool> tool_1_desc </tool>\n\n");
    std::vector<std::string> warnings;
    chat_template_render("chatml", no_sys, false, &tools, &warnings);
    ASSERT_EQ(warnings.size(), 1u);
    EXPECT_NE(warnings[0].find("does not show tools"), std::string::npos);
    // the *_for_tool variants: the tools joined by "," after the system prompt, no warning
    const nlohmann::ordered_json two_tools = {"a", "b"};
    warnings.clear();
    std::vector<chat_segment> ft = chat_template_render("llama3_for_tool", m, false, &two_tools, &warnings);
    ASSERT_GE(ft.size(), 2u);
    EXPECT_EQ(ft[1].text, "<|start_header_id|>system<|end_header_id|>\n\nSa,b<|eot_id|>");
    EXPECT_TRUE(warnings.empty());
    EXPECT_EQ(chat_template_render("qwen2_for_tool", no_sys, false, &two_tools)[0].text, "<|im_start|>system\na,b<|im_end|>\n");
    EXPECT_THROW(chat_template_render("vicuna", m, false), lisa::error);
    EXPECT_THROW(chat_template_render("empty", m, false), lisa::error);  // a system prompt it has no place for
}

TEST(dataset, block_size_truncates_and_drops_samples_without_labels) {
    NEED_ASSETS();
    auto tok = tokenizer_load(lisa_test::assets_dir() + "/tokenizers/mistral");
    lisa_test::temp_dir td;
    std::string long_input(200, 'x');
    write_dataset(td, "a.json",
                  {{"type", "text2text"},
                   {"instances", {{{"input", long_input}, {"output", "yes"}}, {{"input", "hi"}, {"output", "a b c d e f g"}}}}});
    dataset_options o;
    o.eos_id = 2;
    o.block_size = 8;
    dataset d = dataset_load(td.path, *tok, o);
    EXPECT_EQ(d.n_instances, 2);
    EXPECT_EQ(d.n_dropped, 1);    // its completion was cut away entirely
    EXPECT_EQ(d.n_truncated, 2);
    ASSERT_EQ(d.samples.size(), 1u);
    EXPECT_EQ(d.samples[0].ids.size(), 8u);
}

TEST(dataset, bad_inputs_name_file_instance_and_field) {
    NEED_ASSETS();
    auto tok = tokenizer_load(lisa_test::assets_dir() + "/tokenizers/mistral");
    dataset_options o;
    o.eos_id = 2;
    auto err = [&](const std::function<void(const std::string&)>& make) {
        lisa_test::temp_dir td;
        make(td.path);
        try {
            dataset_load(td.path, *tok, o);
        } catch (const lisa::error& e) {
            return std::string(e.what());
        }
        return std::string();
    };
    auto file = [](const std::string& text) {
        return [text](const std::string& dir) { lisa_test::write_file(dir + "/d.json", text); };
    };
    struct bad_case {
        std::function<void(const std::string&)> make;
        const char*                             expect;
    };
    std::vector<bad_case> cases = {
        {file("{\"type\": \"text_only\", "), "d.json: not valid JSON"},
        {file("[1, 2]"), "d.json: [0]: expected an object, got number 1"},
        {file("7"), "d.json: expected a JSON object {\"type\": ..., \"instances\": [...]} or a list of records"},
        {file(R"({"instances": []})"), "d.json: field 'type': expected"},
        {file(R"({"type": "chat", "instances": []})"), "d.json: field 'type': expected \"text_only\", \"text2text\", \"conversation\" or \"paired_conversation\", got \"chat\""},
        {file(R"({"type": "text_only", "instances": {}})"), "d.json: field 'instances': expected a list"},
        {file(R"({"type": "text_only", "instances": [{"text": "a"}, {"txt": "b"}]})"), "d.json: instances[1]: field 'text' is missing"},
        {file(R"({"type": "text2text", "instances": [{"input": "a", "output": 3}]})"), "d.json: instances[0]: field 'output': expected a string, got number 3"},
        {file(R"({"type": "text2text", "instances": ["a"]})"), "d.json: instances[0]: expected an object"},
        {[](const std::string& dir) {
             lisa_test::write_file(dir + "/a.json", R"({"type": "text_only", "instances": [{"text": "a"}]})");
             lisa_test::write_file(dir + "/b.json", R"({"type": "text2text", "instances": [{"input": "a", "output": "b"}]})");
         },
         "b.json: instances[0]: a text2text record, but "},
        {[](const std::string&) {}, "no *.json or *.jsonl files"},
        {file(R"({"type": "conversation", "instances": [{"messages": [{"role": "user", "content": "x"}]}]})"),
         "instances[0]: conversation data needs a chat template: the model has none, so pass --conversation_template"},
        {file(R"({"type": "conversation", "instances": [{"messages": []}]})"), "instances[0]: field 'messages': expected a non-empty list"},
        {[](const std::string& dir) { lisa_test::write_file(dir + "/d.jsonl", "{\"text\": \"a\"}\n\n{\"text\": \"b\",}\n"); },
         "d.jsonl: line 3: not valid JSON"},
        {[](const std::string& dir) { lisa_test::write_file(dir + "/d.jsonl", "{\"prompt\": \"a\"}\n"); },
         "d.jsonl: line 1: unknown record: expected fields \"messages\" (chat), \"conversations\" (ShareGPT)"},
        {[](const std::string& dir) { lisa_test::write_file(dir + "/d.jsonl", "{\"instruction\": \"a\"}\n"); },
         "d.jsonl: line 1: field 'output' is missing"},
        {[](const std::string& dir) {
             lisa_test::write_file(dir + "/d.jsonl", "{\"conversations\": [{\"from\": \"human\", \"value\": \"a\"}, {\"from\": \"bot\", \"value\": \"b\"}]}\n");
         },
         "d.jsonl: line 1.conversations[1]: field 'from': expected \"human\", \"gpt\" or \"system\", got \"bot\""},
        {file(R"({"type": "text_only", "instances": []})"), "no usable sample"},
    };
    for (auto& c : cases) {
        std::string m = err(c.make);
        EXPECT_NE(m.find(c.expect), std::string::npos) << "want: " << c.expect << "\n got: " << m;
    }
    o.conversation_template = "chatml";
    std::string m = err(file(R"({"type": "conversation", "instances": [{"messages": [{"role": "bot", "content": "x"}]}]})"));
    EXPECT_NE(m.find("instances[0].messages[0]: field 'role': expected \"user\" or \"assistant\" (or \"system\" first), got \"bot\""),
              std::string::npos) << m;
    // through the CLI: one line, non-zero exit
    lisa_test::temp_dir td;
    lisa_test::write_file(td.path + "/d.json", R"({"type": "text_only", "instances": [{"text": 1}]})");
    auto r = lisa_test::run_lisa("eval --model_name_or_path " + lisa_test::assets_dir() +
                                 "/models/aidreams-260k --dataset_path " + td.path);
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.output.find("d.json: instances[0]: field 'text': expected a string, got number 1"), std::string::npos)
        << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
}

TEST(batching, shuffle_is_seeded_and_padding_is_on_the_right) {
    auto a = epoch_order(10, 42, 0, true), b = epoch_order(10, 42, 0, true), c = epoch_order(10, 42, 1, true);
    EXPECT_EQ(a, b);
    EXPECT_NE(a, c);  // a new order each epoch
    auto sorted = a;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, epoch_order(10, 0, 0, false));  // a permutation
    dataset d;
    d.samples = {{{5, 6, 7}, {5, 6, 7}, {}}, {{8, 9}, {-100, 9}, {}}};
    batch bt = make_batch(d, {0, 1}, 0);
    EXPECT_EQ(bt.T, 3);
    EXPECT_EQ(bt.ids, ids_t({5, 6, 7, 8, 9, 0}));
    EXPECT_EQ(bt.labels, ids_t({5, 6, 7, -100, 9, -100}));
    EXPECT_EQ(bt.label_tokens, 3);  // 6, 7 and 9 are predicted
    // packing: concatenate and cut; a block with no label token left is not trained on
    dataset p;
    p.samples = {{{5, 6, 7}, {5, 6, 7}, {}}, {{8, 9, 10}, {-100, -100, 10}, {}}, {{11}, {11}, {}}};
    dataset_group_texts(&p, 2);
    ASSERT_EQ(p.samples.size(), 2u);
    EXPECT_EQ(p.samples[0].ids, ids_t({5, 6}));
    EXPECT_EQ(p.samples[1].ids, ids_t({9, 10}));  // [7, 8] has no label to predict; [11] is a remainder
}

// issue #27: the padding-free layout lays samples end to end with positions restarting at each;
// packed rows keep whole samples apart; the padding a run would have is counted.
TEST(batching, padding_free_packing_and_length_groups) {
    dataset d;
    d.samples = {{{5, 6, 7}, {5, 6, 7}, {}}, {{8, 9}, {-100, 9}, {}}, {{1, 2, 3, 4}, {-100, -100, 3, 4}, {}}};
    batch pf = make_batch(d, {0, 1, 2}, 0, batch_layout::padding_free);
    EXPECT_EQ(pf.B, 1);
    EXPECT_EQ(pf.T, 9);
    EXPECT_EQ(pf.ids, ids_t({5, 6, 7, 8, 9, 1, 2, 3, 4}));
    EXPECT_EQ(pf.labels, ids_t({5, 6, 7, -100, 9, -100, -100, 3, 4}));
    EXPECT_EQ(pf.pos, ids_t({0, 1, 2, 0, 1, 0, 1, 2, 3}));
    EXPECT_EQ(pf.label_tokens, 5);  // 6, 7 | 9 | 3, 4: the same as padded
    EXPECT_EQ(make_batch(d, {0, 1, 2}, 0).label_tokens, 5);
    EXPECT_EQ(pf.tokens, 9);
    EXPECT_EQ(make_batch(d, {0, 1, 2}, 0).B * make_batch(d, {0, 1, 2}, 0).T, 12);  // 3 of 12 padding
    EXPECT_NEAR(padding_fraction(d, {0, 1, 2}, 3), 3.0 / 12.0, 1e-12);
    EXPECT_NEAR(padding_fraction(d, {0, 1, 2}, 1), 0.0, 1e-12);

    // packing: whole samples into rows of 6; a sample longer than a row is cut into full rows and
    // its rest starts the next; the first token of each sample in a row predicts nothing
    dataset p;
    p.samples = {{{1, 2, 3}, {1, 2, 3}, {}},
                 {{4, 5}, {4, 5}, {}},
                 {{6, 7, 8}, {6, 7, 8}, {}},
                 {{10, 11, 12, 13, 14, 15, 16, 17}, {10, 11, 12, 13, 14, 15, 16, 17}, {}},
                 {{20, 21}, {-100, 21}, {}}};
    p.sources.assign(5, "x");
    dataset_pack(&p, 6);
    ASSERT_EQ(p.samples.size(), 4u);
    EXPECT_EQ(p.samples[0].ids, ids_t({1, 2, 3, 4, 5}));  // 6, 7, 8 would not fit: a new row
    EXPECT_EQ(p.samples[0].pos, ids_t({0, 1, 2, 0, 1}));
    EXPECT_EQ(p.samples[0].labels, ids_t({-100, 2, 3, -100, 5}));
    EXPECT_EQ(p.samples[1].ids, ids_t({6, 7, 8}));  // the long sample does not fit beside it
    EXPECT_EQ(p.samples[2].ids, ids_t({10, 11, 12, 13, 14, 15}));
    EXPECT_EQ(p.samples[3].ids, ids_t({16, 17, 20, 21}));
    EXPECT_EQ(p.samples[3].pos, ids_t({0, 1, 0, 1}));
    EXPECT_EQ(p.samples[3].labels, ids_t({-100, 17, -100, 21}));
    // a padded batch of packed rows carries their positions, padding continuing the last sample
    batch pb = make_batch(p, {0, 3}, 0);
    EXPECT_EQ(pb.T, 5);
    EXPECT_EQ(pb.pos, ids_t({0, 1, 2, 0, 1, 0, 1, 0, 1, 2}));
    // and a padding-free one lays the rows end to end with the same positions
    batch pp = make_batch(p, {0, 3}, 0, batch_layout::padding_free);
    EXPECT_EQ(pp.pos, ids_t({0, 1, 2, 0, 1, 0, 1, 0, 1}));

    // group by length: each megabatch sorted longest first, the same for the same seed
    dataset g;
    for (int i = 0; i < 40; i++) g.samples.push_back({ids_t(1 + (i * 7) % 23, 1), ids_t(1 + (i * 7) % 23, 1), {}});
    std::vector<size_t> o1 = epoch_order(40, 7, 0, true), o2 = o1;
    order_group_by_length(&o1, g, 16);
    order_group_by_length(&o2, g, 16);
    EXPECT_EQ(o1, o2);
    auto sorted = o1;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, epoch_order(40, 0, 0, false));  // still a permutation
    for (size_t i = 0; i + 1 < o1.size(); i++)
        if ((i + 1) % 16 != 0) {
            EXPECT_GE(g.samples[o1[i]].ids.size(), g.samples[o1[i + 1]].ids.size()) << i;
        }
    EXPECT_LT(padding_fraction(g, o1, 4), padding_fraction(g, epoch_order(40, 7, 0, true), 4));
}

TEST(eval_and_generate, match_pytorch_on_the_trained_model) {
    NEED_ASSETS();
    const std::string model = lisa_test::assets_dir() + "/models/aidreams-260k";
    const std::string g = lisa_test::golden_dir("aidreams_data");
    json want = json::parse(fs_read_text(g + "/expected.json"));
    // the dataset readers give exactly the ids PyTorch used (built from the HF tokenizer goldens)
    auto tok = tokenizer_load(model);
    for (const char* kind : {"text_only", "text2text"}) {
        dataset_options o;
        o.eos_id = 2;
        o.block_size = 128;
        dataset d = dataset_load(g + "/" + kind, *tok, o);
        ASSERT_EQ(d.samples.size(), want[kind]["ids"].size()) << kind;
        for (size_t i = 0; i < d.samples.size(); i++) {
            EXPECT_EQ(d.samples[i].ids, want[kind]["ids"][i].get<ids_t>()) << kind << " " << i;
            EXPECT_EQ(d.samples[i].labels, want[kind]["labels"][i].get<ids_t>()) << kind << " " << i;
        }
    }
    // loss over all label tokens equals PyTorch's (1e-5 relative; batches of 3 with padding)
    auto check = [&](const std::string& args, const json& w) {
        auto r = lisa_test::run_lisa("eval --model_name_or_path " + model + " --per_device_eval_batch_size 3 " + args);
        ASSERT_EQ(r.code, 0) << r.output;
        json got = json::parse(r.output);
        EXPECT_NEAR(got["loss"].get<double>(), w["loss"].get<double>(), 1e-5 * w["loss"].get<double>()) << args;
        EXPECT_EQ(got["tokens"], w["tokens"]);
        EXPECT_EQ(got["samples"], w["samples"]);
        EXPECT_NEAR(got["perplexity"].get<double>(), std::exp(w["loss"].get<double>()), 1e-3 * got["perplexity"].get<double>());
    };
    check("--dataset_path " + g + "/text_only", want["text_only"]);
    check("--dataset_path " + g + "/text2text", want["text2text"]);
    check("--dataset_path " + g + "/text_only --lora_model_path " + g + "/lora_adapter", want["text_only_lora"]);
    // greedy generation with the KV cache gives PyTorch's text
    const json& gen = want["generate_hello_world"];
    auto r = lisa_test::run_lisa("generate --model_name_or_path " + model + " --prompt 'Hello world' --max_new_tokens 30");
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_EQ(r.output, gen["text"].get<std::string>() + "\n");
    // --prompts_file: one JSON line per prompt, in order, extra fields kept, the same greedy text
    {
        lisa_test::temp_dir td;
        lisa_test::write_file(td.path + "/p.jsonl", "{\"prompt\": \"Hello world\", \"id\": 7}\n\n\"Hello world\"\n");
        auto b = lisa_test::run_lisa("generate --model_name_or_path " + model + " --prompts_file " + td.path +
                                     "/p.jsonl --max_new_tokens 30");
        ASSERT_EQ(b.code, 0) << b.output;
        std::vector<json> lines;
        std::istringstream in(b.output);
        for (std::string l; std::getline(in, l);) lines.push_back(json::parse(l));
        ASSERT_EQ(lines.size(), 2u) << b.output;
        EXPECT_EQ(lines[0]["id"], 7);
        for (const json& l : lines) {
            EXPECT_EQ(l["prompt"], "Hello world");
            EXPECT_EQ(l["completion"], gen["text"].get<std::string>());
        }
        lisa_test::write_file(td.path + "/bad.jsonl", "{\"prompt\": \"a\"}\n{\"text\": \"b\"}\n");
        auto e = lisa_test::run_lisa("generate --model_name_or_path " + model + " --prompts_file " + td.path + "/bad.jsonl");
        EXPECT_EQ(e.code, 1);
        EXPECT_NE(e.output.find("bad.jsonl: line 2: field 'prompt': expected a string"), std::string::npos) << e.output;
        EXPECT_EQ(e.output.find("completion"), std::string::npos) << "nothing is generated before every line is checked";
    }
    // sampling is reproducible for a seed and differs across seeds
    std::string base = "generate --model_name_or_path " + model + " --prompt 'The stars' --max_new_tokens 20 --temperature 1 --top_p 0.9 --top_k 40 ";
    auto s1 = lisa_test::run_lisa(base + "--seed 1"), s2 = lisa_test::run_lisa(base + "--seed 1"),
         s3 = lisa_test::run_lisa(base + "--seed 2");
    EXPECT_EQ(s1.output, s2.output);
    EXPECT_NE(s1.output, s3.output);
}

// ---- dataset formats beside LMFlow's, rendered with the model's own template (Qwen3's here)

static lisa_test::temp_dir tiny_qwen3_with_tokenizer() {  // config + the real Qwen3 tokenizer, no weights
    lisa_test::temp_dir td;
    for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
        fs_copy_atomic(lisa_test::assets_dir() + "/tokenizers/qwen3/" + f, td.path + "/" + f);
    lisa_test::write_file(td.path + "/config.json", json({{"architectures", {"Qwen3ForCausalLM"}}, {"model_type", "qwen3"},
        {"hidden_size", 32}, {"intermediate_size", 64}, {"num_hidden_layers", 2}, {"num_attention_heads", 4},
        {"num_key_value_heads", 2}, {"head_dim", 8}, {"vocab_size", 151936}, {"max_position_embeddings", 256},
        {"rms_norm_eps", 1e-6}, {"rope_theta", 1000000.0}, {"tie_word_embeddings", true}, {"torch_dtype", "float32"},
        {"eos_token_id", 151645}}).dump());
    return td;
}

TEST(dataset, jsonl_openai_sharegpt_and_alpaca_records_are_conversations) {
    NEED_ASSETS();
    auto model = tiny_qwen3_with_tokenizer();
    auto tok = tokenizer_load(model.path);
    dataset_options o;
    o.eos_id = 151645;
    model_chat_template storage;
    dataset_choose_template("", model.path, *tok, &storage, &o);  // "": the model's own template
    ASSERT_NE(o.model_template, nullptr);
    lisa_test::temp_dir data;
    // the same conversation in three shapes, plus an Alpaca record and its chat equivalent
    lisa_test::write_file(data.path + "/a.jsonl",
        json({{"messages", {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hi"}},
                            {{"role", "assistant"}, {"content", "Hello!"}}}}}).dump() + "\n\n" +
        json({{"instruction", "Translate"}, {"input", "chat"}, {"output", "cat"}}).dump() + "\n");
    lisa_test::write_file(data.path + "/b.json",
        json::array({{{"conversations", {{{"from", "system"}, {"value", "Be brief."}}, {{"from", "human"}, {"value", "Hi"}},
                                         {{"from", "gpt"}, {"value", "Hello!"}}}}},
                     {{"messages", {{{"role", "user"}, {"content", "Translate\n\nchat"}}, {{"role", "assistant"}, {"content", "cat"}}}}}}).dump());
    lisa_test::write_file(data.path + "/c.json",
        json({{"type", "conversation"}, {"instances", {{{"system", "Be brief."},
              {"messages", {{{"role", "user"}, {"content", "Hi"}}, {{"role", "assistant"}, {"content", "Hello!"}}}}}}}}).dump());
    dataset d = dataset_load(data.path, *tok, o);
    ASSERT_EQ(d.samples.size(), 5u);
    EXPECT_EQ(d.type, dataset_type::conversation);
    EXPECT_EQ(d.sources[0], data.path + "/a.jsonl: line 1");
    EXPECT_EQ(d.sources[1], data.path + "/a.jsonl: line 3");
    EXPECT_EQ(d.sources[2], data.path + "/b.json: [0]");
    for (size_t k : {2, 4}) {  // ShareGPT and LMFlow's conversation = the OpenAI record
        EXPECT_EQ(d.samples[k].ids, d.samples[0].ids) << k;
        EXPECT_EQ(d.samples[k].labels, d.samples[0].labels) << k;
    }
    EXPECT_EQ(d.samples[1].ids, d.samples[3].ids);  // Alpaca = user "instruction\n\ninput", assistant "output"
    // the rendered text is Qwen3's (as jinja2 renders it: tests/golden/chat/qwen3.jsonl) and only
    // the reply and its <|im_end|> are learned
    std::string text = tokenizer_decode(*tok, d.samples[0].ids, false);
    EXPECT_EQ(text, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
                    "<think>\n\n</think>\n\nHello!<|im_end|>\n");
    std::vector<int32_t> learned;
    for (size_t i = 0; i < d.samples[0].ids.size(); i++)
        if (d.samples[0].labels[i] != -100) learned.push_back(d.samples[0].ids[i]);
    EXPECT_EQ(tokenizer_decode(*tok, learned, false), "Hello!<|im_end|>");
    // --train_on_prompt learns every token
    o.train_on_prompt = true;
    dataset all = dataset_load(data.path, *tok, o);
    EXPECT_EQ(all.samples[0].labels, all.samples[0].ids);
    // a model without a template: "auto" says so; conversations without one stop
    lisa_test::temp_dir bare;
    fs_copy_atomic(lisa_test::assets_dir() + "/tokenizers/smollm2/tokenizer.json", bare.path + "/tokenizer.json");
    try {
        dataset_choose_template("auto", bare.path, *tok, &storage, &o);
        ADD_FAILURE() << "auto without a template";
    } catch (const lisa::error& e) {
        EXPECT_NE(std::string(e.what()).find("has no chat template"), std::string::npos) << e.what();
    }
    EXPECT_THROW(dataset_choose_template("vicuna", model.path, *tok, &storage, &o), lisa::error);
    // a template that raises names the record and shows the template's message
    lisa_test::write_file(bare.path + "/strict.jinja", "{% for m in messages %}{% if m.role == 'system' %}"
                                                        "{{ raise_exception('no system turns, please') }}{% endif %}{{ m.content }}{% endfor %}");
    o.train_on_prompt = false;
    dataset_choose_template(bare.path + "/strict.jinja", model.path, *tok, &storage, &o);
    try {
        dataset_load(data.path, *tok, o);
        ADD_FAILURE() << "the template raised";
    } catch (const lisa::error& e) {
        EXPECT_NE(std::string(e.what()).find("a.jsonl: line 1: " + bare.path + "/strict.jinja: chat template line 1: "
                                             "raise_exception: no system turns, please"), std::string::npos) << e.what();
    }
}

TEST(inspect_data, shows_what_training_learns) {
    NEED_ASSETS();
    auto model = tiny_qwen3_with_tokenizer();
    lisa_test::temp_dir data;
    lisa_test::write_file(data.path + "/a.jsonl",
        json({{"messages", {{{"role", "user"}, {"content", "Hi"}}, {{"role", "assistant"}, {"content", "Hello!"}},
                            {{"role", "user"}, {"content", "Bye"}}, {{"role", "assistant"}, {"content", "See you."}}}}}).dump() + "\n" +
        json({{"instruction", "Say yes"}, {"output", "yes"}}).dump() + "\n");
    std::string base = "inspect-data --model_name_or_path " + model.path + " --dataset_path " + data.path;
    auto r = lisa_test::run_lisa(base + " --json");
    ASSERT_EQ(r.code, 0) << r.output;
    std::istringstream lines(r.output);
    std::string line;
    auto tok = tokenizer_load(model.path);
    std::vector<std::string> learned;
    int n = 0;
    while (std::getline(lines, line)) {
        json j = json::parse(line);
        ids_t ids = j["input_ids"], labels = j["labels"];
        ASSERT_EQ(ids.size(), labels.size());
        ids_t run;
        for (size_t i = 0; i <= ids.size(); i++) {
            if (i < ids.size() && labels[i] != -100) {
                EXPECT_EQ(labels[i], ids[i]);
                run.push_back(ids[i]);
            } else if (!run.empty()) {
                learned.push_back(tokenizer_decode(*tok, run, false));
                run.clear();
            }
        }
        n++;
    }
    EXPECT_EQ(n, 2);
    EXPECT_EQ(learned, (std::vector<std::string>{"Hello!<|im_end|>", "See you.<|im_end|>", "yes<|im_end|>"}));
    r = lisa_test::run_lisa(base + " --limit 1");  // not a terminal: brackets mark the learned text
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("<|im_start|>assistant\n[[Hello!<|im_end|>]]"), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("sample 1 "), std::string::npos) << r.output;  // --limit 1
    EXPECT_NE(r.output.find("records: 2   type: conversation   chat template: " + model.path + "/tokenizer_config.json"),
              std::string::npos) << r.output;
    EXPECT_NE(r.output.find("samples: 2 "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("truncated: 0   dropped (nothing left to learn): 0"), std::string::npos) << r.output;
    // the padding the run's batches would have: both samples in one batch of 8, the shorter padded
    {
        auto js = lisa_test::run_lisa(base + " --json");
        std::istringstream ls(js.output);
        std::vector<size_t> len;
        while (std::getline(ls, line)) len.push_back(json::parse(line)["input_ids"].size());
        ASSERT_EQ(len.size(), 2u);
        const size_t longest = std::max(len[0], len[1]);
        const std::string want = strf("would be %.1f%% padding", 100.0 * (1.0 - (double)(len[0] + len[1]) / (2.0 * longest)));
        EXPECT_NE(r.output.find("padding: padded batches of 8 (seed 42, first epoch) " + want), std::string::npos)
            << want << "\n" << r.output;
        // packed: one row holding both, positions restarting at the second
        auto pk = lisa_test::run_lisa(base + " --json --packing");
        ASSERT_EQ(pk.code, 0) << pk.output;
        json row = json::parse(pk.output);
        ASSERT_EQ(row["input_ids"].size(), len[0] + len[1]);
        EXPECT_EQ(row["position_ids"][len[0]], 0);
        EXPECT_EQ(row["position_ids"][len[0] - 1], (int)len[0] - 1);
        EXPECT_EQ(row["labels"][len[0]], -100);  // the second sample's first token is predicted by nothing
    }
    // truncation is what training does: --block_size 12 cuts the first conversation before its reply
    r = lisa_test::run_lisa(base + " --block_size 12");
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("truncated: 2   dropped (nothing left to learn): 1"), std::string::npos) << r.output;
}

TEST(generate, wraps_the_prompt_with_the_models_template) {
    NEED_ASSETS();
    auto src = tiny_qwen3_with_tokenizer();
    lisa_test::temp_dir model;
    auto r = lisa_test::run_lisa("init --config " + src.path + "/config.json --tokenizer_path " + src.path +
                                 " --output_model_path " + model.path + "/m");
    ASSERT_EQ(r.code, 0) << r.output;
    r = lisa_test::run_lisa("generate --model_name_or_path " + model.path + "/m --prompt Hi --max_new_tokens 4 "
                            "--conversation_template auto --system 'Be brief.'");
    EXPECT_EQ(r.code, 0) << r.output;
    r = lisa_test::run_lisa("generate --model_name_or_path " + model.path + "/m --prompt Hi --system x");
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.output.find("--system needs --conversation_template"), std::string::npos) << r.output;
    // training on chat data uses the model's template by default and says so
    lisa_test::temp_dir data;
    lisa_test::write_file(data.path + "/a.jsonl",
        json({{"messages", {{{"role", "user"}, {"content", "Hi"}}, {{"role", "assistant"}, {"content", "Hello!"}}}}}).dump() + "\n");
    r = lisa_test::run_lisa("train --model_name_or_path " + model.path + "/m --dataset_path " + data.path +
                            " --output_model_path " + model.path + "/out --max_steps 2 --lisa_activated_layers 1");
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("data: conversations rendered with " + model.path + "/m/tokenizer_config.json: chat_template"),
              std::string::npos) << r.output;
}

// generate --messages continues a conversation; lisa chat keeps the turns: its second reply is
// exactly generate --messages on [user, its first reply, user] (greedy, the model's template).
TEST(generate, messages_and_chat_continue_a_conversation) {
    NEED_ASSETS();
    auto src = tiny_qwen3_with_tokenizer();
    lisa_test::temp_dir d;
    auto r = lisa_test::run_lisa("init --config " + src.path + "/config.json --tokenizer_path " + src.path +
                                 " --output_model_path " + d.path + "/m --seed 3");
    ASSERT_EQ(r.code, 0) << r.output;
    const std::string base = "generate --model_name_or_path " + d.path + "/m --max_new_tokens 6 --conversation_template auto ";
    auto one = lisa_test::run_lisa(base + "--prompt 'Hi there' 2>/dev/null");
    ASSERT_EQ(one.code, 0) << one.output;
    lisa_test::write_file(d.path + "/one.json", json::array({{{"role", "user"}, {"content", "Hi there"}}}).dump());
    auto same = lisa_test::run_lisa(base + "--messages " + d.path + "/one.json 2>/dev/null");
    EXPECT_EQ(same.output, one.output);  // --messages [user] = --prompt
    const std::string reply1 = one.output.substr(0, one.output.size() - 1);
    lisa_test::write_file(d.path + "/two.json", json({{"messages", {{{"role", "user"}, {"content", "Hi there"}},
                                                                     {{"role", "assistant"}, {"content", reply1}},
                                                                     {{"role", "user"}, {"content", "And then?"}}}}}).dump());
    auto two = lisa_test::run_lisa(base + "--messages " + d.path + "/two.json 2>/dev/null");
    ASSERT_EQ(two.code, 0) << two.output;
    lisa_test::write_file(d.path + "/turns.txt", "Hi there\nAnd then?\n");
    auto chat = lisa_test::run_lisa("chat --model_name_or_path " + d.path + "/m --max_new_tokens 6 < " + d.path +
                                    "/turns.txt 2>/dev/null");
    ASSERT_EQ(chat.code, 0) << chat.output;
    EXPECT_EQ(chat.output, one.output + two.output);
    auto bad = lisa_test::run_lisa(base + "--prompt x --messages " + d.path + "/one.json");
    EXPECT_EQ(bad.code, 1);
    EXPECT_NE(bad.output.find("give --prompt, --messages or --prompts_file (one of them)"), std::string::npos) << bad.output;
}

// A named template whose markers the tokenizer does not have is refused, not silently
// mis-tokenized; the named templates need alternating turns.
TEST(dataset, named_templates_check_the_tokenizer_and_the_turn_order) {
    NEED_ASSETS();
    auto tok = tokenizer_load(lisa_test::assets_dir() + "/tokenizers/mistral");
    dataset_options o;
    o.eos_id = 2;
    model_chat_template storage;
    try {
        dataset_choose_template("llama3", lisa_test::assets_dir() + "/tokenizers/mistral", *tok, &storage, &o);
        ADD_FAILURE() << "llama3 on a Mistral tokenizer";
    } catch (const lisa::error& e) {
        EXPECT_NE(std::string(e.what()).find("has no <|start_header_id|> token"), std::string::npos) << e.what();
    }
    dataset_choose_template("mistral", lisa_test::assets_dir() + "/tokenizers/mistral", *tok, &storage, &o);
    lisa_test::temp_dir td;
    lisa_test::write_file(td.path + "/a.jsonl", json({{"messages", {{{"role", "user"}, {"content", "a"}},
                                                                    {{"role", "assistant"}, {"content", "b"}},
                                                                    {{"role", "assistant"}, {"content", "c"}}}}}).dump() + "\n");
    try {
        dataset_load(td.path, *tok, o);
        ADD_FAILURE() << "two assistant turns in a row";
    } catch (const lisa::error& e) {
        EXPECT_NE(std::string(e.what()).find("a.jsonl: line 1.messages[2]: field 'role': \"assistant\" where a user turn is due"),
                  std::string::npos) << e.what();
    }
}

// No silent data loss: eval reports truncated and dropped samples, in its JSON and on stderr.
TEST(eval_and_generate, eval_reports_truncation_and_dropping) {
    NEED_ASSETS();
    const std::string g = lisa_test::golden_dir("aidreams_data") + "/text2text";
    auto r = lisa_test::run_lisa("eval --model_name_or_path " + lisa_test::assets_dir() +
                                 "/models/aidreams-260k --dataset_path " + g + " --block_size 12 2>&1");
    ASSERT_EQ(r.code, 0) << r.output;
    json j = json::parse(r.output.substr(r.output.find('{')));
    EXPECT_GT(j["truncated"].get<int64_t>(), 0);
    EXPECT_EQ(j["records"].get<int64_t>(), j["samples"].get<int64_t>() + j["dropped"].get<int64_t>());
    EXPECT_NE(r.output.find("samples truncated to --block_size 12"), std::string::npos) << r.output;
}

// LMFlow's documented conversation record (DATASETS.md: conversation_id, system, tools, messages)
// loads with its named templates: tools ignored with a note where the template does not show
// them; a trailing user turn left out with a note. Llama 2's template on a SentencePiece
// tokenizer puts no lone "▁" before a reply: LMFlow encodes the reply on its own, so "[/INST] I
// am" is ... 28793 ("]"), 315 ("▁I") ... with Mistral's tokenizer, as Hugging Face's whole-text
// tokenization gives it (issue #31), and that reply is what is learned.
TEST(dataset, lmflow_conversation_records_with_lmflow_templates) {
    NEED_ASSETS();
    json rec = {{"conversation_id", "c1"},
                {"system", "Be brief."},
                {"tools", {"TOOL_DESCRIPTION_1", "TOOL_DESCRIPTION_2"}},
                {"messages", {{{"role", "user"}, {"content", "Hi"}}, {{"role", "assistant"}, {"content", "I am here."}},
                              {{"role", "user"}, {"content", "Bye"}}}}};
    lisa_test::temp_dir td;
    write_dataset(td, "c.json", {{"type", "conversation"}, {"instances", {rec}}});
    auto tok = tokenizer_load(lisa_test::assets_dir() + "/tokenizers/mistral");
    dataset_options o;
    o.eos_id = 2;
    o.conversation_template = "llama2";
    dataset d = dataset_load(td.path, *tok, o);
    ASSERT_EQ(d.samples.size(), 1u);
    const sample& s = d.samples[0];
    auto has = [&](const char* what) {
        for (const auto& n : d.notes)
            if (n.find(what) != std::string::npos) return true;
        return false;
    };
    EXPECT_TRUE(has("does not show tools")) << ::testing::PrintToString(d.notes);
    EXPECT_TRUE(has("ending with a user turn")) << ::testing::PrintToString(d.notes);
    const ids_t reply = tokenizer_encode(*tok, "I am here.", false);
    ASSERT_FALSE(reply.empty());
    EXPECT_EQ(reply[0], 315);  // "▁I": the dummy prefix where LMFlow puts it
    // BOS [INST] <<SYS>>...Hi [/INST] | reply EOS, nothing after (the trailing "Bye" dropped)
    ASSERT_GE(s.ids.size(), reply.size() + 3);
    EXPECT_EQ(s.ids.front(), 1);
    const size_t r0 = s.ids.size() - reply.size() - 1;
    EXPECT_EQ(s.ids[r0 - 1], 28793);  // "]" of [/INST], right before the reply
    EXPECT_EQ(ids_t(s.ids.begin() + (long)r0, s.ids.end() - 1), reply);
    EXPECT_EQ(s.ids.back(), 2);
    for (size_t i = 0; i < s.ids.size(); i++) EXPECT_EQ(s.labels[i], i >= r0 ? s.ids[i] : -100) << i;
    EXPECT_EQ(std::count(s.ids.begin(), s.ids.end(), 28705), 0);  // no lone "▁" anywhere

    // the same record with LMFlow's llama3 on the Llama 3 tokenizer, tools an empty list: no note
    rec["tools"] = json::array();
    lisa_test::temp_dir t3;
    write_dataset(t3, "c.json", {{"type", "conversation"}, {"instances", {rec}}});
    auto tok3 = tokenizer_load(lisa_test::assets_dir() + "/tokenizers/llama3");
    o.conversation_template = "llama3";
    dataset d3 = dataset_load(t3.path, *tok3, o);
    ASSERT_EQ(d3.samples.size(), 1u);
    for (const auto& n : d3.notes) EXPECT_EQ(n.find("tools"), std::string::npos) << n;
    // every name LMFlow documents is there
    for (const char* n : {"chatglm3", "chatml", "deepseek", "deepseek_v2", "disable", "empty", "empty_no_special_tokens",
                          "gemma", "hymba", "internlm2", "llama2", "llama3", "llama3_for_tool", "phi3", "qwen2",
                          "qwen2_for_tool", "yi", "yi1_5", "zephyr"})
        EXPECT_TRUE(chat_template_is_named(n)) << n;
}

// LMFlow's Jinja presets (qwen2_5, qwen2_5_1m, qwen2_5_math, qwen_qwq, qwen3, gemma3,
// deepseek_v3, deepseek_r1, deepseek_r1_distill), written out here: for each conversation of
// tests/golden/lmflow/jinja_presets.json, the text and learned ranges equal LMFlow's own templates
// rendered by Jinja2 as Hugging Face runs them (make_jinja_presets.py), byte for byte; the
// generation prompt too. Tokenized, the learned tokens are those ranges' (Qwen3's tokenizer).
TEST(chat_template, lmflow_jinja_presets_render_as_lmflow_renders_them) {
    std::ifstream f(lisa_test::golden_dir("lmflow") + "/jinja_presets.json");
    ASSERT_TRUE(f.good());
    const nlohmann::ordered_json cases = nlohmann::ordered_json::parse(f);
    ASSERT_EQ(cases.size(), 72u);
    std::set<std::string> names;
    for (const auto& c : cases) {
        const std::string name = c["name"];
        names.insert(name);
        ASSERT_TRUE(chat_template_is_builtin_jinja(name)) << name;
        model_chat_template t;
        chat_template_builtin(name, "<BOS>", &t);
        const chat_render r = model_chat_template_render(t, c["messages"], nullptr, c["gen"].get<bool>());
        EXPECT_EQ(r.text, c["text"].get<std::string>()) << name << " case " << c["conv"] << " gen " << c["gen"];
        std::vector<std::pair<size_t, size_t>> want;
        for (const auto& s : c["spans"]) want.push_back({s[0].get<size_t>(), s[1].get<size_t>()});
        EXPECT_EQ(r.trained, want) << name << " case " << c["conv"] << " gen " << c["gen"];
    }
    EXPECT_EQ(names.size(), 9u);
    NEED_ASSETS();
    auto tok = tokenizer_load(lisa_test::assets_dir() + "/tokenizers/qwen3");
    model_chat_template storage;
    dataset_options o;
    dataset_choose_template("qwen2_5", lisa_test::assets_dir() + "/tokenizers/qwen3", *tok, &storage, &o);
    ASSERT_NE(o.model_template, nullptr);
    lisa_test::temp_dir td;
    write_dataset(td, "c.json", {{"type", "conversation"},
                                 {"instances", {{{"tools", json::array()},
                                                 {"messages", {{{"role", "user"}, {"content", "Hello world"}},
                                                               {{"role", "assistant"}, {"content", "Hello World!"}}}}}}}});
    dataset d = dataset_load(td.path, *tok, o);
    ASSERT_EQ(d.samples.size(), 1u);
    ids_t trained;
    for (size_t i = 0; i < d.samples[0].ids.size(); i++)
        if (d.samples[0].labels[i] != -100) trained.push_back(d.samples[0].labels[i]);
    auto g = golden_ids("qwen3");
    const int32_t im_end = tokenizer_token_to_id(*tok, "<|im_end|>");
    EXPECT_EQ(trained, cat({g["Hello World!"]["ids"], {im_end}, g["\n"]["ids"]}));  // the default system prompt is context
    // a tokenizer without the template's markers is refused
    auto mistral = tokenizer_load(lisa_test::assets_dir() + "/tokenizers/mistral");
    EXPECT_THROW(dataset_choose_template("qwen3", lisa_test::assets_dir() + "/tokenizers/mistral", *mistral, &storage, &o),
                 lisa::error);
}
