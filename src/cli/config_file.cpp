// `lisa train --config FILE`: the flags of a run as a file. JSON (an object; training_args.json of
// any run is one) or YAML's flat form (`key: value` lines, # comments, [a, b] lists), the keys
// being flag names without the dashes. Read before the command line, so flags given there win.
#include "cli/config_file.h"

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/fs.h"

namespace lisa {

// Fields training_args.json records that describe a run rather than ask for anything (what the
// run's derived values came to is under "resolved").
static bool informational(const std::string& key) { return key == "world_size" || key == "resolved"; }

static std::string trim(const std::string& s) {
    size_t b = s.find_first_not_of(" \t\r"), e = s.find_last_not_of(" \t\r");
    return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

static std::string unquote(const std::string& v) {
    if (v.size() >= 2 && ((v.front() == '"' && v.back() == '"') || (v.front() == '\'' && v.back() == '\'')))
        return v.substr(1, v.size() - 2);
    return v;
}

std::vector<std::pair<std::string, std::string>> config_file_read(const std::string& path) {
    std::string text = fs_read_text(path);
    std::vector<std::pair<std::string, std::string>> out;
    size_t first = text.find_first_not_of(" \t\r\n");
    if (first != std::string::npos && text[first] == '{') {
        nlohmann::ordered_json j;
        try {
            j = nlohmann::ordered_json::parse(text);
        } catch (const std::exception& e) {
            fail(strf("%s: not valid JSON (%s)", path.c_str(), json_error(e).c_str()));
        }
        for (auto it = j.begin(); it != j.end(); ++it) {
            const auto& v = it.value();
            if (informational(it.key()) || v.is_null()) continue;
            std::string s;
            if (v.is_string()) s = v.get<std::string>();
            else if (v.is_boolean()) s = v.get<bool>() ? "true" : "false";
            else if (v.is_number()) s = v.dump();
            else if (v.is_array()) {
                for (const auto& e : v) {
                    if (!e.is_string() && !e.is_number())
                        fail(strf("%s: field '%s': expected a list of strings or numbers", path.c_str(), it.key().c_str()));
                    s += (s.empty() ? "" : ",") + (e.is_string() ? e.get<std::string>() : e.dump());
                }
            } else {
                fail(strf("%s: field '%s': expected a string, number, boolean or list, got an object", path.c_str(),
                          it.key().c_str()));
            }
            out.push_back({it.key(), s});
        }
        return out;
    }
    size_t pos = 0;
    int line_no = 0;
    while (pos <= text.size()) {
        size_t nl = text.find('\n', pos);
        std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
        pos = nl == std::string::npos ? text.size() + 1 : nl + 1;
        line_no++;
        size_t hash = line.find(" #");
        if (!line.empty() && line[0] == '#') line.clear();
        else if (hash != std::string::npos) line = line.substr(0, hash);
        line = trim(line);
        if (line.empty() || line == "---") continue;
        size_t colon = line.find(':');
        if (colon == std::string::npos || line[0] == '-' || line[0] == ' ')
            fail(strf("%s: line %d: expected `key: value` (a flat YAML mapping)", path.c_str(), line_no));
        std::string key = trim(line.substr(0, colon)), v = trim(line.substr(colon + 1));
        if (informational(key)) continue;
        if (v.empty() || v == "null" || v == "~") continue;
        if (v.front() == '[') {
            if (v.back() != ']') fail(strf("%s: line %d: a list must close on its line", path.c_str(), line_no));
            std::string items = v.substr(1, v.size() - 2), joined;
            size_t p = 0;
            while (p <= items.size()) {
                size_t c = items.find(',', p);
                std::string item = unquote(trim(items.substr(p, c == std::string::npos ? std::string::npos : c - p)));
                if (!item.empty()) joined += (joined.empty() ? "" : ",") + item;
                p = c == std::string::npos ? items.size() + 1 : c + 1;
            }
            v = joined;
        } else {
            v = unquote(v);
        }
        out.push_back({key, v});
    }
    return out;
}

}  // namespace lisa
