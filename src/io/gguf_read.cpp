#include "io/gguf_read.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"
#include "io/fs.h"
#include "io/safetensors.h"  // st_release_bytes

namespace lisa {

using json = nlohmann::json;

const char* gguf_vtype_name(uint32_t t) {
    static const char* names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"};
    return t < 13 ? names[t] : "unknown";
}

gguf_file::~gguf_file() {
    if (map && size) munmap(map, size);
}

namespace {

// A bounds-checked cursor over the mapped bytes; every failure names the file and what was read.
struct cursor {
    const gguf_file& f;
    const uint8_t*   p;
    size_t           pos = 0;
    std::string      what;  // the key or tensor being read, for messages

    [[noreturn]] void bad(const std::string& msg) const {
        fail(strf("%s: %s%s (at byte %zu)", f.path.c_str(), what.empty() ? "" : (what + ": ").c_str(), msg.c_str(), pos));
    }
    void need(uint64_t n) const {
        if (n > f.size - pos) bad(strf("needs %llu more bytes, the file has %zu (truncated?)", (unsigned long long)n, f.size - pos));
    }
    template <typename T>
    T get() {
        need(sizeof(T));
        T v;
        std::memcpy(&v, p + pos, sizeof v);
        pos += sizeof v;
        return v;
    }
    std::string str(const char* of) {
        const uint64_t n = get<uint64_t>();
        if (n > f.size - pos) bad(strf("%s of %llu bytes runs past the end of the file", of, (unsigned long long)n));
        std::string s((const char*)p + pos, (size_t)n);
        pos += (size_t)n;
        return s;
    }
};

size_t scalar_size(uint32_t t) {
    switch ((gguf_vtype)t) {
        case gguf_vtype::u8:
        case gguf_vtype::i8:
        case gguf_vtype::boolean: return 1;
        case gguf_vtype::u16:
        case gguf_vtype::i16: return 2;
        case gguf_vtype::u32:
        case gguf_vtype::i32:
        case gguf_vtype::f32: return 4;
        case gguf_vtype::u64:
        case gguf_vtype::i64:
        case gguf_vtype::f64: return 8;
        default: return 0;
    }
}

json scalar(cursor& c, uint32_t t) {
    switch ((gguf_vtype)t) {
        case gguf_vtype::u8: return c.get<uint8_t>();
        case gguf_vtype::i8: return c.get<int8_t>();
        case gguf_vtype::u16: return c.get<uint16_t>();
        case gguf_vtype::i16: return c.get<int16_t>();
        case gguf_vtype::u32: return c.get<uint32_t>();
        case gguf_vtype::i32: return c.get<int32_t>();
        case gguf_vtype::f32: return (double)c.get<float>();
        case gguf_vtype::boolean: {
            const uint8_t b = c.get<uint8_t>();
            if (b > 1) c.bad(strf("bool value %u, expected 0 or 1", b));
            return b == 1;
        }
        case gguf_vtype::str: return c.str("string");
        case gguf_vtype::u64: return c.get<uint64_t>();
        case gguf_vtype::i64: return c.get<int64_t>();
        case gguf_vtype::f64: return c.get<double>();
        default: c.bad(strf("value type %u, expected 0-12", t));
    }
}

}  // namespace

bool gguf_is_file(const std::string& path) {
    if (!fs_is_file(path)) return false;
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) return false;
    char m[4] = {};
    const bool yes = std::fread(m, 1, 4, f) == 4 && std::memcmp(m, "GGUF", 4) == 0;
    std::fclose(f);
    return yes;
}

