// The parser: turns the scanner's tags into a tree of statements and expressions, with jinja2's
// precedence; what is not implemented stops here with the feature named. jinja_impl.h.
#include <algorithm>

#include "core/error.h"
#include "template/jinja_impl.h"

namespace lisa {
namespace jinja_impl {

// Names a scope's body assigns at its own level (set, set block, macro) and nowhere inside an
// if. jinja2 binds them for the whole scope: a nested scope (loop body, macro) that reads one
// before it is assigned sees an undefined, not the outer or context value. A name also assigned
// inside an if starts from the outer value instead (jinja2 resolves it on entry).
void stored_names(const body& b, std::set<std::string>* direct, std::set<std::string>* in_if, bool nested) {
    for (const auto& s : b) {
        if ((s->k == sk::set && s->ns_attr.empty()) || s->k == sk::set_block || s->k == sk::macro)
            (nested ? in_if : direct)->insert(s->targets.begin(), s->targets.end());
        if (s->k == sk::if_)
            for (const auto& br : s->bodies) stored_names(br, direct, in_if, true);
    }
}
std::set<std::string> declared_names(const body& b) {
    std::set<std::string> direct, in_if, names;
    stored_names(b, &direct, &in_if, false);
    for (const auto& n : direct)
        if (!in_if.count(n)) names.insert(n);
    return names;
}


namespace {

// ================================================================ parser
struct parser {
    std::vector<chunk>& chunks;
    size_t              ci = 0;           // current chunk
    std::vector<token>* toks = nullptr;   // tokens of the current tag
    size_t              ti = 0;
    int                 depth = 0;
    bool                has_generation = false;
    static inline const token kEnd{tk::end, "", 0, 0, 0};

    explicit parser(std::vector<chunk>& c) : chunks(c) {}

    const token& cur() const { return ti < toks->size() ? (*toks)[ti] : kEnd; }
    const token& peek(size_t k = 1) const { return ti + k < toks->size() ? (*toks)[ti + k] : kEnd; }
    int line() const { return ti < toks->size() ? (*toks)[ti].line : chunks[ci].line; }
    bool is_op(const char* o) const { return cur().t == tk::op && cur().v == o; }
    bool is_name(const char* n) const { return cur().t == tk::name && cur().v == n; }
    void expect_op(const char* o) {
        if (!is_op(o)) jfail(line(), strf("expected '%s', got %s", o, describe(cur()).c_str()));
        ti++;
    }
    std::string expect_name() {
        if (cur().t != tk::name) jfail(line(), strf("expected a name, got %s", describe(cur()).c_str()));
        return (*toks)[ti++].v;
    }
    static std::string describe(const token& t) {
        switch (t.t) {
            case tk::end: return "the end of the tag";
            case tk::name: return "'" + t.v + "'";
            case tk::str: return "a string";
            case tk::integer:
            case tk::number: return "a number";
            default: return "'" + t.v + "'";
        }
    }
    void expect_tag_end() {
        if (cur().t != tk::end) jfail(line(), strf("expected the end of the tag, got %s", describe(cur()).c_str()));
    }
    struct depth_guard {
        parser& p;
        explicit depth_guard(parser& q) : p(q) {
            if (++p.depth > kMaxDepth) jfail(p.line(), "template nested too deeply");
        }
        ~depth_guard() { p.depth--; }
    };

    expr_p node(ek k) {
        auto e = std::make_unique<expr>();
        e->k = k;
        e->line = line();
        return e;
    }

