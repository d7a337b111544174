#include "tokenizer/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <unordered_map>

#include "core/error.h"
#include "io/fs.h"
#include "io/json_reader.h"
#include "model/gguf_model.h"
#include "tokenizer/unicode.h"

namespace lisa {

using json = nlohmann::json;

// ======================================================================== components

// A compiled PCRE2 pattern with UTF + UCP semantics (\p{L}, \s, ... over Unicode).
struct regex {
    pcre2_code* code = nullptr;
    ~regex() {
        if (code) pcre2_code_free(code);
    }
};

static std::shared_ptr<regex> regex_compile(const std::string& pattern, const std::string& where) {
    int err;
    PCRE2_SIZE off;
    auto r = std::make_shared<regex>();
    r->code = pcre2_compile((PCRE2_SPTR)pattern.data(), pattern.size(), PCRE2_UTF | PCRE2_UCP, &err, &off, nullptr);
    if (!r->code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        fail(strf("%s: regex \"%s\" does not compile at offset %zu (%s)", where.c_str(), pattern.c_str(), (size_t)off,
                  (const char*)msg));
    }
    pcre2_jit_compile(r->code, PCRE2_JIT_COMPLETE);  // optional speed-up; the interpreter is used if it fails
    return r;
}

// Non-overlapping leftmost matches [begin, end) of re in s (s is valid UTF-8).
static std::vector<std::pair<size_t, size_t>> regex_find_all(const regex& re, const std::string& s) {
    std::vector<std::pair<size_t, size_t>> out;
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(re.code, nullptr);
    size_t pos = 0;
    while (pos <= s.size()) {
        int rc = pcre2_match(re.code, (PCRE2_SPTR)s.data(), s.size(), pos, PCRE2_NO_UTF_CHECK, md, nullptr);
        if (rc < 0) break;
        PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
        size_t b = ov[0], e = ov[1];
        if (e == b) {  // empty match: step over one character
            uint32_t cp;
            int n = b < s.size() ? utf8_decode(s, b, &cp) : 1;
            pos = b + std::max(n, 1);
            continue;
        }
        out.push_back({b, e});
        pos = e;
    }
    pcre2_match_data_free(md);
    return out;
}

static std::string replace_all(const std::string& s, const std::string& from, const std::string& to) {
    if (from.empty()) return s;
    std::string out;
    size_t i = 0;
    while (true) {
        size_t j = s.find(from, i);
        if (j == std::string::npos) break;
        out.append(s, i, j - i);
        out += to;
        i = j + from.size();
    }
    out.append(s, i, std::string::npos);
    return out;
}

// A pattern of Split / Replace: a literal string or a regex.
struct pattern {
    std::string            literal;
    std::shared_ptr<regex> re;  // null for a literal
};

// The "pattern" field of the component r.
static pattern pattern_parse(const json_reader& r) {
    pattern p;
    const json& j = r.has("pattern") ? r.j["pattern"] : json();
    if (j.is_object() && j.contains("String") && j["String"].is_string()) {
        p.literal = j["String"].get<std::string>();
    } else if (j.is_object() && j.contains("Regex") && j["Regex"].is_string()) {
        p.re = regex_compile(j["Regex"].get<std::string>(), r.file + ": field '" + r.field("pattern") + "'");
    } else {
        r.bad("pattern", "{\"String\": ...} or {\"Regex\": ...}");
    }
    return p;
}

// The "type" of the component r, which must be present.
static std::string component_type(const json_reader& r, const char* what) {
    if (!r.has("type")) r.bad("type", strf("the %s's type", what).c_str());
    return r.str_or("type", "");
}

static std::vector<std::pair<size_t, size_t>> pattern_find_all(const pattern& p, const std::string& s) {
    if (p.re) return regex_find_all(*p.re, s);
    std::vector<std::pair<size_t, size_t>> out;
    if (p.literal.empty()) return out;
    for (size_t i = s.find(p.literal); i != std::string::npos; i = s.find(p.literal, i + p.literal.size()))
        out.push_back({i, i + p.literal.size()});
    return out;
}

// ---------------------------------------------------------------- normalizers
enum class norm_kind { nfc, nfkc, nfd, nfkd, prepend, replace, strip, lowercase, sequence };
struct normalizer {
    norm_kind               kind;
    std::string             text;       // prepend: what; replace: content
    pattern                 pat;        // replace
    bool                    left = false, right = false;  // strip
    std::vector<normalizer> seq;
};

static normalizer normalizer_parse(const json_reader& r) {
    const std::string t = component_type(r, "normalizer");
    normalizer n;
    if (t == "NFC") n.kind = norm_kind::nfc;
    else if (t == "NFKC") n.kind = norm_kind::nfkc;
    else if (t == "NFD") n.kind = norm_kind::nfd;
    else if (t == "NFKD") n.kind = norm_kind::nfkd;
    else if (t == "Lowercase") n.kind = norm_kind::lowercase;
    else if (t == "Prepend") {
        n.kind = norm_kind::prepend;
        n.text = r.str_or("prepend", "");
    } else if (t == "Replace") {
        n.kind = norm_kind::replace;
        n.pat = pattern_parse(r);
        n.text = r.str_or("content", "");
    } else if (t == "Strip") {
        n.kind = norm_kind::strip;
        n.left = r.bool_or("strip_left", true);
        n.right = r.bool_or("strip_right", true);
    } else if (t == "Sequence") {
        n.kind = norm_kind::sequence;
        for (size_t i = 0; i < r.array_or_empty("normalizers").size(); i++)
            n.seq.push_back(normalizer_parse(r.element("normalizers", i)));
    } else {
        fail(strf("%s: field '%s': normalizer \"%s\" is not supported (supported: NFC, NFKC, NFD, NFKD, Prepend, "
                  "Replace, Strip, Lowercase, Sequence)", r.file.c_str(), r.field("type").c_str(), t.c_str()));
    }
    return n;
}

static std::string utf8proc_apply(const std::string& s, int options) {
    utf8proc_uint8_t* out = nullptr;
    utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t*)s.data(), (utf8proc_ssize_t)s.size(), &out,
                                      (utf8proc_option_t)(options | UTF8PROC_STABLE));
    if (n < 0) return s;  // cannot happen on repaired UTF-8; keep the text rather than lose it
    std::string r((const char*)out, (size_t)n);
    std::free(out);
    return r;
}

