#include "train/optim.h"

#include <cmath>
#include <vector>

namespace lisa {

// One AdamW update of a parameter, its moments and its (scaled) gradient; constants per call.
struct adamw_consts {
    float step_size, bc2_sqrt, b1, b2, eps, shrink;
    adamw_consts(const adamw_hparams& h, int64_t step, bool decay) {
        const double bc1 = 1.0 - std::pow(h.beta1, (double)step), bc2 = 1.0 - std::pow(h.beta2, (double)step);
        step_size = (float)(h.lr / bc1);
        bc2_sqrt = (float)std::sqrt(bc2);
        b1 = (float)h.beta1;
        b2 = (float)h.beta2;
        eps = (float)h.eps;
        shrink = decay ? (float)(1.0 - h.lr * h.weight_decay) : 1.0f;
    }
    inline void apply(float& p, float g, float& m, float& v) const {
        m = b1 * m + (1.0f - b1) * g;
        v = b2 * v + (1.0f - b2) * g * g;
        p = p * shrink - step_size * m / (std::sqrt(v) / bc2_sqrt + eps);
    }
};

void adamw_update(float* p, const float* g, float* m, float* v, size_t n, const adamw_hparams& h, int64_t step,
                  bool decay, float grad_scale) {
    const adamw_consts c(h, step, decay);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) c.apply(p[i], g[i] * grad_scale, m[i], v[i]);
}

void adamw_update_rows(float* p, const float* grad, const int32_t* row_of, float* m, float* v, int64_t rows,
                       int64_t width, const adamw_hparams& h, int64_t step, bool decay, float grad_scale) {
    const adamw_consts c(h, step, decay);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float* g = row_of[r] >= 0 ? grad + (int64_t)row_of[r] * width : nullptr;
        const int64_t o = r * width;
        for (int64_t i = 0; i < width; i++) c.apply(p[o + i], g ? g[i] * grad_scale : 0.0f, m[o + i], v[o + i]);
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