    // ---- expressions (jinja2's parser: parse_expression and below)
    expr_p expression(bool with_cond = true) {
        depth_guard g(*this);
        expr_p e = or_expr();
        if (with_cond && is_name("if")) {
            ti++;
            auto c = node(ek::cond);
            expr_p test = or_expr();
            expr_p other;
            if (is_name("else")) {
                ti++;
                other = expression();
            }
            c->a.push_back(std::move(test));
            c->a.push_back(std::move(e));
            c->a.push_back(std::move(other));  // may be null: undefined
            return c;
        }
        return e;
    }
    expr_p or_expr() {
        expr_p l = and_expr();
        while (is_name("or")) {
            ti++;
            auto n = node(ek::or_);
            n->a.push_back(std::move(l));
            n->a.push_back(and_expr());
            l = std::move(n);
        }
        return l;
    }
    expr_p and_expr() {
        expr_p l = not_expr();
        while (is_name("and")) {
            ti++;
            auto n = node(ek::and_);
            n->a.push_back(std::move(l));
            n->a.push_back(not_expr());
            l = std::move(n);
        }
        return l;
    }
    expr_p not_expr() {
        if (is_name("not")) {
            depth_guard g(*this);
            ti++;
            auto n = node(ek::not_);
            n->a.push_back(not_expr());
            return n;
        }
        return compare();
    }
    expr_p compare() {
        expr_p l = math1();
        expr_p c;
        while (true) {
            std::string op;
            if (cur().t == tk::op && (cur().v == "==" || cur().v == "!=" || cur().v == "<" || cur().v == ">" ||
                                      cur().v == "<=" || cur().v == ">=")) {
                op = cur().v;
                ti++;
            } else if (is_name("in")) {
                op = "in";
                ti++;
            } else if (is_name("not") && peek().t == tk::name && peek().v == "in") {
                op = "notin";
                ti += 2;
            } else {
                break;
            }
            if (!c) {
                c = node(ek::compare);
                c->a.push_back(std::move(l));
            }
            c->ops.push_back(op);
            c->a.push_back(math1());
        }
        return c ? std::move(c) : std::move(l);
    }
    expr_p binop(const std::string& op, expr_p l, expr_p r) {
        auto n = node(op == "~" ? ek::concat : ek::binop);
        n->name = op;
        n->a.push_back(std::move(l));
        n->a.push_back(std::move(r));
        return n;
    }
    expr_p math1() {
        expr_p l = concat();
        while (is_op("+") || is_op("-")) {
            std::string op = (*toks)[ti++].v;
            l = binop(op, std::move(l), concat());
        }
        return l;
    }
    expr_p concat() {
        expr_p l = math2();
        while (is_op("~")) {
            ti++;
            l = binop("~", std::move(l), math2());
        }
        return l;
    }
    expr_p math2() {
        expr_p l = pow_expr();
        while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
            std::string op = (*toks)[ti++].v;
            l = binop(op, std::move(l), pow_expr());
        }
        return l;
    }
    expr_p pow_expr() {
        expr_p l = unary();
        while (is_op("**")) {
            ti++;
            l = binop("**", std::move(l), unary());
        }
        return l;
    }
    expr_p unary(bool with_filter = true) {
        depth_guard g(*this);
        expr_p n;
        if (is_op("-") || is_op("+")) {
            auto u = node(is_op("-") ? ek::neg : ek::pos);
            ti++;
            u->a.push_back(unary(false));
            n = std::move(u);
        } else {
            n = primary();
        }
        n = postfix(std::move(n));
        if (with_filter) n = filter_expr(std::move(n));
        return n;
    }
    expr_p primary() {
        const token& t = cur();
        if (t.t == tk::name) {
            ti++;
            if (t.v == "true" || t.v == "True") return literal(v_bool(true));
            if (t.v == "false" || t.v == "False") return literal(v_bool(false));
            if (t.v == "none" || t.v == "None") return literal(v_none());
            auto n = node(ek::name);
            n->name = t.v;
            return n;
        }
        if (t.t == tk::str) {
            std::string s;
            while (cur().t == tk::str) s += (*toks)[ti++].v;  // adjacent literals join, as in Python
            return literal(v_str(s));
        }
        if (t.t == tk::integer) {
            ti++;
            return literal(v_int(t.i));
        }
        if (t.t == tk::number) {
            ti++;
            return literal(v_num(t.d));
        }
        if (is_op("(")) {
            ti++;
            if (is_op(")")) {
                ti++;
                return node(ek::tuple);
            }
            expr_p e = expression();
            if (is_op(",")) {
                auto tup = node(ek::tuple);
                tup->a.push_back(std::move(e));
                while (is_op(",")) {
                    ti++;
                    if (is_op(")")) break;
                    tup->a.push_back(expression());
                }
                e = std::move(tup);
            }
            expect_op(")");
            return e;
        }
        if (is_op("[")) {
            ti++;
            auto l = node(ek::list);
            while (!is_op("]")) {
                if (!l->a.empty()) expect_op(",");
                if (is_op("]")) break;
                l->a.push_back(expression());
            }
            ti++;
            return l;
        }
        if (is_op("{")) {
            ti++;
            auto d = node(ek::dict);
            while (!is_op("}")) {
                if (!d->a.empty()) expect_op(",");
                if (is_op("}")) break;
                d->a.push_back(expression());
                expect_op(":");
                d->a.push_back(expression());
            }
            ti++;
            return d;
        }
        jfail(line(), strf("unexpected %s", describe(t).c_str()));
    }
    expr_p literal(jv v) {
        auto n = node(ek::literal);
        n->value = std::move(v);
        return n;
    }
    expr_p postfix(expr_p n) {
        while (true) {
            if (is_op(".")) {
                ti++;
                auto a = node(ek::attr);
                if (cur().t == tk::integer) {  // x.0 is x[0]
                    a->k = ek::item;
                    a->a.push_back(std::move(n));
                    a->a.push_back(literal(v_int((*toks)[ti++].i)));
                } else {
                    a->name = expect_name();
                    a->a.push_back(std::move(n));
                }
                n = std::move(a);
            } else if (is_op("[")) {
                ti++;
                n = subscript(std::move(n));
            } else if (is_op("(")) {
                n = call(std::move(n));
            } else {
                return n;
            }
        }
    }
    expr_p subscript(expr_p obj) {
        int ln = line();
        expr_p parts[3];
        int colons = 0;
        while (!is_op("]")) {
            if (is_op(":")) {
                if (++colons > 2) jfail(ln, "too many ':' in a slice");
                ti++;
                continue;
            }
            if (parts[colons]) jfail(ln, strf("expected ']' or ':', got %s", describe(cur()).c_str()));
            parts[colons] = expression();
            if (is_op(",") && colons == 0) {  // x[a, b]: a tuple key
                auto t = node(ek::tuple);
                t->a.push_back(std::move(parts[0]));
                while (is_op(",")) {
                    ti++;
                    if (is_op("]")) break;
                    t->a.push_back(expression());
                }
                parts[0] = std::move(t);
            }
        }
        ti++;
        auto n = node(colons ? ek::slice : ek::item);
        n->line = ln;
        n->a.push_back(std::move(obj));
        if (colons == 0) {
            if (!parts[0]) jfail(ln, "empty subscript []");
            n->a.push_back(std::move(parts[0]));
        } else {
            for (auto& p : parts) n->a.push_back(std::move(p));
        }
        return n;
    }
    void call_args(expr* n) {
        expect_op("(");
        size_t base = n->a.size();  // the callee or the filtered value comes first
        while (!is_op(")")) {
            if (n->a.size() > base || !n->kw.empty()) expect_op(",");
            if (is_op(")")) break;
            if (is_op("*") || is_op("**")) jfail(line(), "*args / **kwargs in a call are not supported");
            if (cur().t == tk::name && peek().t == tk::op && peek().v == "=") {
                std::string k = cur().v;
                ti += 2;
                n->kw.push_back({k, expression()});
            } else {
                if (!n->kw.empty()) jfail(line(), "positional argument after a keyword argument");
                n->a.push_back(expression());
            }
        }
        ti++;
    }
    expr_p call(expr_p callee) {
        auto n = node(ek::call);
        n->a.push_back(std::move(callee));
        call_args(n.get());
        // the callee is a[0]; the positional arguments follow it
        return n;
    }
    expr_p filter_expr(expr_p n) {
        while (true) {
            if (is_op("|")) {
                ti++;
                auto f = node(ek::filter);
                f->name = expect_name();
                while (is_op(".")) {
                    ti++;
                    f->name += "." + expect_name();
                }
                f->a.push_back(std::move(n));
                if (is_op("(")) call_args(f.get());
                n = std::move(f);
            } else if (is_name("is")) {
                ti++;
                auto t = node(ek::test);
                if (is_name("not")) {
                    ti++;
                    t->negated = true;
                }
                t->name = expect_name();
                t->a.push_back(std::move(n));
                if (is_op("(")) {
                    call_args(t.get());
                } else if ((cur().t == tk::name || cur().t == tk::str || cur().t == tk::integer ||
                            cur().t == tk::number || is_op("[") || is_op("{")) &&
                           !is_name("else") && !is_name("or") && !is_name("and")) {
                    if (is_name("is")) jfail(line(), "You cannot chain multiple tests with is");
                    t->a.push_back(postfix(primary()));
                }
                n = std::move(t);
            } else if (is_op("(")) {
                n = call(std::move(n));
            } else {
                return n;
            }
        }
    }
    // expression, or an implicit tuple "a, b" (for iterables and set values)
    expr_p tuple_expr() {
        expr_p e = expression();
        if (!is_op(",")) return e;
        auto t = node(ek::tuple);
        t->a.push_back(std::move(e));
        while (is_op(",")) {
            ti++;
            if (cur().t == tk::end) break;
            t->a.push_back(expression());
        }
        return t;
    }

