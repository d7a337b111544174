#include "tokenizer/unicode.h"

#include <utf8proc.h>

namespace lisa {

int utf8_decode(const std::string& s, size_t i, uint32_t* cp) {
    const unsigned char* p = (const unsigned char*)s.data() + i;
    size_t n = s.size() - i;
    if (n == 0) return 0;
    unsigned char c = p[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    int len;
    uint32_t v, min;
    if ((c & 0xe0) == 0xc0) len = 2, v = c & 0x1f, min = 0x80;
    else if ((c & 0xf0) == 0xe0) len = 3, v = c & 0x0f, min = 0x800;
    else if ((c & 0xf8) == 0xf0) len = 4, v = c & 0x07, min = 0x10000;
    else return 0;
    if ((size_t)len > n) return 0;
    for (int k = 1; k < len; k++) {
        if ((p[k] & 0xc0) != 0x80) return 0;
        v = v << 6 | (p[k] & 0x3f);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return 0;
    *cp = v;
    return len;
}

void utf8_append(std::string* out, uint32_t cp) {
    if (cp < 0x80) {
        out->push_back((char)cp);
    } else if (cp < 0x800) {
        out->push_back((char)(0xc0 | cp >> 6));
        out->push_back((char)(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
        out->push_back((char)(0xe0 | cp >> 12));
        out->push_back((char)(0x80 | ((cp >> 6) & 0x3f)));
        out->push_back((char)(0x80 | (cp & 0x3f)));
    } else {
        out->push_back((char)(0xf0 | cp >> 18));
        out->push_back((char)(0x80 | ((cp >> 12) & 0x3f)));
        out->push_back((char)(0x80 | ((cp >> 6) & 0x3f)));
        out->push_back((char)(0x80 | (cp & 0x3f)));
    }
}

// Length of the longest prefix at p[0..n) that could start a valid sequence (the "maximal
// subpart" of the Unicode standard): at least 1.
static size_t maximal_subpart(const unsigned char* p, size_t n) {
    unsigned char c = p[0];
    int len;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) len = 2;
    else if (c == 0xe0) len = 3, lo = 0xa0;
    else if (c >= 0xe1 && c <= 0xec) len = 3;
    else if (c == 0xed) len = 3, hi = 0x9f;
    else if (c >= 0xee && c <= 0xef) len = 3;
    else if (c == 0xf0) len = 4, lo = 0x90;
    else if (c >= 0xf1 && c <= 0xf3) len = 4;
    else if (c == 0xf4) len = 4, hi = 0x8f;
    else return 1;
    size_t k = 1;
    if (k < n && p[k] >= lo && p[k] <= hi) k++;
    else return 1;
    while (k < (size_t)len && k < n && (p[k] & 0xc0) == 0x80) k++;
    return k;
}

std::string utf8_lossy(const std::string& s) {
    std::string out;
    out.reserve(s.size());
    size_t i = 0;
    while (i < s.size()) {
        uint32_t cp;
        int n = utf8_decode(s, i, &cp);
        if (n > 0) {
            out.append(s, i, n);
            i += n;
        } else {
            out += "\xef\xbf\xbd";
            i += maximal_subpart((const unsigned char*)s.data() + i, s.size() - i);
        }
    }
    return out;
}

std::vector<uint32_t> utf8_codepoints(const std::string& s) {
    std::vector<uint32_t> v;
    size_t i = 0;
    while (i < s.size()) {
        uint32_t cp;
        int n = utf8_decode(s, i, &cp);
        if (n == 0) {
            cp = 0xfffd;
            n = 1;
        }
        v.push_back(cp);
        i += n;
    }
    return v;
}

namespace {
struct byte_alphabet {
    uint32_t to_char[256];
    int      to_byte[324];
    byte_alphabet() {
        for (auto& b : to_byte) b = -1;
        int extra = 0;
        for (int b = 0; b < 256; b++) {
            bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
            to_char[b] = printable ? (uint32_t)b : (uint32_t)(256 + extra++);
            to_byte[to_char[b]] = b;
        }
    }
};
const byte_alphabet& alphabet() {
    static const byte_alphabet a;
    return a;
}
}  // namespace

uint32_t bytelevel_char_of(uint8_t b) { return alphabet().to_char[b]; }
int bytelevel_byte_of(uint32_t cp) { return cp < 324 ? alphabet().to_byte[cp] : -1; }

bool unicode_is_numeric(uint32_t cp) {
    auto c = utf8proc_category((utf8proc_int32_t)cp);
    return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

bool unicode_is_whitespace(uint32_t cp) {
    switch (cp) {
        case 0x09: case 0x0a: case 0x0b: case 0x0c: case 0x0d: case 0x20: case 0x85: case 0xa0: case 0x1680:
        case 0x2028: case 0x2029: case 0x202f: case 0x205f: case 0x3000:
            return true;
        default: return cp >= 0x2000 && cp <= 0x200a;
    }
}

bool unicode_is_alnum(uint32_t cp) {
    auto c = utf8proc_category((utf8proc_int32_t)cp);
    return (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO) || unicode_is_numeric(cp);
}

uint32_t unicode_to_upper(uint32_t cp) { return (uint32_t)utf8proc_toupper((utf8proc_int32_t)cp); }
uint32_t unicode_to_lower(uint32_t cp) { return (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp); }

}  // namespace lisa
