// Jinja, the subset chat templates use, with jinja2's semantics (see jinja.h): the renderer, which
// walks the parser's tree over Python-like values, HF's globals, and the public API. The scanner,
// parser and values are their own files (jinja_impl.h lists them).
#include "template/jinja.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <ctime>
#include <functional>
#include <map>
#include <set>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "template/jinja_impl.h"
#include "tokenizer/unicode.h"

namespace lisa {
namespace jinja_impl {
namespace {

// ================================================================ renderer
struct loop_ctl {
    enum { none, brk, cont } state = none;
};

struct renderer {
    std::string*                          out;
    std::vector<jinja_span>*              gen;
    struct frame {
        std::map<std::string, jv>    vars;
        const std::set<std::string>* declared = nullptr;  // names this scope assigns somewhere
    };
    std::vector<frame> frames;  // scopes, innermost last; [0] globals and context, [1] the template's
    int64_t                               steps = 0;
    int                                   depth = 0;
    loop_ctl                              ctl;
    int                                   loop_depth = 0;

    void step(int line) {
        if (++steps > kMaxSteps) jfail(line, "template too expensive (over 2 million loop iterations or calls)");
    }
    void emit(const std::string& s, int line) {
        if (out->size() + s.size() > kMaxOutput) jfail(line, "rendered text over 64 MiB");
        *out += s;
    }

    jv lookup(const std::string& name) {
        for (size_t i = frames.size(); i-- > 0;) {
            auto it = frames[i].vars.find(name);
            if (it != frames[i].vars.end()) return it->second;
            if (i + 1 < frames.size() && frames[i].declared && frames[i].declared->count(name))
                break;  // assigned later in an enclosing scope: undefined until then (jinja2)
        }
        return v_undef(strf("'%s' is undefined", name.c_str()));
    }

    [[noreturn]] void undefined_fail(const jv& v, int line) {
        jfail(line, v.s.empty() ? "an undefined value is used" : v.s);
    }

    // ---- attribute and item access (jinja2's sandboxed getattr / getitem)
    jv method(const jv& obj, const std::string& name, int line);
    jv get_attr(const jv& obj, const std::string& name, int line) {
        if (obj.k == jk::undef) undefined_fail(obj, line);
        if (!name.empty() && name[0] == '_')  // jinja2's sandbox: an undefined that fails when used
            return v_undef(strf("access to attribute '%s' of '%s' object is unsafe.", name.c_str(), type_name(obj)));
        if (obj.k == jk::ns) {
            for (const auto& kv : obj.m->items)
                if (kv.first.s == name) return kv.second;
            return v_undef(strf("Namespace object has no attribute '%s'", name.c_str()));
        }
        jv m = method(obj, name, line);
        if (m.k != jk::undef) return m;
        if (obj.k == jk::dict)
            for (const auto& kv : obj.m->items)
                if (kv.first.k == jk::string && kv.first.s == name) return kv.second;
        return v_undef(strf("'%s object' has no attribute '%s'", type_name(obj), name.c_str()));
    }
    jv get_item(const jv& obj, const jv& key, int line) {
        if (obj.k == jk::undef) undefined_fail(obj, line);
        if (obj.k == jk::dict) {
            for (const auto& kv : obj.m->items)
                if (equal(kv.first, key)) return kv.second;
        } else if ((obj.k == jk::list || obj.k == jk::string) && (key.k == jk::integer || key.k == jk::boolean)) {
            int64_t i = as_int(key);
            if (obj.k == jk::list) {
                int64_t n = (int64_t)obj.l->size();
                if (i < 0) i += n;
                if (i >= 0 && i < n) return (*obj.l)[i];
            } else {
                std::vector<uint32_t> c = cps_of(obj.s);
                int64_t n = (int64_t)c.size();
                if (i < 0) i += n;
                if (i >= 0 && i < n) return v_str(str_of(c, i, i + 1));
            }
        } else if (obj.k == jk::ns && key.k == jk::string) {
            return get_attr(obj, key.s, line);
        }
        if (key.k == jk::string && !key.s.empty() && key.s[0] != '_') {  // obj['items'] falls back to the attribute
            jv m = method(obj, key.s, line);
            if (m.k != jk::undef) return m;
        }
        return v_undef(strf("'%s object' has no attribute %s", type_name(obj), repr(key).c_str()));
    }
    jv slice(const jv& obj, const jv& b, const jv& e, const jv& st, int line) {
        auto opt = [&](const jv& v, const char* what) -> std::pair<bool, int64_t> {
            if (v.k == jk::none || v.k == jk::undef) return {false, 0};
            if (v.k != jk::integer && v.k != jk::boolean)
                jfail(line, strf("slice %s must be an integer or None, not %s", what, type_name(v)));
            return {true, as_int(v)};
        };
        auto [hs, step_v] = opt(st, "step");
        int64_t stp = hs ? step_v : 1;
        if (stp == 0) jfail(line, "slice step cannot be zero");
        std::vector<uint32_t> cps;
        int64_t n;
        if (obj.k == jk::list) n = (int64_t)obj.l->size();
        else if (obj.k == jk::string) n = (int64_t)(cps = cps_of(obj.s)).size();
        else if (obj.k == jk::undef) undefined_fail(obj, line);
        else jfail(line, strf("'%s' object is not subscriptable", type_name(obj)));
        auto norm = [&](std::pair<bool, int64_t> v, int64_t def) {
            if (!v.first) return def;
            int64_t x = v.second;
            if (x < 0) x += n;
            if (stp > 0) return std::clamp<int64_t>(x, 0, n);
            return std::clamp<int64_t>(x, -1, n - 1);
        };
        int64_t lo = norm(opt(b, "start"), stp > 0 ? 0 : n - 1), hi = norm(opt(e, "stop"), stp > 0 ? n : -1);
        std::vector<int64_t> idx;
        if (stp > 0)
            for (int64_t i = lo; i < hi; i += stp) idx.push_back(i);
        else
            for (int64_t i = lo; i > hi; i += stp) idx.push_back(i);
        if (obj.k == jk::list) {
            jlist l;
            for (int64_t i : idx) l.push_back((*obj.l)[i]);
            return v_list(std::move(l));
        }
        std::string s;
        for (int64_t i : idx) utf8_append(&s, cps[i]);
        return v_str(s);
    }

    // ---- iteration
    jlist iterate(const jv& v, int line) {
        switch (v.k) {
            case jk::undef: return {};
            case jk::list: return *v.l;
            case jk::dict: {
                jlist keys;
                for (const auto& kv : v.m->items) keys.push_back(kv.first);
                return keys;
            }
            case jk::string: {
                jlist chars;
                std::vector<uint32_t> c = cps_of(v.s);
                for (size_t i = 0; i < c.size(); i++) chars.push_back(v_str(str_of(c, i, i + 1)));
                return chars;
            }
            default: jfail(line, strf("'%s' object is not iterable", type_name(v)));
        }
    }

