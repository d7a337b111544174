#!/usr/bin/python3
"""Template cases with jinja2's answers (hf_jinja.py's environment), for tests/test_jinja.cpp.

  make_jinja_cases.py                       rewrite tests/golden/jinja_cases.jsonl (feature corpus)
  make_jinja_cases.py --random N --seed S   print N random templates + contexts with answers

Each line: {"template", "context", "text"} or {"template", "context", "error"}; an error case
checks that lisa.cpp fails too (its message is not compared)."""
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_jinja import render  # noqa: E402

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi ünïcode 🦙"},
        {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nHello!"}, {"role": "user", "content": " two "}]

# (template, context) pairs, one feature or interaction each
FEATURES = [
    # whitespace control
    ("a  {{- 'b' -}}  c", {}),
    ("x\n  {% if true %}\n  y\n  {% endif %}\nz", {}),
    ("x\n  {%- if true %}\n  y\n  {%- endif %}\nz", {}),
    ("x\n  {%+ if true %}\n  y\n  {% endif +%}\nz", {}),
    ("  {% if true %}a{% endif %}  \n  b", {}),
    ("{% if true %}\n\n{% endif %}\n\nq", {}),
    ("a {# comment #}\n b\n  {# c2 #}\nc", {}),
    ("a {#- comment -#}   b", {}),
    ("  {{ 1 }}\n  {{ 2 }}\n", {}),
    ("line\r\nnext\rlast\n", {}),
    ("t\n", {}),
    ("t\n\n", {}),
    ("{% raw %}{{ not }}{% endraw %}|{%- raw -%}  {% x %}  {%- endraw -%}  |", {}),
    ("{% for i in [1,2] %}\n  {{ i }}\n{% endfor %}\n", {}),
    ("{%- for i in [1,2] -%}\n  {{ i }}\n{%- endfor -%}\n!", {}),
    ("\t{% if 1 %}tab{% endif %}", {}),
    # literals and printing
    ("{{ 'a\\tb\\n\\x41\\u00e9\\\\' }}|{{ \"q'\" }}|{{ 'x' 'y' }}", {}),
    ("{{ [1, 'a', none, true, 1.5, {'k': \"v'\"}] }}", {}),
    ("{{ 1e16 }} {{ 1e-5 }} {{ 0.1 + 0.2 }} {{ 10 / 2 }} {{ 1_000 }} {{ 2.5e3 }} {{ 123456789.125 }}", {}),
    ("{{ none }} {{ None }} {{ True }} {{ false }} {{ (1, 2) }} {{ () }}", {}),
    ("{{ x }}|{{ x is defined }}|{{ y is undefined }}", {"x": None}),
    ("{{ 'a\"b' }}{{ ['a\"b', \"c'd\", 'e\\'f\"g', '\\n\\x01'] }}", {}),
    # arithmetic
    ("{{ -7 // 2 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ -7.5 // 2 }} {{ 7.5 % 2 }}", {}),
    ("{{ 1 + 2 * 3 - 4 / 2 }} {{ (1 + 2) * 3 }} {{ -2 ** 2 }} {{ 3 - -1 }} {{ +3 }}", {}),
    ("{{ 'ab' * 3 }} {{ [1] * 2 }} {{ 3 * 'x' }} {{ 'a' ~ 1 ~ none ~ [2] }} {{ [1] + [2] }}", {}),
    ("{{ true + 1 }} {{ 1 == 1.0 }} {{ true == 1 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }}", {}),
    ("{{ 'a' + 1 }}", {}),
    ("{{ 1 / 0 }}", {}),
    ("{{ '%s-%d %%' % ('a', 3) }}{{ 'x%sy' % 'z' }}", {}),
    # logic
    ("{{ 1 and 2 }} {{ 0 and 2 }} {{ 0 or '' }} {{ '' or 'x' }} {{ not 0 }} {{ not [] and 1 }}", {}),
    ("{{ 'a' if x else 'b' }}|{{ 'a' if not x }}|{{ 1 if x else 2 if y else 3 }}", {"x": 0, "y": 1}),
    ("{{ 'a' in 'cat' }} {{ 'z' not in 'cat' }} {{ 1 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ not 'a' in 'b' }}", {}),
    # names, attributes, items
    ("{{ m.role }}/{{ m['content'] }}/{{ m.missing }}/{{ m.missing is defined }}/{{ m.get('role') }}/{{ m.get('x', 'd') }}", {"m": MSGS[1]}),
    ("{{ messages[0].role }} {{ messages[-1]['content'] }} {{ messages[9] is defined }} {{ messages|length }}", {"messages": MSGS}),
    ("{{ m['items'] }}|{% for k, v in m.items() %}{{ k }}={{ v }};{% endfor %}|{{ m.keys()|list }}|{{ m.values()|list }}", {"m": {"items": 1, "b": [2]}}),
    ("{{ x.y }}", {}),
    ("{{ x.y.z }}", {"x": {}}),
    ("{{ x['a'] }}", {"x": None}),
    ("{{ m.__class__ }}", {"m": {}}),
    ("{{ l.append(1) }}", {"l": []}),
    ("{{ 'héllo'[1] }}{{ 'héllo'[-1] }}{{ 'héllo'[1:3] }}{{ 'abcdef'[::2] }}{{ 'abc'[::-1] }}{{ [1,2,3][1:] }}{{ [1,2,3][:-1] }}{{ [1,2,3][::-1] }}{{ 'abc'[5:] }}{{ [1,2,3][-5:2] }}", {}),
    ("{{ l.0 }}{{ l[1] }}", {"l": [7, 8]}),
    # strings
    ("{{ '  a b  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '\\n a'.lstrip() }}|{{ 'a\\n\\n'.rstrip('\\n') }}|{{ ' \\u3000a\\u2028'.strip() }}", {}),
    ("{{ 'a,b,,c'.split(',') }}{{ ' a  b '.split() }}{{ 'a b c'.split(' ', 1) }}{{ 'a b  c '.split(None, 1) }}{{ ''.split() }}{{ ''.split(',') }}", {}),
    ("{{ 'Hello'.startswith('He') }}{{ 'Hello'.endswith(('x', 'lo')) }}{{ 'abc'.upper() }}{{ 'ÀB'.lower() }}{{ 'hello wORLD'.title() }}{{ 'hELLO'.capitalize() }}", {}),
    ("{{ 'aaa'.replace('a', 'b', 2) }}{{ 'abc'.find('c') }}{{ 'héé'.find('é') }}{{ 'abab'.count('ab') }}{{ '-'.join(['a', 'b']) }}{{ 'a\\nb\\r\\nc'.splitlines() }}", {}),
    ("{{ '12'.isdigit() }}{{ 'ab'.isalpha() }}{{ ' '.isspace() }}{{ 'ab'.islower() }}{{ 'AB'.isupper() }}{{ ''.isdigit() }}", {}),
    ("{{ m.content.split('</think>')[-1].lstrip('\\n') }}|{{ m.content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') }}", {"m": MSGS[2]}),
    # filters
    ("{{ '  x  '|trim }}|{{ 'xxyxx'|trim('x') }}|{{ [1,2,3]|length }}|{{ 'héllo'|count }}|{{ {'a':1}|length }}|{{ undefined_thing|length }}", {}),
    ("{{ x|tojson }}|{{ x|tojson(indent=2) }}|{{ x|tojson(sort_keys=true) }}|{{ 'é\\n\"<'|tojson }}|{{ 1.0|tojson }}|{{ none|tojson }}", {"x": {"b": [1, 2.5, True, None], "a": {"c": "d"}, "e": []}}),
    ("{{ x|tojson(separators=(',', ':')) }}", {"x": {"a": [1, {"b": 2}]}}),
    ("{{ 'abc'|upper }}{{ 'ABC'|lower }}{{ 'ab cd'|title }}{{ 'aBC'|capitalize }}{{ 12|string }}{{ [1]|string }}", {}),
    ("{{ u|default('d') }}|{{ ''|default('d') }}|{{ ''|default('d', true) }}|{{ none|d('x') }}|{{ 0|default(5, boolean=true) }}", {}),
    ("{{ [3,1,2]|first }}{{ [3,1,2]|last }}{{ 'abc'|first }}{{ []|first }}|{{ [1,2]|join(', ') }}|{{ [1,2]|join }}|{{ l|join('/', attribute='n') }}", {"l": [{"n": "a"}, {"n": "b"}]}),
    ("{{ 'abc'|list }}{{ [1,2]|reverse|list }}{{ 'abc'|reverse }}{{ {'b': 1, 'a': 2}|items|list }}{{ {'b': 1, 'A': 2, 'c': 0}|dictsort }}", {}),
    ("{{ [3,1,2]|sort }}{{ [3,1,2]|sort(reverse=true) }}{{ ['b','A','c']|sort }}{{ l|sort(attribute='n')|map(attribute='n')|list }}{{ ['a','A','b']|unique|list }}", {"l": [{"n": 2}, {"n": 1}]}),
    ("{{ messages|map(attribute='role')|list }}{{ messages|selectattr('role', 'equalto', 'user')|list|length }}{{ messages|rejectattr('role', 'eq', 'user')|map(attribute='role')|join(',') }}", {"messages": MSGS}),
    ("{{ [1,2,3,4]|select('odd')|list }}{{ [1,2,3,4]|reject('even')|list }}{{ [0,1,'',2]|select|list }}{{ ['a','b']|map('upper')|list }}{{ [1,2]|map('string')|join }}", {}),
    ("{{ '3'|int }}{{ '3.7'|int }}{{ 'x'|int }}{{ 'x'|int(7) }}{{ 3.9|int }}{{ '2.5'|float }}{{ 2|float }}{{ -3|abs }}{{ -2.5|abs }}{{ 2.567|round(2) }}{{ 2.5|round(0, 'floor') }}", {}),
    ("{{ 'a\\nb\\n\\nc'|indent(2) }}|{{ 'a\\nb'|indent(2, true) }}|{{ 'aaa'|replace('a', 'b') }}|{{ 'one two  three'|wordcount }}|{{ '<b>'|safe }}", {}),
    ("{{ 1|nosuchfilter }}", {}),
    ("{{ -x|abs }} {{ -2|abs }}", {"x": 3}),
    # tests
    ("{{ 1 is odd }}{{ 2 is even }}{{ 6 is divisibleby 3 }}{{ 'a' is string }}{{ 1 is number }}{{ 1.5 is float }}{{ 1 is integer }}{{ true is boolean }}{{ none is none }}", {}),
    ("{{ {} is mapping }}{{ [] is sequence }}{{ 'a' is iterable }}{{ 1 is iterable }}{{ f is callable }}{{ range is callable }}{{ 1 is eq 1 }}{{ 2 is gt 1 }}{{ 2 is lt(1) }}{{ 1 is in [1] }}", {"f": 1}),
    ("{{ x is true }}{{ x is false }}{{ x is not false }}{{ 'abc' is lower }}{{ 'ABC' is upper }}{{ none is sameas none }}{{ x is defined and x }}", {"x": False}),
    ("{{ 1 is nosuchtest }}", {}),
    # statements
    ("{% if 0 %}a{% elif '' %}b{% elif [1] %}c{% else %}d{% endif %}", {}),
    ("{% for m in messages %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}|{% endfor %}", {"messages": MSGS}),
    ("{% for x in [1,2,3] %}{{ loop.previtem is defined }}{{ loop.nextitem }}{{ loop.cycle('a','b') }};{% endfor %}", {}),
    ("{% for x in [] %}no{% else %}empty{% endfor %}{% for x in [1,2,3,4] if x is even %}{{ x }}{{ loop.length }}{% endfor %}", {}),
    ("{% for a, b in [[1,2],[3,4]] %}{{ a }}{{ b }}{% endfor %}{% for k in {'x':1,'y':2} %}{{ k }}{% endfor %}{% for c in 'hé' %}[{{ c }}]{% endfor %}", {}),
    ("{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}", {}),
    ("{% for i in range(2) %}{% for j in range(3) %}{% if j == 1 %}{% break %}{% endif %}{{ i }}{{ j }}{% endfor %}{% endfor %}{{ range(2, 8, 3)|list }}{{ range(5, 0, -2)|list }}", {}),
    ("{% for i in range(3) %}{% if loop.first %}{% set a = 1 %}{% endif %}[{{ a }}]{% endfor %}[{{ a }}]", {}),
    ("{% set a = 5 %}{% for i in range(2) %}{{ a }}{% set a = i %}{{ a }}{% endfor %}{{ a }}", {}),
    ("{% set ns = namespace(n=0, s='') %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.n }}{{ ns.s }}{{ ns.missing is defined }}", {}),
    ("{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t = 1, 2 %}{{ t }}{% if true %}{% set c = 3 %}{% endif %}{{ c }}", {}),
    ("{% set x %}inner {{ 1 + 1 }}{% endset %}[{{ x }}]{% set y | upper %}abc{% endset %}{{ y }}", {}),
    ("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('a') }} {{ greet('b', '?') }} {{ greet(name='c', punct='.') }}", {}),
    ("{% set g = 'G' %}{% macro m(x) %}{{ g }}{{ x }}{{ y }}{% endmacro %}{% for y in [1] %}{{ m(2) }}{% endfor %}", {}),
    ("{% filter upper %}abc {{ 'd' }}{% endfilter %}", {}),
    ("{% generation %}gen {{ 1 }}{% endgeneration %} after", {}),
    ("{{ raise_exception('Conversation roles must alternate') }}", {}),
    ("{% if x %}{{ raise_exception('no') }}{% endif %}ok", {"x": False}),
    ("{{ dict(a=1, b='x') }}{{ dict(a=1)|tojson }}", {}),
    ("{{ bos_token }}{% for message in messages %}{{ message['role'] }}: {{ message['content'] | trim }}{% if not loop.last %}\n{% endif %}{% endfor %}{{ eos_token }}", {"messages": MSGS, "bos_token": "<s>", "eos_token": "</s>"}),
    ("{{ (messages|length - 1) - 1 }}{{ messages[1:]|length }}{{ messages[::-1][0].role }}", {"messages": MSGS}),
    ("{% for message in messages[::-1] %}{%- set index = (messages|length - 1) - loop.index0 -%}{{ index }}{% endfor %}", {"messages": MSGS}),
    ("{{ tools is none }}{% if tools %}T{% endif %}{{ tools | tojson }}", {"tools": None}),
    ("{{ tools|tojson }}", {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "number"}}}}}]}),
    # syntax errors and unsupported features (must fail in both)
    ("{% if true %}unclosed", {}),
    ("{% for x in %}{% endfor %}", {}),
    ("{{ 1 + }}", {}),
    ("{% include 'x' %}", {}),
    ("{% endif %}", {}),
    ("{{ 'unterminated }}", {}),
    ("{% break %}", {}),
]