static std::string normalize(const normalizer& n, const std::string& s) {
    switch (n.kind) {
        case norm_kind::nfc: return utf8proc_apply(s, UTF8PROC_COMPOSE);
        case norm_kind::nfkc: return utf8proc_apply(s, UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
        case norm_kind::nfd: return utf8proc_apply(s, UTF8PROC_DECOMPOSE);
        case norm_kind::nfkd: return utf8proc_apply(s, UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
        case norm_kind::prepend: return s.empty() ? s : n.text + s;  // an empty segment stays empty
        case norm_kind::replace: {
            if (!n.pat.re) return replace_all(s, n.pat.literal, n.text);
            std::string out;
            size_t last = 0;
            for (auto [b, e] : regex_find_all(*n.pat.re, s)) {
                out.append(s, last, b - last);
                out += n.text;
                last = e;
            }
            return out + s.substr(last);
        }
        case norm_kind::strip: {
            std::vector<uint32_t> cps = utf8_codepoints(s);
            size_t b = 0, e = cps.size();
            if (n.left)
                while (b < e && unicode_is_whitespace(cps[b])) b++;
            if (n.right)
                while (e > b && unicode_is_whitespace(cps[e - 1])) e--;
            std::string out;
            for (size_t i = b; i < e; i++) utf8_append(&out, cps[i]);
            return out;
        }
        case norm_kind::lowercase: {
            std::string out;
            for (uint32_t cp : utf8_codepoints(s)) utf8_append(&out, (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp));
            return out;
        }
        case norm_kind::sequence: {
            std::string out = s;
            for (const auto& c : n.seq) out = normalize(c, out);
            return out;
        }
    }
    return s;
}

// ---------------------------------------------------------------- pre-tokenizers
enum class pre_kind { split, bytelevel, digits, metaspace, sequence };
enum class split_behavior { isolated, removed, merged_with_previous, merged_with_next, contiguous };
enum class prepend_scheme { always, first, never };

struct pretokenizer {
    pre_kind                  kind;
    pattern                   pat;                  // split
    split_behavior            behavior = split_behavior::isolated;
    bool                      add_prefix_space = false;  // bytelevel
    bool                      use_regex = true;          // bytelevel
    bool                      individual_digits = false; // digits
    std::string               replacement = "\xe2\x96\x81";  // metaspace (U+2581)
    prepend_scheme            prepend = prepend_scheme::always;
    bool                      split = true;              // metaspace
    std::vector<pretokenizer> seq;
};

// A piece of text between pre-tokenizer steps; at_start: it begins the (original) input.
struct piece {
    std::string s;
    bool        at_start;
};

static const char* kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static std::shared_ptr<regex> gpt2_regex() {
    static std::shared_ptr<regex> r = regex_compile(kGpt2Pattern, "ByteLevel");
    return r;
}

static split_behavior behavior_parse(const json_reader& r) {
    const std::string b = r.str_or("behavior", "Isolated");
    if (b == "Isolated") return split_behavior::isolated;
    if (b == "Removed") return split_behavior::removed;
    if (b == "MergedWithPrevious") return split_behavior::merged_with_previous;
    if (b == "MergedWithNext") return split_behavior::merged_with_next;
    if (b == "Contiguous") return split_behavior::contiguous;
    r.bad("behavior", "Isolated, Removed, MergedWithPrevious, MergedWithNext or Contiguous");
}

static pretokenizer pretokenizer_parse(const json_reader& r) {
    const std::string t = component_type(r, "pre_tokenizer");
    pretokenizer p;
    if (t == "Split") {
        p.kind = pre_kind::split;
        p.pat = pattern_parse(r);
        p.behavior = behavior_parse(r);
        if (r.bool_or("invert", false)) r.bad("invert", "false (an inverted Split is not supported)");
    } else if (t == "ByteLevel") {
        p.kind = pre_kind::bytelevel;
        p.add_prefix_space = r.bool_or("add_prefix_space", false);
        p.use_regex = r.bool_or("use_regex", true);
    } else if (t == "Digits") {
        p.kind = pre_kind::digits;
        p.individual_digits = r.bool_or("individual_digits", false);
    } else if (t == "Metaspace") {
        p.kind = pre_kind::metaspace;
        p.replacement = r.str_or("replacement", "\xe2\x96\x81");
        p.split = r.bool_or("split", true);
        std::string scheme = r.str_or("prepend_scheme", r.bool_or("add_prefix_space", true) ? "always" : "never");
        if (scheme == "always") p.prepend = prepend_scheme::always;
        else if (scheme == "first") p.prepend = prepend_scheme::first;
        else if (scheme == "never") p.prepend = prepend_scheme::never;
        else r.bad("prepend_scheme", "\"always\", \"first\" or \"never\"");
    } else if (t == "Sequence") {
        p.kind = pre_kind::sequence;
        for (size_t i = 0; i < r.array_or_empty("pretokenizers").size(); i++)
            p.seq.push_back(pretokenizer_parse(r.element("pretokenizers", i)));
    } else {
        fail(strf("%s: field '%s': pre_tokenizer \"%s\" is not supported (supported: Split, ByteLevel, Digits, "
                  "Metaspace, Sequence)", r.file.c_str(), r.field("type").c_str(), t.c_str()));
    }
    return p;
}

// Splits s at the [begin, end) matches according to the behavior.
static void split_by(std::vector<piece>* out, const piece& in, const std::vector<std::pair<size_t, size_t>>& m,
                     split_behavior beh) {
    const std::string& s = in.s;
    std::vector<std::pair<std::pair<size_t, size_t>, bool>> spans;  // (range, is_match)
    size_t last = 0;
    for (auto r : m) {
        if (r.first > last) spans.push_back({{last, r.first}, false});
        spans.push_back({r, true});
        last = r.second;
    }
    if (last < s.size()) spans.push_back({{last, s.size()}, false});
    std::vector<std::pair<size_t, size_t>> res;
    bool prev_match = false;
    for (auto& [r, is_match] : spans) {
        switch (beh) {
            case split_behavior::isolated: res.push_back(r); break;
            case split_behavior::removed:
                if (!is_match) res.push_back(r);
                break;
            case split_behavior::merged_with_previous:
                if (is_match && !res.empty() && !prev_match) res.back().second = r.second;
                else res.push_back(r);
                break;
            case split_behavior::merged_with_next:
                if (!is_match && prev_match && !res.empty()) res.back().second = r.second;
                else res.push_back(r);
                break;
            case split_behavior::contiguous:
                if (is_match && prev_match && !res.empty()) res.back().second = r.second;
                else res.push_back(r);
                break;
        }
        prev_match = is_match;
    }
    for (auto r : res)
        if (r.second > r.first) out->push_back({s.substr(r.first, r.second - r.first), in.at_start && r.first == 0});
}

static std::string bytes_to_alphabet(const std::string& s) {
    std::string out;
    for (unsigned char b : s) utf8_append(&out, bytelevel_char_of(b));
    return out;
}

static std::vector<piece> pretokenize(const pretokenizer& p, std::vector<piece> in) {
    std::vector<piece> out;
    switch (p.kind) {
        case pre_kind::split:
            for (const auto& x : in) split_by(&out, x, pattern_find_all(p.pat, x.s), p.behavior);
            return out;
        case pre_kind::bytelevel:
            for (auto x : in) {
                if (p.add_prefix_space && (x.s.empty() || x.s[0] != ' ')) x.s = " " + x.s;
                std::vector<piece> parts;
                if (p.use_regex) split_by(&parts, x, regex_find_all(*gpt2_regex(), x.s), split_behavior::isolated);
                else parts.push_back(x);
                for (auto& q : parts) out.push_back({bytes_to_alphabet(q.s), q.at_start});
            }
            return out;
        case pre_kind::digits:
            for (const auto& x : in) {
                std::vector<std::pair<size_t, size_t>> m;
                size_t i = 0;
                while (i < x.s.size()) {
                    uint32_t cp;
                    int n = std::max(utf8_decode(x.s, i, &cp), 1);
                    if (unicode_is_numeric(cp)) {
                        if (!p.individual_digits && !m.empty() && m.back().second == i) m.back().second = i + n;
                        else m.push_back({i, i + n});
                    }
                    i += n;
                }
                split_by(&out, x, m, split_behavior::isolated);
            }
            return out;
        case pre_kind::metaspace:
            for (auto x : in) {
                x.s = replace_all(x.s, " ", p.replacement);
                bool prepend = p.prepend == prepend_scheme::always || (p.prepend == prepend_scheme::first && x.at_start);
                if (prepend && x.s.compare(0, p.replacement.size(), p.replacement) != 0) x.s = p.replacement + x.s;
                if (!p.split) {
                    out.push_back(x);
                    continue;
                }
                pattern lit;
                lit.literal = p.replacement;
                split_by(&out, x, pattern_find_all(lit, x.s), split_behavior::merged_with_next);
            }
            return out;
        case pre_kind::sequence:
            for (const auto& c : p.seq) in = pretokenize(c, std::move(in));
            return in;
    }
    return in;
}

// ---------------------------------------------------------------- post-processors
struct template_item {
    bool        special;  // SpecialToken (else the sequence)
    std::string id;       // special token name
};
struct postprocessor {
    bool                       none = true;
    std::vector<template_item> single;                       // TemplateProcessing "single"
    std::map<std::string, std::vector<int32_t>> special_ids;  // name -> ids
};

static void postprocessor_parse(postprocessor* pp, const json_reader& r) {
    const std::string t = component_type(r, "post_processor");
    if (t == "ByteLevel") return;  // trims offsets only; ids unchanged
    if (t == "Sequence") {
        for (size_t i = 0; i < r.array_or_empty("processors").size(); i++)
            postprocessor_parse(pp, r.element("processors", i));
        return;
    }
    if (t != "TemplateProcessing")
        fail(strf("%s: field '%s': post_processor \"%s\" is not supported (supported: TemplateProcessing, ByteLevel, "
                  "Sequence)", r.file.c_str(), r.field("type").c_str(), t.c_str()));
    pp->none = false;
    pp->single.clear();
    for (size_t i = 0; i < r.array_or_empty("single").size(); i++) {
        const json_reader it = r.element("single", i);
        if (it.has("SpecialToken")) {
            const json_reader st = it.object_or_empty("SpecialToken");
            if (!st.has("id")) st.bad("id", "a special token name");
            pp->single.push_back({true, st.str_or("id", "")});
        } else if (it.has("Sequence")) {
            pp->single.push_back({false, ""});
        } else {
            fail(strf("%s: field '%s': expected {\"SpecialToken\": ...} or {\"Sequence\": ...}", r.file.c_str(),
                      it.at.c_str()));
        }
    }
    const json_reader specials = r.object_or_empty("special_tokens");
    for (auto it = specials.j.begin(); it != specials.j.end(); ++it) {
        std::vector<int32_t>& ids = pp->special_ids[it.key()];
        const json_reader sp = json_reader::object(it.value(), r.file, specials.field(it.key().c_str()));
        const json& jids = sp.array_or_empty("ids");
        for (size_t i = 0; i < jids.size(); i++) {  // the range against the vocabulary is checked once it is known
            const json& x = jids[i];
            if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() > INT32_MAX)
                fail(strf("%s: field '%s[%zu]': special token \"%s\": expected a token id, got %s", r.file.c_str(),
                          sp.field("ids").c_str(), i, cap_message(it.key(), 80).c_str(), json_describe(x).c_str()));
            ids.push_back((int32_t)x.get<int64_t>());
        }
    }
    for (const auto& item : pp->single)
        if (item.special && !pp->special_ids.count(item.id))
            fail(strf("%s: field '%s': special token \"%s\" has no ids", r.file.c_str(),
                      r.field("special_tokens").c_str(), item.id.c_str()));
}

// ---------------------------------------------------------------- decoders
enum class dec_kind { bytelevel, replace, bytefallback, fuse, strip, metaspace, sequence };
struct decoder {
    dec_kind             kind;
    std::string          from, to;           // replace (literal)
    std::string          content;            // strip: the character
    int                  start = 0, stop = 0;// strip
    std::string          replacement = "\xe2\x96\x81";  // metaspace
    bool                 prepend = true;     // metaspace: strip the first token's leading space
    std::vector<decoder> seq;
};

static decoder decoder_parse(const json_reader& r) {
    const std::string t = component_type(r, "decoder");
    decoder d;
    if (t == "ByteLevel") d.kind = dec_kind::bytelevel;
    else if (t == "ByteFallback") d.kind = dec_kind::bytefallback;
    else if (t == "Fuse") d.kind = dec_kind::fuse;
    else if (t == "Replace") {
        d.kind = dec_kind::replace;
        const pattern p = pattern_parse(r);
        if (p.re) r.bad("pattern", "{\"String\": ...} (a decoder Replace with a regex is not supported)");
        d.from = p.literal;
        d.to = r.str_or("content", "");
    } else if (t == "Strip") {
        d.kind = dec_kind::strip;
        d.content = r.str_or("content", " ");
        d.start = (int)r.int_range_or("start", 0, INT32_MAX, 0);
        d.stop = (int)r.int_range_or("stop", 0, INT32_MAX, 0);
    } else if (t == "Metaspace") {
        d.kind = dec_kind::metaspace;
        d.replacement = r.str_or("replacement", "\xe2\x96\x81");
        std::string scheme = r.str_or("prepend_scheme", r.bool_or("add_prefix_space", true) ? "always" : "never");
        d.prepend = scheme != "never";
    } else if (t == "Sequence") {
        d.kind = dec_kind::sequence;
        for (size_t i = 0; i < r.array_or_empty("decoders").size(); i++)
            d.seq.push_back(decoder_parse(r.element("decoders", i)));
    } else {
        fail(strf("%s: field '%s': decoder \"%s\" is not supported (supported: ByteLevel, Replace, ByteFallback, "
                  "Fuse, Strip, Metaspace, Sequence)", r.file.c_str(), r.field("type").c_str(), t.c_str()));
    }
    return d;
}

static std::vector<std::string> decode_chain(const decoder& d, std::vector<std::string> toks) {
    switch (d.kind) {
        case dec_kind::bytelevel: {
            std::string bytes;
            for (const auto& t : toks) {
                std::string b;
                bool all = true;
                for (uint32_t cp : utf8_codepoints(t)) {
                    int v = bytelevel_byte_of(cp);
                    if (v < 0) {
                        all = false;
                        break;
                    }
                    b.push_back((char)v);
                }
                bytes += all ? b : t;
            }
            return {utf8_lossy(bytes)};
        }
        case dec_kind::replace:
            for (auto& t : toks) t = replace_all(t, d.from, d.to);
            return toks;
        case dec_kind::bytefallback: {
            std::vector<std::string> out;
            std::string pending;
            auto flush = [&] {
                if (pending.empty()) return;
                if (utf8_lossy(pending) == pending) out.push_back(pending);
                else
                    for (size_t i = 0; i < pending.size(); i++) out.push_back("\xef\xbf\xbd");
                pending.clear();
            };
            for (auto& t : toks) {
                if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && isxdigit((unsigned char)t[3]) &&
                    isxdigit((unsigned char)t[4])) {
                    pending.push_back((char)std::strtol(t.substr(3, 2).c_str(), nullptr, 16));
                } else {
                    flush();
                    out.push_back(t);
                }
            }
            flush();
            return out;
        }
        case dec_kind::fuse: {
            std::string all;
            for (auto& t : toks) all += t;
            return {all};
        }
        case dec_kind::strip:
            for (auto& t : toks) {
                std::vector<uint32_t> cps = utf8_codepoints(t);
                std::vector<uint32_t> c = utf8_codepoints(d.content);
                uint32_t ch = c.empty() ? ' ' : c[0];
                size_t b = 0, e = cps.size();
                for (int k = 0; k < d.start && b < e && cps[b] == ch; k++) b++;
                for (int k = 0; k < d.stop && e > b && cps[e - 1] == ch; k++) e--;
                std::string s;
                for (size_t i = b; i < e; i++) utf8_append(&s, cps[i]);
                t = s;
            }
            return toks;
        case dec_kind::metaspace:
            for (size_t i = 0; i < toks.size(); i++) {
                toks[i] = replace_all(toks[i], d.replacement, " ");
                if (i == 0 && d.prepend && !toks[i].empty() && toks[i][0] == ' ') toks[i].erase(0, 1);
            }
            return toks;
        case dec_kind::sequence:
            for (const auto& c : d.seq) toks = decode_chain(c, std::move(toks));
            return toks;
    }
    return toks;
}

