// Preference tuning (issue #30) through the data layer and the CLI: every preference format
// read into the same pairs (expected ids from the Hugging Face tokenizer goldens, not from our
// tokenizer), only the replies labelled, bad records refused in one line; DPO and ORPO runs with
// LISA, LoRA and full fine-tuning that learn the preference, log TRL's metrics and resume bit for
// bit. The objective's numbers against PyTorch are in test_golden.cpp (golden_preference).
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/dataset.h"
#include "io/fs.h"
#include "test_util.h"

using namespace lisa;
using json = nlohmann::json;
using ids_t = std::vector<int32_t>;
using lisa_test::run_lisa;
using lisa_test::temp_dir;

namespace {

#define NEED_ASSETS() \
    if (lisa_test::assets_dir().empty()) GTEST_SKIP() << "../shared/assets not found (set LISA_ASSETS)"

std::map<std::string, json> golden_ids(const std::string& name) {
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

ids_t cat_ids(ids_t a, const ids_t& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

ids_t labelled(const sample& s) {
    ids_t r;
    for (size_t i = 0; i < s.ids.size(); i++)
        if (s.labels[i] != -100) r.push_back(s.labels[i]);
    return r;
}

dataset load_one(const std::string& file, const json& content, const tokenizer& tok, const dataset_options& o) {
    temp_dir td;
    lisa_test::write_file(td.path + "/" + file, content.dump());
    return dataset_load(td.path + "/" + file, tok, o);
}

std::string aidreams() { return lisa_test::assets_dir() + "/models/aidreams-260k"; }

}  // namespace

// One conversation pair in every chat form people have: the prompt (a system turn, a user turn,
// an assistant turn, a user turn) is context; only each reply and its end-of-turn token learn.
TEST(preference_data, every_chat_form_reads_into_the_same_pair) {
    NEED_ASSETS();
    auto tok = tokenizer_load(lisa_test::assets_dir() + "/tokenizers/llama3");
    auto g = golden_ids("llama3");
    dataset_options o;
    o.conversation_template = "llama3";
    const json prompt = {{{"role", "system"}, {"content", "Be brief."}},
                         {{"role", "user"}, {"content", "Hello world"}},
                         {{"role", "assistant"}, {"content", "Hello, world!"}},
                         {{"role", "user"}, {"content", "3333"}}};
    auto turn = [](const char* s) { return json::array({{{"role", "assistant"}, {"content", s}}}); };
    auto whole = [&](const char* s) {
        json w = prompt;
        w.push_back({{"role", "assistant"}, {"content", s}});
        return w;
    };
    const std::vector<std::pair<const char*, json>> forms = {
        {"explicit prompt, reply turns (TRL)", json::array({{{"prompt", prompt}, {"chosen", turn("Hello World!")},
                                                            {"rejected", turn("Hello, world!")}}})},
        {"explicit prompt, string replies", json::array({{{"prompt", prompt}, {"chosen", "Hello World!"},
                                                         {"rejected", "Hello, world!"}}})},
        {"implicit prompt (shared turns)", json::array({{{"chosen", whole("Hello World!")},
                                                        {"rejected", whole("Hello, world!")}}})},
        {"LMFlow paired_conversation",
         {{"type", "paired_conversation"},
          {"instances", {{{"chosen", {{"system", "Be brief."}, {"messages", json(prompt.begin() + 1, prompt.end())}}},
                          {"rejected", {{"system", "Be brief."}, {"messages", json(prompt.begin() + 1, prompt.end())}}}}}}}},
    };
    const int32_t eot = 128009;  // <|eot_id|>
    // LMFlow's llama3 learns each reply's whole assistant turn: header, reply, <|eot_id|>
    const int32_t assistant = tokenizer_token_to_id(*tok, "assistant");
    ASSERT_GE(assistant, 0);
    const ids_t header = cat_ids({128006, assistant, 128007}, g["\n\n"]["ids"].get<ids_t>());
    std::vector<sample> first;
    for (auto [what, content] : forms) {
        if (std::string(what) == "LMFlow paired_conversation") {  // the replies go into each conversation
            content["instances"][0]["chosen"]["messages"].push_back({{"role", "assistant"}, {"content", "Hello World!"}});
            content["instances"][0]["rejected"]["messages"].push_back({{"role", "assistant"}, {"content", "Hello, world!"}});
        }
        dataset d;
        try {
            d = load_one("p.json", content, *tok, o);
        } catch (const error& e) {
            ADD_FAILURE() << what << ": " << e.what();
            continue;
        }
        EXPECT_EQ(d.type, dataset_type::preference) << what;
        ASSERT_EQ(d.samples.size(), 2u) << what;
        const sample &c = d.samples[0], &r = d.samples[1];
        EXPECT_EQ(labelled(c), cat_ids(header, cat_ids(g["Hello World!"]["ids"].get<ids_t>(), {eot})))
            << what << ": the chosen reply";
        EXPECT_EQ(labelled(r), cat_ids(header, cat_ids(g["Hello, world!"]["ids"].get<ids_t>(), {eot})))
            << what << ": the rejected reply";
        // the same prompt tokens before each reply, the prompt's assistant turn not learned
        const size_t pc = c.ids.size() - labelled(c).size(), pr = r.ids.size() - labelled(r).size();
        EXPECT_EQ(pc, pr) << what;
        EXPECT_TRUE(std::equal(c.ids.begin(), c.ids.begin() + (long)pc, r.ids.begin())) << what;
        EXPECT_EQ(c.ids.front(), 128000) << what;  // <|begin_of_text|>
        if (first.empty()) first = d.samples;
        else EXPECT_TRUE(d.samples[0].ids == first[0].ids && d.samples[1].ids == first[1].ids) << what;
    }
}

// ultrafeedback_binarized on disk: a string prompt beside whole conversations that repeat it.
TEST(preference_data, ultrafeedback_shape_and_plain_text_pairs) {
    NEED_ASSETS();
    auto tok = tokenizer_load(lisa_test::assets_dir() + "/tokenizers/llama3");
    auto g = golden_ids("llama3");
    dataset_options o;
    o.conversation_template = "llama3";
    const json uf = {{"prompt", "Hello world"}, {"prompt_id", "x1"}, {"score_chosen", 8.0}, {"score_rejected", 3.0},
                     {"chosen", {{{"role", "user"}, {"content", "Hello world"}}, {{"role", "assistant"}, {"content", "3333"}}}},
                     {"rejected", {{{"role", "user"}, {"content", "Hello world"}}, {{"role", "assistant"}, {"content", "Hello World!"}}}}};
    temp_dir td;
    lisa_test::write_file(td.path + "/train.jsonl", uf.dump() + "\n" + uf.dump() + "\n");
    dataset d = dataset_load(td.path, *tok, o);
    ASSERT_EQ(d.samples.size(), 4u);
    const ids_t header = cat_ids({128006, tokenizer_token_to_id(*tok, "assistant"), 128007}, g["\n\n"]["ids"].get<ids_t>());
    EXPECT_EQ(labelled(d.samples[0]), cat_ids(header, cat_ids(g["3333"]["ids"].get<ids_t>(), {128009})));
    EXPECT_EQ(labelled(d.samples[1]), cat_ids(header, cat_ids(g["Hello World!"]["ids"].get<ids_t>(), {128009})));
    // plain text: the prompt with the tokenizer's special tokens, each reply after it, then EOS
    auto mt = tokenizer_load(lisa_test::assets_dir() + "/tokenizers/mistral");
    auto gm = golden_ids("mistral");
    dataset_options po;
    po.eos_id = 2;
    dataset p = load_one("p.jsonl", {{"prompt", "Hello world"}, {"chosen", "3333"}, {"rejected", "Hello World!"}}, *mt, po);
    ASSERT_EQ(p.samples.size(), 2u);
    const ids_t prompt = gm["Hello world"]["ids_special"].get<ids_t>();
    EXPECT_EQ(p.samples[0].ids, cat_ids(prompt, cat_ids(gm["3333"]["ids"].get<ids_t>(), {2})));
    EXPECT_EQ(labelled(p.samples[0]), cat_ids(gm["3333"]["ids"].get<ids_t>(), {2}));
    EXPECT_EQ(labelled(p.samples[1]), cat_ids(gm["Hello World!"]["ids"].get<ids_t>(), {2}));
}

// Bad records: one line naming the file, the record and the field.
TEST(preference_data, bad_records_are_refused_naming_record_and_field) {
    NEED_ASSETS();
    auto tok = tokenizer_load(lisa_test::assets_dir() + "/tokenizers/mistral");
    dataset_options o;
    o.eos_id = 2;
    o.block_size = 64;
    const std::vector<std::pair<json, std::string>> cases = {
        {{{"prompt", "a"}, {"chosen", "b"}}, "line 1: field 'rejected' is missing"},
        {{{"prompt", "a"}, {"chosen", "b"}, {"rejected", "b"}}, "line 1: fields 'chosen' and 'rejected' are the same reply"},
        {{{"prompt", "a"}, {"chosen", ""}, {"rejected", "b"}}, "line 1: field 'chosen': an empty reply"},
        {{{"chosen", "b"}, {"rejected", "c"}}, "line 1: field 'prompt' is missing"},
        {{{"prompt", "a"}, {"chosen", "b"}, {"rejected", {{{"role", "assistant"}, {"content", "c"}}}}},
         "line 1: fields 'chosen' and 'rejected': expected both strings or both chat turns"},
        {{{"prompt", "a"}, {"chosen", 3}, {"rejected", 4}}, "field 'chosen': expected a string, a list"},
    };
    for (const auto& [rec, want] : cases) {
        temp_dir td;
        lisa_test::write_file(td.path + "/d.jsonl", rec.dump() + "\n");
        try {
            dataset_load(td.path, *tok, o);
            ADD_FAILURE() << rec.dump() << ": accepted";
        } catch (const error& e) {
            EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
            EXPECT_NE(std::string(e.what()).find("d.jsonl"), std::string::npos) << e.what();
        }
    }
    // a prompt that fills the block: the pair is dropped and said so
    temp_dir td;
    std::string lines;
    lines += json({{"prompt", "a"}, {"chosen", "b"}, {"rejected", "c"}}).dump() + "\n";
    std::string big;
    for (int i = 0; i < 200; i++) big += "word ";
    lines += json({{"prompt", big}, {"chosen", "b"}, {"rejected", "c"}}).dump() + "\n";
    lisa_test::write_file(td.path + "/d.jsonl", lines);
    dataset d = dataset_load(td.path, *tok, o);
    EXPECT_EQ(d.samples.size(), 2u);
    EXPECT_EQ(d.n_dropped, 1);
    ASSERT_FALSE(d.notes.empty());
    EXPECT_NE(d.notes[0].find("line 2: the prompt leaves no room for a reply at --block_size 64"), std::string::npos)
        << d.notes[0];
}

namespace {

// A preference the tiny model can learn: after a story opening, one ending over another.
std::string write_pairs(const temp_dir& td) {
    std::string lines;
    const char* openings[] = {"Once upon a time", "One day", "The little girl", "A big dog", "The sun"};
    for (int i = 0; i < 16; i++)
        lines += json({{"prompt", openings[i % 5]}, {"chosen", " she was happy."}, {"rejected", " he was sad."}}).dump() + "\n";
    lisa_test::write_file(td.path + "/pairs.jsonl", lines);
    return td.path + "/pairs.jsonl";
}

std::vector<json> logged(const std::string& dir) {
    std::vector<json> v;
    for (const auto& j : lisa_test::read_jsonl(dir + "/trainer_log.jsonl"))
        if (j.contains("loss")) v.push_back(json::parse(j.dump()));
    return v;
}

}  // namespace

// DPO and ORPO with each method learn the preference: the loss falls, the chosen reply's reward
// overtakes the rejected one's, and TRL's metrics are in the log.
TEST(preference_train, dpo_and_orpo_learn_the_preference_with_lisa_lora_and_full) {
    NEED_ASSETS();
    temp_dir td;
    const std::string data = write_pairs(td);
    for (const std::string objective : {"dpo", "orpo"})
        for (const std::string method : {"--method lisa --lisa_activated_layers 2 --lisa_interval_steps 5",
                                         "--method lora --lora_r 8 --learning_rate 2e-2", "--method full"}) {
            temp_dir out;
            auto r = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + data +
                              " --output_model_path " + out.path + " --objective " + objective +
                              " --learning_rate 5e-3 --max_steps 12 --per_device_train_batch_size 4 --logging_steps 1 "
                              "--save_strategy no --lr_scheduler_type constant " + method);
            ASSERT_EQ(r.code, 0) << objective << " " << method << "\n" << r.output;
            const auto log = logged(out.path);
            ASSERT_EQ(log.size(), 12u) << r.output;
            for (const char* k : {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                                  "logps/chosen", "logps/rejected"})
                EXPECT_TRUE(log.back().contains(k)) << k << ": " << log.back().dump();
            EXPECT_EQ(log.back().contains("nll_loss"), objective == "orpo") << log.back().dump();
            // batches of 4 pairs of different prompts: judged on the last 4 steps' mean
            auto last4 = [&](const char* k) {
                double s = 0;
                for (size_t i = log.size() - 4; i < log.size(); i++) s += log[i][k].get<double>();
                return s / 4;
            };
            EXPECT_LT(last4("loss"), log.front()["loss"].get<double>()) << objective << " " << method;
            EXPECT_GT(last4("rewards/margins"), log.front()["rewards/margins"].get<double>()) << objective << " " << method;
            EXPECT_GE(last4("rewards/accuracies"), 0.75) << objective << " " << method;
            if (objective == "dpo") {  // the first step: the policy is the reference, so every reward is 0
                EXPECT_NEAR(log.front()["rewards/margins"].get<double>(), 0.0, 1e-6) << method;
                EXPECT_NEAR(log.front()["loss"].get<double>(), std::log(2.0), 1e-6) << method;
                EXPECT_TRUE(fs_is_file(out.path + "/reference_logps.json"));
            }
        }
}

// A DPO run stopped at a checkpoint and resumed goes on exactly as one run (the reference
// log-probabilities come from the folder, not from the trained model), for LISA and LoRA.
TEST(preference_train, a_resumed_dpo_run_continues_bit_for_bit) {
    NEED_ASSETS();
    temp_dir td;
    const std::string data = write_pairs(td);
    for (const std::string method : {"--method lisa --lisa_activated_layers 1 --lisa_interval_steps 2", "--method lora --lora_r 4"}) {
        temp_dir whole, parts;
        const std::string common = " --model_name_or_path " + aidreams() + " --dataset_path " + data +
                                   " --objective dpo --beta 0.2 --learning_rate 5e-3 --per_device_train_batch_size 2 "
                                   "--logging_steps 1 --lr_scheduler_type constant " + method;
        ASSERT_EQ(run_lisa("train" + common + " --output_model_path " + whole.path + " --max_steps 6 --save_strategy no").code, 0);
        ASSERT_EQ(run_lisa("train" + common + " --output_model_path " + parts.path +
                           " --max_steps 3 --save_strategy steps --save_steps 3").code, 0);
        auto r = run_lisa("train" + common + " --output_model_path " + parts.path +
                          " --max_steps 6 --save_strategy steps --save_steps 3 --resume_from_checkpoint latest");
        ASSERT_EQ(r.code, 0) << r.output;
        EXPECT_NE(r.output.find("dpo: reference log-probabilities of 32 replies from"), std::string::npos) << r.output;
        const auto w = logged(whole.path), p = logged(parts.path);
        ASSERT_EQ(w.size(), 6u);
        ASSERT_GE(p.size(), 3u);
        for (size_t k = 0; k < 3; k++) {
            EXPECT_EQ(p[p.size() - 3 + k]["loss"], w[3 + k]["loss"]) << method << ": step " << 4 + k;
            EXPECT_EQ(p[p.size() - 3 + k]["rewards/margins"], w[3 + k]["rewards/margins"]) << method << ": step " << 4 + k;
        }
    }
}

// `lisa inspect-data` shows each pair's replies as what is scored, after the same prompt.
TEST(preference_data, inspect_data_shows_the_scored_replies) {
    NEED_ASSETS();
    temp_dir td;
    const std::string data = write_pairs(td);
    auto r = run_lisa("inspect-data --model_name_or_path " + aidreams() + " --dataset_path " + data + " --block_size 64");
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("--- preference: 16 pairs"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("line 1 (chosen)"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("Once upon a time[[ she was happy.</s>]]"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("Once upon a time[[ he was sad.</s>]]"), std::string::npos) << r.output;
}

// Preference data and the objective go together; what does not is refused before training.
TEST(preference_train, mismatched_data_and_objective_are_refused) {
    NEED_ASSETS();
    temp_dir td, out;
    const std::string data = write_pairs(td);
    auto r = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + data + " --output_model_path " +
                      out.path + " --max_steps 1");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.output.find("train with --objective dpo or orpo"), std::string::npos) << r.output;
    r = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + lisa_test::golden_dir("aidreams_data") +
                 "/text_only --output_model_path " + out.path + "2 --max_steps 1 --objective dpo");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.output.find("--objective dpo: "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("needs records with \"chosen\" and \"rejected\""), std::string::npos) << r.output;
    r = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + data + " --output_model_path " +
                 out.path + "3 --max_steps 1 --objective kto");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.output.find("--objective kto: expected sft"), std::string::npos) << r.output;
    r = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + data + " --output_model_path " +
                 out.path + "4 --max_steps 1 --objective dpo --loss_type robust");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.output.find("--loss_type robust: expected sigmoid"), std::string::npos) << r.output;
}

