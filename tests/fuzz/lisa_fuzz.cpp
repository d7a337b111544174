// lisa_fuzz: mutation fuzzing of every parser that reads a file a user may have downloaded from
// anywhere. Each target takes one input (the bytes of one file), runs it through the library as
// `lisa` would, and must either succeed or throw lisa::error (one clear line). Anything else is a
// finding: another exception type, a crash (a signal), or, under -DLISA_SANITIZE=ON, whatever
// AddressSanitizer / UndefinedBehaviorSanitizer report. The input of a finding is written to
// --findings (default the current folder) as TARGET-crash-HASH, and the run exits 1.
//
//   lisa_fuzz TARGET [--seconds S] [--runs N] [--seed K] [--corpus DIR] [--findings DIR]
//   lisa_fuzz TARGET --replay FILE...     run given inputs once each (regression cases)
//
// Targets: safetensors, config, tokenizer, tokenizer_config, adapter_config, dataset, jinja, gguf,
// gguf_in, outputs. Mutations: bit flips, byte substitutions with values that break parsers (quotes, brackets, NUL, 0xff), numbers replaced by
// boundary values (-1, 2^31, 2^63, 1e308, NaN), a per-target dictionary, block deletion,
// duplication and insertion, and splicing two corpus entries.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "export/export_gguf.h"
#include "export/modelfile.h"
#include "io/fs.h"
#include "io/output_dir.h"
#include "model/model_files.h"
#include "train/checkpoint.h"
#include "data/chat_template.h"
#include "io/safetensors.h"
#include "model/arch/arch.h"
#include "model/config.h"
#include "model/decoder.h"
#include "model/gguf_model.h"
#include "model/lora.h"
#include "template/jinja.h"
#include "tokenizer/tokenizer.h"

using namespace lisa;
namespace stdfs = std::filesystem;

// ---------------------------------------------------------------------------- the targets
static std::string g_work;  // a private scratch folder for targets that read files

static void put(const std::string& path, const std::string& bytes) {
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) throw std::runtime_error("fuzz: cannot write " + path);
    std::fwrite(bytes.data(), 1, bytes.size(), f);
    std::fclose(f);
}

// A small byte-level BPE tokenizer for the targets that need a working one (the bundled one).
static const tokenizer& fixed_tokenizer() {
    static std::unique_ptr<tokenizer> t = tokenizer_load(std::string(LISA_SOURCE_DIR) + "/data/tokenizer");
    return *t;
}

static void target_safetensors(const std::string& in) {
    const std::string p = g_work + "/t.safetensors";
    put(p, in);
    auto f = st_open(p);
    double sum = 0;  // touch every byte of every tensor: offsets were promised to be in range
    for (const st_tensor& t : f->tensors)
        for (size_t i = 0; i < t.nbytes; i += 61) sum += t.data[i];
    (void)st_find(*f, "model.embed_tokens.weight");
    if (sum < 0) std::abort();
}

static void target_config(const std::string& in) {
    model_config c = config_parse(in, "fuzz/config.json");
    (void)config_num_params(c);
    // what is written back reads back; RoPE tables of both longrope ranges; the GGUF checks
    (void)config_parse(config_to_json(c, in), "fuzz/written.json");
    (void)decoder_rope_inv_freq(c, 1);
    (void)decoder_rope_inv_freq(c, (int64_t)1 << 40);
    gguf_arch_meta meta;
    arch_of(c).gguf(c, "fuzz/config.json", meta);
}

