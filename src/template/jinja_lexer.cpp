// The scanner: cuts the source into text and tags, applying whitespace control ({%- -%},
// trim_blocks, lstrip_blocks, {%+ +%}) exactly as jinja2's lexer does. jinja_impl.h.
#include <cstring>

#include "core/error.h"
#include "template/jinja_impl.h"
#include "tokenizer/unicode.h"

namespace lisa {
namespace jinja_impl {
namespace {

// Python string literal escapes as jinja2 decodes them (unicode-escape)
std::string unescape(const std::string& s, int line) {
    std::string o;
    for (size_t i = 0; i < s.size(); i++) {
        if (s[i] != '\\' || i + 1 == s.size()) {
            o += s[i];
            continue;
        }
        char c = s[++i];
        auto hex = [&](int n) {
            if (i + n >= s.size() + 0 && i + n > s.size() - 1 + 1) jfail(line, "truncated \\x / \\u escape in a string");
            uint32_t v = 0;
            for (int k = 0; k < n; k++) {
                if (i + 1 >= s.size() || !isxdigit((unsigned char)s[i + 1])) jfail(line, "truncated \\x / \\u escape in a string");
                char h = s[++i];
                v = v * 16 + (uint32_t)(isdigit((unsigned char)h) ? h - '0' : (tolower(h) - 'a' + 10));
            }
            if (v > 0x10FFFF) jfail(line, "illegal Unicode character in a string escape");
            utf8_append(&o, v);
        };
        switch (c) {
            case 'n': o += '\n'; break;
            case 't': o += '\t'; break;
            case 'r': o += '\r'; break;
            case '\\': o += '\\'; break;
            case '\'': o += '\''; break;
            case '"': o += '"'; break;
            case 'a': o += '\a'; break;
            case 'b': o += '\b'; break;
            case 'f': o += '\f'; break;
            case 'v': o += '\v'; break;
            case '\n': break;  // line continuation
            case 'x': hex(2); break;
            case 'u': hex(4); break;
            case 'U': hex(8); break;
            default:
                if (c >= '0' && c <= '7') {
                    uint32_t v = (uint32_t)(c - '0');
                    for (int k = 0; k < 2 && i + 1 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '7'; k++)
                        v = v * 8 + (uint32_t)(s[++i] - '0');
                    utf8_append(&o, v);
                } else {
                    o += '\\';
                    o += c;
                }
        }
    }
    return o;
}


bool is_ws_py(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

struct scanner {
    std::string        src;
    size_t             p = 0;
    int                line = 1;
    std::vector<chunk> out;

    void advance_to(size_t q) {
        for (size_t k = p; k < q && k < src.size(); k++) line += src[k] == '\n';
        p = q;
    }

    // Tokens of a tag body from p up to its closing delimiter; sets *strip_after / *plus_after.
    std::vector<token> lex_tag(const char* close, bool* strip_after, bool* plus_after, int open_line) {
        std::vector<token> toks;
        int depth = 0;  // brackets: a '}}' inside {...} does not close the tag (jinja2's balancing)
        static const char* ops3[] = {nullptr};
        (void)ops3;
        while (true) {
            while (p < src.size() && is_ws_py(src[p])) advance_to(p + 1);
            if (p >= src.size()) jfail(open_line, strf("unexpected end of template: a tag is not closed with '%s'", close));
            size_t cl = strlen(close);
            if (depth == 0) {
                if (src[p] == '-' && src.compare(p + 1, cl, close) == 0) {
                    *strip_after = true;
                    advance_to(p + 1 + cl);
                    return toks;
                }
                if (src[p] == '+' && src.compare(p + 1, cl, close) == 0) {
                    *plus_after = true;
                    advance_to(p + 1 + cl);
                    return toks;
                }
                if (src.compare(p, cl, close) == 0) {
                    advance_to(p + cl);
                    return toks;
                }
            }
            char c = src[p];
            token t{tk::op, "", 0, 0, line};
            if (isalpha((unsigned char)c) || c == '_') {
                size_t q = p;
                while (q < src.size() && (isalnum((unsigned char)src[q]) || src[q] == '_')) q++;
                t.t = tk::name;
                t.v = src.substr(p, q - p);
                advance_to(q);
            } else if (isdigit((unsigned char)c)) {
                size_t q = p;
                auto digits = [&] {
                    while (q < src.size() && (isdigit((unsigned char)src[q]) || (src[q] == '_' && q + 1 < src.size() &&
                                                                                 isdigit((unsigned char)src[q + 1]))))
                        q++;
                };
                digits();
                bool flt = false;
                if (q + 1 < src.size() && src[q] == '.' && isdigit((unsigned char)src[q + 1])) {
                    q++;
                    digits();
                    flt = true;
                }
                if (q < src.size() && (src[q] == 'e' || src[q] == 'E')) {
                    size_t r = q + 1;
                    if (r < src.size() && (src[r] == '+' || src[r] == '-')) r++;
                    if (r < src.size() && isdigit((unsigned char)src[r])) {
                        q = r;
                        digits();
                        flt = true;
                    }
                }
                std::string num;
                for (size_t k = p; k < q; k++)
                    if (src[k] != '_') num += src[k];
                if (flt) {
                    t.t = tk::number;
                    t.d = std::strtod(num.c_str(), nullptr);
                } else {
                    t.t = tk::integer;
                    errno = 0;
                    long long v = std::strtoll(num.c_str(), nullptr, 10);
                    if (errno == ERANGE) jfail(line, "integer literal too large");
                    t.i = v;
                }
                advance_to(q);
            } else if (c == '\'' || c == '"') {
                size_t q = p + 1;
                while (q < src.size() && src[q] != c) q += src[q] == '\\' ? 2 : 1;
                if (q >= src.size()) jfail(line, "unterminated string literal");
                t.t = tk::str;
                t.v = unescape(src.substr(p + 1, q - p - 1), line);
                advance_to(q + 1);
            } else {
                static const char* two[] = {"//", "**", "==", "!=", "<=", ">="};
                std::string op;
                for (const char* o : two)
                    if (src.compare(p, 2, o) == 0) op = o;
                if (op.empty()) {
                    if (!strchr("+-*/%~<>()[]{},.:|=", c))
                        jfail(line, strf("unexpected character '%c' in a tag", c));
                    op = std::string(1, c);
                }
                if (op == "(" || op == "[" || op == "{") depth++;
                if ((op == ")" || op == "]" || op == "}") && depth > 0) depth--;
                t.v = op;
                advance_to(p + op.size());
            }
            toks.push_back(std::move(t));
        }
    }

    void run() {
        bool strip_next = false;    // previous tag ended with '-': drop the whitespace that follows
        bool trim_next = false;     // previous block tag (trim_blocks): drop one newline that follows
        bool line_starting = true;  // jinja2: the previous match ended a line (for lstrip_blocks)
        while (p <= src.size()) {
            size_t at = std::string::npos;
            for (size_t q = p; q + 1 < src.size(); q++)
                if (src[q] == '{' && (src[q + 1] == '{' || src[q + 1] == '%' || src[q + 1] == '#')) {
                    at = q;
                    break;
                }
            size_t text_end = at == std::string::npos ? src.size() : at;
            std::string text = src.substr(p, text_end - p);
            int text_line = line;
            if (strip_next) {
                size_t k = 0;
                while (k < text.size() && is_ws_py(text[k])) k++;
                text.erase(0, k);
            } else if (trim_next && !text.empty() && text[0] == '\n') {
                text.erase(0, 1);
            }
            char kind = at == std::string::npos ? 0 : src[at + 1];
            char sign = at != std::string::npos && at + 2 < src.size() ? src[at + 2] : 0;
            if (kind) {
                if (sign == '-') {
                    size_t k = text.size();
                    while (k > 0 && is_ws_py(text[k - 1])) k--;
                    text.resize(k);
                } else if (sign != '+' && kind != '{') {  // lstrip_blocks: block and comment tags
                    size_t nlp = text.rfind('\n');
                    size_t l_pos = nlp == std::string::npos ? 0 : nlp + 1;
                    if (l_pos > 0 || (line_starting && nlp == std::string::npos)) {
                        bool ws = true;
                        for (size_t k = l_pos; k < text.size(); k++) ws &= is_ws_py(text[k]);
                        if (ws) text.resize(l_pos);
                    }
                }
            }
            if (!text.empty()) out.push_back({chunk_kind::text, text, {}, text_line});
            advance_to(text_end);
            if (!kind) break;
            int tag_line = line;
            advance_to(at + 2 + ((sign == '-' || sign == '+') ? 1 : 0));
            bool strip_after = false, plus_after = false;
            if (kind == '#') {
                size_t q = src.find("#}", p);
                if (q == std::string::npos) jfail(tag_line, "unexpected end of template: a comment is not closed with '#}'");
                strip_after = q > p && src[q - 1] == '-';
                plus_after = q > p && src[q - 1] == '+';
                advance_to(q + 2);
                trim_next = !strip_after && !plus_after;
            } else if (kind == '{') {
                out.push_back({chunk_kind::output, "", lex_tag("}}", &strip_after, &plus_after, tag_line), tag_line});
                trim_next = false;
            } else {
                std::vector<token> toks = lex_tag("%}", &strip_after, &plus_after, tag_line);
                trim_next = !strip_after && !plus_after;
                if (toks.size() == 1 && toks[0].t == tk::name && toks[0].v == "raw") {
                    raw_block(tag_line, strip_after, &trim_next, &strip_after, &plus_after);
                } else {
                    out.push_back({chunk_kind::stmt, "", std::move(toks), tag_line});
                }
            }
            strip_next = strip_after;
            line_starting = trim_next && p < src.size() && src[p] == '\n';
            if (strip_after) {
                size_t q = p;
                while (q < src.size() && is_ws_py(src[q])) q++;
                line_starting = q > p && src[q - 1] == '\n';
            }
        }
    }

    // {% raw %}...{% endraw %}: the text in between is output as written.
    void raw_block(int tag_line, bool strip_after_open, bool* trim_next, bool* strip_after, bool* plus_after) {
        size_t q = p;
        while (true) {
            q = src.find("{%", q);
            if (q == std::string::npos) jfail(tag_line, "unexpected end of template: {% raw %} without {% endraw %}");
            size_t r = q + 2;
            char sign = r < src.size() ? src[r] : 0;
            if (sign == '-' || sign == '+') r++;
            while (r < src.size() && is_ws_py(src[r])) r++;
            if (src.compare(r, 6, "endraw") == 0) {
                size_t e = r + 6;
                while (e < src.size() && is_ws_py(src[e])) e++;
                bool s_after = false, p_after = false;
                if (e < src.size() && (src[e] == '-' || src[e] == '+')) (src[e] == '-' ? s_after : p_after) = true, e++;
                if (src.compare(e, 2, "%}") != 0) {
                    q += 2;
                    continue;
                }
                std::string text = src.substr(p, q - p);
                if (strip_after_open) {
                    size_t k = 0;
                    while (k < text.size() && is_ws_py(text[k])) k++;
                    text.erase(0, k);
                } else if (*trim_next && !text.empty() && text[0] == '\n') {
                    text.erase(0, 1);
                }
                if (sign == '-') {
                    size_t k = text.size();
                    while (k > 0 && is_ws_py(text[k - 1])) k--;
                    text.resize(k);
                }
                if (!text.empty()) out.push_back({chunk_kind::text, text, {}, line});
                advance_to(e + 2);
                *strip_after = s_after;
                *plus_after = p_after;
                *trim_next = !s_after && !p_after;
                return;
            }
            q += 2;
        }
    }
};

}  // namespace

std::vector<chunk> scan(const std::string& src) {
    scanner sc;
    sc.src = src;
    sc.run();
    return std::move(sc.out);
}

}  // namespace jinja_impl
}  // namespace lisa