namespace {
// The first value of key k in `lisa eval`'s JSON line.
double eval_value(const std::string& out, const char* k) {
    const size_t p = out.rfind("{\"");
    if (p == std::string::npos) return NAN;
    const json j = json::parse(out.substr(p, out.find('\n', p) - p));
    return j.contains(k) ? j[k].get<double>() : NAN;
}
}  // namespace

// Evaluation on pairs: during training (--eval_dataset_path, TRL's eval_ names) and with `lisa
// eval` afterwards agree on the same weights; the starting model scored against itself is DPO's
// fixed point (loss log 2, no margin); a reply's log-likelihood equals what the supervised loss
// gives for the same prompt and reply (two code paths); the plot shows the reward accuracy.
TEST(preference_eval, during_training_and_lisa_eval_agree) {
    NEED_ASSETS();
    temp_dir td, out;
    const std::string data = write_pairs(td);
    std::string held;
    const char* openings[] = {"Once upon a time", "The little girl", "One day"};
    for (int i = 0; i < 3; i++)
        held += json({{"prompt", openings[i]}, {"chosen", " she was happy."}, {"rejected", " he was sad."}}).dump() + "\n";
    lisa_test::write_file(td.path + "/held/pairs.jsonl", held);
    auto r = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + data + " --eval_dataset_path " +
                      td.path + "/held --output_model_path " + out.path + " --objective dpo --method lisa "
                      "--lisa_activated_layers 2 --learning_rate 5e-3 --max_steps 8 --per_device_train_batch_size 4 "
                      "--logging_steps 1 --eval_steps 4 --per_device_eval_batch_size 2 --plot_loss");
    ASSERT_EQ(r.code, 0) << r.output;
    std::vector<json> evals;
    for (const auto& j : lisa_test::read_jsonl(out.path + "/trainer_log.jsonl"))
        if (j.contains("eval_loss")) evals.push_back(json::parse(j.dump()));
    ASSERT_EQ(evals.size(), 2u) << r.output;  // steps 4 and 8
    for (const char* k : {"eval_rewards/chosen", "eval_rewards/rejected", "eval_rewards/accuracies",
                          "eval_rewards/margins", "eval_logps/chosen", "eval_logps/rejected"})
        ASSERT_TRUE(evals.back().contains(k)) << k << ": " << evals.back().dump();
    EXPECT_GT(evals.back()["eval_rewards/margins"].get<double>(), 0.0);
    EXPECT_LT(evals.back()["eval_loss"].get<double>(), std::log(2.0));

    // lisa eval of the trained model, the starting model as the reference: the same numbers
    // (other batch shapes, so summation order: 1e-6 relative)
    r = run_lisa("eval --model_name_or_path " + out.path + " --dataset_path " + td.path + "/held --objective dpo "
                 "--ref_model_path " + aidreams());
    ASSERT_EQ(r.code, 0) << r.output;
    for (auto [mine, trl] : {std::pair{"loss", "eval_loss"}, {"rewards/margins", "eval_rewards/margins"},
                             {"rewards/accuracies", "eval_rewards/accuracies"}, {"logps/chosen", "eval_logps/chosen"}}) {
        const double want = evals.back()[trl].get<double>();
        EXPECT_NEAR(eval_value(r.output, mine), want, 1e-6 * std::max(1.0, std::fabs(want))) << mine << "\n" << r.output;
    }
    EXPECT_EQ(eval_value(r.output, "pairs"), 3);
    // padded rows score the same replies (padding is never a label): the same numbers
    auto padded = run_lisa("eval --model_name_or_path " + out.path + " --dataset_path " + td.path + "/held --objective dpo "
                           "--ref_model_path " + aidreams() + " --padding_free false --per_device_eval_batch_size 2");
    ASSERT_EQ(padded.code, 0) << padded.output;
    EXPECT_NEAR(eval_value(padded.output, "loss"), eval_value(r.output, "loss"), 1e-6 * std::max(1.0, eval_value(r.output, "loss")));
    EXPECT_NEAR(eval_value(padded.output, "logps/chosen"), eval_value(r.output, "logps/chosen"),
                1e-6 * std::fabs(eval_value(r.output, "logps/chosen")));
    // the starting model against itself: every reward 0, loss log 2
    r = run_lisa("eval --model_name_or_path " + aidreams() + " --dataset_path " + td.path + "/held --objective dpo "
                 "--ref_model_path " + aidreams());
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_NEAR(eval_value(r.output, "loss"), std::log(2.0), 1e-12) << r.output;
    EXPECT_EQ(eval_value(r.output, "rewards/margins"), 0.0) << r.output;
    EXPECT_EQ(eval_value(r.output, "rewards/accuracies"), 0.0) << r.output;  // TRL: chosen > rejected, strictly
    // DPO without a reference is refused, naming the flag
    r = run_lisa("eval --model_name_or_path " + out.path + " --dataset_path " + td.path + "/held --objective dpo");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.output.find("--ref_model_path"), std::string::npos) << r.output;

    // no objective: the mean Σ log p of the chosen reply equals the supervised loss of the same
    // prompt and reply (as text2text) times its tokens per sample
    r = run_lisa("eval --model_name_or_path " + out.path + " --dataset_path " + td.path + "/held");
    ASSERT_EQ(r.code, 0) << r.output;
    const double chosen = eval_value(r.output, "logps/chosen"), margin = eval_value(r.output, "logps/margins");
    EXPECT_NEAR(margin, chosen - eval_value(r.output, "logps/rejected"), 1e-9);
    EXPECT_GE(eval_value(r.output, "logps/accuracies"), 0.0);
    json t2t = {{"type", "text2text"}, {"instances", json::array()}};
    for (int i = 0; i < 3; i++) t2t["instances"].push_back({{"input", openings[i]}, {"output", " she was happy."}});
    lisa_test::write_file(td.path + "/sft/data.json", t2t.dump());
    auto s = run_lisa("eval --model_name_or_path " + out.path + " --dataset_path " + td.path + "/sft");
    ASSERT_EQ(s.code, 0) << s.output;
    const double sft_sum = -eval_value(s.output, "loss") * eval_value(s.output, "tokens") / 3;
    EXPECT_NEAR(chosen, sft_sum, 1e-5 * std::fabs(sft_sum)) << r.output << "\n" << s.output;

    // the plot: the reward accuracy of every logged step and of every evaluation
    const std::string svg = fs_read_text(out.path + "/training_loss.svg");
    auto points_of = [&](const std::string& cls) {
        size_t p = svg.find("class=\"" + cls + "\" points=\"");
        if (p == std::string::npos) return -1;
        p = svg.find("points=\"", p) + 8;
        std::string pts = svg.substr(p, svg.find('"', p) - p);
        return (int)std::count(pts.begin(), pts.end(), ',');
    };
    EXPECT_EQ(points_of("reward-accuracy"), 8);
    EXPECT_EQ(points_of("eval-reward-accuracy"), 2);
    EXPECT_NE(svg.find("lisa dpo on"), std::string::npos);
}