def case(template, context):
    r = render(template, context)
    return dict(template=template, context=context, **r)


# ---- random templates: a small grammar over the constructs chat templates use
def rand_expr(r, depth=0):
    names = ["x", "n", "s", "l", "m", "messages[0].content", "messages|length", "m.role", "loop_var"]
    leaves = [lambda: repr(r.choice(["a", "B c", "", " é ", "\n", "<|x|>"])), lambda: str(r.randint(-3, 9)),
              lambda: r.choice(names), lambda: r.choice(["true", "false", "none"]), lambda: str(r.choice([0.5, 2.0, -1.25]))]
    if depth > 2 or r.random() < 0.35:
        return r.choice(leaves)()
    a, b = rand_expr(r, depth + 1), rand_expr(r, depth + 1)
    forms = ["%s + %s", "%s ~ %s", "%s - %s", "%s * %s", "%s == %s", "%s != %s", "%s < %s", "%s and %s", "%s or %s",
             "not %s%s", "(%s if %s else 'z')", "%s in %s", "[%s, %s]", "%s|string ~ %s|string", "%s|length + %s|length",
             "%s is defined and %s is string", "(%s)|trim ~ %s", "%s|tojson ~ %s", "%s // (%s|length + 1)", "%s %% 3 ~ %s"]
    f = r.choice(forms)
    if f.startswith("not"):
        return "not %s" % a
    return f % (a, b)