    // ---- statements
    // Parses statements until a tag whose first word is one of `ends`; leaves ci at that tag
    // and returns its word ("" at the end of the template).
    std::string parse_body(body* out, const std::vector<std::string>& ends) {
        depth_guard g(*this);
        while (ci < chunks.size()) {
            chunk& c = chunks[ci];
            if (c.kind == chunk_kind::text) {
                auto s = std::make_unique<stmt>();
                s->k = sk::text;
                s->line = c.line;
                s->text = c.text;
                out->push_back(std::move(s));
                ci++;
                continue;
            }
            toks = &c.toks;
            ti = 0;
            if (c.kind == chunk_kind::output) {
                auto s = std::make_unique<stmt>();
                s->k = sk::output;
                s->line = c.line;
                if (cur().t == tk::end) jfail(c.line, "empty expression {{ }}");
                s->e = tuple_expr();
                expect_tag_end();
                out->push_back(std::move(s));
                ci++;
                continue;
            }
            if (cur().t != tk::name) jfail(c.line, "expected a statement name after '{%'");
            std::string word = cur().v;
            if (std::find(ends.begin(), ends.end(), word) != ends.end()) return word;
            ti++;
            out->push_back(statement(word, c.line));
        }
        if (!ends.empty()) {
            std::string list;
            for (auto& e : ends) list += (list.empty() ? "" : " or ") + ("'" + e + "'");
            jfail(chunks.empty() ? 1 : chunks.back().line, strf("unexpected end of template: expected %s", list.c_str()));
        }
        return "";
    }
    void next_tag() { ci++; }
    void enter(size_t c) {
        toks = &chunks[c].toks;
        ti = 1;
    }

