#include "export/gguf.h"

#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "core/error.h"
#include "io/fs.h"

namespace lisa {

static const uint32_t kGgufVersion = 3;
static const size_t   kAlignment = 32;  // general.alignment's default

// gguf value types
enum : uint32_t { T_U8 = 0, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64, T_I64, T_F64 };

size_t gguf_tensor::nbytes() const {
    int64_t n = 1;
    for (int64_t d : ne) n *= d;
    return ggml_nbytes(type, n);
}

// ------------------------------------------------------------------ encoding

static void put_raw(std::string& s, const void* p, size_t n) { s.append((const char*)p, n); }
template <typename T>
static void put(std::string& s, T v) {
    put_raw(s, &v, sizeof v);
}
static void put_str(std::string& s, const std::string& v) {
    put<uint64_t>(s, v.size());
    s += v;
}

void gguf_builder::add_u32(const std::string& k, uint32_t v) {
    put_str(kv, k), put<uint32_t>(kv, T_U32), put(kv, v), n_kv++;
}
void gguf_builder::add_i32(const std::string& k, int32_t v) {
    put_str(kv, k), put<uint32_t>(kv, T_I32), put(kv, v), n_kv++;
}
void gguf_builder::add_u64(const std::string& k, uint64_t v) {
    put_str(kv, k), put<uint32_t>(kv, T_U64), put(kv, v), n_kv++;
}
void gguf_builder::add_f32(const std::string& k, float v) {
    put_str(kv, k), put<uint32_t>(kv, T_F32), put(kv, v), n_kv++;
}
void gguf_builder::add_bool(const std::string& k, bool v) {
    put_str(kv, k), put<uint32_t>(kv, T_BOOL), put<uint8_t>(kv, v ? 1 : 0), n_kv++;
}
void gguf_builder::add_str(const std::string& k, const std::string& v) {
    put_str(kv, k), put<uint32_t>(kv, T_STR), put_str(kv, v), n_kv++;
}
void gguf_builder::add_str_array(const std::string& k, const std::vector<std::string>& v) {
    put_str(kv, k), put<uint32_t>(kv, T_ARR), put<uint32_t>(kv, T_STR), put<uint64_t>(kv, v.size());
    for (const auto& s : v) put_str(kv, s);
    n_kv++;
}
void gguf_builder::add_f32_array(const std::string& k, const std::vector<float>& v) {
    put_str(kv, k), put<uint32_t>(kv, T_ARR), put<uint32_t>(kv, T_F32), put<uint64_t>(kv, v.size());
    put_raw(kv, v.data(), v.size() * sizeof(float));
    n_kv++;
}
void gguf_builder::add_i32_array(const std::string& k, const std::vector<int32_t>& v) {
    put_str(kv, k), put<uint32_t>(kv, T_ARR), put<uint32_t>(kv, T_I32), put<uint64_t>(kv, v.size());
    put_raw(kv, v.data(), v.size() * sizeof(int32_t));
    n_kv++;
}

static size_t pad_to(size_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; }

void gguf_write(const std::string& path, const gguf_builder& b) {
    std::string head;
    put_raw(head, "GGUF", 4);
    put<uint32_t>(head, kGgufVersion);
    put<uint64_t>(head, b.tensors.size());
    put<uint64_t>(head, b.n_kv);
    head += b.kv;
    std::vector<size_t> offsets;
    size_t off = 0;
    for (const auto& t : b.tensors) {
        put_str(head, t.name);
        put<uint32_t>(head, (uint32_t)t.ne.size());
        for (int64_t d : t.ne) put<uint64_t>(head, (uint64_t)d);
        put<uint32_t>(head, (uint32_t)t.type);
        put<uint64_t>(head, off);
        offsets.push_back(off);
        off = pad_to(off + t.nbytes());
    }
    head.resize(pad_to(head.size()), '\0');
    fs_write_atomic_with(path, [&](std::FILE* f) {
        auto write = [&](const void* p, size_t n) {
            if (n && std::fwrite(p, 1, n, f) != n) fail(strf("%s: write failed (disk full?)", path.c_str()));
        };
        write(head.data(), head.size());
        const char zeros[kAlignment] = {};
        size_t pos = 0;
        for (size_t i = 0; i < b.tensors.size(); i++) {
            const gguf_tensor& t = b.tensors[i];
            write(zeros, offsets[i] - pos);
            const long before = std::ftell(f);
            t.write(f);
            const long after = std::ftell(f);
            LISA_ASSERT(after - before == (long)t.nbytes(), "gguf_write",
                        "a tensor callback wrote a different number of bytes than its type and shape take");
            pos = offsets[i] + t.nbytes();
        }
        write(zeros, pad_to(pos) - pos);
    });
}

}  // namespace lisa