// ======================================================================== the tokenizer

struct added_token {
    std::string content;
    int32_t     id;
    bool        special, lstrip, rstrip, single_word, normalized;
};

// Added tokens to look for in one pass: what to match (the content, or its normalized form),
// indexed by first byte, longest first (leftmost-longest matching).
struct added_matcher {
    std::vector<std::string> contents;
    std::vector<size_t>      token_index;  // into tokenizer::added
    std::map<unsigned char, std::vector<size_t>> by_first;
};

}  // namespace lisa

struct lisa::tokenizer {
    std::string path;
    // model (BPE)
    std::unordered_map<std::string, int32_t>                vocab;
    std::vector<std::string>                                id_to_token;  // model + added
    std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;     // (left,right) -> (rank, merged id)
    int32_t unk_id = -1;
    bool    fuse_unk = false, byte_fallback = false, ignore_merges = false;
    int32_t byte_ids[256];  // id of "<0xXX>" for byte fallback, -1 if absent
    // pipeline
    bool                        has_normalizer = false, has_pre = false, has_decoder = false;
    normalizer                  norm;
    pretokenizer                pre;
    postprocessor               post;
    decoder                     dec;
    std::vector<added_token>    added;
    added_matcher               raw_added;         // normalized=false: matched in the raw text
    added_matcher               normalized_added;  // normalized=true: matched in normalized text
    std::vector<bool>           special;  // by id
    int32_t bos = -1, eos = -1, pad = -1;
    // tokenizer.json "truncation" (applied only when asked: transformers ignores it)
    int64_t trunc_max = 0;      // 0 = none
    bool    trunc_left = false; // direction "Left": keep the end
    // BPE cache: piece -> ids
    mutable std::mutex                                            cache_mu;
    mutable std::unordered_map<std::string, std::vector<int32_t>> cache;
};

