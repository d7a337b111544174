// Errors: the library reports every problem as a lisa::error whose message names the file,
// the field or tensor, and what was expected. It never prints and never calls exit.
#pragma once
#include <stdexcept>
#include <string>
#include <cstdio>
#include <cstdarg>

namespace lisa {

struct error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// printf-style message builder, so call sites read like the message they produce
inline std::string strf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
inline std::string strf(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    va_list ap2;
    va_copy(ap2, ap);
    int n = std::vsnprintf(nullptr, 0, fmt, ap);
    va_end(ap);
    std::string s(n > 0 ? (size_t)n : 0, '\0');
    if (n > 0) std::vsnprintf(s.data(), (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return s;
}

// Messages are capped: a parser quoting a 5 MB line must not print it (the start names the file
// and field, which is what the reader needs).
inline constexpr size_t kMaxErrorMessage = 1000;
inline std::string cap_message(const std::string& msg, size_t max = kMaxErrorMessage) {
    if (msg.size() <= max) return msg;
    size_t cut = max;
    while (cut > 0 && ((unsigned char)msg[cut] & 0xC0) == 0x80) cut--;  // not inside a UTF-8 character
    return msg.substr(0, cut) + strf("... (%zu more bytes)", msg.size() - cut);
}

// A JSON library's parse error, short: its position and reason, not the whole input read so far.
inline std::string json_error(const std::exception& e) { return cap_message(e.what(), 160); }

[[noreturn]] inline void fail(const std::string& msg) { throw error(cap_message(msg)); }

}  // namespace lisa

// Internal invariant check: names the op and the reason. Used for programming errors,
// not for user input (user input gets lisa::fail with a file/field message).
#define LISA_ASSERT(cond, op, reason)                                                        \
    do {                                                                                     \
        if (!(cond)) ::lisa::fail(::lisa::strf("%s: %s (%s:%d)", op, reason, __FILE__, __LINE__)); \
    } while (0)