static void target_tokenizer(const std::string& in) {
    const std::string dir = g_work + "/tok";
    stdfs::create_directories(dir);
    put(dir + "/tokenizer.json", in);
    auto t = tokenizer_load(dir);
    for (const char* text : {"Hello world!", "  spaces\tand\nnew lines", "ünïcödé 日本語 🙂", "<s>[INST] x [/INST]", ""}) {
        const auto ids = tokenizer_encode(*t, text, true);
        (void)tokenizer_decode(*t, ids, false);
        (void)tokenizer_decode(*t, ids, true);
    }
    const int64_t v = tokenizer_vocab_size(*t);
    std::vector<int32_t> ids;
    for (int64_t i = 0; i < std::min<int64_t>(v, 300); i++) ids.push_back((int32_t)i);
    for (int32_t odd : {-1, (int32_t)v, (int32_t)(v + 1), INT32_MAX, INT32_MIN}) ids.push_back(odd);
    (void)tokenizer_decode(*t, ids, false);
    for (int32_t id : ids) {
        (void)tokenizer_id_to_token(*t, id);
        (void)tokenizer_token_text(*t, id);
        (void)tokenizer_is_special(*t, id);
    }
}

// tokenizer_config.json beside the bundled tokenizer.json: special tokens, BOS/EOS flags, the
// chat template (found, and rendered when one loads).
static void target_tokenizer_config(const std::string& in) {
    const std::string dir = g_work + "/tokcfg";
    stdfs::create_directories(dir);
    stdfs::copy_file(std::string(LISA_SOURCE_DIR) + "/data/tokenizer/tokenizer.json", dir + "/tokenizer.json",
                     stdfs::copy_options::overwrite_existing);
    put(dir + "/tokenizer_config.json", in);
    auto t = tokenizer_load(dir);
    (void)tokenizer_encode(*t, "Hello world!", true);
    model_chat_template ct;
    if (model_chat_template_load(dir, &ct)) {
        model_chat_template_probe(&ct, *t);
        const nlohmann::ordered_json msgs = nlohmann::ordered_json::array(
            {{{"role", "user"}, {"content", "Hi"}}, {{"role", "assistant"}, {"content", "Hello"}}});
        (void)model_chat_template_render(ct, msgs, nullptr, false);
    }
}

// adapter_config.json, as PEFT writes it.
static void target_adapter_config(const std::string& in) {
    const std::string path = g_work + "/adapter_config.json";
    put(path, in);
    (void)lora_config_load(path);
}

// The first byte picks the file's name (LMFlow .json, .jsonl, or a .json list) and the template
// (none, LMFlow's pieces presets chatml / llama2 / hymba / zephyr, its Jinja presets qwen3 /
// gemma3), the rest is it.
static void target_dataset(const std::string& in) {
    const std::string dir = g_work + "/data";
    stdfs::remove_all(dir);
    stdfs::create_directories(dir);
    const unsigned char pick = in.empty() ? 0 : (unsigned char)in[0];
    const std::string body = in.empty() ? "" : in.substr(1);
    put(dir + (pick % 2 ? "/train.jsonl" : "/train.json"), body);
    dataset_options opt;
    opt.block_size = 256;
    static const char* const templates[8] = {"", "", "chatml", "llama2", "hymba", "zephyr", "qwen3", "gemma3"};
    const std::string tmpl = templates[(pick / 2) % 8];
    model_chat_template builtin;
    if (chat_template_is_builtin_jinja(tmpl)) {
        chat_template_builtin(tmpl, "<s>", &builtin);
        opt.model_template = &builtin;
    } else {
        opt.conversation_template = tmpl;
    }
    opt.eos_id = 2;
    dataset d = dataset_load(dir, fixed_tokenizer(), opt);
    for (const sample& s : d.samples)
        if (s.ids.size() != s.labels.size() || (int64_t)s.ids.size() > opt.block_size)
            throw std::runtime_error("fuzz: a sample breaks the dataset's invariants");
    if (d.type == dataset_type::preference) {  // whole pairs, each reply labelled
        if (d.samples.size() % 2 != 0) throw std::runtime_error("fuzz: a preference dataset with half a pair");
        for (const sample& s : d.samples)
            if (sample_label_tokens(s) == 0) throw std::runtime_error("fuzz: a preference reply without a label");
    }
}

