// Jinja chat templates, rendered natively as Hugging Face's apply_chat_template renders them:
// jinja2's ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks, the loopcontrols
// extension (break / continue), HF's `{% generation %}` blocks, and HF's globals and filters
// (raise_exception, strftime_now, tojson with ensure_ascii=False).
//
// Values follow Python: strings index and measure by code point, `/` is true division, `//` and
// `%` floor, printing a list or a None prints Python's repr ("['a', 1]", "None"), an undefined
// variable prints as "" and fails when used further (jinja2's default Undefined). Lists and dicts
// are immutable, as in the immutable sandbox (no .append, no .update).
//
// What is not implemented (include, import, extends, block, call, recursive loops, ...) stops at
// parse time with the feature and the template line named; raise_exception("m") stops rendering
// with "m". Parsing and rendering are bounded (nesting depth, output size, loop iterations), so a
// hostile template fails with an error instead of hanging or exhausting memory.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace lisa {

struct jinja_template;  // a parsed template; see jinja.cpp

// Parses a template. Throws lisa::error "chat template line N: what" on a syntax error or an
// unsupported feature.
std::shared_ptr<const jinja_template> jinja_parse(const std::string& source);

// Byte range [begin, end) of the rendered text written inside a `{% generation %}` block.
struct jinja_span {
    size_t begin, end;
};

// Renders with the variables of `context` (a JSON object: messages, add_generation_prompt,
// bos_token, ...; ordered, as Python dicts keep their keys in insertion order). If `generation` is not null it receives the `{% generation %}` spans.
// Throws lisa::error "chat template line N: what" (raise_exception's message included).
std::string jinja_render(const jinja_template& t, const nlohmann::ordered_json& context,
                         std::vector<jinja_span>* generation = nullptr);

// True if the template has at least one `{% generation %}` block.
bool jinja_has_generation(const jinja_template& t);

}  // namespace lisa
