// Typed reads of JSON fields that fail with one line naming the file, the field's path inside it
// (`added_tokens[3].content`, `rope_scaling.factor`) and what was expected. Used by every reader
// of a JSON file the user hands us (config.json, tokenizer.json, tokenizer_config.json,
// adapter_config.json), so that no field of the wrong type escapes as the JSON library's own
// exception.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lisa {

struct json_reader {
    const nlohmann::json& j;  // the object read (a whole file, or an object nested in it)
    std::string           file;  // the file, for messages
    std::string           at = "";  // the object's field path in the file; empty for the file's root

    // A reader of v, which must be an object, found at path `at` of `file`.
    static json_reader object(const nlohmann::json& v, const std::string& file, const std::string& at);

    std::string field(const char* key) const;  // the path of a field: "at.key" (or "key" at the root)
    [[noreturn]] void bad(const char* key, const char* expected) const;  // names what is there
    bool has(const char* key) const { return j.contains(key) && !j[key].is_null(); }

    int64_t pos_int(const char* key) const;  // required, > 0
    int64_t pos_int_or(const char* key, int64_t def) const { return has(key) ? pos_int(key) : def; }
    // sizes are bounded before anything is sized from them (a file may claim anything)
    int64_t pos_int_max(const char* key, int64_t max) const;
    int64_t pos_int_max_or(const char* key, int64_t max, int64_t def) const {
        return has(key) ? pos_int_max(key, max) : def;
    }
    int64_t              int_range_or(const char* key, int64_t lo, int64_t hi, int64_t def) const;
    double               num_or(const char* key, double def) const;
    bool                 bool_or(const char* key, bool def) const;
    std::string          str_or(const char* key, const std::string& def) const;
    std::vector<int64_t> ids_or_empty(const char* key) const;  // an integer or a list of them
    // A list (absent or null: an empty one); anything else fails.
    const nlohmann::json& array_or_empty(const char* key) const;
    // An object field; absent or null gives an empty object.
    json_reader object_or_empty(const char* key) const;
    // Element i of the list at `key`, which must be an object.
    json_reader element(const char* key, size_t i) const;
};

// The JSON type of v as a message shows it: `boolean true`, `number 3`, `string "x"`, `array`.
std::string json_describe(const nlohmann::json& v);

}  // namespace lisa