static void target_jinja(const std::string& in) {
    auto t = jinja_parse(in);
    nlohmann::ordered_json ctx = {
        {"messages",
         {{{"role", "system"}, {"content", "Be brief."}},
          {{"role", "user"}, {"content", "Hi"}},
          {{"role", "assistant"}, {"content", "Hello"}, {"tool_calls", {{{"name", "f"}, {"arguments", {{"x", 1}}}}}}}}},
        {"add_generation_prompt", true},
        {"bos_token", "<s>"},
        {"eos_token", "</s>"},
        {"tools", nlohmann::ordered_json::array()}};
    std::vector<jinja_span> spans;
    const std::string out = jinja_render(*t, ctx, &spans);
    for (const jinja_span& s : spans)
        if (s.begin > s.end || s.end > out.size()) throw std::runtime_error("fuzz: a generation span out of range");
}

// A tiny model folder (random weights, the bundled tokenizer) whose config.json is the input,
// exported to GGUF in f32 and q8_0. A config that does not match the weights must be refused.
static const char* kTinyConfig =
    R"({"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":512,"hidden_size":32,)"
    R"("intermediate_size":64,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,)"
    R"("max_position_embeddings":64,"rms_norm_eps":1e-5,"tie_word_embeddings":false})";

static void target_gguf(const std::string& in) {
    const std::string dir = g_work + "/model";
    static bool made = false;
    if (!made) {
        auto m = decoder_model_init(config_parse(kTinyConfig, "fuzz/tiny.json"));
        decoder_model_init_random(m.get(), 1);
        decoder_save_options so;
        so.tokenizer_from = std::string(LISA_SOURCE_DIR) + "/data/tokenizer";
        decoder_model_save(*m, dir, so);
        made = true;
    }
    put(dir + "/config.json", in);
    for (const char* type : {"f32", "q8_0", "q4_0", "q4_K"}) {
        gguf_export_options o;
        o.model_dir = dir;
        o.outfile = g_work + "/m.gguf";
        o.outtype = type;
        export_gguf(o);
    }
}

// A GGUF file read as a model (issue #29): header, metadata, tensor infos, the config and the
// tokenizer rebuilt from them, and every tensor the config implies dequantized; then the rebuilt
// tokenizer encodes and decodes.
static void target_gguf_in(const std::string& in) {
    const std::string p = g_work + "/in.gguf";
    put(p, in);
    auto g = gguf_model_open(p);
    for (const decoder_tensor_info& t : decoder_tensor_table(g->cfg)) {
        std::vector<float> v(t.numel);
        gguf_model_read(*g, t, v.data());
    }
    auto tok = tokenizer_load(p);
    const std::vector<int32_t> ids = tokenizer_encode(*tok, "Hello world, ünïcödé 🙂 <s>", true);
    (void)tokenizer_decode(*tok, ids, false);
}

// What lisa reads in an output folder before writing to it or resuming from it; the first byte
// picks which file the rest is: a lock file's holder (taken over and named), a checkpoint's
// trainer_state.json (checked for damage), a run's training_args.json beside a tokenizer_config.json
// (read for the Ollama Modelfile), or a model.safetensors whose header may alias tensor names.
static void target_outputs(const std::string& in) {
    const std::string dir = g_work + "/out";
    stdfs::remove_all(dir);
    stdfs::create_directories(dir + "/checkpoint-2");
    const unsigned char pick = in.empty() ? 0 : (unsigned char)in[0];
    const std::string body = in.empty() ? "" : in.substr(1);
    switch (pick % 4) {
        case 0: {
            put(dir + "/.lisa.lock", body);
            output_lock l;
            output_lock_acquire(&l, dir, true, "lisa fuzz", "--output_model_path", [](const std::string& s) {
                if (s.empty()) throw std::runtime_error("fuzz: an empty note");
            });
            output_lock_release(&l);
            if (fs_is_file(dir + "/.lisa.lock")) throw std::runtime_error("fuzz: the lock file outlived its release");
            break;
        }
        case 1:
            put(dir + "/checkpoint-2/trainer_state.json", body);
            (void)checkpoint_damage(dir + "/checkpoint-2");
            (void)output_dir_scan(dir).describe();
            break;
        case 2: {
            put(dir + "/training_args.json", body);
            put(dir + "/tokenizer_config.json", body);
            const modelfile_info mf = ollama_modelfile(dir, dir, dir + "/m.gguf", dir);
            if (mf.text.find("FROM ./m.gguf\n") == std::string::npos) throw std::runtime_error("fuzz: no FROM line");
            break;
        }
        default: {
            put(dir + "/config.json", kTinyConfig);
            put(dir + "/model.safetensors", body);
            auto mf = model_files_open(dir);
            for (const auto& [name, loc] : mf->where)
                if (!loc.first || !loc.second) throw std::runtime_error("fuzz: a tensor name maps to nothing");
            break;
        }
    }
}

