"""Golden renderings of LMFlow's Jinja conversation templates (issue #31): LMFlow's own template
strings, read from a checkout of LMFlow (src/lmflow/utils/conversation_template/{qwen,gemma,
deepseek}.py; made from commit f3597dba), rendered by Jinja2 with Hugging Face's settings
(trim_blocks, lstrip_blocks, loopcontrols) and its {% generation %} block, for a few
conversations. Writes jinja_presets.json beside this file: each case's text and the byte ranges
of its generation blocks (what LMFlow learns). Nothing of LMFlow's is kept in this repository.

  python3 tests/golden/lmflow/make_jinja_presets.py /path/to/LMFlow
"""
import ast, json, os, sys
import jinja2
from jinja2.ext import Extension
from jinja2 import nodes

tmpls = {}
for f in ["qwen", "gemma", "deepseek"]:
    mod = ast.parse(open(os.path.join(sys.argv[1], "src/lmflow/utils/conversation_template", f + ".py")).read())
    for n in mod.body:
        if isinstance(n, ast.Assign) and isinstance(n.value, (ast.Constant, ast.JoinedStr)) and isinstance(getattr(n.value, "value", None), str):
            tmpls[n.targets[0].id] = n.value.value
class Gen(Extension):
    tags = {"generation"}
    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_wrap"), [], [], body).set_lineno(lineno)
    def _wrap(self, caller):
        return "\x01" + caller() + "\x02"
env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, extensions=[Gen, "jinja2.ext.loopcontrols"])
env.filters["tojson"] = lambda x, **k: json.dumps(x, ensure_ascii=False)
def raise_exception(m): raise Exception(m)
names = {"qwen2_5": "QWEN2_5_TEMPLATE", "qwen2_5_1m": "QWEN2_5_1M_TEMPLATE", "qwen2_5_math": "QWEN2_5_MATH_TEMPLATE",
         "qwen_qwq": "QWEN_QWQ_TEMPLATE", "qwen3": "QWEN3_TEMPLATE", "gemma3": "GEMMA3_TEMPLATE",
         "deepseek_v3": "DEEPSEEK_V3_TEMPLATE", "deepseek_r1": "DEEPSEEK_R1_TEMPLATE", "deepseek_r1_distill": "DEEPSEEK_R1_DISTILL_TEMPLATE"}
convs = [
    [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"},
     {"role": "user", "content": "U2"}, {"role": "assistant", "content": "A2"}],
    [{"role": "user", "content": "  Hi there \n"}, {"role": "assistant", "content": "\nHello!  "}],
    [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "<think>\nr1\n</think>\n\nans1"},
     {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "<think>\nr2\n</think>\n\nans2"}],
    [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "plain"}, {"role": "user", "content": "Q2"},
     {"role": "assistant", "content": "last"}],
]
out = []
for name, var in names.items():
    t = env.from_string(tmpls[var])
    for ci, c in enumerate(convs):
        for gen in (False, True):
            msgs = c[:-1] if gen else c
            try:
                s = t.render(messages=msgs, tools=None, add_generation_prompt=gen, bos_token="<BOS>", eos_token="<EOS>", raise_exception=raise_exception)
            except Exception as e:
                s = "ERROR " + str(e)
            text, spans, i = "", [], 0
            for ch in s:
                if ch == "\x01": start = len(text)
                elif ch == "\x02": spans.append([start, len(text)])
                else: text += ch
            out.append({"name": name, "conv": ci, "gen": gen, "messages": msgs, "text": text, "spans": spans if not gen else []})
for x in out:  # byte offsets, as lisa.cpp counts them
    x["spans"] = [[len(x["text"][:a].encode()), len(x["text"][:b].encode())] for a, b in x["spans"]]
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "jinja_presets.json"), "w") as f:
    json.dump(out, f, ensure_ascii=False, indent=0)
print(len(out), "cases")
