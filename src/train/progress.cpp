#include "train/progress.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace lisa {

static std::string fmt_eta(double s) {
    if (!(s >= 0) || s > 1e7) return "--:--";
    const int t = (int)s;
    return t >= 3600 ? strf("%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60) : strf("%02d:%02d", t / 60, t % 60);
}

std::string progress_bar_line(const progress_state& s, int cols) {
    const size_t room = (size_t)std::max(1, cols - 1);
    const std::string count = strf("%lld/%lld", (long long)s.step, (long long)s.total);
    // (preference runs: TRL's reward accuracy beside the loss)
    const std::string loss = strf("loss %.4f", s.loss) +
                             (s.reward_accuracy >= 0 ? strf(" rewards/accuracies %.2f", s.reward_accuracy) : "");
    const std::string eta = "ETA " + fmt_eta(s.eta_s);
    std::string layers;
    if (s.active_layers) {
        for (int l : *s.active_layers) layers += (layers.empty() ? "layers [" : ", ") + std::to_string(l);
        layers += "]";
    }
    const std::string adam = strf("Adam %.0f MiB", s.optimizer_bytes / 1048576.0);
    const std::string tps = strf("%.0f tok/s", s.tokens_per_s);
    // the optional parts, most useful first; drop from the back until the line fits
    std::vector<std::string> parts = {tps, adam};
    if (!layers.empty()) parts.push_back(layers);
    auto bar = [&](int w) {
        const int fill = (int)(w * s.step / std::max<int64_t>(1, s.total));
        return "[" + std::string(std::min(fill, w), '#') + std::string(w - std::min(fill, w), '.') + "]";
    };
    auto compose = [&](int w, size_t n_parts, bool with_eta) {
        std::string line = count + (w > 0 ? " " + bar(w) : "") + " " + loss;
        for (size_t i = 0; i < n_parts; i++) line += " | " + parts[i];
        if (with_eta) line += " | " + eta;
        return line;
    };
    for (size_t n = parts.size() + 1; n-- > 1;) {  // tokens/s stays while the bar narrows to 10
        const std::string line = compose(20, n, true);
        if (line.size() <= room) return line;
    }
    for (int w = 19; w >= 10; w--) {
        const std::string line = compose(w, 1, true);
        if (line.size() <= room) return line;
    }
    for (int w = 20; w >= 5; w--) {
        const std::string line = compose(w, 0, true);
        if (line.size() <= room) return line;
    }
    std::string line = compose(0, 0, false);
    if (line.size() > room) line.resize(room);
    return line;
}

std::string progress_round_json(const std::string& json_line, int digits) {
    nlohmann::ordered_json j = nlohmann::ordered_json::parse(json_line, nullptr, false);
    if (j.is_discarded()) return json_line;
    std::function<void(nlohmann::ordered_json&)> walk = [&](nlohmann::ordered_json& v) {
        if (v.is_object() || v.is_array()) {
            for (auto& x : v) walk(x);
        } else if (v.is_number_float()) {
            const double d = v.get<double>();
            if (std::isfinite(d)) {
                char buf[64];
                std::snprintf(buf, sizeof buf, "%.*g", digits, d);
                v = std::strtod(buf, nullptr);
            }
        }
    };
    walk(j);
    return j.dump();
}

}  // namespace lisa