static const std::map<std::string, std::function<void(const std::string&)>> kTargets = {
    {"outputs", target_outputs},
    {"safetensors", target_safetensors}, {"config", target_config}, {"tokenizer", target_tokenizer},
    {"dataset", target_dataset},         {"jinja", target_jinja},   {"gguf", target_gguf},
    {"gguf_in", target_gguf_in},
    {"tokenizer_config", target_tokenizer_config}, {"adapter_config", target_adapter_config}};

static const std::map<std::string, std::vector<std::string>> kDictionary = {
    {"safetensors", {"\"dtype\"", "\"F32\"", "\"BF16\"", "\"F16\"", "\"I64\"", "\"shape\"", "\"data_offsets\"",
                     "\"__metadata__\"", "[0,0]", "[]"}},
    {"config", {"\"vocab_size\"", "\"hidden_size\"", "\"num_hidden_layers\"", "\"num_attention_heads\"",
                "\"num_key_value_heads\"", "\"head_dim\"", "\"intermediate_size\"", "\"rope_scaling\"",
                "\"sliding_window\"", "\"layer_types\"", "\"model_type\"", "\"gemma3_text\"", "\"qwen3\"", "null",
                "\"tie_word_embeddings\"", "true"}},
    {"tokenizer", {"\"vocab\"", "\"merges\"", "\"added_tokens\"", "\"id\"", "\"content\"", "\"special\"",
                   "\"pre_tokenizer\"", "\"normalizer\"", "\"post_processor\"", "\"ByteLevel\"", "\"Metaspace\"",
                   "\"TemplateProcessing\"", "\"byte_fallback\"", "\"<0x41>\"", "\"Ġ\"", "\"▁\""}},
    {"dataset", {"\"type\"", "\"instances\"", "\"text2text\"", "\"text_only\"", "\"conversation\"", "\"input\"",
                 "\"output\"", "\"text\"", "\"messages\"", "\"role\"", "\"content\"", "\"user\"", "\"assistant\"",
                 "\"system\"", "\"conversations\"", "\"from\"", "\"value\"", "\"instruction\"", "\n",
                 "\"chosen\"", "\"rejected\"", "\"prompt\"", "\"paired_conversation\""}},
    {"jinja", {"{%", "%}", "{{", "}}", "{#", "#}", "{%-", "-%}", "for ", "endfor", "if ", "endif", "elif", "else",
               "set ", "macro ", "endmacro", "namespace(", "loop.index", "messages", "|tojson", "|length", "raise_exception(",
               "generation", "endgeneration", "recursive", "[::-1]", "~", " is defined", " in "}},
    {"outputs", {"\"pid\"", "\"host\"", "\"command\"", "\"started\"", "\"global_step\"", "\"resolved\"",
                 "\"dataset_type\"", "\"conversation_template\"", "\"chat_template\"", "\"chatml\"", "\"llama3\"",
                 "<|im_start|>", "<start_of_turn>", "[INST]", "\"__metadata__\"", "\"lm_head.weight\"",
                 "\"model.embed_tokens.weight\"", "\"data_offsets\"", "\"F32\"", "{}", "[]", "null"}},
    {"tokenizer_config", {"\"bos_token\"", "\"eos_token\"", "\"pad_token\"", "\"add_bos_token\"",
                          "\"add_eos_token\"", "\"tokenizer_class\"", "\"LlamaTokenizer\"", "\"content\"",
                          "\"chat_template\"", "\"name\"", "\"default\"", "\"template\"",
                          "\"additional_special_tokens\"", "{{ messages }}", "true", "null"}},
    {"gguf_in", {"GGUF", "general.architecture", "llama", "qwen2", "qwen3", "gemma3", "tokenizer.ggml.model", "gpt2",
                 "tokenizer.ggml.pre", "llama-bpe", "qwen2", "smollm", "tokenizer.ggml.tokens", "tokenizer.ggml.merges",
                 "tokenizer.ggml.scores", "tokenizer.ggml.token_type", "rope_freqs.weight", "token_embd.weight",
                 "output.weight", "general.alignment", std::string("\x0c\x00\x00\x00", 4), std::string("\x0e\x00\x00\x00", 4),
                 std::string("\x09\x00\x00\x00", 4), std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8),
                 std::string("\x00\x01\x00\x00\x00\x00\x00\x00", 8)}},
    {"adapter_config", {"\"peft_type\"", "\"LORA\"", "\"r\"", "\"lora_alpha\"", "\"lora_dropout\"",
                        "\"use_rslora\"", "\"target_modules\"", "\"q_proj\"", "\"bias\"", "\"none\"",
                        "\"use_dora\"", "\"modules_to_save\"", "\"fan_in_fan_out\"", "true", "null"}},
    {"gguf", {"\"vocab_size\"", "\"hidden_size\"", "\"num_hidden_layers\"", "\"head_dim\"", "\"rope_theta\"",
              "\"rope_scaling\"", "\"sliding_window\"", "\"model_type\"", "\"tie_word_embeddings\"", "0", "-1"}},
};