    // ---- expressions
    jv eval(const expr& e) {
        if (++depth > kMaxDepth * 4) jfail(e.line, "expression nested too deeply");
        struct guard {
            int& d;
            ~guard() { d--; }
        } g{depth};
        switch (e.k) {
            case ek::literal: return e.value;
            case ek::name: return lookup(e.name);
            case ek::list:
            case ek::tuple: {
                jlist l;
                for (const auto& x : e.a) l.push_back(eval(*x));
                return e.k == ek::tuple ? v_tuple(std::move(l)) : v_list(std::move(l));
            }
            case ek::dict: {
                jdict d;
                for (size_t i = 0; i + 1 < e.a.size(); i += 2) {
                    jv k = eval(*e.a[i]);
                    if (k.k == jk::list || k.k == jk::dict || k.k == jk::undef)
                        jfail(e.line, strf("unhashable type: '%s'", type_name(k)));
                    jv v = eval(*e.a[i + 1]);
                    bool replaced = false;
                    for (auto& kv : d.items)
                        if (equal(kv.first, k)) kv.second = v, replaced = true;
                    if (!replaced) d.items.push_back({k, v});
                }
                return v_dict(std::move(d));
            }
            case ek::attr: return get_attr(eval(*e.a[0]), e.name, e.line);
            case ek::item: return get_item(eval(*e.a[0]), eval(*e.a[1]), e.line);
            case ek::slice: {
                jv o = eval(*e.a[0]);
                jv parts[3];
                for (int k = 0; k < 3; k++) parts[k] = e.a[k + 1] ? eval(*e.a[k + 1]) : v_none();
                return slice(o, parts[0], parts[1], parts[2], e.line);
            }
            case ek::call: {
                jv f = eval(*e.a[0]);
                jcall c;
                c.line = e.line;
                for (size_t k = 1; k < e.a.size(); k++) c.args.push_back(eval(*e.a[k]));
                for (const auto& kv : e.kw) c.kwargs.push_back({kv.first, eval(*kv.second)});
                if (f.k == jk::undef) undefined_fail(f, e.line);
                if (f.k != jk::func) jfail(e.line, strf("'%s' object is not callable", type_name(f)));
                step(e.line);
                return f.f->fn(c);
            }
            case ek::filter: {
                jcall c;
                c.line = e.line;
                c.args.push_back(eval(*e.a[0]));
                for (size_t k = 1; k < e.a.size(); k++) c.args.push_back(eval(*e.a[k]));
                for (const auto& kv : e.kw) c.kwargs.push_back({kv.first, eval(*kv.second)});
                return apply_filter(e.name, c);
            }
            case ek::test: {
                jcall c;
                c.line = e.line;
                c.args.push_back(eval(*e.a[0]));
                for (size_t k = 1; k < e.a.size(); k++) c.args.push_back(eval(*e.a[k]));
                bool r = apply_test(e.name, c);
                return v_bool(e.negated ? !r : r);
            }
            case ek::neg:
            case ek::pos: {
                jv v = eval(*e.a[0]);
                if (v.k == jk::undef) undefined_fail(v, e.line);
                if (!is_numeric(v))
                    jfail(e.line, strf("bad operand type for unary %s: '%s'", e.k == ek::neg ? "-" : "+", type_name(v)));
                if (e.k == ek::pos) return v.k == jk::boolean ? v_int(as_int(v)) : v;
                if (v.k == jk::number) return v_num(-v.d);
                return v_int(-as_int(v));
            }
            case ek::not_: return v_bool(!truthy(eval(*e.a[0])));
            case ek::and_: {
                jv l = eval(*e.a[0]);
                return truthy(l) ? eval(*e.a[1]) : l;
            }
            case ek::or_: {
                jv l = eval(*e.a[0]);
                return truthy(l) ? l : eval(*e.a[1]);
            }
            case ek::cond: {
                if (truthy(eval(*e.a[0]))) return eval(*e.a[1]);
                return e.a[2] ? eval(*e.a[2]) : v_undef("");
            }
            case ek::compare: {
                jv l = eval(*e.a[0]);
                for (size_t k = 0; k < e.ops.size(); k++) {
                    jv r = eval(*e.a[k + 1]);
                    if (!compare_op(e.ops[k], l, r, e.line)) return v_bool(false);
                    l = std::move(r);
                }
                return v_bool(true);
            }
            case ek::concat: return v_str(to_str(eval(*e.a[0])) + to_str(eval(*e.a[1])));
            case ek::binop: return arith(e.name, eval(*e.a[0]), eval(*e.a[1]), e.line);
        }
        return v_undef("");
    }

    bool contains(const jv& container, const jv& item, int line) {
        switch (container.k) {
            case jk::string:
                if (item.k != jk::string)
                    jfail(line, strf("'in <string>' requires string as left operand, not %s", type_name(item)));
                return container.s.find(item.s) != std::string::npos;
            case jk::list:
                for (const auto& x : *container.l)
                    if (equal(x, item)) return true;
                return false;
            case jk::dict:
                for (const auto& kv : container.m->items)
                    if (equal(kv.first, item)) return true;
                return false;
            case jk::undef: return false;  // jinja2's Undefined iterates as empty
            default: jfail(line, strf("argument of type '%s' is not iterable", type_name(container)));
        }
    }
    bool compare_op(const std::string& op, const jv& l, const jv& r, int line) {
        if (op == "==") return equal(l, r);
        if (op == "!=") return !equal(l, r);
        if (op == "in") return contains(r, l, line);
        if (op == "notin") return !contains(r, l, line);
        if (l.k == jk::undef) undefined_fail(l, line);
        if (r.k == jk::undef) undefined_fail(r, line);
        int c = order(l, r, op.c_str(), line);
        if (op == "<") return c < 0;
        if (op == ">") return c > 0;
        if (op == "<=") return c <= 0;
        return c >= 0;
    }

