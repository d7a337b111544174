#!/usr/bin/python3
"""Renders chat templates as Hugging Face's apply_chat_template does (transformers'
chat_template_utils: jinja2's ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks and
the loopcontrols extension; its tojson, raise_exception and strftime_now; `{% generation %}`
blocks). The independent reference for src/template/jinja.cpp.

  hf_jinja.py render  < cases.jsonl > results.jsonl
      each case {"template": str, "context": {...}} -> {"text": str} or {"error": "Type: message"}
"""
import json
import sys
from datetime import datetime

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


class GenerationBlock(Extension):
    """`{% generation %}...{% endgeneration %}`: renders its body (HF records the span)."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.now().strftime(fmt)


def environment():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                       extensions=[GenerationBlock, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


ENV = environment()


def render(template, context):
    try:
        return {"text": ENV.from_string(template).render(**context)}
    except Exception as e:  # the referee's verdict, whatever it is
        return {"error": "%s: %s" % (type(e).__name__, e)}


def main():
    if len(sys.argv) != 2 or sys.argv[1] != "render":
        sys.exit(__doc__)
    for line in sys.stdin:
        if line.strip():
            case = json.loads(line)
            print(json.dumps(render(case["template"], case["context"]), ensure_ascii=False))


if __name__ == "__main__":
    main()
