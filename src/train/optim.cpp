#include "train/optim.h"

#include <cmath>

namespace lisa {

param_group param_group_make(const std::string& name, float* param, std::vector<param_group::span> spans,
                             bool sparse) {
    param_group g;
    g.name = name;
    g.param = param;
    g.sparse = sparse;
    g.spans = std::move(spans);
    for (const auto& s : g.spans) g.n += s.len;
    g.state = device_array<float>((sparse ? 2 : 3) * g.n);
    return g;
}

void optim_zero_grads(const backend& K, const std::vector<param_group*>& groups) {
    for (param_group* g : groups)
        if (!g->sparse) K.zero(g->grad(), (int64_t)g->n);
}

double optim_grad_norm(const backend& K, const std::vector<param_group*>& groups, const sparse_rows& sr) {
    double ss = 0;
    for (param_group* g : groups)
        ss += g->sparse ? K.sum_of_squares(sr.grad, sr.touched * sr.width) : K.sum_of_squares(g->grad(), (int64_t)g->n);
    return std::sqrt(ss);
}

void optim_step(const backend& K, const std::vector<param_group*>& groups, const adamw_hparams& h, float clip,
                const sparse_rows& sr) {
    for (param_group* g : groups) {
        g->step++;
        if (g->sparse) {
            K.adamw_update_rows(g->param, sr.grad, sr.row_of, g->m(), g->v(), sr.rows, sr.width, h, g->step, true,
                                clip);
            continue;
        }
        for (const auto& sp : g->spans)
            K.adamw_update(g->param + sp.off, g->grad() + sp.off, g->m() + sp.off, g->v() + sp.off, (int64_t)sp.len,
                           h, g->step, sp.decay, clip);
    }
}

size_t optim_state_bytes(const std::vector<param_group*>& groups) {
    size_t b = 0;
    for (param_group* g : groups) b += 2 * g->n * sizeof(float);
    return b;
}

static const char* kScheduleNames[] = {"linear", "cosine", "constant", "constant_with_warmup"};

bool lr_schedule_parse(const std::string& s, lr_schedule* out) {
    for (int i = 0; i < 4; i++)
        if (s == kScheduleNames[i]) {
            *out = (lr_schedule)i;
            return true;
        }
    return false;
}

const char* lr_schedule_name(lr_schedule k) { return kScheduleNames[(int)k]; }

double lr_at(lr_schedule kind, double base, int64_t step, int64_t warmup, int64_t total) {
    if (kind == lr_schedule::constant) return base;
    if (step < warmup) return base * (double)step / (double)std::max<int64_t>(1, warmup);
    if (kind == lr_schedule::constant_with_warmup) return base;
    double progress = (double)(step - warmup) / (double)std::max<int64_t>(1, total - warmup);
    if (kind == lr_schedule::linear) return base * std::max(0.0, 1.0 - progress);
    return base * std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));  // cosine, half a period
}

}  // namespace lisa