    jv arith(const std::string& op, const jv& a, const jv& b, int line) {
        if (a.k == jk::undef) undefined_fail(a, line);
        if (b.k == jk::undef) undefined_fail(b, line);
        auto bad = [&]() -> jv {
            jfail(line, strf("unsupported operand type(s) for %s: '%s' and '%s'", op.c_str(), type_name(a), type_name(b)));
        };
        if (op == "+") {
            if (a.k == jk::string && b.k == jk::string) {
                if (a.s.size() + b.s.size() > kMaxOutput) jfail(line, "string over 64 MiB");
                return v_str(a.s + b.s);
            }
            if (a.k == jk::list && b.k == jk::list) {
                jlist l = *a.l;
                l.insert(l.end(), b.l->begin(), b.l->end());
                return v_list(std::move(l));
            }
            if (a.k == jk::string || b.k == jk::string) {
                if (a.k == jk::string)
                    jfail(line, strf("can only concatenate str (not \"%s\") to str", type_name(b)));
                return bad();
            }
        }
        bool a_seq = a.k == jk::string || a.k == jk::list, b_seq = b.k == jk::string || b.k == jk::list;
        bool a_int = a.k == jk::integer || a.k == jk::boolean, b_int = b.k == jk::integer || b.k == jk::boolean;
        if (op == "*" && ((a_seq && b_int) || (b_seq && a_int))) {
            const jv& seq = a.k == jk::string || a.k == jk::list ? a : b;
            int64_t n = std::max<int64_t>(0, as_int(a.k == jk::string || a.k == jk::list ? b : a));
            size_t unit = seq.k == jk::string ? seq.s.size() : seq.l->size() * 16;
            if (n > 0 && unit > 0 && (uint64_t)n > kMaxOutput / unit) jfail(line, "repetition over 64 MiB");
            if (seq.k == jk::string) {
                std::string s;
                for (int64_t k = 0; k < n; k++) s += seq.s;
                return v_str(s);
            }
            jlist l;
            for (int64_t k = 0; k < n; k++) l.insert(l.end(), seq.l->begin(), seq.l->end());
            return v_list(std::move(l));
        }
        if (op == "%" && a.k == jk::string) return v_str(percent_format(a.s, b, line));
        if (!is_numeric(a) || !is_numeric(b)) return bad();
        bool flt = a.k == jk::number || b.k == jk::number;
        if (op == "/") {
            double y = as_double(b);
            if (y == 0) jfail(line, "division by zero");
            return v_num(as_double(a) / y);
        }
        if (flt) {
            double x = as_double(a), y = as_double(b);
            if (op == "+") return v_num(x + y);
            if (op == "-") return v_num(x - y);
            if (op == "*") return v_num(x * y);
            if (op == "**") return v_num(std::pow(x, y));
            if (y == 0) jfail(line, "float division by zero");
            if (op == "//") return v_num(std::floor(x / y));
            double r = std::fmod(x, y);
            if (r != 0 && ((r < 0) != (y < 0))) r += y;
            if (r == 0) r = std::copysign(0.0, y);  // Python: a zero remainder takes the divisor's sign
            return v_num(r);
        }
        int64_t x = as_int(a), y = as_int(b), r;
        if (op == "+") {
            if (__builtin_add_overflow(x, y, &r)) jfail(line, "integer overflow");
            return v_int(r);
        }
        if (op == "-") {
            if (__builtin_sub_overflow(x, y, &r)) jfail(line, "integer overflow");
            return v_int(r);
        }
        if (op == "*") {
            if (__builtin_mul_overflow(x, y, &r)) jfail(line, "integer overflow");
            return v_int(r);
        }
        if (op == "**") {
            if (y < 0) return v_num(std::pow((double)x, (double)y));
            r = 1;
            for (int64_t k = 0; k < y; k++) {
                if (__builtin_mul_overflow(r, x, &r)) jfail(line, "integer overflow");
                if (r == 0 || r == 1) break;
                if (r == -1) {
                    r = ((y - k - 1) % 2 == 0) ? -1 : 1;
                    break;
                }
            }
            return v_int(r);
        }
        if (y == 0) jfail(line, "integer division or modulo by zero");
        if (x == INT64_MIN && y == -1) jfail(line, "integer overflow");
        int64_t q = x / y, m = x % y;
        if (m != 0 && ((m < 0) != (y < 0))) q--, m += y;
        return op == "//" ? v_int(q) : v_int(m);
    }

    std::string percent_format(const std::string& f, const jv& arg, int line) {
        jlist args = arg.k == jk::list ? *arg.l : jlist{arg};
        size_t ai = 0;
        std::string o;
        for (size_t i = 0; i < f.size(); i++) {
            if (f[i] != '%') {
                o += f[i];
                continue;
            }
            if (++i >= f.size()) jfail(line, "incomplete format");
            char c = f[i];
            if (c == '%') {
                o += '%';
                continue;
            }
            if (ai >= args.size()) jfail(line, "not enough arguments for format string");
            const jv& a = args[ai++];
            if (c == 's') o += to_str(a);
            else if (c == 'r') o += repr(a);
            else if (c == 'd' || c == 'i') {
                if (!is_numeric(a)) jfail(line, strf("%%d format: a real number is required, not %s", type_name(a)));
                o += std::to_string(a.k == jk::number ? (int64_t)a.d : as_int(a));
            } else jfail(line, strf("unsupported format character '%c'", c));
        }
        if (ai < args.size()) jfail(line, "not all arguments converted during string formatting");
        return o;
    }

    // ---- arguments
    static const jv* arg(jcall& c, size_t pos, const char* name) {
        if (pos < c.args.size()) return &c.args[pos];
        for (auto& kv : c.kwargs)
            if (kv.first == name) return &kv.second;
        return nullptr;
    }
    static std::string str_arg(jcall& c, size_t pos, const char* name, const char* fn, const std::string& def = "",
                               bool* given = nullptr) {
        const jv* v = arg(c, pos, name);
        if (given) *given = v && v->k != jk::none;
        if (!v || v->k == jk::none) return def;
        if (v->k != jk::string) jfail(c.line, strf("%s: argument '%s' must be a string, not %s", fn, name, type_name(*v)));
        return v->s;
    }
    static int64_t int_arg(jcall& c, size_t pos, const char* name, const char* fn, int64_t def) {
        const jv* v = arg(c, pos, name);
        if (!v || v->k == jk::none) return def;
        if (v->k != jk::integer && v->k != jk::boolean)
            jfail(c.line, strf("%s: argument '%s' must be an integer, not %s", fn, name, type_name(*v)));
        return as_int(*v);
    }