std::unique_ptr<gguf_file> gguf_open(const std::string& path) {
    auto f = std::make_unique<gguf_file>();
    f->path = path;
    const int fd = open(path.c_str(), O_RDONLY);
    if (fd < 0) fail(strf("%s: cannot open GGUF file (%s)", path.c_str(), std::strerror(errno)));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        fail(strf("%s: not a regular file", path.c_str()));
    }
    f->size = (size_t)st.st_size;
    if (f->size < 24) {
        close(fd);
        fail(strf("%s: not a GGUF file: %zu bytes, expected at least a 24-byte header", path.c_str(), f->size));
    }
    void* m = mmap(nullptr, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) fail(strf("%s: mmap failed (%s)", path.c_str(), std::strerror(errno)));
    f->map = m;
    cursor c{*f, (const uint8_t*)m, 0, ""};
    if (std::memcmp(c.p, "GGUF", 4) != 0) c.bad("not a GGUF file (the first bytes are not \"GGUF\")");
    c.pos = 4;
    f->version = c.get<uint32_t>();
    if (f->version != 2 && f->version != 3)
        c.bad(strf("GGUF version %u, expected 2 or 3 (version 1 files predate 2023-08; convert them again)", f->version));
    const uint64_t n_tensors = c.get<uint64_t>(), n_kv = c.get<uint64_t>();
    // every key/value takes at least 12 bytes and every tensor info 24: a count beyond what the
    // file can hold is refused before anything is sized from it
    if (n_kv > f->size / 12) c.bad(strf("key/value count %llu cannot fit in the file", (unsigned long long)n_kv));
    if (n_tensors > f->size / 24) c.bad(strf("tensor count %llu cannot fit in the file", (unsigned long long)n_tensors));
    for (uint64_t i = 0; i < n_kv; i++) {
        c.what = strf("key/value %llu", (unsigned long long)i);
        gguf_kv kv;
        kv.key = c.str("key");
        if (kv.key.empty()) c.bad("empty key");
        c.what = "key '" + cap_message(kv.key, 80) + "'";
        if (f->kv_index.count(kv.key)) c.bad("appears twice");
        kv.type = c.get<uint32_t>();
        if (kv.type == (uint32_t)gguf_vtype::arr) {
            kv.arr_type = c.get<uint32_t>();
            const uint64_t n = c.get<uint64_t>();
            if (kv.arr_type == (uint32_t)gguf_vtype::arr) c.bad("arrays of arrays are not supported");
            const size_t es = kv.arr_type == (uint32_t)gguf_vtype::str ? 8 : scalar_size(kv.arr_type);
            if (es == 0) c.bad(strf("array element type %u, expected 0-12", kv.arr_type));
            if (n > (f->size - c.pos) / es) c.bad(strf("array of %llu elements runs past the end of the file", (unsigned long long)n));
            kv.value = json::array();
            kv.value.get_ref<json::array_t&>().reserve((size_t)n);
            for (uint64_t k = 0; k < n; k++) kv.value.push_back(scalar(c, kv.arr_type));
        } else {
            kv.value = scalar(c, kv.type);
        }
        f->kv_index[kv.key] = f->kvs.size();
        f->kvs.push_back(std::move(kv));
    }
    c.what = "";
    if (const gguf_kv* a = gguf_find(*f, "general.alignment")) {
        if (!a->value.is_number_unsigned() || a->value.get<uint64_t>() == 0 || a->value.get<uint64_t>() > 65536 ||
            (a->value.get<uint64_t>() & (a->value.get<uint64_t>() - 1)) != 0)
            fail(strf("%s: key 'general.alignment': %s, expected a power of two up to 65536", path.c_str(),
                      cap_message(a->value.dump(-1, ' ', false, json::error_handler_t::replace), 40).c_str()));
        f->alignment = (size_t)a->value.get<uint64_t>();
    }
    for (uint64_t i = 0; i < n_tensors; i++) {
        c.what = strf("tensor info %llu", (unsigned long long)i);
        gguf_tensor_info t;
        t.name = c.str("tensor name");
        c.what = "tensor '" + cap_message(t.name, 80) + "'";
        if (t.name.empty()) c.bad("empty name");
        if (f->tensor_index.count(t.name)) c.bad("appears twice");
        const uint32_t nd = c.get<uint32_t>();
        if (nd < 1 || nd > 4) c.bad(strf("%u dimensions, expected 1 to 4", nd));
        uint64_t numel = 1;
        for (uint32_t d = 0; d < nd; d++) {
            const uint64_t n = c.get<uint64_t>();
            if (n == 0 || n > ((uint64_t)1 << 40)) c.bad(strf("dimension %u is %llu, expected 1 to 2^40", d, (unsigned long long)n));
            if (numel > ((uint64_t)1 << 42) / n) c.bad("more than 2^42 values");
            numel *= n;
            t.ne.push_back((int64_t)n);
        }
        const uint32_t type = c.get<uint32_t>();
        if (!ggml_type_known(type))
            c.bad(strf("ggml type %u is not one lisa.cpp reads (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_K, q5_K, q6_K)",
                       type));
        t.type = (ggml_type)type;
        if (t.ne[0] % ggml_block_size(t.type) != 0)
            c.bad(strf("rows of %lld values are not whole %s blocks of %lld", (long long)t.ne[0], ggml_type_name(t.type),
                       (long long)ggml_block_size(t.type)));
        t.offset = c.get<uint64_t>();
        t.numel = (int64_t)numel;
        t.nbytes = ggml_nbytes(t.type, t.numel);
        f->tensor_index[t.name] = f->tensors.size();
        f->tensors.push_back(std::move(t));
    }
    c.what = "";
    f->data_offset = (c.pos + f->alignment - 1) / f->alignment * f->alignment;
    if (f->data_offset > f->size && !f->tensors.empty()) c.bad("the data section starts past the end of the file (truncated)");
    const size_t data_bytes = f->size - std::min(f->size, f->data_offset);
    for (gguf_tensor_info& t : f->tensors) {
        if (t.offset % f->alignment != 0)
            fail(strf("%s: tensor '%s': offset %llu is not a multiple of the alignment %zu", path.c_str(), t.name.c_str(),
                      (unsigned long long)t.offset, f->alignment));
        if (t.offset > data_bytes || t.nbytes > data_bytes - t.offset)
            fail(strf("%s: tensor '%s': bytes %llu..%llu lie past the end of the file's %zu data bytes (truncated?)",
                      path.c_str(), t.name.c_str(), (unsigned long long)t.offset,
                      (unsigned long long)(t.offset + t.nbytes), data_bytes));
        t.data = (const uint8_t*)f->map + f->data_offset + t.offset;
    }
    return f;
}

