// safetensors: read (memory-mapped, validated) and write (atomic).
// Format: 8-byte little-endian header length N, N bytes of JSON header
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}},
// then the data buffer; offsets are relative to the start of the buffer.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/dtype.h"

namespace lisa {

struct st_tensor {
    std::string          name;
    dtype                dt;
    std::vector<int64_t> shape;
    const uint8_t*       data;    // points into the mapping; not aligned in general
    size_t               nbytes;  // = numel * dtype_size(dt), checked at open
    size_t               numel;
};

struct st_file {
    std::string                        path;
    void*                              map = nullptr;  // whole-file read-only mmap
    size_t                             size = 0;       // file size in bytes
    std::vector<st_tensor>             tensors;        // in header order
    std::unordered_map<std::string, size_t> index;     // name -> position in tensors
    std::map<std::string, std::string> metadata;       // "__metadata__" (string values)
    ~st_file();
};

// Open and validate: every tensor's dtype, shape and offsets are checked against the file,
// so later reads never go out of bounds. Throws lisa::error naming the file and tensor.
std::unique_ptr<st_file> st_open(const std::string& path);
const st_tensor*         st_find(const st_file& f, const std::string& name);  // nullptr if absent
// Drops a tensor's pages from this process's mapping once it has been copied out (they stay in
// the page cache and are read again if touched), so loading a model does not count it twice.
void                     st_release(const st_tensor& t);
// The same for a byte range of a mapping (whole pages inside it): a reader streaming a large
// tensor drops what it has consumed as it goes.
void                     st_release_bytes(const void* p, size_t n);

// One tensor to write. `data` holds numel elements of `src_dt`; they are converted to `dt`
// on the way out (f32 -> bf16/f16, or bf16/f16 -> f32), in chunks, with no full-size temporary.
struct st_write_entry {
    std::string          name;
    std::vector<int64_t> shape;
    dtype                dt;
    const void*          data;
    dtype                src_dt;
};

size_t st_entry_bytes(const st_write_entry& e);  // bytes the entry takes in the file
// Writes atomically (temporary name in the same folder, then rename).
void st_write(const std::string& path, const std::vector<st_write_entry>& entries,
              const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

std::string shape_str(const std::vector<int64_t>& shape);  // "[2, 3]"

}  // namespace lisa