    // ---- Python string methods
    static std::string strip_chars(const std::string& s, bool left, bool right, const std::string* chars) {
        std::vector<uint32_t> c = cps_of(s), set;
        if (chars) set = cps_of(*chars);
        auto drop = [&](uint32_t x) { return chars ? std::find(set.begin(), set.end(), x) != set.end() : py_isspace(x); };
        size_t b = 0, e = c.size();
        if (left)
            while (b < e && drop(c[b])) b++;
        if (right)
            while (e > b && drop(c[e - 1])) e--;
        return str_of(c, b, e);
    }
    static jv split(const std::string& s, const std::string* sep, int64_t maxsplit, int line) {
        jlist parts;
        if (sep) {
            if (sep->empty()) jfail(line, "split: empty separator");
            size_t p = 0;
            while (maxsplit < 0 || (int64_t)parts.size() < maxsplit) {
                size_t q = s.find(*sep, p);
                if (q == std::string::npos) break;
                parts.push_back(v_str(s.substr(p, q - p)));
                p = q + sep->size();
            }
            parts.push_back(v_str(s.substr(p)));
        } else {  // runs of whitespace, no empty parts
            std::vector<uint32_t> c = cps_of(s);
            size_t i = 0;
            while (true) {
                while (i < c.size() && py_isspace(c[i])) i++;
                if (i == c.size()) break;
                if (maxsplit >= 0 && (int64_t)parts.size() == maxsplit) {  // the rest, as it is
                    parts.push_back(v_str(str_of(c, i, c.size())));
                    break;
                }
                size_t j = i;
                while (j < c.size() && !py_isspace(c[j])) j++;
                parts.push_back(v_str(str_of(c, i, j)));
                i = j;
            }
        }
        return v_list(std::move(parts));
    }
    static std::string case_map(const std::string& s, int mode) {  // 0 lower, 1 upper, 2 title, 3 capitalize
        std::vector<uint32_t> c = cps_of(s);
        bool prev_cased = false;
        for (size_t i = 0; i < c.size(); i++) {
            uint32_t x = c[i];
            bool up = mode == 1 || (mode == 2 && !prev_cased) || (mode == 3 && i == 0);
            uint32_t y = up ? unicode_to_upper(x) : unicode_to_lower(x);
            bool cased = unicode_to_upper(x) != x || unicode_to_lower(x) != x;
            prev_cased = cased;
            c[i] = y;
        }
        return str_of(c, 0, c.size());
    }
    static jv str_method(const jv& self, const std::string& name) {
        const std::string s = self.s;
        auto m = [&](std::function<jv(jcall&)> fn) { return v_func("str." + name, std::move(fn)); };
        if (name == "startswith" || name == "endswith") {
            bool start = name == "startswith";
            return m([s, start, name](jcall& c) {
                const jv* p = arg(c, 0, "prefix");
                if (!p) jfail(c.line, name + "() takes at least 1 argument");
                jlist opts = p->k == jk::list ? *p->l : jlist{*p};
                for (const jv& o : opts) {
                    if (o.k != jk::string) jfail(c.line, name + ": expected a string or a tuple of strings");
                    if (o.s.size() <= s.size() &&
                        (start ? s.compare(0, o.s.size(), o.s) == 0 : s.compare(s.size() - o.s.size(), o.s.size(), o.s) == 0))
                        return v_bool(true);
                }
                return v_bool(false);
            });
        }
        if (name == "strip" || name == "lstrip" || name == "rstrip") {
            bool l = name != "rstrip", r = name != "lstrip";
            return m([s, l, r, name](jcall& c) {
                bool given;
                std::string chars = str_arg(c, 0, "chars", name.c_str(), "", &given);
                return v_str(strip_chars(s, l, r, given ? &chars : nullptr));
            });
        }
        if (name == "split" || name == "rsplit") {
            bool rs = name == "rsplit";
            return m([s, rs](jcall& c) {
                bool given;
                std::string sep = str_arg(c, 0, "sep", "split", "", &given);
                int64_t maxsplit = int_arg(c, 1, "maxsplit", "split", -1);
                if (rs && maxsplit >= 0) jfail(c.line, "rsplit with maxsplit is not supported");
                return split(s, given ? &sep : nullptr, maxsplit, c.line);
            });
        }
        if (name == "splitlines")
            return m([s](jcall&) {
                jlist parts;
                size_t p = 0;
                while (p < s.size()) {
                    size_t q = s.find_first_of("\r\n", p);
                    if (q == std::string::npos) {
                        parts.push_back(v_str(s.substr(p)));
                        break;
                    }
                    parts.push_back(v_str(s.substr(p, q - p)));
                    p = q + ((s[q] == '\r' && q + 1 < s.size() && s[q + 1] == '\n') ? 2 : 1);
                }
                return v_list(std::move(parts));
            });
        if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
            int mode = name == "lower" ? 0 : name == "upper" ? 1 : name == "title" ? 2 : 3;
            return m([s, mode](jcall&) { return v_str(case_map(mode == 3 ? case_map(s, 0) : s, mode)); });
        }
        if (name == "replace")
            return m([s](jcall& c) {
                std::string from = str_arg(c, 0, "old", "replace"), to = str_arg(c, 1, "new", "replace");
                int64_t count = int_arg(c, 2, "count", "replace", -1);
                return v_str(replace(s, from, to, count, c.line));
            });
        if (name == "find" || name == "rfind" || name == "count")
            return m([s, name](jcall& c) {
                std::string sub = str_arg(c, 0, "sub", name.c_str());
                if (name == "count") {
                    if (sub.empty()) return v_int((int64_t)cp_len(s) + 1);
                    int64_t n = 0;
                    for (size_t p = s.find(sub); p != std::string::npos; p = s.find(sub, p + sub.size())) n++;
                    return v_int(n);
                }
                size_t p = name == "find" ? s.find(sub) : s.rfind(sub);
                return v_int(p == std::string::npos ? -1 : (int64_t)cp_len(s.substr(0, p)));
            });
        if (name == "join")
            return m([s](jcall& c) {
                const jv* it = arg(c, 0, "iterable");
                if (!it) jfail(c.line, "join() takes exactly one argument");
                std::string o;
                bool first = true;
                for (const jv& x : renderer::iterate_static(*it, c.line)) {
                    if (x.k != jk::string) jfail(c.line, strf("join: expected str instance, %s found", type_name(x)));
                    o += (first ? "" : s) + x.s;
                    first = false;
                }
                return v_str(o);
            });
        if (name == "isdigit" || name == "isalpha" || name == "isalnum" || name == "isspace" || name == "islower" ||
            name == "isupper")
            return m([s, name](jcall&) {
                std::vector<uint32_t> c = cps_of(s);
                if (c.empty()) return v_bool(false);
                bool cased = false;
                for (uint32_t x : c) {
                    bool ok = true;
                    if (name == "isdigit") ok = x >= '0' && x <= '9';
                    else if (name == "isalpha") ok = unicode_is_alnum(x) && !unicode_is_numeric(x);
                    else if (name == "isalnum") ok = unicode_is_alnum(x);
                    else if (name == "isspace") ok = py_isspace(x);
                    else if (name == "islower") {
                        if (unicode_to_upper(x) != x) cased = true;
                        ok = unicode_to_lower(x) == x;
                    } else {
                        if (unicode_to_lower(x) != x) cased = true;
                        ok = unicode_to_upper(x) == x;
                    }
                    if (!ok) return v_bool(false);
                }
                return v_bool(name == "islower" || name == "isupper" ? cased : true);
            });
        return v_undef("");
    }
    static std::string replace(const std::string& s, const std::string& from, const std::string& to, int64_t count,
                               int line) {
        std::string o;
        if (from.empty()) {  // Python inserts `to` between characters
            std::vector<uint32_t> c = cps_of(s);
            int64_t n = 0;
            for (size_t i = 0; i <= c.size(); i++) {
                if (count < 0 || n < count) o += to, n++;
                if (i < c.size()) utf8_append(&o, c[i]);
                if (o.size() > kMaxOutput) jfail(line, "string over 64 MiB");
            }
            return o;
        }
        size_t p = 0;
        int64_t n = 0;
        while (count < 0 || n < count) {
            size_t q = s.find(from, p);
            if (q == std::string::npos) break;
            o.append(s, p, q - p);
            o += to;
            if (o.size() > kMaxOutput) jfail(line, "string over 64 MiB");
            p = q + from.size();
            n++;
        }
        o.append(s, p, std::string::npos);
        return o;
    }
    static jlist iterate_static(const jv& v, int line) {
        renderer r{};
        return r.iterate(v, line);
    }

