#include "io/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <nlohmann/json.hpp>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "io/fs.h"

namespace lisa {

using json = nlohmann::json;

static const uint64_t kMaxHeader = 100u << 20;  // 100 MiB, as the reference implementation

std::string shape_str(const std::vector<int64_t>& shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); i++) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

st_file::~st_file() {
    if (map && map != MAP_FAILED && size) munmap(map, size);
}

std::unique_ptr<st_file> st_open(const std::string& path) {
    auto f = std::make_unique<st_file>();
    f->path = path;
    int fd = open(path.c_str(), O_RDONLY);
    if (fd < 0) fail(strf("%s: cannot open safetensors file (%s)", path.c_str(), std::strerror(errno)));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        fail(strf("%s: cannot stat (%s)", path.c_str(), std::strerror(errno)));
    }
    f->size = (size_t)st.st_size;
    if (f->size < 8) {
        close(fd);
        fail(strf("%s: not a safetensors file: %zu bytes, expected at least an 8-byte header length", path.c_str(), f->size));
    }
    f->map = mmap(nullptr, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = nullptr;
        fail(strf("%s: mmap failed (%s)", path.c_str(), std::strerror(errno)));
    }
    const uint8_t* base = (const uint8_t*)f->map;
    uint64_t n = 0;
    for (int i = 0; i < 8; i++) n |= (uint64_t)base[i] << (8 * i);
    if (n > kMaxHeader || n > f->size - 8)
        fail(strf("%s: header length %llu does not fit in the %zu-byte file (truncated or not safetensors)", path.c_str(),
                  (unsigned long long)n, f->size));
    json h;
    try {
        h = json::parse(base + 8, base + 8 + n);
    } catch (const std::exception& e) {
        fail(strf("%s: header is not valid JSON (%s)", path.c_str(), json_error(e).c_str()));
    }
    if (!h.is_object()) fail(strf("%s: header must be a JSON object", path.c_str()));
    const uint8_t* data = base + 8 + n;
    size_t data_size = f->size - 8 - n;
    for (auto it = h.begin(); it != h.end(); ++it) {
        const std::string& name = it.key();
        const json& v = it.value();
        if (name == "__metadata__") {
            if (!v.is_object()) fail(strf("%s: __metadata__ must be an object of strings", path.c_str()));
            for (auto m = v.begin(); m != v.end(); ++m) {
                if (!m.value().is_string())
                    fail(strf("%s: __metadata__ field '%s' must be a string", path.c_str(), m.key().c_str()));
                f->metadata[m.key()] = m.value().get<std::string>();
            }
            continue;
        }
        auto bad = [&](const char* what) { fail(strf("%s: tensor '%s': %s", path.c_str(), name.c_str(), what)); };
        if (!v.is_object()) bad("entry must be an object with dtype, shape and data_offsets");
        if (!v.contains("dtype") || !v["dtype"].is_string()) bad("field 'dtype' missing or not a string");
        if (!v.contains("shape") || !v["shape"].is_array()) bad("field 'shape' missing or not an array");
        if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2)
            bad("field 'data_offsets' missing or not a [begin, end] pair");
        st_tensor t;
        t.name = name;
        std::string dts = v["dtype"].get<std::string>();
        if (!dtype_from_name(dts, &t.dt))
            fail(strf("%s: tensor '%s': unsupported dtype %s (expected F32, BF16, F16, I32 or I64)", path.c_str(),
                      name.c_str(), dts.c_str()));
        size_t numel = 1;
        for (const json& d : v["shape"]) {
            if (!d.is_number_unsigned()) bad("shape entries must be non-negative integers");
            uint64_t dim = d.get<uint64_t>();
            if (dim != 0 && numel > (SIZE_MAX >> 4) / dim) bad("shape is too large");
            numel *= dim;
            t.shape.push_back((int64_t)dim);
        }
        const json& off = v["data_offsets"];
        if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned())
            bad("data_offsets must be non-negative integers");
        uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
        if (b > e) bad("data_offsets begin is after end");
        if (e > data_size)
            fail(strf("%s: tensor '%s': data_offsets end %llu is past the %zu-byte data section (file truncated?)",
                      path.c_str(), name.c_str(), (unsigned long long)e, data_size));
        t.numel = numel;
        t.nbytes = numel * dtype_size(t.dt);
        if (e - b != t.nbytes)
            fail(strf("%s: tensor '%s': data_offsets hold %llu bytes but dtype %s and shape %s need %zu", path.c_str(),
                      name.c_str(), (unsigned long long)(e - b), dts.c_str(), shape_str(t.shape).c_str(), t.nbytes));
        t.data = data + b;
        f->tensors.push_back(std::move(t));
    }
    // tensors must not overlap (each byte belongs to one tensor)
    std::vector<const st_tensor*> by_off;
    for (auto& t : f->tensors) by_off.push_back(&t);
    std::sort(by_off.begin(), by_off.end(), [](auto a, auto b) { return a->data < b->data; });
    for (size_t i = 1; i < by_off.size(); i++) {
        if (by_off[i - 1]->data + by_off[i - 1]->nbytes > by_off[i]->data)
            fail(strf("%s: tensors '%s' and '%s' overlap in the data section", path.c_str(), by_off[i - 1]->name.c_str(),
                      by_off[i]->name.c_str()));
    }
    // the data section holds exactly the tensors: trailing bytes mean a damaged or foreign file
    // (the reference library refuses them too)
    size_t used = 0;
    for (const auto& t : f->tensors) used = std::max(used, (size_t)(t.data - data) + t.nbytes);
    if (used != data_size)
        fail(strf("%s: the data section has %zu bytes but its tensors end at byte %zu (trailing or missing data)",
                  path.c_str(), data_size, used));
    for (size_t i = 0; i < f->tensors.size(); i++) f->index[f->tensors[i].name] = i;
    return f;
}