// ---------------------------------------------------------------------------- mutation
static const char* kNumbers[] = {"0", "-1", "1", "255", "256", "65535", "2147483647", "2147483648", "-2147483649",
                                 "4294967296", "9223372036854775807", "9223372036854775808", "18446744073709551616",
                                 "1e308", "-1e308", "1e-320", "NaN", "Infinity", "0.5", "3"};

static std::string mutate(std::string s, rng* r, const std::vector<std::string>& corpus,
                          const std::vector<std::string>& dict) {
    const int rounds = 1 + (int)rng_below(r, 4);
    for (int k = 0; k < rounds; k++) {
        const size_t n = s.size();
        switch (rng_below(r, 9)) {
            case 0:  // flip a bit
                if (n) s[rng_below(r, n)] ^= (char)(1u << rng_below(r, 8));
                break;
            case 1: {  // a byte parsers care about
                static const char bytes[] = {'"', '{', '}', '[', ']', ',', ':', '\\', '\0', '\xff', '0', '9', '-', '.', 'e', '\n'};
                if (n) s[rng_below(r, n)] = bytes[rng_below(r, sizeof bytes)];
                break;
            }
            case 2: {  // a number becomes a boundary value
                std::vector<size_t> starts;
                for (size_t i = 0; i < n; i++)
                    if (std::isdigit((unsigned char)s[i]) && (i == 0 || !std::isdigit((unsigned char)s[i - 1]))) starts.push_back(i);
                if (starts.empty()) break;
                const size_t a = starts[rng_below(r, starts.size())];
                size_t b = a;
                while (b < n && (std::isdigit((unsigned char)s[b]) || s[b] == '.' || s[b] == 'e' || s[b] == '-')) b++;
                s.replace(a, b - a, kNumbers[rng_below(r, sizeof kNumbers / sizeof *kNumbers)]);
                break;
            }
            case 3:  // a dictionary word
                if (!dict.empty()) s.insert(n ? rng_below(r, n + 1) : 0, dict[rng_below(r, dict.size())]);
                break;
            case 4: {  // delete a block
                if (!n) break;
                const size_t a = rng_below(r, n), len = 1 + rng_below(r, std::min<size_t>(n - a, 64));
                s.erase(a, len);
                break;
            }
            case 5: {  // duplicate a block
                if (!n || n > (1u << 20)) break;
                const size_t a = rng_below(r, n), len = 1 + rng_below(r, std::min<size_t>(n - a, 256));
                s.insert(rng_below(r, n + 1), s.substr(a, len));
                break;
            }
            case 6: {  // random bytes
                const size_t len = 1 + rng_below(r, 8);
                std::string b(len, 0);
                for (char& c : b) c = (char)rng_below(r, 256);
                s.insert(n ? rng_below(r, n + 1) : 0, b);
                break;
            }
            case 7: {  // splice: this one's head, another's tail
                if (corpus.size() < 2 || !n) break;
                const std::string& o = corpus[rng_below(r, corpus.size())];
                if (o.empty()) break;
                s = s.substr(0, rng_below(r, n)) + o.substr(rng_below(r, o.size()));
                break;
            }
            default:  // truncate
                if (n) s.resize(rng_below(r, n));
                break;
        }
    }
    return s;
}

