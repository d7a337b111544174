#include "train/plot.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/error.h"
#include "io/fs.h"

namespace lisa {

namespace {

struct point {
    double x, y;
};

// About n round tick values covering [lo, hi].
std::vector<double> ticks(double lo, double hi, int n) {
    double span = hi - lo;
    if (!(span > 0)) span = std::fabs(hi) > 0 ? std::fabs(hi) : 1;
    double raw = span / n, mag = std::pow(10.0, std::floor(std::log10(raw)));
    double step = mag;
    for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
        if (m * mag >= raw) {
            step = m * mag;
            break;
        }
    std::vector<double> t;
    for (double v = std::ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) t.push_back(std::fabs(v) < step * 1e-9 ? 0 : v);
    return t;
}

std::string num(double v) {
    char b[32];
    if (v != 0 && (std::fabs(v) < 1e-3 || std::fabs(v) >= 1e5)) snprintf(b, sizeof b, "%.1e", v);
    else snprintf(b, sizeof b, "%g", v);
    return b;
}

std::string esc(const std::string& s) {
    std::string o;
    for (char c : s) {
        if (c == '<') o += "&lt;";
        else if (c == '>') o += "&gt;";
        else if (c == '&') o += "&amp;";
        else o += c;
    }
    return o;
}

}  // namespace

std::string plot_training_loss(const std::string& dir) {
    const std::string log_path = fs_join(dir, "trainer_log.jsonl");
    if (!fs_is_file(log_path)) fail(strf("%s: no trainer_log.jsonl (not a lisa train output folder?)", dir.c_str()));
    std::ifstream f(log_path);
    std::vector<point> train, eval, lr, acc, eval_acc;  // acc: preference tuning's reward accuracy
    std::vector<std::pair<double, std::string>> switches;  // LISA: step where the layers changed
    std::string last_layers;
    std::string line;
    while (std::getline(f, line)) {
        if (line.empty()) continue;
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(line);
        } catch (const std::exception&) {
            continue;  // a line being written by a running job
        }
        if (!j.is_object() || !j.contains("step") || !j["step"].is_number()) continue;
        double s = j["step"].get<double>();
        if (j.contains("loss") && j["loss"].is_number()) train.push_back({s, j["loss"].get<double>()});
        if (j.contains("eval_loss") && j["eval_loss"].is_number()) eval.push_back({s, j["eval_loss"].get<double>()});
        if (j.contains("learning_rate") && j["learning_rate"].is_number()) lr.push_back({s, j["learning_rate"].get<double>()});
        if (j.contains("rewards/accuracies") && j["rewards/accuracies"].is_number())
            acc.push_back({s, j["rewards/accuracies"].get<double>()});
        if (j.contains("eval_rewards/accuracies") && j["eval_rewards/accuracies"].is_number())
            eval_acc.push_back({s, j["eval_rewards/accuracies"].get<double>()});
        if (j.contains("active_layers")) {
            std::string layers = j["active_layers"].dump();
            if (layers != last_layers) {
                // the layers logged at step s trained since the previous log: mark the draw there
                switches.push_back({train.size() >= 2 ? train[train.size() - 2].x : 0.0, layers});
                last_layers = layers;
            }
        }
    }
    if (train.empty()) fail(strf("%s: no training step logged yet", log_path.c_str()));
    std::string title = "training loss";
    std::string args_path = fs_join(dir, "training_args.json");
    if (fs_is_file(args_path)) {
        try {
            auto a = nlohmann::json::parse(fs_read_text(args_path));
            const std::string objective = a.value("objective", std::string("sft"));
            title = a.value("method", std::string("lisa")) + (objective == "sft" ? "" : " " + objective) + " on " +
                    a.value("model_name_or_path", std::string("?"));
        } catch (const std::exception&) {
        }
    }
    // frame
    const double W = 960, H = 540, L = 80, R = 90, T = 56, B = 64;
    const double pw = W - L - R, ph = H - T - B;
    double x0 = 0, x1 = train.back().x;
    for (const auto& p : eval) x1 = std::max(x1, p.x);
    if (x1 <= x0) x1 = x0 + 1;
    double y0 = 1e300, y1 = -1e300;
    for (const auto* v : {&train, &eval})
        for (const auto& p : *v)
            if (std::isfinite(p.y)) y0 = std::min(y0, p.y), y1 = std::max(y1, p.y);
    double pad = (y1 - y0) * 0.08 + 1e-9;
    y0 -= pad;
    y1 += pad;
    double l0 = 0, l1 = 0;
    for (const auto& p : lr) l1 = std::max(l1, p.y);
    if (l1 <= 0) l1 = 1;
    auto X = [&](double x) { return L + (x - x0) / (x1 - x0) * pw; };
    auto Y = [&](double y) { return T + (1 - (y - y0) / (y1 - y0)) * ph; };
    auto YL = [&](double y) { return T + (1 - (y - l0) / (l1 - l0)) * ph; };
    // preference runs: the right axis is the reward accuracy (0 to 1); the learning rate keeps
    // its shape, scaled to the plot's height, its peak in the legend
    const bool pref = !acc.empty() || !eval_acc.empty();
    auto YA = [&](double y) { return T + (1 - y) * ph; };
    std::string s;
    s += strf("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
              "font-family=\"sans-serif\" font-size=\"13\">\n", W, H, W, H);
    s += strf("<rect width=\"%.0f\" height=\"%.0f\" fill=\"white\"/>\n", W, H);
    s += strf("<text x=\"%.0f\" y=\"28\" font-size=\"17\" text-anchor=\"middle\">%s</text>\n", W / 2, esc(title).c_str());
    // grid and axes
    for (double t : ticks(y0, y1, 6)) {
        s += strf("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>\n", L, Y(t), L + pw, Y(t));
        s += strf("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", L - 6, Y(t) + 4, num(t).c_str());
    }
    for (double t : ticks(x0, x1, 8)) {
        s += strf("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#f0f0f0\"/>\n", X(t), T, X(t), T + ph);
        s += strf("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", X(t), T + ph + 18, num(t).c_str());
    }
    if (pref)
        for (double t : ticks(0, 1, 5))
            s += strf("<text x=\"%.1f\" y=\"%.1f\" fill=\"#2ca02c\">%s</text>\n", L + pw + 6, YA(t) + 4, num(t).c_str());
    else if (!lr.empty())
        for (double t : ticks(l0, l1, 5))
            s += strf("<text x=\"%.1f\" y=\"%.1f\" fill=\"#888\">%s</text>\n", L + pw + 6, YL(t) + 4, num(t).c_str());
    s += strf("<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#333\"/>\n", L, T, pw, ph);
    s += strf("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">optimizer step</text>\n", L + pw / 2, H - 18);
    s += strf("<text x=\"18\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 18 %.1f)\">loss</text>\n",
              T + ph / 2, T + ph / 2);
    if (pref || !lr.empty())
        s += strf("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"%s\" transform=\"rotate(90 %.1f %.1f)\">"
                  "%s</text>\n", W - 16, T + ph / 2, pref ? "#2ca02c" : "#888", W - 16, T + ph / 2,
                  pref ? "reward accuracy" : "learning rate");
    // LISA's layer switches (at most ~40 labels, so a long run stays readable)
    size_t label_every = std::max<size_t>(1, switches.size() / 40);
    for (size_t k = 0; k < switches.size(); k++) {
        double x = X(switches[k].first);
        s += strf("<line class=\"lisa-switch\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#9b59b6\" "
                  "stroke-opacity=\"0.35\"/>\n", x, T, x, T + ph);
        if (k % label_every == 0 && switches.size() <= 12)
            s += strf("<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" fill=\"#9b59b6\">%s</text>\n", x + 2, T + 11,
                      esc(switches[k].second).c_str());
    }
    auto polyline = [&](const std::vector<point>& v, const char* cls, const char* colour, const char* extra,
                        int axis) {  // 0: loss, 1: learning rate, 2: accuracy
        std::string pts;
        for (const auto& p : v)
            if (std::isfinite(p.y)) pts += strf("%.1f,%.1f ", X(p.x), axis == 1 ? YL(p.y) : axis == 2 ? YA(p.y) : Y(p.y));
        s += strf("<polyline class=\"%s\" points=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\" %s/>\n", cls,
                  pts.c_str(), colour, extra);
    };
    if (!lr.empty()) polyline(lr, "learning-rate", "#aaaaaa", "stroke-dasharray=\"6 4\"", 1);
    if (!acc.empty()) polyline(acc, "reward-accuracy", "#2ca02c", "stroke-opacity=\"0.8\"", 2);
    if (!eval_acc.empty()) {
        polyline(eval_acc, "eval-reward-accuracy", "#2ca02c", "stroke-dasharray=\"2 3\"", 2);
        for (const auto& p : eval_acc)
            s += strf("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"#2ca02c\"/>\n", X(p.x), YA(p.y));
    }
    polyline(train, "train-loss", "#1f77b4", "", 0);
    if (!eval.empty()) {
        polyline(eval, "eval-loss", "#ff7f0e", "", 0);
        for (const auto& p : eval)
            s += strf("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"#ff7f0e\"/>\n", X(p.x), Y(p.y));
    }
    // legend, top right (loss curves fall, so that corner is usually free), on a white card
    const int entries = 1 + !eval.empty() + !lr.empty() + !switches.empty() + !acc.empty() + !eval_acc.empty();
    double lx = L + pw - 230, ly = T + 40;
    s += strf("<rect x=\"%.1f\" y=\"%.1f\" width=\"222\" height=\"%d\" fill=\"white\" fill-opacity=\"0.85\" "
              "stroke=\"#ddd\"/>\n", lx - 8, ly - 12, entries * 18 + 8);
    auto legend = [&](const char* colour, const char* text, const char* dash) {
        s += strf("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\" %s/>"
                  "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n", lx, ly, lx + 24, ly, colour, dash, lx + 30, ly + 4, text);
        ly += 18;
    };
    legend("#1f77b4", strf("train loss (last %.4g)", train.back().y).c_str(), "");
    if (!eval.empty()) legend("#ff7f0e", strf("eval loss (last %.4g)", eval.back().y).c_str(), "");
    if (!acc.empty()) legend("#2ca02c", strf("reward accuracy (last %.3g)", acc.back().y).c_str(), "");
    if (!eval_acc.empty())
        legend("#2ca02c", strf("eval reward accuracy (last %.3g)", eval_acc.back().y).c_str(), "stroke-dasharray=\"2 3\"");
    if (!lr.empty())
        legend("#aaaaaa", pref ? strf("learning rate (peak %.3g)", l1).c_str() : "learning rate",
               "stroke-dasharray=\"6 4\"");
    if (!switches.empty()) legend("#9b59b6", strf("LISA layer switch (%zu)", switches.size()).c_str(), "stroke-opacity=\"0.5\"");
    s += "</svg>\n";
    const std::string out = fs_join(dir, "training_loss.svg");
    fs_write_atomic(out, s);
    return out;
}

}  // namespace lisa
