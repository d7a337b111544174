// The parts of the Jinja engine (jinja.h), shared by its files:
//   jinja_values.cpp  Python-like values: construction, truth, text forms, comparisons;
//   jinja_lexer.cpp   the scanner: text and tags, whitespace control as jinja2's lexer applies it;
//   jinja_parser.cpp  tags into a tree of statements and expressions (jinja2's precedence);
//   jinja.cpp         the renderer walking the tree, HF's globals, and the public API.
// Internal to src/template.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "template/jinja.h"

namespace lisa {
namespace jinja_impl {

using json = nlohmann::ordered_json;

// Bounds that keep a hostile template from hanging or exhausting memory.
inline constexpr int    kMaxDepth = 200;                  // nesting of statements / expressions / macro calls
inline constexpr size_t kMaxOutput = 64ull << 20;         // bytes of rendered text (and of any one string)
inline constexpr int64_t kMaxSteps = 2'000'000;           // loop iterations and calls in one render

struct jerror {  // carries the line to where the message is formatted
    int         line;
    std::string msg;
};
[[noreturn]] inline void jfail(int line, const std::string& msg) { throw jerror{line, msg}; }

// ================================================================ values
struct jv;
struct jfunc;
using jlist = std::vector<jv>;
struct jdict {
    std::vector<std::pair<jv, jv>> items;  // insertion order, as Python dicts
};
enum class jk { undef, none, boolean, integer, number, string, list, dict, func, ns };

struct jv {
    jk                     k = jk::undef;
    bool                   b = false;
    int64_t                i = 0;
    double                 d = 0;
    std::string            s;   // string; for undef: what was missing (the error if it is used)
    std::shared_ptr<jlist> l;
    bool                   tuple = false;  // a list that prints as a tuple: (1, 2)
    std::shared_ptr<jdict> m;   // dict, or a namespace's attributes (shared, mutable via set ns.x)
    std::shared_ptr<jfunc> f;
};

struct jcall {
    std::vector<jv>                          args;
    std::vector<std::pair<std::string, jv>>  kwargs;
    int                                      line = 0;
};
struct jfunc {
    std::string                         name;
    std::function<jv(jcall&)>           fn;
};


struct json_fmt {
    int         indent = -1;  // -1: None
    std::string item_sep, key_sep;
    bool        sort_keys = false;
};

jv v_undef(const std::string& name);
jv v_none();
jv v_bool(bool b);
jv v_int(int64_t i);
jv v_num(double d);
jv v_str(std::string s);
jv v_list(jlist l);
jv v_tuple(jlist l);
jv v_dict(jdict d);
jv v_func(std::string name, std::function<jv(jcall&)> fn);
jv from_json(const json& j);
bool truthy(const jv& v);
std::string py_float_repr(double x);
std::string py_str_repr(const std::string& s);
std::string to_str(const jv& v);
std::string repr(const jv& v);
void json_str(std::string* o, const std::string& s);
void to_json(std::string* o, const jv& v, const json_fmt& f, int depth, int line);
bool equal(const jv& a, const jv& b);
int order(const jv& a, const jv& b, const char* op, int line);
std::string str_of(const std::vector<uint32_t>& c, size_t b, size_t e);
size_t cp_len(const std::string& s);
const char* type_name(const jv& v);  // Python's type names, for error messages
bool is_numeric(const jv& v);
double as_double(const jv& v);
int64_t as_int(const jv& v);
bool py_isspace(uint32_t c);
std::vector<uint32_t> cps_of(const std::string& s);

// ================================================================ scanner
enum class tk { name, str, integer, number, op, end };
struct token {
    tk          t;
    std::string v;
    int64_t     i = 0;
    double      d = 0;
    int         line;
};
// One piece of the source: text, or a tag's tokens.
enum class chunk_kind { text, output, stmt };
struct chunk {
    chunk_kind         kind;
    std::string        text;     // text chunks
    std::vector<token> toks;     // tags (without the delimiters)
    int                line;
};

// The source cut into text and tag chunks (jinja_lexer.cpp). Throws jerror.
std::vector<chunk> scan(const std::string& src);

// ================================================================ tree
struct expr;
using expr_p = std::unique_ptr<expr>;
enum class ek {
    literal, name, list, tuple, dict, attr, item, slice, call, filter, test, neg, pos, not_, binop, and_, or_,
    compare, cond, concat
};
struct expr {
    ek                                       k;
    int                                      line;
    jv                                       value;        // literal
    std::string                              name;         // name, attr, filter, test, binop operator
    std::vector<expr_p>                      a;            // operands / arguments / elements
    std::vector<std::pair<std::string, expr_p>> kw;        // keyword arguments; dict items use a (k, v pairs)
    std::vector<std::string>                 ops;          // compare chain operators
    bool                                     negated = false;  // test: is not
};

struct stmt;
using body = std::vector<std::unique_ptr<stmt>>;
enum class sk { text, output, if_, for_, set, set_block, macro, break_, continue_, generation, filter_block };
struct stmt {
    sk                       k;
    int                      line;
    std::string              text;                  // text
    expr_p                   e;                     // output / set value / for iterable
    std::vector<expr_p>      conds;                 // if / elif conditions
    std::vector<body>        bodies;                // if: a body per condition (+ else); for: body (+ else)
    std::vector<std::string> targets;               // for / set names (tuple unpacking), macro name
    std::string              ns_attr;               // set ns.attr = ...
    expr_p                   loop_filter;           // for x in y if cond
    std::vector<std::pair<std::string, expr_p>> params;  // macro parameters and defaults
    std::vector<expr_p>      filters;               // set block / filter block: filter calls on a placeholder
    std::set<std::string>    declared;              // for / macro: names its body assigns directly
};

// The names a template or scope body assigns directly (jinja_parser.cpp).
std::set<std::string> declared_names(const body& b);

// Parses the chunks into a body; sets *has_generation when a {% generation %} block occurs
// (jinja_parser.cpp). Throws jerror.
void parse(std::vector<chunk>& chunks, body* root, bool* has_generation);

}  // namespace jinja_impl

struct jinja_template {
    jinja_impl::body      root;
    std::set<std::string> declared;  // names the top level assigns
    bool                  has_generation = false;
};

}  // namespace lisa