namespace lisa {

void tokenizer_free(tokenizer* t) { delete t; }

static uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t)(uint32_t)a << 32 | (uint32_t)b; }

// Token name from tokenizer_config.json: a string, or an AddedToken object {"content": ...}; "" if
// absent or null.
static std::string config_token(const json_reader& cfg, const char* key) {
    if (!cfg.has(key)) return "";
    if (cfg.j[key].is_string()) return cfg.j[key].get<std::string>();
    if (!cfg.j[key].is_object()) cfg.bad(key, "a token string or an object with a \"content\" string");
    const json_reader tok = cfg.object_or_empty(key);
    if (!tok.has("content")) tok.bad("content", "a string");
    return tok.str_or("content", "");
}

std::unique_ptr<tokenizer> tokenizer_load(const std::string& path) {
    std::string file = path, dir;
    const bool gguf = model_path_is_gguf(path);  // the tokenizer rebuilt from a GGUF file's metadata
    std::string text;
    if (gguf) {
        model_text_file(path, "tokenizer.json", &text);
        file = model_file_label(path, "tokenizer.json");
    } else if (fs_is_dir(path)) {
        dir = path;
        file = fs_join(path, "tokenizer.json");
        if (!fs_is_file(file))
            fail(strf("%s: missing; lisa.cpp reads Hugging Face tokenizer.json files (a SentencePiece "
                      "tokenizer.model alone is not supported: convert it with transformers first)", file.c_str()));
    }
    json j;
    try {
        j = json::parse(gguf ? text : fs_read_text(file));
    } catch (const json::exception& e) {
        fail(strf("%s: not valid JSON (%s)", file.c_str(), json_error(e).c_str()));
    }
    auto t = std::unique_ptr<tokenizer>(new tokenizer());
    t->path = file;
    const json_reader root = json_reader::object(j, file, "");
    if (!root.has("model")) root.bad("model", "an object");
    const json_reader mr = root.object_or_empty("model");
    const json& m = mr.j;
    std::string mtype = mr.str_or("type", "BPE");
    if (mtype != "BPE")
        fail(strf("%s: field 'model.type': \"%s\" is not supported (only BPE: Llama, Mistral, Qwen2, GPT-2, SmolLM "
                  "tokenizers)", file.c_str(), cap_message(mtype, 80).c_str()));
    if (!m.contains("vocab") || !m["vocab"].is_object())
        fail(strf("%s: field 'model.vocab': expected an object of token -> id", file.c_str()));
    // ids are checked before anything is sized from them: non-negative, and dense enough that the
    // id table is no larger than the entries the file really holds (a file may claim any id)
    const json& added_json = root.array_or_empty("added_tokens");
    const int64_t id_limit = (int64_t)m["vocab"].size() + (int64_t)added_json.size() + 1024;
    int32_t max_id = -1;
    for (auto it = m["vocab"].begin(); it != m["vocab"].end(); ++it) {
        if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0)
            fail(strf("%s: field 'model.vocab': id of \"%s\" is not a non-negative integer", file.c_str(), it.key().c_str()));
        if (it.value().get<int64_t>() >= id_limit)
            fail(strf("%s: field 'model.vocab': id %lld of \"%s\" is far beyond the %lld tokens the file holds",
                      file.c_str(), (long long)it.value().get<int64_t>(), it.key().c_str(), (long long)(id_limit - 1024)));
        int32_t id = (int32_t)it.value().get<int64_t>();
        t->vocab[it.key()] = id;
        max_id = std::max(max_id, id);
    }
    t->id_to_token.assign(max_id + 1, "");
    for (auto& [s, id] : t->vocab) t->id_to_token[id] = s;
    for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
        if (!mr.str_or(k, "").empty()) mr.bad(k, "null or \"\" (not supported)");
    if (mr.num_or("dropout", 0) > 0) mr.bad("dropout", "null (BPE dropout is not supported)");
    t->fuse_unk = mr.bool_or("fuse_unk", false);
    t->byte_fallback = mr.bool_or("byte_fallback", false);
    t->ignore_merges = mr.bool_or("ignore_merges", false);
    if (mr.has("unk_token")) {
        const std::string unk = mr.str_or("unk_token", "");
        auto it = t->vocab.find(unk);
        if (it == t->vocab.end())
            fail(strf("%s: field 'model.unk_token': \"%s\" is not in the vocabulary", file.c_str(), unk.c_str()));
        t->unk_id = it->second;
    }
    for (int b = 0; b < 256; b++) {
        auto it = t->vocab.find(strf("<0x%02X>", b));
        t->byte_ids[b] = it == t->vocab.end() ? -1 : it->second;
    }
    // merges: "a b" strings or ["a", "b"] pairs; rank = position
    const json& merges = mr.array_or_empty("merges");
    int32_t rank = 0;
    for (const json& mg : merges) {
        std::string a, b;
        if (mg.is_string()) {
            std::string s = mg.get<std::string>();
            size_t sp = s.find(' ');
            if (sp == std::string::npos)
                fail(strf("%s: field 'model.merges[%d]': \"%s\" is not a pair \"a b\"", file.c_str(), rank, s.c_str()));
            a = s.substr(0, sp);
            b = s.substr(sp + 1);
        } else if (mg.is_array() && mg.size() == 2 && mg[0].is_string() && mg[1].is_string()) {
            a = mg[0].get<std::string>();
            b = mg[1].get<std::string>();
        } else {
            fail(strf("%s: field 'model.merges[%d]': expected \"a b\" or [\"a\", \"b\"]", file.c_str(), rank));
        }
        auto ia = t->vocab.find(a), ib = t->vocab.find(b), im = t->vocab.find(a + b);
        if (ia == t->vocab.end() || ib == t->vocab.end() || im == t->vocab.end())
            fail(strf("%s: field 'model.merges[%d]': merge \"%s\" + \"%s\" uses a token not in the vocabulary",
                      file.c_str(), rank, a.c_str(), b.c_str()));
        t->merges.emplace(pair_key(ia->second, ib->second), std::make_pair(rank, im->second));
        rank++;
    }
    // added tokens
    for (size_t i = 0; i < added_json.size(); i++) {
        const json_reader a = root.element("added_tokens", i);
        added_token at;
        at.content = a.str_or("content", "");
        if (at.content.empty()) a.bad("content", "a non-empty string");
        if (!a.has("id")) a.bad("id", "a token id");
        at.id = (int32_t)a.int_range_or("id", 0, id_limit - 1, -1);
        at.special = a.bool_or("special", false);
        at.lstrip = a.bool_or("lstrip", false);
        at.rstrip = a.bool_or("rstrip", false);
        at.single_word = a.bool_or("single_word", false);
        at.normalized = a.bool_or("normalized", !at.special);
        t->added.push_back(at);
        if ((size_t)at.id >= t->id_to_token.size()) t->id_to_token.resize(at.id + 1);
        t->id_to_token[at.id] = at.content;
    }
    t->special.assign(t->id_to_token.size(), false);
    if (root.has("normalizer")) {
        t->norm = normalizer_parse(root.object_or_empty("normalizer"));
        t->has_normalizer = true;
    }
    for (size_t i = 0; i < t->added.size(); i++) {
        const added_token& a = t->added[i];
        t->special[a.id] = a.special;
        bool norm = a.normalized && t->has_normalizer;
        added_matcher& m = norm ? t->normalized_added : t->raw_added;
        std::string content = norm ? normalize(t->norm, a.content) : a.content;
        if (content.empty()) continue;
        m.contents.push_back(content);
        m.token_index.push_back(i);
        m.by_first[(unsigned char)content[0]].push_back(m.contents.size() - 1);
    }
    for (added_matcher* m : {&t->raw_added, &t->normalized_added})
        for (auto& [c, v] : m->by_first)
            std::stable_sort(v.begin(), v.end(),
                             [&](size_t a, size_t b) { return m->contents[a].size() > m->contents[b].size(); });
    // pipeline
    if (root.has("pre_tokenizer")) {
        t->pre = pretokenizer_parse(root.object_or_empty("pre_tokenizer"));
        t->has_pre = true;
    }
    if (root.has("post_processor")) postprocessor_parse(&t->post, root.object_or_empty("post_processor"));
    for (const auto& [name, ids] : t->post.special_ids)
        for (int32_t id : ids)
            if (id < 0 || (size_t)id >= t->id_to_token.size())
                fail(strf("%s: post_processor TemplateProcessing: special token \"%s\" has id %d, outside the "
                          "vocabulary [0, %zu)", file.c_str(), name.c_str(), id, t->id_to_token.size()));
    if (root.has("decoder")) {
        t->dec = decoder_parse(root.object_or_empty("decoder"));
        t->has_decoder = true;
    }
    if (root.has("truncation")) {
        const json_reader tr = root.object_or_empty("truncation");
        t->trunc_max = tr.int_range_or("max_length", 0, INT64_MAX, 0);
        const std::string direction = tr.str_or("direction", "Right");
        if (direction != "Left" && direction != "Right") tr.bad("direction", "\"Left\" or \"Right\"");
        t->trunc_left = direction == "Left";
    }
    // tokenizer_config.json: special token names, and add_bos_token / add_eos_token
    const std::string cfg_dir = gguf ? path : dir;
    std::string cfg_text;
    if (!cfg_dir.empty() && model_text_file(cfg_dir, "tokenizer_config.json", &cfg_text)) {
        const std::string cfg_path = model_file_label(cfg_dir, "tokenizer_config.json");
        json cfg;
        try {
            cfg = json::parse(cfg_text);
        } catch (const json::exception& e) {
            fail(strf("%s: not valid JSON (%s)", cfg_path.c_str(), json_error(e).c_str()));
        }
        const json_reader cr = json_reader::object(cfg, cfg_path, "");
        auto id_of = [&](const char* key) {
            std::string s = config_token(cr, key);
            return s.empty() ? -1 : tokenizer_token_to_id(*t, s);
        };
        t->bos = id_of("bos_token");
        t->eos = id_of("eos_token");
        t->pad = id_of("pad_token");
        // Llama-style fast tokenizers in transformers rebuild the template from these flags
        std::string cls = cr.str_or("tokenizer_class", "");
        bool rebuilds = cls.find("Llama") != std::string::npos || cls.find("Gemma") != std::string::npos;
        if (rebuilds && (cfg.contains("add_bos_token") || cfg.contains("add_eos_token"))) {
            bool add_bos = cr.bool_or("add_bos_token", true), add_eos = cr.bool_or("add_eos_token", false);
            postprocessor pp;
            pp.none = false;
            std::string bos = config_token(cr, "bos_token"), eos = config_token(cr, "eos_token");
            if (add_bos && t->bos >= 0) {
                pp.single.push_back({true, bos});
                pp.special_ids[bos] = {t->bos};
            }
            pp.single.push_back({false, ""});
            if (add_eos && t->eos >= 0) {
                pp.single.push_back({true, eos});
                pp.special_ids[eos] = {t->eos};
            }
            t->post = pp;
        }
    }
    return t;
}

