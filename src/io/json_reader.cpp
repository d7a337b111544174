#include "io/json_reader.h"

#include <climits>

#include "core/error.h"

namespace lisa {

using json = nlohmann::json;

std::string json_describe(const json& v) {
    std::string s = v.type_name();
    if (v.is_number() || v.is_string() || v.is_boolean()) s += " " + cap_message(v.dump(), 40);
    return s;
}

static const json& empty_object() {
    static const json e = json::object();
    return e;
}

static const json& empty_array() {
    static const json e = json::array();
    return e;
}

json_reader json_reader::object(const json& v, const std::string& file, const std::string& at) {
    if (!v.is_object()) {
        if (at.empty()) fail(strf("%s: expected a JSON object, got %s", file.c_str(), json_describe(v).c_str()));
        fail(strf("%s: field '%s': expected an object, got %s", file.c_str(), at.c_str(), json_describe(v).c_str()));
    }
    return json_reader{v, file, at};
}

std::string json_reader::field(const char* key) const { return at.empty() ? std::string(key) : at + "." + key; }

void json_reader::bad(const char* key, const char* expected) const {
    std::string got = j.contains(key) ? json_describe(j[key]) : "nothing";
    fail(strf("%s: field '%s': expected %s, got %s", file.c_str(), field(key).c_str(), expected, got.c_str()));
}

int64_t json_reader::pos_int(const char* key) const {
    if (!has(key) || !j[key].is_number_integer() || j[key].get<int64_t>() <= 0) bad(key, "a positive integer");
    return j[key].get<int64_t>();
}

int64_t json_reader::pos_int_max(const char* key, int64_t max) const {
    const int64_t v = pos_int(key);
    if (v > max) bad(key, strf("a positive integer at most %lld", (long long)max).c_str());
    return v;
}

int64_t json_reader::int_range_or(const char* key, int64_t lo, int64_t hi, int64_t def) const {
    if (!has(key)) return def;
    // unsigned integers above INT64_MAX read as negative through get<int64_t>: refuse them first
    if (!j[key].is_number_integer() || (j[key].is_number_unsigned() && j[key].get<uint64_t>() > (uint64_t)INT64_MAX) ||
        j[key].get<int64_t>() < lo || j[key].get<int64_t>() > hi)
        bad(key, strf("an integer in [%lld, %lld]", (long long)lo, (long long)hi).c_str());
    return j[key].get<int64_t>();
}

double json_reader::num_or(const char* key, double def) const {
    if (!has(key)) return def;
    if (!j[key].is_number()) bad(key, "a number");
    return j[key].get<double>();
}

bool json_reader::bool_or(const char* key, bool def) const {
    if (!has(key)) return def;
    if (!j[key].is_boolean()) bad(key, "true or false");
    return j[key].get<bool>();
}

std::string json_reader::str_or(const char* key, const std::string& def) const {
    if (!has(key)) return def;
    if (!j[key].is_string()) bad(key, "a string");
    return j[key].get<std::string>();
}

std::vector<int64_t> json_reader::ids_or_empty(const char* key) const {
    std::vector<int64_t> out;
    if (!has(key)) return out;
    if (j[key].is_number_integer()) return {j[key].get<int64_t>()};
    if (!j[key].is_array()) bad(key, "an integer or a list of integers");
    for (const json& x : j[key]) {
        if (!x.is_number_integer()) bad(key, "an integer or a list of integers");
        out.push_back(x.get<int64_t>());
    }
    return out;
}

const json& json_reader::array_or_empty(const char* key) const {
    if (!has(key)) return empty_array();
    if (!j[key].is_array()) bad(key, "a list");
    return j[key];
}

json_reader json_reader::object_or_empty(const char* key) const {
    if (!has(key)) return json_reader{empty_object(), file, field(key)};
    if (!j[key].is_object()) bad(key, "an object");
    return json_reader{j[key], file, field(key)};
}

json_reader json_reader::element(const char* key, size_t i) const {
    const json& a = array_or_empty(key);
    return object(a.at(i), file, strf("%s[%zu]", field(key).c_str(), i));
}

}  // namespace lisa
