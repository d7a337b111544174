// Python-like values of the Jinja engine: construction, truth, text forms (str, repr, tojson),
// comparisons and code point helpers. jinja_impl.h.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "template/jinja_impl.h"
#include "tokenizer/unicode.h"

namespace lisa {
namespace jinja_impl {

jv v_undef(const std::string& name) {
    jv v;
    v.s = name;
    return v;
}
jv v_none() {
    jv v;
    v.k = jk::none;
    return v;
}
jv v_bool(bool b) {
    jv v;
    v.k = jk::boolean;
    v.b = b;
    return v;
}
jv v_int(int64_t i) {
    jv v;
    v.k = jk::integer;
    v.i = i;
    return v;
}
jv v_num(double d) {
    jv v;
    v.k = jk::number;
    v.d = d;
    return v;
}
jv v_str(std::string s) {
    jv v;
    v.k = jk::string;
    v.s = std::move(s);
    return v;
}
jv v_list(jlist l) {
    jv v;
    v.k = jk::list;
    v.l = std::make_shared<jlist>(std::move(l));
    return v;
}
jv v_tuple(jlist l) {
    jv v;
    v.k = jk::list;
    v.tuple = true;
    v.l = std::make_shared<jlist>(std::move(l));
    return v;
}
jv v_dict(jdict d) {
    jv v;
    v.k = jk::dict;
    v.m = std::make_shared<jdict>(std::move(d));
    return v;
}
jv v_func(std::string name, std::function<jv(jcall&)> fn) {
    jv v;
    v.k = jk::func;
    v.f = std::make_shared<jfunc>(jfunc{std::move(name), std::move(fn)});
    return v;
}

jv from_json(const json& j) {
    switch (j.type()) {
        case json::value_t::null: return v_none();
        case json::value_t::boolean: return v_bool(j.get<bool>());
        case json::value_t::number_integer: return v_int(j.get<int64_t>());
        case json::value_t::number_unsigned: {
            uint64_t u = j.get<uint64_t>();
            return u > (uint64_t)INT64_MAX ? v_num((double)u) : v_int((int64_t)u);
        }
        case json::value_t::number_float: return v_num(j.get<double>());
        case json::value_t::string: return v_str(j.get<std::string>());
        case json::value_t::array: {
            jlist l;
            l.reserve(j.size());
            for (const json& e : j) l.push_back(from_json(e));
            return v_list(std::move(l));
        }
        case json::value_t::object: {
            jdict d;
            for (auto it = j.begin(); it != j.end(); ++it) d.items.push_back({v_str(it.key()), from_json(it.value())});
            return v_dict(std::move(d));
        }
        default: return v_none();
    }
}

const char* type_name(const jv& v) {  // Python's type names, for error messages
    switch (v.k) {
        case jk::undef: return "Undefined";
        case jk::none: return "NoneType";
        case jk::boolean: return "bool";
        case jk::integer: return "int";
        case jk::number: return "float";
        case jk::string: return "str";
        case jk::list: return "list";
        case jk::dict: return "dict";
        case jk::func: return "function";
        case jk::ns: return "Namespace";
    }
    return "?";
}

bool is_numeric(const jv& v) { return v.k == jk::integer || v.k == jk::number || v.k == jk::boolean; }
double as_double(const jv& v) { return v.k == jk::number ? v.d : v.k == jk::integer ? (double)v.i : v.b ? 1.0 : 0.0; }
int64_t as_int(const jv& v) { return v.k == jk::integer ? v.i : v.b ? 1 : 0; }

bool truthy(const jv& v) {
    switch (v.k) {
        case jk::undef:
        case jk::none: return false;
        case jk::boolean: return v.b;
        case jk::integer: return v.i != 0;
        case jk::number: return v.d != 0;
        case jk::string: return !v.s.empty();
        case jk::list: return !v.l->empty();
        case jk::dict: return !v.m->items.empty();
        default: return true;
    }
}

// ---- Python text forms
bool py_isspace(uint32_t c) { return unicode_is_whitespace(c) || (c >= 0x1c && c <= 0x1f); }

std::string py_float_repr(double x) {
    if (std::isnan(x)) return "nan";
    if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
    if (x == 0) return std::signbit(x) ? "-0.0" : "0.0";
    char buf[64];
    int prec = 1;
    for (; prec <= 17; prec++) {  // the shortest digits that read back as x (Python's repr)
        snprintf(buf, sizeof buf, "%.*e", prec - 1, x);
        if (std::strtod(buf, nullptr) == x) break;
    }
    std::string e = buf;  // [-]d.ddde[+-]XX
    bool neg = e[0] == '-';
    if (neg) e.erase(0, 1);
    size_t epos = e.find('e');
    int exp = std::atoi(e.c_str() + epos + 1);
    std::string digits;
    for (size_t k = 0; k < epos; k++)
        if (e[k] != '.') digits += e[k];
    std::string out;
    if (exp >= -4 && exp < 16) {
        if (exp >= 0) {
            if ((int)digits.size() <= exp + 1) out = digits + std::string(exp + 1 - digits.size(), '0') + ".0";
            else out = digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
        } else {
            out = "0." + std::string(-exp - 1, '0') + digits;
        }
    } else {
        out = digits.substr(0, 1);
        if (digits.size() > 1) out += "." + digits.substr(1);
        snprintf(buf, sizeof buf, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
        out += buf;
    }
    return neg ? "-" + out : out;
}

std::string py_str_repr(const std::string& s) {
    bool sq = s.find('\'') != std::string::npos, dq = s.find('"') != std::string::npos;
    char q = sq && !dq ? '"' : '\'';
    std::string out(1, q);
    for (size_t i = 0; i < s.size();) {
        uint32_t c;
        int n = utf8_decode(s, i, &c);
        if (n <= 0) {
            c = (unsigned char)s[i];
            n = 1;
        }
        if (c == (uint32_t)q || c == '\\') out += '\\', out += (char)c;
        else if (c == '\n') out += "\\n";
        else if (c == '\r') out += "\\r";
        else if (c == '\t') out += "\\t";
        else if (c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0)) out += strf("\\x%02x", c);
        else out.append(s, i, n);
        i += n;
    }
    return out + q;
}

std::string to_str(const jv& v) {
    switch (v.k) {
        case jk::undef: return "";
        case jk::none: return "None";
        case jk::boolean: return v.b ? "True" : "False";
        case jk::integer: return std::to_string(v.i);
        case jk::number: return py_float_repr(v.d);
        case jk::string: return v.s;
        case jk::list: {
            std::string o = v.tuple ? "(" : "[";
            for (size_t i = 0; i < v.l->size(); i++) o += (i ? ", " : "") + repr((*v.l)[i]);
            if (v.tuple && v.l->size() == 1) o += ",";
            return o + (v.tuple ? ")" : "]");
        }
        case jk::dict: {
            std::string o = "{";
            for (size_t i = 0; i < v.m->items.size(); i++)
                o += (i ? ", " : "") + repr(v.m->items[i].first) + ": " + repr(v.m->items[i].second);
            return o + "}";
        }
        case jk::func: return "<function " + v.f->name + ">";
        case jk::ns: return "<Namespace>";
    }
    return "";
}
std::string repr(const jv& v) {
    if (v.k == jk::undef) return "Undefined";
    return v.k == jk::string ? py_str_repr(v.s) : to_str(v);
}

// json.dumps(x, ensure_ascii=False, indent=indent, separators=..., sort_keys=...), as HF's tojson
void json_str(std::string* o, const std::string& s) {
    *o += '"';
    for (unsigned char c : s) {
        switch (c) {
            case '"': *o += "\\\""; break;
            case '\\': *o += "\\\\"; break;
            case '\n': *o += "\\n"; break;
            case '\r': *o += "\\r"; break;
            case '\t': *o += "\\t"; break;
            case '\b': *o += "\\b"; break;
            case '\f': *o += "\\f"; break;
            default:
                if (c < 0x20) *o += strf("\\u%04x", c);
                else *o += (char)c;
        }
    }
    *o += '"';
}
void to_json(std::string* o, const jv& v, const json_fmt& f, int depth, int line) {
    if (depth > kMaxDepth) jfail(line, "tojson: nesting too deep");
    auto nl = [&](int d) {
        if (f.indent < 0) return;
        *o += '\n';
        o->append((size_t)f.indent * d, ' ');
    };
    switch (v.k) {
        case jk::none: *o += "null"; return;
        case jk::boolean: *o += v.b ? "true" : "false"; return;
        case jk::integer: *o += std::to_string(v.i); return;
        case jk::number:
            *o += std::isnan(v.d) ? "NaN" : std::isinf(v.d) ? (v.d > 0 ? "Infinity" : "-Infinity") : py_float_repr(v.d);
            return;
        case jk::string: json_str(o, v.s); return;
        case jk::list:
            if (v.l->empty()) {
                *o += "[]";
                return;
            }
            *o += '[';
            for (size_t i = 0; i < v.l->size(); i++) {
                if (i) *o += f.item_sep;
                nl(depth + 1);
                to_json(o, (*v.l)[i], f, depth + 1, line);
            }
            nl(depth);
            *o += ']';
            return;
        case jk::dict: {
            if (v.m->items.empty()) {
                *o += "{}";
                return;
            }
            std::vector<const std::pair<jv, jv>*> items;
            for (const auto& kv : v.m->items) items.push_back(&kv);
            if (f.sort_keys)
                std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first.s < b->first.s; });
            *o += '{';
            for (size_t i = 0; i < items.size(); i++) {
                if (i) *o += f.item_sep;
                nl(depth + 1);
                const jv& key = items[i]->first;
                if (key.k == jk::string) json_str(o, key.s);
                else if (key.k == jk::integer || key.k == jk::number || key.k == jk::boolean || key.k == jk::none) {
                    std::string ks;
                    to_json(&ks, key, f, depth + 1, line);
                    json_str(o, ks);
                } else jfail(line, strf("tojson: keys must be str, int, float, bool or None, not %s", type_name(key)));
                *o += f.key_sep;
                to_json(o, items[i]->second, f, depth + 1, line);
            }
            nl(depth);
            *o += '}';
            return;
        }
        default: jfail(line, strf("tojson: Object of type %s is not JSON serializable", type_name(v)));
    }
}