// BPE of one pre-tokenized piece.
static void bpe_piece(const tokenizer& t, const std::string& w, std::vector<int32_t>* out) {
    if (t.ignore_merges) {
        auto it = t.vocab.find(w);
        if (it != t.vocab.end()) {
            out->push_back(it->second);
            return;
        }
    }
    {
        std::lock_guard<std::mutex> lk(t.cache_mu);
        auto it = t.cache.find(w);
        if (it != t.cache.end()) {
            out->insert(out->end(), it->second.begin(), it->second.end());
            return;
        }
    }
    // initial symbols: one per character (byte fallback / unk for characters not in the vocabulary)
    std::vector<int32_t> ids;
    bool pending_unk = false;
    size_t i = 0;
    while (i < w.size()) {
        uint32_t cp;
        int n = std::max(utf8_decode(w, i, &cp), 1);
        auto it = t.vocab.find(w.substr(i, n));
        if (it != t.vocab.end()) {
            if (pending_unk) ids.push_back(t.unk_id), pending_unk = false;
            ids.push_back(it->second);
        } else {
            bool done = false;
            if (t.byte_fallback) {
                bool all = true;
                for (int k = 0; k < n; k++) all &= t.byte_ids[(unsigned char)w[i + k]] >= 0;
                if (all) {
                    if (pending_unk) ids.push_back(t.unk_id), pending_unk = false;
                    for (int k = 0; k < n; k++) ids.push_back(t.byte_ids[(unsigned char)w[i + k]]);
                    done = true;
                }
            }
            if (!done && t.unk_id >= 0) {
                if (pending_unk && !t.fuse_unk) ids.push_back(t.unk_id);
                pending_unk = true;
            }
        }
        i += n;
    }
    if (pending_unk) ids.push_back(t.unk_id);
    // merge loop: always apply the lowest-rank pair, leftmost first (a heap of candidate merges
    // over a linked list of symbols; stale heap entries are skipped)
    const int n = (int)ids.size();
    std::vector<int> prev(n), next(n);
    for (int k = 0; k < n; k++) prev[k] = k - 1, next[k] = k + 1 < n ? k + 1 : -1;
    using cand = std::tuple<int32_t, int, int32_t, int32_t>;  // rank, position, left id, right id
    std::priority_queue<cand, std::vector<cand>, std::greater<cand>> heap;
    auto push = [&](int pos) {
        if (pos < 0 || next[pos] < 0) return;
        auto it = t.merges.find(pair_key(ids[pos], ids[next[pos]]));
        if (it != t.merges.end()) heap.push({it->second.first, pos, ids[pos], ids[next[pos]]});
    };
    for (int k = 0; k + 1 < n; k++) push(k);
    std::vector<bool> alive(n, true);
    while (!heap.empty()) {
        auto [rank, pos, a, b] = heap.top();
        heap.pop();
        int nx = next[pos];
        if (!alive[pos] || nx < 0 || ids[pos] != a || ids[nx] != b) continue;  // stale
        ids[pos] = t.merges.at(pair_key(a, b)).second;
        alive[nx] = false;
        next[pos] = next[nx];
        if (next[nx] >= 0) prev[next[nx]] = pos;
        push(prev[pos]);
        push(pos);
    }
    std::vector<int32_t> result;
    for (int k = n ? 0 : -1; k >= 0; k = next[k]) result.push_back(ids[k]);
    out->insert(out->end(), result.begin(), result.end());
    std::lock_guard<std::mutex> lk(t.cache_mu);
    if (t.cache.size() > 100000) t.cache.clear();  // bounded memory on long runs
    t.cache.emplace(w, std::move(result));
}