    // ---- filters (jinja2's builtins, and HF's tojson)
    jv apply_filter(const std::string& name, jcall& c) {
        const jv& v = c.args[0];
        auto need_str = [&]() -> const std::string& {
            if (v.k == jk::undef) undefined_fail(v, c.line);
            return v.s;
        };
        auto shift = [&]() {  // the filter's own arguments start after the value
            jcall d = c;
            d.args.erase(d.args.begin());
            return d;
        };
        if (name == "trim") {
            jcall d = shift();
            bool given;
            std::string chars = str_arg(d, 0, "chars", "trim", "", &given);
            return v_str(strip_chars(to_str(v), true, true, given ? &chars : nullptr));
        }
        if (name == "length" || name == "count") {
            switch (v.k) {
                case jk::string: return v_int((int64_t)cp_len(v.s));
                case jk::list: return v_int((int64_t)v.l->size());
                case jk::dict: return v_int((int64_t)v.m->items.size());
                case jk::undef: return v_int(0);
                default: jfail(c.line, strf("object of type '%s' has no len()", type_name(v)));
            }
        }
        if (name == "tojson") {
            jcall d = shift();
            json_fmt f;
            const jv* ind = arg(d, 0, "indent");
            if (ind && ind->k != jk::none) {
                if (ind->k != jk::integer) jfail(c.line, "tojson: indent must be an integer");
                f.indent = (int)std::clamp<int64_t>(ind->i, 0, 64);
            }
            f.item_sep = f.indent >= 0 ? "," : ", ";
            f.key_sep = ": ";
            const jv* seps = arg(d, 2, "separators");
            if (seps && seps->k == jk::list && seps->l->size() == 2 && (*seps->l)[0].k == jk::string &&
                (*seps->l)[1].k == jk::string) {
                f.item_sep = (*seps->l)[0].s;
                f.key_sep = (*seps->l)[1].s;
            }
            const jv* ea = arg(d, 1, "ensure_ascii");
            if (ea && truthy(*ea)) jfail(c.line, "tojson: ensure_ascii=True is not supported");
            const jv* sk = arg(d, 3, "sort_keys");
            f.sort_keys = sk && truthy(*sk);
            std::string o;
            to_json(&o, v, f, 0, c.line);
            return v_str(o);
        }
        if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
            int mode = name == "lower" ? 0 : name == "upper" ? 1 : name == "title" ? 2 : 3;
            std::string s = to_str(v);
            return v_str(case_map(mode == 3 ? case_map(s, 0) : s, mode));
        }
        if (name == "string") return v_str(to_str(v));
        if (name == "default" || name == "d") {
            jcall d = shift();
            const jv* def = arg(d, 0, "default_value");
            const jv* b = arg(d, 1, "boolean");
            bool use = v.k == jk::undef || (b && truthy(*b) && !truthy(v));
            return use ? (def ? *def : v_str("")) : v;
        }
        if (name == "first" || name == "last") {
            jlist l = iterate(v, c.line);
            if (l.empty()) return v_undef("No first item, sequence was empty.");
            return name == "first" ? l.front() : l.back();
        }
        if (name == "join") {
            jcall d = shift();
            std::string sep = str_arg(d, 0, "d", "join");
            bool has_attr;
            std::string attr = str_arg(d, 1, "attribute", "join", "", &has_attr);
            std::string o;
            bool first = true;
            for (const jv& x : iterate(v, c.line)) {
                o += (first ? "" : sep) + to_str(has_attr ? get_attr(x, attr, c.line) : x);
                first = false;
                if (o.size() > kMaxOutput) jfail(c.line, "string over 64 MiB");
            }
            return v_str(o);
        }
        if (name == "list") return v_list(iterate(v, c.line));
        if (name == "reverse") {
            if (v.k == jk::string) {
                std::vector<uint32_t> cp = cps_of(v.s);
                std::reverse(cp.begin(), cp.end());
                return v_str(str_of(cp, 0, cp.size()));
            }
            jlist l = iterate(v, c.line);
            std::reverse(l.begin(), l.end());
            return v_list(std::move(l));
        }
        if (name == "items") {
            if (v.k == jk::undef) return v_list({});
            if (v.k != jk::dict) jfail(c.line, "items: expected a mapping");
            jlist l;
            for (const auto& kv : v.m->items) l.push_back(v_tuple({kv.first, kv.second}));
            return v_list(std::move(l));
        }
        if (name == "dictsort") {
            if (v.k != jk::dict) jfail(c.line, "dictsort: expected a mapping");
            jlist l;
            for (const auto& kv : v.m->items) l.push_back(v_tuple({kv.first, kv.second}));
            std::stable_sort(l.begin(), l.end(), [&](const jv& a, const jv& b) {
                jv ka = (*a.l)[0], kb = (*b.l)[0];
                if (ka.k == jk::string) ka.s = case_map(ka.s, 0);
                if (kb.k == jk::string) kb.s = case_map(kb.s, 0);
                return order(ka, kb, "<", c.line) < 0;
            });
            return v_list(std::move(l));
        }
        if (name == "sort") {
            jcall d = shift();
            const jv* rev = arg(d, 0, "reverse");
            const jv* cs = arg(d, 1, "case_sensitive");
            bool has_attr;
            std::string attr = str_arg(d, 2, "attribute", "sort", "", &has_attr);
            jlist l = iterate(v, c.line);
            auto key = [&](const jv& x) {
                jv k = has_attr ? get_attr(x, attr, c.line) : x;
                if (k.k == jk::string && !(cs && truthy(*cs))) k.s = case_map(k.s, 0);
                return k;
            };
            std::stable_sort(l.begin(), l.end(), [&](const jv& a, const jv& b) {
                int o = order(key(a), key(b), "<", c.line);
                return rev && truthy(*rev) ? o > 0 : o < 0;
            });
            return v_list(std::move(l));
        }
        if (name == "unique") {
            jlist out;
            for (const jv& x : iterate(v, c.line)) {
                bool seen = false;
                for (const jv& y : out) {
                    jv a = x, b = y;
                    if (a.k == jk::string) a.s = case_map(a.s, 0);
                    if (b.k == jk::string) b.s = case_map(b.s, 0);
                    if (equal(a, b)) seen = true;
                }
                if (!seen) out.push_back(x);
            }
            return v_list(std::move(out));
        }
        if (name == "map" || name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
            jcall d = shift();
            jlist out;
            jlist in = iterate(v, c.line);
            if (name == "map") {
                bool has_attr = false;
                for (auto& kv : d.kwargs)
                    if (kv.first == "attribute") has_attr = true;
                if (has_attr) {
                    std::string attr = str_arg(d, 99, "attribute", "map");
                    const jv* def = arg(d, 99, "default");
                    for (const jv& x : in) {
                        jv y = attr.find('.') == std::string::npos ? get_attr(x, attr, c.line) : dotted(x, attr, c.line);
                        out.push_back(y.k == jk::undef && def ? *def : y);
                    }
                } else {
                    if (d.args.empty() || d.args[0].k != jk::string) jfail(c.line, "map: expected a filter name or attribute=");
                    std::string fname = d.args[0].s;
                    for (const jv& x : in) {
                        jcall e = d;
                        e.args[0] = x;
                        out.push_back(apply_filter(fname, e));
                    }
                }
                return v_list(std::move(out));
            }
            bool attr_mode = name == "selectattr" || name == "rejectattr";
            bool want = name == "select" || name == "selectattr";
            size_t ti = attr_mode ? 1 : 0;
            for (const jv& x : in) {
                jv subject = attr_mode ? dotted(x, d.args.empty() ? "" : to_str(d.args[0]), c.line) : x;
                bool r;
                if (d.args.size() > ti) {
                    jcall t;
                    t.line = c.line;
                    t.args.push_back(subject);
                    t.args.insert(t.args.end(), d.args.begin() + ti + 1, d.args.end());
                    r = apply_test(to_str(d.args[ti]), t);
                } else {
                    r = truthy(subject);
                }
                if (r == want) out.push_back(x);
            }
            return v_list(std::move(out));
        }
        if (name == "int") {
            jcall d = shift();
            const jv* def = arg(d, 0, "default");
            if (v.k == jk::integer || v.k == jk::boolean) return v_int(as_int(v));
            if (v.k == jk::number) return v_int((int64_t)v.d);
            if (v.k == jk::string) {
                char* end = nullptr;
                std::string t = strip_chars(v.s, true, true, nullptr);
                long long x = std::strtoll(t.c_str(), &end, 10);
                if (!t.empty() && end && *end == 0) return v_int(x);
                double f = std::strtod(t.c_str(), &end);
                if (!t.empty() && end && *end == 0) return v_int((int64_t)f);
            }
            return def ? *def : v_int(0);
        }
        if (name == "float") {
            if (is_numeric(v)) return v_num(as_double(v));
            if (v.k == jk::string) {
                char* end = nullptr;
                std::string t = strip_chars(v.s, true, true, nullptr);
                double f = std::strtod(t.c_str(), &end);
                if (!t.empty() && end && *end == 0) return v_num(f);
            }
            return v_num(0);
        }
        if (name == "abs") {
            if (v.k == jk::number) return v_num(std::fabs(v.d));
            if (is_numeric(v)) return v_int(std::llabs(as_int(v)));
            jfail(c.line, strf("bad operand type for abs(): '%s'", type_name(v)));
        }
        if (name == "replace") {
            jcall d = shift();
            return v_str(replace(to_str(v), str_arg(d, 0, "old", "replace"), str_arg(d, 1, "new", "replace"),
                                 int_arg(d, 2, "count", "replace", -1), c.line));
        }
        if (name == "indent") {
            jcall d = shift();
            const jv* w = arg(d, 0, "width");
            std::string pad = w && w->k == jk::string ? w->s : std::string((size_t)std::clamp<int64_t>(w ? as_int(*w) : 4, 0, 256), ' ');
            const jv* f = arg(d, 1, "first");
            const jv* bl = arg(d, 2, "blank");
            std::string s = to_str(v), o;
            size_t p = 0;
            bool first_line = true;
            while (true) {
                size_t q = s.find('\n', p);
                std::string ln = s.substr(p, q == std::string::npos ? std::string::npos : q - p);
                bool indent = first_line ? (f && truthy(*f)) : (!ln.empty() || (bl && truthy(*bl)));
                o += (indent ? pad : "") + ln;
                if (q == std::string::npos) break;
                o += "\n";
                p = q + 1;
                first_line = false;
            }
            return v_str(o);
        }
        if (name == "wordcount") return v_int((int64_t)split(to_str(v), nullptr, -1, c.line).l->size());
        if (name == "safe" || name == "e" || name == "escape" || name == "forceescape") {
            if (name != "safe") jfail(c.line, strf("filter '%s' is not supported in chat templates", name.c_str()));
            return v;
        }
        if (name == "round") {
            jcall d = shift();
            int64_t prec = int_arg(d, 0, "precision", "round", 0);
            std::string method = str_arg(d, 1, "method", "round", "common");
            double x = as_double(v), p = std::pow(10.0, (double)prec);
            double r = method == "floor" ? std::floor(x * p) / p : method == "ceil" ? std::ceil(x * p) / p
                                                                                     : std::round(x * p) / p;
            return v_num(r);
        }
        (void)need_str;
        jfail(c.line, strf("no filter named '%s'", name.c_str()));
    }
    jv dotted(const jv& x, const std::string& path, int line) {
        jv cur = x;
        size_t p = 0;
        while (true) {
            size_t q = path.find('.', p);
            std::string part = path.substr(p, q == std::string::npos ? std::string::npos : q - p);
            bool digits = !part.empty() && std::all_of(part.begin(), part.end(), [](char ch) { return isdigit((unsigned char)ch); });
            cur = digits ? get_item(cur, v_int(std::atoll(part.c_str())), line) : get_attr(cur, part, line);
            if (q == std::string::npos || cur.k == jk::undef) return cur;
            p = q + 1;
        }
    }