// ---------------------------------------------------------------------------- findings
static const std::string* g_current = nullptr;  // the input being run (for the signal handler)
static char g_crash_path[4096];

static void on_crash(int sig) {
    // async-signal-safe: open, write, close, _exit
    if (g_current) {
        const int fd = ::open(g_crash_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            ssize_t w = ::write(fd, g_current->data(), g_current->size());
            (void)w;
            ::close(fd);
        }
        const char msg[] = "lisa_fuzz: crash (signal); input saved to ";
        ssize_t w = ::write(2, msg, sizeof msg - 1);
        w = ::write(2, g_crash_path, std::strlen(g_crash_path));
        w = ::write(2, "\n", 1);
        (void)w;
    }
    _exit(128 + sig);
}

static uint64_t fnv(const std::string& s) {
    uint64_t h = 1469598103934665603ull;
    for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
    return h;
}

static void save_finding(const std::string& dir, const std::string& target, const std::string& in, const std::string& what) {
    char name[64];
    std::snprintf(name, sizeof name, "%s-crash-%016llx", target.c_str(), (unsigned long long)fnv(in));
    const std::string path = dir + "/" + name;
    put(path, in);
    std::fprintf(stderr, "lisa_fuzz: finding (%s); input saved to %s\n", what.c_str(), path.c_str());
}

// One input through the target: true if it behaved (succeeded or threw lisa::error).
static bool run_one(const std::string& target, const std::string& in, const std::string& findings) {
    g_current = &in;
    std::snprintf(g_crash_path, sizeof g_crash_path, "%s/%s-crash-%016llx", findings.c_str(), target.c_str(),
                  (unsigned long long)fnv(in));
    try {
        kTargets.at(target)(in);
    } catch (const lisa::error& e) {
        if (std::strlen(e.what()) > 2 * kMaxErrorMessage) {
            save_finding(findings, target, in, "an error message of " + std::to_string(std::strlen(e.what())) + " bytes");
            return false;
        }
    } catch (const std::exception& e) {
        save_finding(findings, target, in, std::string("not a lisa::error: ") + e.what());
        return false;
    }
    g_current = nullptr;
    return true;
}

