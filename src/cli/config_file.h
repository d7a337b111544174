// `lisa train --config FILE`: a run's flags from a JSON object (training_args.json of any run is
// one) or a flat YAML mapping. Returns (flag name without dashes, value) pairs in file order;
// lists become comma-separated values, booleans "true" / "false". Throws naming the file and line.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace lisa {

std::vector<std::pair<std::string, std::string>> config_file_read(const std::string& path);

}  // namespace lisa