const st_tensor* st_find(const st_file& f, const std::string& name) {
    auto it = f.index.find(name);
    return it == f.index.end() ? nullptr : &f.tensors[it->second];
}

void st_release(const st_tensor& t) { st_release_bytes(t.data, t.nbytes); }

void st_release_bytes(const void* p, size_t n) {
    const size_t page = 4096;
    size_t b = ((size_t)p + page - 1) / page * page, e = ((size_t)p + n) / page * page;
    if (e > b) madvise((void*)b, e - b, MADV_DONTNEED);
}

static size_t numel_of(const std::vector<int64_t>& shape) {
    size_t n = 1;
    for (auto d : shape) n *= (size_t)d;
    return n;
}

size_t st_entry_bytes(const st_write_entry& e) { return numel_of(e.shape) * dtype_size(e.dt); }

void st_write(const std::string& path, const std::vector<st_write_entry>& entries,
              const std::map<std::string, std::string>& metadata) {
    json h = json::object();
    if (!metadata.empty()) h["__metadata__"] = metadata;
    size_t off = 0;
    for (const auto& e : entries) {
        bool ok = e.src_dt == e.dt || e.src_dt == dtype::f32 ||
                  (e.dt == dtype::f32 && (e.src_dt == dtype::bf16 || e.src_dt == dtype::f16));
        if (!ok)
            fail(strf("%s: tensor '%s': cannot convert %s to %s when writing", path.c_str(), e.name.c_str(),
                      dtype_name(e.src_dt), dtype_name(e.dt)));
        size_t nb = st_entry_bytes(e);
        h[e.name] = {{"dtype", dtype_name(e.dt)}, {"shape", e.shape}, {"data_offsets", {off, off + nb}}};
        off += nb;
    }
    std::string hs = h.dump();
    while ((hs.size() + 8) % 8) hs.push_back(' ');  // data section starts 8-byte aligned
    fs_write_atomic_with(path, [&](std::FILE* f) {
        auto put = [&](const void* p, size_t n) {
            if (n && std::fwrite(p, 1, n, f) != n)
                fail(strf("%s: write failed (%s)", path.c_str(), std::strerror(errno)));
        };
        uint8_t len[8];
        for (int i = 0; i < 8; i++) len[i] = (uint8_t)((uint64_t)hs.size() >> (8 * i));
        put(len, 8);
        put(hs.data(), hs.size());
        std::vector<uint8_t> buf;
        for (const auto& e : entries) {
            size_t n = numel_of(e.shape);
            if (e.src_dt == e.dt) {
                put(e.data, n * dtype_size(e.dt));
                continue;
            }
            const size_t chunk = 1 << 20;
            buf.resize(chunk * dtype_size(e.dt));
            for (size_t i = 0; i < n; i += chunk) {
                size_t m = std::min(chunk, n - i);
                if (e.src_dt == dtype::f32) convert_from_f32(buf.data(), (const float*)e.data + i, e.dt, m);
                else convert_to_f32((float*)buf.data(), (const uint8_t*)e.data + i * dtype_size(e.src_dt), e.src_dt, m);
                put(buf.data(), m * dtype_size(e.dt));
            }
        }
    });
}

}  // namespace lisa
