// UTF-8 helpers for the tokenizer: code point iteration, lossy repair of invalid input, and
// the byte-level alphabet of GPT-2 style tokenizers.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lisa {

// Decodes one code point at s[i]; returns its length in bytes, or 0 if the bytes there are not
// valid UTF-8 (overlong, surrogate, truncated, > U+10FFFF).
int utf8_decode(const std::string& s, size_t i, uint32_t* cp);
void utf8_append(std::string* out, uint32_t cp);
// Replaces every maximal invalid subsequence with U+FFFD, as Rust's String::from_utf8_lossy
// and Python's bytes.decode(errors="replace") do. Valid input is returned unchanged.
std::string utf8_lossy(const std::string& s);
std::vector<uint32_t> utf8_codepoints(const std::string& valid);

// GPT-2 byte-level alphabet: each byte maps to one printable code point.
uint32_t bytelevel_char_of(uint8_t b);
// The byte a code point stands for, or -1 if it is not in the alphabet.
int bytelevel_byte_of(uint32_t cp);

bool unicode_is_numeric(uint32_t cp);     // general category N* (Rust's char::is_numeric)
bool unicode_is_whitespace(uint32_t cp);  // White_Space property (Rust's char::is_whitespace)
bool unicode_is_alnum(uint32_t cp);       // L* or N*
uint32_t unicode_to_upper(uint32_t cp);   // simple case mapping (one code point to one)
uint32_t unicode_to_lower(uint32_t cp);

}  // namespace lisa