// ---- comparisons
bool equal(const jv& a, const jv& b) {
    if (is_numeric(a) && is_numeric(b)) {
        if (a.k == jk::number || b.k == jk::number) return as_double(a) == as_double(b);
        return as_int(a) == as_int(b);
    }
    if (a.k != b.k) return false;
    switch (a.k) {
        case jk::undef:
        case jk::none: return true;
        case jk::string: return a.s == b.s;
        case jk::list:
            if (a.tuple != b.tuple || a.l->size() != b.l->size()) return false;
            for (size_t i = 0; i < a.l->size(); i++)
                if (!equal((*a.l)[i], (*b.l)[i])) return false;
            return true;
        case jk::dict:
            if (a.m->items.size() != b.m->items.size()) return false;
            for (const auto& kv : a.m->items) {
                bool found = false;
                for (const auto& kw : b.m->items)
                    if (equal(kv.first, kw.first)) {
                        if (!equal(kv.second, kw.second)) return false;
                        found = true;
                        break;
                    }
                if (!found) return false;
            }
            return true;
        default: return a.f == b.f && a.m == b.m;
    }
}

// -1, 0, 1 as Python orders them; fails for types Python cannot order
int order(const jv& a, const jv& b, const char* op, int line) {
    if (is_numeric(a) && is_numeric(b)) {
        if (a.k == jk::number || b.k == jk::number) {
            double x = as_double(a), y = as_double(b);
            return x < y ? -1 : x > y ? 1 : 0;
        }
        int64_t x = as_int(a), y = as_int(b);
        return x < y ? -1 : x > y ? 1 : 0;
    }
    if (a.k == jk::string && b.k == jk::string) return a.s < b.s ? -1 : a.s > b.s ? 1 : 0;  // UTF-8 = code point order
    if (a.k == jk::list && b.k == jk::list) {
        for (size_t i = 0; i < a.l->size() && i < b.l->size(); i++) {
            if (equal((*a.l)[i], (*b.l)[i])) continue;
            return order((*a.l)[i], (*b.l)[i], op, line);
        }
        return a.l->size() < b.l->size() ? -1 : a.l->size() > b.l->size() ? 1 : 0;
    }
    jfail(line, strf("'%s' not supported between instances of '%s' and '%s'", op, type_name(a), type_name(b)));
}

// ---- code point helpers (Python strings index by code point)
std::vector<uint32_t> cps_of(const std::string& s) { return utf8_codepoints(s); }
std::string str_of(const std::vector<uint32_t>& c, size_t b, size_t e) {
    std::string o;
    for (size_t i = b; i < e; i++) utf8_append(&o, c[i]);
    return o;
}
size_t cp_len(const std::string& s) {
    size_t n = 0;
    for (unsigned char c : s) n += (c & 0xC0) != 0x80;
    return n;
}

}  // namespace jinja_impl
}  // namespace lisa