    // ---- tests
    bool apply_test(const std::string& name, jcall& c) {
        const jv& v = c.args[0];
        auto other = [&]() -> const jv& {
            if (c.args.size() < 2) jfail(c.line, strf("test '%s' needs an argument", name.c_str()));
            return c.args[1];
        };
        static const char* unary[] = {"defined", "undefined", "none", "string", "number", "integer", "float", "boolean",
                                      "true", "false", "mapping", "sequence", "iterable", "callable", "odd", "even",
                                      "lower", "upper"};
        for (const char* u : unary)
            if (name == u && c.args.size() > 1)
                jfail(c.line, strf("test_%s() takes 1 positional argument but %zu were given", name.c_str(), c.args.size()));
        if (name == "defined") return v.k != jk::undef;
        if (name == "undefined") return v.k == jk::undef;
        if (name == "none") return v.k == jk::none;
        if (name == "string") return v.k == jk::string;
        if (name == "number") return v.k == jk::integer || v.k == jk::number || v.k == jk::boolean;
        if (name == "integer") return v.k == jk::integer;
        if (name == "float") return v.k == jk::number;
        if (name == "boolean") return v.k == jk::boolean;
        if (name == "true") return v.k == jk::boolean && v.b;
        if (name == "false") return v.k == jk::boolean && !v.b;
        if (name == "mapping") return v.k == jk::dict;
        if (name == "sequence") return v.k == jk::list || v.k == jk::string || v.k == jk::dict;
        if (name == "iterable") return v.k == jk::list || v.k == jk::string || v.k == jk::dict || v.k == jk::undef;
        if (name == "callable") return v.k == jk::func;
        if (name == "odd" || name == "even") {
            if (v.k != jk::integer && v.k != jk::boolean) jfail(c.line, strf("test '%s' needs an integer", name.c_str()));
            int64_t x = as_int(v);
            return (name == "odd") == (((x % 2) + 2) % 2 == 1);
        }
        if (name == "divisibleby") {
            int64_t y = as_int(other());
            if (y == 0) jfail(c.line, "divisibleby 0");
            return as_int(v) % y == 0;
        }
        if (name == "eq" || name == "equalto" || name == "==") return equal(v, other());
        if (name == "ne" || name == "!=") return !equal(v, other());
        if (name == "lt" || name == "lessthan" || name == "<") return compare_op("<", v, other(), c.line);
        if (name == "le" || name == "<=") return compare_op("<=", v, other(), c.line);
        if (name == "gt" || name == "greaterthan" || name == ">") return compare_op(">", v, other(), c.line);
        if (name == "ge" || name == ">=") return compare_op(">=", v, other(), c.line);
        if (name == "in") return contains(other(), v, c.line);
        if (name == "sameas") {
            const jv& o = other();
            if (v.k != o.k) return false;
            if (v.k == jk::none || v.k == jk::undef) return true;
            if (v.k == jk::boolean) return v.b == o.b;
            return equal(v, o) && (v.k == jk::integer || v.k == jk::string ? true : v.l == o.l && v.m == o.m);
        }
        if (name == "lower" || name == "upper") {
            std::string s = to_str(v);
            return case_map(s, name == "lower" ? 0 : 1) == s;
        }
        jfail(c.line, strf("no test named '%s'", name.c_str()));
    }