const gguf_kv* gguf_find(const gguf_file& f, const std::string& key) {
    auto it = f.kv_index.find(key);
    return it == f.kv_index.end() ? nullptr : &f.kvs[it->second];
}

const gguf_tensor_info* gguf_find_tensor(const gguf_file& f, const std::string& name) {
    auto it = f.tensor_index.find(name);
    return it == f.tensor_index.end() ? nullptr : &f.tensors[it->second];
}

static const gguf_kv& need_kv(const gguf_file& f, const std::string& key) {
    const gguf_kv* kv = gguf_find(f, key);
    if (!kv) fail(strf("%s: key '%s' is missing", f.path.c_str(), key.c_str()));
    return *kv;
}

[[noreturn]] static void bad_kv(const gguf_file& f, const gguf_kv& kv, const char* expected) {
    fail(strf("%s: key '%s': %s %s, expected %s", f.path.c_str(), kv.key.c_str(), gguf_vtype_name(kv.type),
              cap_message(kv.value.dump(-1, ' ', false, json::error_handler_t::replace), 40).c_str(), expected));
}

uint64_t gguf_uint(const gguf_file& f, const std::string& key) {
    const gguf_kv& kv = need_kv(f, key);
    if (kv.value.is_number_unsigned()) return kv.value.get<uint64_t>();
    if (kv.value.is_number_integer() && kv.value.get<int64_t>() >= 0) return (uint64_t)kv.value.get<int64_t>();
    bad_kv(f, kv, "a non-negative integer");
}
uint64_t gguf_uint_or(const gguf_file& f, const std::string& key, uint64_t def) {
    return gguf_find(f, key) ? gguf_uint(f, key) : def;
}
double gguf_num(const gguf_file& f, const std::string& key) {
    const gguf_kv& kv = need_kv(f, key);
    if (!kv.value.is_number()) bad_kv(f, kv, "a number");
    return kv.value.get<double>();
}
double gguf_num_or(const gguf_file& f, const std::string& key, double def) { return gguf_find(f, key) ? gguf_num(f, key) : def; }
std::string gguf_str(const gguf_file& f, const std::string& key) {
    const gguf_kv& kv = need_kv(f, key);
    if (!kv.value.is_string()) bad_kv(f, kv, "a string");
    return kv.value.get<std::string>();
}
std::string gguf_str_or(const gguf_file& f, const std::string& key, const std::string& def) {
    return gguf_find(f, key) ? gguf_str(f, key) : def;
}
bool gguf_bool_or(const gguf_file& f, const std::string& key, bool def) {
    const gguf_kv* kv = gguf_find(f, key);
    if (!kv) return def;
    if (!kv->value.is_boolean()) bad_kv(f, *kv, "a bool");
    return kv->value.get<bool>();
}
std::vector<std::string> gguf_str_array(const gguf_file& f, const std::string& key) {
    const gguf_kv& kv = need_kv(f, key);
    if (kv.type != (uint32_t)gguf_vtype::arr || kv.arr_type != (uint32_t)gguf_vtype::str)
        fail(strf("%s: key '%s': %s, expected an array of strings", f.path.c_str(), key.c_str(), gguf_vtype_name(kv.type)));
    std::vector<std::string> v;
    v.reserve(kv.value.size());
    for (const json& x : kv.value) v.push_back(x.get<std::string>());
    return v;
}
std::vector<double> gguf_num_array(const gguf_file& f, const std::string& key) {
    const gguf_kv& kv = need_kv(f, key);
    if (kv.type != (uint32_t)gguf_vtype::arr || kv.arr_type == (uint32_t)gguf_vtype::str ||
        kv.arr_type == (uint32_t)gguf_vtype::boolean)
        fail(strf("%s: key '%s': %s, expected an array of numbers", f.path.c_str(), key.c_str(), gguf_vtype_name(kv.type)));
    std::vector<double> v;
    v.reserve(kv.value.size());
    for (const json& x : kv.value) v.push_back(x.get<double>());
    return v;
}

void gguf_release(const gguf_tensor_info& t) { st_release_bytes(t.data, t.nbytes); }

}  // namespace lisa