// The held-out share of --validation_split_percentage is whole pairs; --group_by_length batches
// pairs by their longer reply; ORPO evaluates without a reference; LoRA's reference is its base.
TEST(preference_eval, split_group_by_length_orpo_and_lora) {
    NEED_ASSETS();
    temp_dir td, a, b;
    const std::string data = write_pairs(td);
    auto r = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + data + " --output_model_path " +
                      a.path + " --objective orpo --method lora --lora_r 4 --learning_rate 2e-2 --max_steps 6 "
                      "--per_device_train_batch_size 2 --validation_split_percentage 25 --group_by_length --logging_steps 1");
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("data: 4 pairs held out for eval_loss (--validation_split_percentage 25), 12 train"),
              std::string::npos) << r.output;
    json last;
    for (const auto& j : lisa_test::read_jsonl(a.path + "/trainer_log.jsonl"))
        if (j.contains("eval_loss")) last = json::parse(j.dump());
    ASSERT_TRUE(last.contains("eval_nll_loss")) << last.dump();
    EXPECT_TRUE(last.contains("eval_log_odds_ratio")) << last.dump();
    // LoRA output: lisa eval with the adapter, its base the DPO reference
    r = run_lisa("eval --model_name_or_path " + aidreams() + " --lora_model_path " + a.path + " --dataset_path " + data +
                 " --objective dpo");
    ASSERT_EQ(r.code, 0) << r.output;
    auto r2 = run_lisa("eval --model_name_or_path " + aidreams() + " --lora_model_path " + a.path + " --dataset_path " +
                       data + " --objective dpo --ref_model_path " + aidreams());
    ASSERT_EQ(r2.code, 0) << r2.output;
    EXPECT_EQ(eval_value(r.output, "loss"), eval_value(r2.output, "loss"));
    EXPECT_GT(eval_value(r.output, "rewards/accuracies"), 0.5) << r.output;
    // pairs as eval data for supervised training, and supervised records as eval data for DPO
    r = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + lisa_test::golden_dir("aidreams_data") +
                 "/text_only --eval_dataset_path " + data + " --output_model_path " + b.path + "/x --max_steps 1");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.output.find("preference pairs evaluate with --objective dpo or orpo"), std::string::npos) << r.output;
    r = run_lisa("train --model_name_or_path " + aidreams() + " --dataset_path " + data + " --eval_dataset_path " +
                 lisa_test::golden_dir("aidreams_data") + "/text_only --output_model_path " + b.path + "/y --max_steps 1 "
                 "--objective dpo");
    EXPECT_NE(r.code, 0);
    EXPECT_NE(r.output.find("with --objective dpo it needs preference pairs"), std::string::npos) << r.output;
}