    // ---- statements
    void assign(const stmt& s, const jv& v) {
        if (!s.ns_attr.empty()) {
            jv ns = lookup(s.targets[0]);
            if (ns.k != jk::ns)
                jfail(s.line, strf("cannot assign attribute on non-namespace object '%s'", s.targets[0].c_str()));
            for (auto& kv : ns.m->items)
                if (kv.first.s == s.ns_attr) {
                    kv.second = v;
                    return;
                }
            ns.m->items.push_back({v_str(s.ns_attr), v});
            return;
        }
        if (s.targets.size() == 1) {
            frames.back().vars[s.targets[0]] = v;
            return;
        }
        jlist parts = iterate(v, s.line);
        if (parts.size() != s.targets.size())
            jfail(s.line, strf("cannot unpack %zu values into %zu names", parts.size(), s.targets.size()));
        for (size_t k = 0; k < parts.size(); k++) frames.back().vars[s.targets[k]] = parts[k];
    }

    std::string capture(const body& b) {
        std::string* saved = out;
        std::string buf;
        out = &buf;
        std::vector<jinja_span>* saved_gen = gen;
        std::vector<jinja_span> inner;
        gen = saved_gen ? &inner : nullptr;
        try {
            exec(b);
        } catch (...) {
            out = saved;
            gen = saved_gen;
            throw;
        }
        out = saved;
        gen = saved_gen;
        return buf;
    }
    jv apply_filters(const std::vector<expr_p>& filters, jv v) {
        for (const auto& f : filters) {
            jcall c;
            c.line = f->line;
            c.args.push_back(v);
            for (size_t k = 1; k < f->a.size(); k++) c.args.push_back(eval(*f->a[k]));
            for (const auto& kv : f->kw) c.kwargs.push_back({kv.first, eval(*kv.second)});
            v = apply_filter(f->name, c);
        }
        return v;
    }

    void exec(const body& b) {
        for (const auto& s : b) {
            if (ctl.state != loop_ctl::none) return;
            exec_one(*s);
        }
    }
    void exec_one(const stmt& s) {
        switch (s.k) {
            case sk::text: emit(s.text, s.line); return;
            case sk::output: emit(to_str(eval(*s.e)), s.line); return;
            case sk::if_:
                for (size_t k = 0; k < s.conds.size(); k++)
                    if (truthy(eval(*s.conds[k]))) return exec(s.bodies[k]);
                if (s.bodies.size() > s.conds.size()) exec(s.bodies.back());
                return;
            case sk::for_: return exec_for(s);
            case sk::set: return assign(s, eval(*s.e));
            case sk::set_block: {
                jv v = v_str(capture(s.bodies[0]));
                v = apply_filters(s.filters, v);
                frames.back().vars[s.targets[0]] = v;
                return;
            }
            case sk::filter_block: emit(to_str(apply_filters(s.filters, v_str(capture(s.bodies[0])))), s.line); return;
            case sk::macro: define_macro(s); return;
            case sk::break_:
            case sk::continue_:
                if (loop_depth == 0) jfail(s.line, strf("'%s' outside a for loop", s.k == sk::break_ ? "break" : "continue"));
                ctl.state = s.k == sk::break_ ? loop_ctl::brk : loop_ctl::cont;
                return;
            case sk::generation: {
                size_t begin = out->size();
                exec(s.bodies[0]);
                if (gen) gen->push_back({begin, out->size()});
                return;
            }
        }
    }

    void exec_for(const stmt& s) {
        jlist items = iterate(eval(*s.e), s.line);
        if (s.loop_filter) {  // 'for x in y if c': filtered before loop.length is known
            jlist kept;
            for (const jv& it : items) {
                frames.push_back({{}, &s.declared});
                bind_targets(s, it);
                bool keep = truthy(eval(*s.loop_filter));
                frames.pop_back();
                if (keep) kept.push_back(it);
            }
            items = std::move(kept);
        }
        if (items.empty()) {
            if (s.bodies.size() > 1) exec(s.bodies[1]);
            return;
        }
        loop_depth++;
        int64_t n = (int64_t)items.size();
        for (int64_t i = 0; i < n; i++) {
            step(s.line);
            frames.push_back({{}, &s.declared});
            jdict loop;
            auto put = [&](const char* k, jv v) { loop.items.push_back({v_str(k), std::move(v)}); };
            put("index", v_int(i + 1));
            put("index0", v_int(i));
            put("revindex", v_int(n - i));
            put("revindex0", v_int(n - i - 1));
            put("first", v_bool(i == 0));
            put("last", v_bool(i == n - 1));
            put("length", v_int(n));
            put("depth", v_int(1));
            put("depth0", v_int(0));
            if (i > 0) put("previtem", items[i - 1]);
            if (i + 1 < n) put("nextitem", items[i + 1]);
            put("cycle", v_func("loop.cycle", [i](jcall& c) {
                    if (c.args.empty()) jfail(c.line, "no items for cycling given");
                    return c.args[(size_t)i % c.args.size()];
                }));
            jv lv = v_dict(std::move(loop));
            frames.back().vars["loop"] = lv;
            bind_targets(s, items[i]);
            try {
                exec(s.bodies[0]);
            } catch (...) {
                frames.pop_back();
                loop_depth--;
                throw;
            }
            frames.pop_back();
            if (ctl.state == loop_ctl::brk) {
                ctl.state = loop_ctl::none;
                break;
            }
            ctl.state = loop_ctl::none;
        }
        loop_depth--;
    }
    void bind_targets(const stmt& s, const jv& item) {
        if (s.targets.size() == 1) {
            frames.back().vars[s.targets[0]] = item;
            return;
        }
        jlist parts = iterate(item, s.line);
        if (parts.size() != s.targets.size())
            jfail(s.line, strf("cannot unpack %zu values into %zu loop variables", parts.size(), s.targets.size()));
        for (size_t k = 0; k < parts.size(); k++) frames.back().vars[s.targets[k]] = parts[k];
    }