// One piece of input after added tokens are split out: text, or an added token's id.
struct segment {
    std::string text;
    int32_t     added_id;  // -1 for text
    size_t      begin;     // byte offset in the string it was cut from
};

// Splits s on the added tokens of `m` (leftmost-longest), honouring single_word, lstrip, rstrip.
static std::vector<segment> split_added(const tokenizer& t, const added_matcher& m, const std::string& s) {
    std::vector<segment> out;
    if (m.by_first.empty()) {
        if (!s.empty()) out.push_back({s, -1, 0});
        return out;
    }
    auto char_before = [&](size_t p, uint32_t* cp) -> size_t {  // start of the character ending at p
        size_t q = p - 1;
        while (q > 0 && ((unsigned char)s[q] & 0xc0) == 0x80) q--;
        if (utf8_decode(s, q, cp) == 0) *cp = 0xfffd;
        return q;
    };
    size_t seg_start = 0, i = 0;
    while (i < s.size()) {
        auto it = m.by_first.find((unsigned char)s[i]);
        const added_token* hit = nullptr;
        size_t hit_len = 0;
        if (it != m.by_first.end()) {
            for (size_t k : it->second) {
                const std::string& content = m.contents[k];
                if (s.compare(i, content.size(), content) != 0) continue;
                const added_token& a = t.added[m.token_index[k]];
                if (a.single_word) {  // must not touch a word character on either side
                    uint32_t cp;
                    bool before_word = i > 0 && (char_before(i, &cp), unicode_is_alnum(cp));
                    size_t e = i + content.size();
                    bool after_word = e < s.size() && utf8_decode(s, e, &cp) > 0 && unicode_is_alnum(cp);
                    if (before_word || after_word) continue;
                }
                hit = &a;
                hit_len = content.size();
                break;
            }
        }
        if (!hit) {
            uint32_t cp;
            i += std::max(utf8_decode(s, i, &cp), 1);
            continue;
        }
        size_t b = i, e = i + hit_len;
        if (hit->lstrip)
            while (b > seg_start) {
                uint32_t cp;
                size_t q = char_before(b, &cp);
                if (!unicode_is_whitespace(cp)) break;
                b = q;
            }
        if (hit->rstrip)
            while (e < s.size()) {
                uint32_t cp;
                int n = utf8_decode(s, e, &cp);
                if (n == 0 || !unicode_is_whitespace(cp)) break;
                e += n;
            }
        if (b > seg_start) out.push_back({s.substr(seg_start, b - seg_start), -1, seg_start});
        out.push_back({"", hit->id, b});
        seg_start = i = e;
    }
    if (seg_start < s.size()) out.push_back({s.substr(seg_start), -1, seg_start});
    return out;
}