def rand_body(r, depth=0):
    parts = []
    for _ in range(r.randint(1, 4)):
        k = r.random()
        ws = lambda: r.choice(["", "-"])  # noqa: E731
        if k < 0.3:
            parts.append(r.choice(["text", " ", "\n", "  \n", "a\n  b", "\t"]))
        elif k < 0.55:
            parts.append("{{%s %s %s}}" % (ws(), rand_expr(r), ws()))
        elif k < 0.7 and depth < 2:
            parts.append("{%%%s if %s %s%%}%s{%%%s else %s%%}%s{%%%s endif %s%%}" % (
                ws(), rand_expr(r), ws(), rand_body(r, depth + 1), ws(), ws(), rand_body(r, depth + 1), ws(), ws()))
        elif k < 0.85 and depth < 2:
            parts.append("{%%%s for loop_var in %s %s%%}%s{{ loop.index }}{%%%s endfor %s%%}" % (
                ws(), r.choice(["l", "messages", "s", "range(3)", "m"]), ws(), rand_body(r, depth + 1), ws(), ws()))
        else:
            parts.append("{%%%s set n = %s %s%%}" % (ws(), rand_expr(r), ws()))
        if r.random() < 0.3:
            parts.append(r.choice(["\n", "  ", "\n    "]))
    return "".join(parts)


def rand_case(r):
    ctx = {"x": r.choice([0, 1, "str", None, [1, 2]]), "n": r.randint(0, 5), "s": r.choice(["abc", "", "é\n"]),
           "l": [r.randint(0, 3) for _ in range(r.randint(0, 3))], "m": {"role": "user", "content": "c"},
           "messages": [{"role": "user", "content": r.choice(["hi", " ü ", ""])}]}
    return case(rand_body(r), ctx)


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "--random":
        n, seed = int(sys.argv[2]), int(sys.argv[4]) if len(sys.argv) > 4 else 0
        r = random.Random(seed)
        for _ in range(n):
            print(json.dumps(rand_case(r), ensure_ascii=False))
        return
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jinja_cases.jsonl")
    with open(out + ".tmp", "w") as f:
        for t, c in FEATURES:
            f.write(json.dumps(case(t, c), ensure_ascii=False) + "\n")
    os.replace(out + ".tmp", out)
    print("wrote %s (%d cases)" % (out, len(FEATURES)))


if __name__ == "__main__":
    main()
