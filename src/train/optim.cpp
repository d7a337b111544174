#include "train/optim.h"

#include <cmath>
#include <vector>

namespace lisa {

void adamw_update(float* p, const float* g, float* m, float* v, size_t n, const adamw_hparams& h, int64_t step,
                  bool decay, float grad_scale) {
    const double bc1 = 1.0 - std::pow(h.beta1, (double)step), bc2 = 1.0 - std::pow(h.beta2, (double)step);
    const float step_size = (float)(h.lr / bc1), bc2_sqrt = (float)std::sqrt(bc2), b1 = (float)h.beta1,
                b2 = (float)h.beta2, eps = (float)h.eps, shrink = decay ? (float)(1.0 - h.lr * h.weight_decay) : 1.0f;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] * grad_scale;
        m[i] = b1 * m[i] + (1.0f - b1) * gi;
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        float denom = std::sqrt(v[i]) / bc2_sqrt + eps;
        p[i] = p[i] * shrink - step_size * m[i] / denom;
    }
}

bool lr_kind_valid(const std::string& k) {
    return k == "linear" || k == "cosine" || k == "constant" || k == "constant_with_warmup";
}

double lr_at(const std::string& kind, double base, int64_t step, int64_t warmup, int64_t total) {
    if (kind == "constant") return base;
    if (step < warmup) return base * (double)step / (double)std::max<int64_t>(1, warmup);
    if (kind == "constant_with_warmup") return base;
    double progress = (double)(step - warmup) / (double)std::max<int64_t>(1, total - warmup);
    if (kind == "linear") return base * std::max(0.0, 1.0 - progress);
    return base * std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));  // cosine, half a period
}

double sum_of_squares(const float* g, size_t n) {
    const size_t block = 1 << 16;
    const size_t nb = (n + block - 1) / block;
    std::vector<double> part(nb, 0.0);
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < nb; b++) {
        double s = 0;
        for (size_t i = b * block; i < std::min(n, (b + 1) * block); i++) s += (double)g[i] * g[i];
        part[b] = s;
    }
    double s = 0;
    for (double x : part) s += x;
    return s;
}

}  // namespace lisa