std::vector<int32_t> tokenizer_encode(const tokenizer& t, const std::string& raw, bool add_special_tokens,
                                      bool apply_file_truncation) {
    const std::string text = utf8_lossy(raw);
    std::vector<int32_t> ids;
    // pass 1: added tokens with normalized=false, in the raw text; pass 2: the others, in each
    // normalized segment (matched against their normalized content), as the tokenizers library
    for (const segment& raw : split_added(t, t.raw_added, text)) {
        if (raw.added_id >= 0) {
            ids.push_back(raw.added_id);
            continue;
        }
        std::string s = t.has_normalizer ? normalize(t.norm, raw.text) : raw.text;
        for (const segment& seg : split_added(t, t.normalized_added, s)) {
            if (seg.added_id >= 0) {
                ids.push_back(seg.added_id);
                continue;
            }
            std::vector<piece> pieces = {{seg.text, raw.begin == 0 && seg.begin == 0}};
            if (t.has_pre) pieces = pretokenize(t.pre, std::move(pieces));
            for (const auto& p : pieces)
                if (!p.s.empty()) bpe_piece(t, p.s, &ids);
        }
    }
    if (apply_file_truncation && t.trunc_max > 0) {
        int64_t added = 0;  // room the post-processor's special tokens will take
        if (add_special_tokens && !t.post.none)
            for (const auto& item : t.post.single)
                if (item.special) added += (int64_t)t.post.special_ids.at(item.id).size();
        int64_t keep = std::max<int64_t>(0, t.trunc_max - added);
        if ((int64_t)ids.size() > keep) {
            if (t.trunc_left) ids.erase(ids.begin(), ids.end() - keep);
            else ids.resize(keep);
        }
    }
    if (!add_special_tokens || t.post.none) return ids;
    std::vector<int32_t> out;
    for (const auto& item : t.post.single) {
        if (item.special) {
            const auto& v = t.post.special_ids.at(item.id);
            out.insert(out.end(), v.begin(), v.end());
        } else {
            out.insert(out.end(), ids.begin(), ids.end());
        }
    }
    return out;
}