    std::unique_ptr<stmt> statement(const std::string& word, int ln) {
        auto s = std::make_unique<stmt>();
        s->line = ln;
        if (word == "if") {
            s->k = sk::if_;
            s->conds.push_back(tuple_expr());
            expect_tag_end();
            next_tag();
            while (true) {
                s->bodies.emplace_back();
                std::string end = parse_body(&s->bodies.back(), {"elif", "else", "endif"});
                size_t at = ci;
                enter(at);
                if (end == "elif") {
                    s->conds.push_back(tuple_expr());
                    expect_tag_end();
                    next_tag();
                    continue;
                }
                expect_tag_end();
                next_tag();
                if (end == "else") {
                    s->bodies.emplace_back();
                    parse_body(&s->bodies.back(), {"endif"});
                    enter(ci);
                    expect_tag_end();
                    next_tag();
                }
                break;
            }
        } else if (word == "for") {
            s->k = sk::for_;
            s->targets.push_back(expect_name());
            while (is_op(",")) {
                ti++;
                s->targets.push_back(expect_name());
            }
            if (!is_name("in")) jfail(line(), strf("expected 'in' in a for loop, got %s", describe(cur()).c_str()));
            ti++;
            // the iterable: no conditional expression (its 'if' is the loop filter), may be a tuple
            s->e = expression(false);
            if (is_op(",")) {
                auto t = node(ek::tuple);
                t->a.push_back(std::move(s->e));
                while (is_op(",")) {
                    ti++;
                    t->a.push_back(expression(false));
                }
                s->e = std::move(t);
            }
            if (is_name("if")) {
                ti++;
                s->loop_filter = expression();
            }
            if (is_name("recursive")) jfail(line(), "recursive for loops are not supported");
            expect_tag_end();
            next_tag();
            s->bodies.emplace_back();
            std::string end = parse_body(&s->bodies.back(), {"else", "endfor"});
            s->declared = declared_names(s->bodies[0]);
            enter(ci);
            expect_tag_end();
            next_tag();
            if (end == "else") {
                s->bodies.emplace_back();
                parse_body(&s->bodies.back(), {"endfor"});
                enter(ci);
                expect_tag_end();
                next_tag();
            }
        } else if (word == "set") {
            std::string first = expect_name();
            if (is_op(".")) {
                ti++;
                s->ns_attr = expect_name();
            }
            s->targets.push_back(first);
            while (is_op(",")) {
                ti++;
                s->targets.push_back(expect_name());
            }
            if (is_op("=")) {
                ti++;
                s->k = sk::set;
                s->e = tuple_expr();
                expect_tag_end();
                next_tag();
            } else {
                if (!s->ns_attr.empty() || s->targets.size() != 1) jfail(ln, "a {% set %} block assigns one name");
                s->k = sk::set_block;
                parse_filter_chain(s.get());
                expect_tag_end();
                next_tag();
                s->bodies.emplace_back();
                parse_body(&s->bodies.back(), {"endset"});
                enter(ci);
                expect_tag_end();
                next_tag();
            }
        } else if (word == "macro") {
            s->k = sk::macro;
            s->targets.push_back(expect_name());
            expect_op("(");
            while (!is_op(")")) {
                if (!s->params.empty()) expect_op(",");
                std::string p = expect_name();
                expr_p def;
                if (is_op("=")) {
                    ti++;
                    def = expression();
                }
                s->params.push_back({p, std::move(def)});
            }
            ti++;
            expect_tag_end();
            next_tag();
            s->bodies.emplace_back();
            parse_body(&s->bodies.back(), {"endmacro"});
            s->declared = declared_names(s->bodies[0]);
            enter(ci);
            if (cur().t == tk::name) ti++;  // {% endmacro name %}
            expect_tag_end();
            next_tag();
        } else if (word == "break" || word == "continue") {
            s->k = word == "break" ? sk::break_ : sk::continue_;
            expect_tag_end();
            next_tag();
        } else if (word == "generation") {
            s->k = sk::generation;
            has_generation = true;
            expect_tag_end();
            next_tag();
            s->bodies.emplace_back();
            parse_body(&s->bodies.back(), {"endgeneration"});
            enter(ci);
            expect_tag_end();
            next_tag();
        } else if (word == "filter") {
            s->k = sk::filter_block;
            parse_filter_chain(s.get(), true);
            expect_tag_end();
            next_tag();
            s->bodies.emplace_back();
            parse_body(&s->bodies.back(), {"endfilter"});
            enter(ci);
            expect_tag_end();
            next_tag();
        } else {
            static const char* known[] = {"include", "import", "from", "extends", "block", "call", "with", "do",
                                          "autoescape", "trans", "raw"};
            for (const char* k : known)
                if (word == k) jfail(ln, strf("the '%s' tag is not supported in chat templates", word.c_str()));
            jfail(ln, strf("unknown tag '%s'", word.c_str()));
        }
        return s;
    }
    // "| f(args) | g" after {% set x %} or {% filter %}: stored as filter nodes applied to a
    // placeholder literal that the renderer replaces with the block's text.
    void parse_filter_chain(stmt* s, bool required = false) {
        bool first = true;
        while (is_op("|") || (required && first)) {
            if (is_op("|")) ti++;
            first = false;
            auto f = node(ek::filter);
            f->name = expect_name();
            f->a.push_back(literal(v_none()));
            if (is_op("(")) call_args(f.get());
            s->filters.push_back(std::move(f));
        }
    }
};

}  // namespace

void parse(std::vector<chunk>& chunks, body* root, bool* has_generation) {
    parser p(chunks);
    p.parse_body(root, {});
    *has_generation = p.has_generation;
}

}  // namespace jinja_impl
}  // namespace lisa