    void define_macro(const stmt& s) {
        const stmt* def = &s;
        frames.back().vars[s.targets[0]] = v_func(s.targets[0], [this, def](jcall& c) {
            if (++depth > kMaxDepth) jfail(c.line, "macro calls nested too deeply");
            struct guard {
                int& d;
                ~guard() { d--; }
            } g{depth};
            if (c.args.size() > def->params.size())
                jfail(c.line, strf("macro '%s' takes not more than %zu argument(s)", def->targets[0].c_str(), def->params.size()));
            std::map<std::string, jv> local;
            for (size_t k = 0; k < def->params.size(); k++) {
                const auto& [pname, pdef] = def->params[k];
                if (k < c.args.size()) local[pname] = c.args[k];
                else {
                    bool found = false;
                    for (auto& kv : c.kwargs)
                        if (kv.first == pname) local[pname] = kv.second, found = true;
                    if (!found) local[pname] = pdef ? eval(*pdef) : v_undef(strf("'%s' is undefined", pname.c_str()));
                }
            }
            for (auto& kv : c.kwargs) {
                bool known = false;
                for (const auto& p : def->params) known |= p.first == kv.first;
                if (!known) jfail(c.line, strf("macro '%s' has no argument '%s'", def->targets[0].c_str(), kv.first.c_str()));
            }
            // a macro sees the template's variables and its own arguments, not the caller's locals
            std::vector<frame> saved;
            saved.swap(frames);
            frames.push_back(saved[0]);
            if (saved.size() > 1) frames.push_back(saved[1]);
            frames.push_back({std::move(local), &def->declared});
            loop_ctl saved_ctl = ctl;
            int saved_loop = loop_depth;
            loop_depth = 0;
            std::string text;
            try {
                text = capture(def->bodies[0]);
            } catch (...) {
                frames.swap(saved);
                throw;
            }
            frames.swap(saved);
            ctl = saved_ctl;
            loop_depth = saved_loop;
            return v_str(text);
        });
    }
};

jv renderer::method(const jv& obj, const std::string& name, int line) {
    static const char* mutating[] = {"append", "pop", "insert", "extend", "remove", "clear", "update", "setdefault",
                                     "popitem", "sort", "reverse"};
    if (obj.k == jk::list || obj.k == jk::dict)
        for (const char* m : mutating)
            if (name == m)
                jfail(line, strf("access to attribute '%s' of '%s' object is unsafe.", name.c_str(), type_name(obj)));
    if (obj.k == jk::string) return str_method(obj, name);
    if (obj.k == jk::dict) {
        std::shared_ptr<jdict> d = obj.m;
        if (name == "items")
            return v_func("dict.items", [d](jcall&) {
                jlist l;
                for (const auto& kv : d->items) l.push_back(v_tuple({kv.first, kv.second}));
                return v_list(std::move(l));
            });
        if (name == "keys" || name == "values")
            return v_func("dict." + name, [d, name](jcall&) {
                jlist l;
                for (const auto& kv : d->items) l.push_back(name == "keys" ? kv.first : kv.second);
                return v_list(std::move(l));
            });
        if (name == "get")
            return v_func("dict.get", [d](jcall& c) {
                const jv* k = arg(c, 0, "key");
                if (!k) jfail(c.line, "get expected at least 1 argument");
                for (const auto& kv : d->items)
                    if (equal(kv.first, *k)) return kv.second;
                const jv* def = arg(c, 1, "default");
                return def ? *def : v_none();
            });
    }
    return v_undef("");
}

// The globals HF's environment has: jinja2's range, namespace, dict, and HF's raise_exception
// and strftime_now.
void add_globals(std::map<std::string, jv>* g, std::vector<std::weak_ptr<jdict>>* namespaces) {
    (*g)["range"] = v_func("range", [](jcall& c) {
        if (c.args.empty() || c.args.size() > 3) jfail(c.line, "range expected 1 to 3 arguments");
        for (const jv& a : c.args)
            if (a.k != jk::integer && a.k != jk::boolean)
                jfail(c.line, strf("range: '%s' object cannot be interpreted as an integer", type_name(a)));
        int64_t b = 0, e, st = 1;
        if (c.args.size() == 1) e = as_int(c.args[0]);
        else {
            b = as_int(c.args[0]);
            e = as_int(c.args[1]);
            if (c.args.size() == 3) st = as_int(c.args[2]);
        }
        if (st == 0) jfail(c.line, "range() arg 3 must not be zero");
        jlist l;
        for (int64_t i = b; st > 0 ? i < e : i > e; i += st) {
            if (l.size() >= 1'000'000) jfail(c.line, "range() of over a million items");
            l.push_back(v_int(i));
        }
        return v_list(std::move(l));
    });
    (*g)["namespace"] = v_func("namespace", [namespaces](jcall& c) {
        jv ns;
        ns.k = jk::ns;
        ns.m = std::make_shared<jdict>();
        namespaces->push_back(ns.m);  // emptied when the render ends (see namespace_reaper)
        for (const jv& a : c.args) {  // namespace({...}) copies a mapping
            if (a.k != jk::dict) jfail(c.line, "namespace() takes a mapping or keyword arguments");
            for (const auto& kv : a.m->items) ns.m->items.push_back(kv);
        }
        for (auto& kv : c.kwargs) ns.m->items.push_back({v_str(kv.first), kv.second});
        return ns;
    });
    (*g)["dict"] = v_func("dict", [](jcall& c) {
        jdict d;
        for (const jv& a : c.args) {
            if (a.k != jk::dict) jfail(c.line, "dict() takes a mapping or keyword arguments");
            d.items = a.m->items;
        }
        for (auto& kv : c.kwargs) d.items.push_back({v_str(kv.first), kv.second});
        return v_dict(std::move(d));
    });
    (*g)["raise_exception"] = v_func("raise_exception", [](jcall& c) -> jv {
        jfail(c.line, "raise_exception: " + (c.args.empty() ? std::string() : to_str(c.args[0])));
    });
    (*g)["strftime_now"] = v_func("strftime_now", [](jcall& c) {
        std::string f = renderer::str_arg(c, 0, "format", "strftime_now");
        std::time_t now = std::time(nullptr);
        std::tm tm{};
        localtime_r(&now, &tm);
        char buf[512];
        size_t n = f.empty() ? 0 : std::strftime(buf, sizeof buf, f.c_str(), &tm);
        if (!f.empty() && n == 0) jfail(c.line, "strftime_now: format too long");
        return v_str(std::string(buf, n));
    });
}

std::string message_of(const jerror& e) { return strf("chat template line %d: %s", e.line, e.msg.c_str()); }

}  // namespace
}  // namespace jinja_impl

using namespace jinja_impl;

std::shared_ptr<const jinja_template> jinja_parse(const std::string& source) {
    // jinja2 reads newlines as \n and drops one trailing newline (keep_trailing_newline=False)
    std::string src;
    src.reserve(source.size());
    for (size_t i = 0; i < source.size(); i++) {
        if (source[i] == '\r') {
            src += '\n';
            if (i + 1 < source.size() && source[i + 1] == '\n') i++;
        } else {
            src += source[i];
        }
    }
    if (!src.empty() && src.back() == '\n') src.pop_back();
    try {
        std::vector<chunk> chunks = scan(utf8_lossy(src));
        auto t = std::make_shared<jinja_template>();
        parse(chunks, &t->root, &t->has_generation);
        t->declared = declared_names(t->root);
        return t;
    } catch (const jerror& e) {
        fail(message_of(e));
    }
}

std::string jinja_render(const jinja_template& t, const json& context, std::vector<jinja_span>* generation) {
    std::string out;
    // Namespaces are the one mutable value: `set ns.x = ns` (or a list holding ns) makes a cycle of
    // shared pointers. When the render ends, after the renderer's own values are gone, every
    // namespace still alive is emptied, which breaks any cycle (nothing outlives a render).
    struct namespace_reaper {
        std::vector<std::weak_ptr<jdict>> made;
        ~namespace_reaper() {
            for (auto& w : made)
                if (auto d = w.lock()) d->items.clear();
        }
    } reaper;
    renderer r;
    r.out = &out;
    r.gen = generation;
    r.frames.emplace_back();
    add_globals(&r.frames[0].vars, &reaper.made);
    if (context.is_object())
        for (auto it = context.begin(); it != context.end(); ++it) r.frames[0].vars[it.key()] = from_json(it.value());
    r.frames.push_back({{}, &t.declared});  // the template's own variables (set at top level)
    try {
        r.exec(t.root);
    } catch (const jerror& e) {
        fail(message_of(e));
    }
    return out;
}

bool jinja_has_generation(const jinja_template& t) { return t.has_generation; }

}  // namespace lisa