std::string tokenizer_decode(const tokenizer& t, const std::vector<int32_t>& ids, bool skip_special_tokens) {
    std::vector<std::string> toks;
    for (int32_t id : ids) {
        if (id < 0 || (size_t)id >= t.id_to_token.size() || t.id_to_token[id].empty()) continue;  // unknown ids
        if (skip_special_tokens && t.special[id]) continue;
        toks.push_back(t.id_to_token[id]);
    }
    if (!t.has_decoder) {
        std::string s;
        for (size_t i = 0; i < toks.size(); i++) s += (i ? " " : "") + toks[i];
        return s;
    }
    std::string s;
    for (auto& x : decode_chain(t.dec, std::move(toks))) s += x;
    return s;
}

int64_t tokenizer_vocab_size(const tokenizer& t) { return (int64_t)t.id_to_token.size(); }

void tokenizer_check_fits(const tokenizer& t, int64_t vocab_size, const std::string& tokenizer_where,
                          const std::string& model_where, const std::function<void(const std::string&)>& warn) {
    int64_t model_ids = 0;  // ids ordinary text can produce
    for (const auto& [tok, id] : t.vocab) model_ids = std::max<int64_t>(model_ids, (int64_t)id + 1);
    const int64_t all = tokenizer_vocab_size(t);
    if (model_ids > vocab_size)
        fail(strf("%s: the tokenizer has %lld ids but %s has vocab_size %lld; text would produce ids the model "
                  "cannot embed (a tokenizer of another model?)", tokenizer_where.c_str(), (long long)all,
                  model_where.c_str(), (long long)vocab_size));
    if (all > vocab_size && warn) {
        std::string names;
        int n = 0;
        for (const auto& a : t.added)
            if (a.id >= vocab_size && n++ < 3) names += (names.empty() ? "" : ", ") + a.content;
        warn(strf("%s: %lld added tokens (%s%s) have ids at or past %s's vocab_size %lld; data that uses them is refused",
                  tokenizer_where.c_str(), (long long)(all - vocab_size), names.c_str(), n > 3 ? ", ..." : "",
                  model_where.c_str(), (long long)vocab_size));
    }
}

int32_t tokenizer_token_to_id(const tokenizer& t, const std::string& token) {
    for (const auto& a : t.added)
        if (a.content == token) return a.id;
    auto it = t.vocab.find(token);
    return it == t.vocab.end() ? -1 : it->second;
}

std::string tokenizer_id_to_token(const tokenizer& t, int32_t id) {
    return id >= 0 && (size_t)id < t.id_to_token.size() ? t.id_to_token[id] : "";
}

bool tokenizer_is_special(const tokenizer& t, int32_t id) {
    return id >= 0 && (size_t)id < t.special.size() && t.special[id];
}

int32_t tokenizer_bos_id(const tokenizer& t) { return t.bos; }
int32_t tokenizer_eos_id(const tokenizer& t) { return t.eos; }
int32_t tokenizer_pad_id(const tokenizer& t) { return t.pad; }

static bool decoder_has(const decoder& d, dec_kind k) {
    if (d.kind == k) return true;
    for (const auto& c : d.seq)
        if (decoder_has(c, k)) return true;
    return false;
}

std::string tokenizer_token_text(const tokenizer& t, int32_t id) {
    if (id < 0 || (size_t)id >= t.id_to_token.size()) return "";
    for (const auto& a : t.added)
        if (a.id == id) return a.content;
    const std::string& s = t.id_to_token[id];
    if (t.has_decoder && decoder_has(t.dec, dec_kind::bytelevel)) {
        std::string b;
        for (uint32_t cp : utf8_codepoints(s)) {
            int v = bytelevel_byte_of(cp);
            if (v < 0) return s;
            b.push_back((char)v);
        }
        return b;
    }
    if (s.size() == 6 && s.compare(0, 3, "<0x") == 0 && s[5] == '>' && isxdigit((unsigned char)s[3]) &&
        isxdigit((unsigned char)s[4]))
        return std::string(1, (char)std::strtol(s.substr(3, 2).c_str(), nullptr, 16));
    return replace_all(s, "\xe2\x96\x81", " ");
}

}  // namespace lisa
