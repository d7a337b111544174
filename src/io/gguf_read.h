// GGUF files read: the model files of llama.cpp, Ollama and LM Studio (versions 2 and 3).
//
// The file is memory-mapped and checked whole at open: magic and version, every key/value
// (types, string and array lengths against the bytes left), every tensor info (name, 1-4 dims,
// a type lisa.cpp reads, rows of whole blocks, offset aligned and inside the data section,
// sizes without overflow), no duplicate keys or tensors. Later reads never leave the mapping.
// Failures name the file and the key or tensor, in one line.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/ggml_quants.h"

namespace lisa {

// GGUF value types
enum class gguf_vtype : uint32_t { u8 = 0, i8, u16, i16, u32, i32, f32, boolean, str, arr, u64, i64, f64 };
const char* gguf_vtype_name(uint32_t t);

struct gguf_kv {
    std::string    key;
    uint32_t       type = 0;      // gguf_vtype
    uint32_t       arr_type = 0;  // element type when type is arr
    nlohmann::json value;         // number, bool, string, or array of those
};

struct gguf_tensor_info {
    std::string          name;
    std::vector<int64_t> ne;       // ggml's dims: ne[0] varies fastest (a [rows, cols] matrix is {cols, rows})
    ggml_type            type;
    uint64_t             offset;   // from the start of the data section
    const uint8_t*       data;     // in the mapping
    size_t               nbytes;
    int64_t              numel;
};

struct gguf_file {
    std::string                   path;
    void*                         map = nullptr;
    size_t                        size = 0;
    uint32_t                      version = 0;
    size_t                        alignment = 32;  // general.alignment
    size_t                        data_offset = 0;
    std::vector<gguf_kv>          kvs;             // in file order
    std::map<std::string, size_t> kv_index;
    std::vector<gguf_tensor_info> tensors;         // in file order
    std::map<std::string, size_t> tensor_index;
    ~gguf_file();
};

// Opens and checks path (see above); throws lisa::error.
std::unique_ptr<gguf_file> gguf_open(const std::string& path);
// Is this a GGUF file (a regular file starting with the magic "GGUF")?
bool gguf_is_file(const std::string& path);

const gguf_kv*          gguf_find(const gguf_file& f, const std::string& key);          // nullptr if absent
const gguf_tensor_info* gguf_find_tensor(const gguf_file& f, const std::string& name);  // nullptr if absent

// Typed reads that fail naming the file and key: an unsigned integer (any integer type, not
// negative), a number (any numeric type), a string, a bool; the *_or forms give `def` when absent.
uint64_t    gguf_uint(const gguf_file& f, const std::string& key);
uint64_t    gguf_uint_or(const gguf_file& f, const std::string& key, uint64_t def);
double      gguf_num(const gguf_file& f, const std::string& key);
double      gguf_num_or(const gguf_file& f, const std::string& key, double def);
std::string gguf_str(const gguf_file& f, const std::string& key);
std::string gguf_str_or(const gguf_file& f, const std::string& key, const std::string& def);
bool        gguf_bool_or(const gguf_file& f, const std::string& key, bool def);
// An array of strings / numbers (the vocabulary, scores, token types, merges).
std::vector<std::string> gguf_str_array(const gguf_file& f, const std::string& key);
std::vector<double>      gguf_num_array(const gguf_file& f, const std::string& key);

// Drops the pages of a tensor's bytes from the mapping once they have been read.
void gguf_release(const gguf_tensor_info& t);

}  // namespace lisa