int main(int argc, char** argv) {
    if (argc < 2 || !kTargets.count(argv[1])) {
        std::fprintf(stderr, "usage: lisa_fuzz TARGET [--seconds S] [--runs N] [--seed K] [--corpus DIR] [--findings DIR]\n"
                             "       lisa_fuzz TARGET --replay FILE...\ntargets: safetensors config tokenizer dataset jinja gguf\n");
        return 2;
    }
    const std::string target = argv[1];
    double seconds = 5;
    int64_t runs = -1;
    uint64_t seed = 1;
    std::string corpus_dir = std::string(LISA_SOURCE_DIR) + "/tests/fuzz/corpus/" + target, findings = ".";
    std::vector<std::string> replay;
    for (int i = 2; i < argc; i++) {
        const std::string a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc) { std::fprintf(stderr, "lisa_fuzz: %s needs a value\n", a.c_str()); std::exit(2); }
            return argv[++i];
        };
        if (a == "--seconds") seconds = std::atof(next().c_str());
        else if (a == "--runs") runs = std::atoll(next().c_str());
        else if (a == "--seed") seed = std::strtoull(next().c_str(), nullptr, 10);
        else if (a == "--corpus") corpus_dir = next();
        else if (a == "--findings") findings = next();
        else if (a == "--replay") { while (i + 1 < argc) replay.push_back(argv[++i]); }
        else { std::fprintf(stderr, "lisa_fuzz: unknown flag %s\n", a.c_str()); return 2; }
    }
    std::error_code ec;
    stdfs::create_directories(findings, ec);
    char tmpl[] = "/tmp/lisa_fuzz.XXXXXX";
    if (!mkdtemp(tmpl)) { std::perror("lisa_fuzz: mkdtemp"); return 2; }
    g_work = tmpl;
    struct sigaction sa {};
    sa.sa_handler = on_crash;
    for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) sigaction(sig, &sa, nullptr);

    int bad = 0;
    if (!replay.empty()) {
        for (const std::string& f : replay) bad += !run_one(target, fs_read_text(f), findings);
        stdfs::remove_all(g_work);
        std::fprintf(stderr, "lisa_fuzz %s: %zu inputs replayed, %d findings\n", target.c_str(), replay.size(), bad);
        return bad ? 1 : 0;
    }
    std::vector<std::string> names, corpus;
    if (stdfs::is_directory(corpus_dir))
        for (const auto& e : stdfs::directory_iterator(corpus_dir))
            if (e.is_regular_file()) names.push_back(e.path().string());
    if (names.empty()) { std::fprintf(stderr, "lisa_fuzz: no seed inputs in %s\n", corpus_dir.c_str()); return 2; }
    std::sort(names.begin(), names.end());  // the order of a folder listing is not stable
    // the corpus itself: seed-* files are valid and must be accepted (else the fuzzing explores
    // only error paths); TARGET-crash-* files once crashed and must now behave
    for (const std::string& f : names) {
        corpus.push_back(fs_read_text(f));
        const bool seed = stdfs::path(f).filename().string().rfind("seed-", 0) == 0;
        g_current = &corpus.back();
        try {
            kTargets.at(target)(corpus.back());
        } catch (const lisa::error& e) {
            if (seed) {
                std::fprintf(stderr, "lisa_fuzz: the seed %s is refused: %s\n", f.c_str(), e.what());
                bad++;
            }
        } catch (const std::exception& e) {
            save_finding(findings, target, corpus.back(), std::string("not a lisa::error: ") + e.what());
            bad++;
        }
        g_current = nullptr;
    }
    rng r;
    rng_init(&r, seed);
    const auto t0 = std::chrono::steady_clock::now();
    int64_t n = 0;
    const std::vector<std::string>& dict = kDictionary.at(target);
    while (!bad) {
        if (runs >= 0 ? n >= runs
                      : std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() >= seconds)
            break;
        const std::string in = mutate(corpus[rng_below(&r, corpus.size())], &r, corpus, dict);
        bad += !run_one(target, in, findings);
        n++;
    }
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "lisa_fuzz %s: %lld runs in %.1f s (%zu seeds), %d findings\n", target.c_str(), (long long)n, secs,
                 corpus.size(), bad);
    stdfs::remove_all(g_work);
    return bad ? 1 : 0;
}
