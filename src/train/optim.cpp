#include "train/optim.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace lisa {

void param_group_shard_range(const param_group& g, int r, size_t* lo, size_t* hi) {
    const size_t units = g.n / g.unit;
    *lo = units * (size_t)r / (size_t)g.shards * g.unit;
    *hi = units * (size_t)(r + 1) / (size_t)g.shards * g.unit;
    if (r == g.shards - 1) *hi = g.n;
}

param_group param_group_make(const backend& be, const std::string& name, float* param, std::vector<param_group::span> spans,
                             bool sparse, int shard, int shards, size_t unit, const optimizer* opt) {
    param_group g;
    g.name = name;
    g.param = param;
    g.sparse = sparse;
    g.spans = std::move(spans);
    for (const auto& s : g.spans) g.n += s.len;
    g.shard = shard;
    g.shards = std::max(1, shards);
    g.unit = std::max<size_t>(1, unit);
    param_group_shard_range(g, g.shard, &g.lo, &g.hi);
    g.opt = opt ? opt : &optimizer_adamw();
    g.state = device_array<float>(be, (sparse ? 0 : g.n) + (size_t)g.opt->moments * (g.hi - g.lo));
    if (g.shards > 1)  // the gather tables, once (a step gathers without allocating)
        for (int r = 0; r < g.shards; r++) {
            size_t lo, hi;
            param_group_shard_range(g, r, &lo, &hi);
            g.share_lo.push_back(lo);
            g.share_len.push_back(hi - lo);
        }
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

// every rank's share of x (n floats laid out as the group's elements) to every rank
static void gather_shares(const param_group& g, comm& world, float* x) {
    world.all_gather(x, g.share_lo.data(), g.share_len.data());
}

// the same for the group's parameters, in device memory (through the host where it must)
static void gather_param_shares(const backend& K, const param_group& g, comm& world) {
    if (float* h = (float*)K.mem_host(g.param)) return gather_shares(g, world, h);
    std::vector<float> x = device_read(K, (const float*)g.param, g.n);
    gather_shares(g, world, x.data());
    device_write(K, g.param, x.data(), g.n);
}

// AdamW over the group's share: the sparse embedding by its touched rows, else tensor by tensor
// (weight decay on matrices only)
static void adamw_group_update(const backend& K, param_group& g, const adamw_hparams& h, float clip,
                               const sparse_rows& sr) {
    if (g.sparse) {  // this share's rows (all rows unsharded)
        const int64_t w = sr.width, r0 = (int64_t)g.lo / w;
        K.adamw_update_rows(g.param + g.lo, sr.grad, sr.row_of + r0, g.m(), g.v(), (int64_t)(g.hi - g.lo) / w, w, h,
                            g.step, true, clip);
        return;
    }
    for (const auto& sp : g.spans) {  // each tensor's part inside [lo, hi)
        const size_t a = std::max(sp.off, g.lo), b = std::min(sp.off + sp.len, g.hi);
        if (b <= a) continue;
        K.adamw_update(g.param + a, g.grad() + a, g.m() + (a - g.lo), g.v() + (a - g.lo), (int64_t)(b - a), h, g.step,
                       sp.decay, clip);
    }
}

const optimizer& optimizer_adamw() {
    static const optimizer adamw = {"adamw", 2, adamw_group_update};
    return adamw;
}

void optim_step(const backend& K, const std::vector<param_group*>& groups, const adamw_hparams& h, float clip,
                const sparse_rows& sr, comm* world) {
    for (param_group* g : groups) {
        g->step++;
        g->opt->update(K, *g, h, clip, sr);
        if (g->sharded()) {
            LISA_ASSERT(world != nullptr, "optim_step", "a sharded group needs the ranks to gather its parameters");
            gather_param_shares(K, *g, *world);
        }
    }
}

size_t optim_state_bytes(const std::vector<param_group*>& groups) {
    size_t b = 0;
    for (param_group* g : groups) b += (size_t)g->opt->moments * (g->hi - g->lo) * sizeof(float);
    return b;
}

void optim_gather_moments(param_group& g, comm& world, std::vector<float>* m, std::vector<float>* v) {
    m->assign(g.n, 0.0f);
    v->assign(g.n, 0.0f);
    device_read(*g.state.be(), m->data() + g.lo, g.m(), g.hi - g.lo);
    device_read(*g.state.be(), v->data() + g.lo, g.v(), g.hi - g.lo);
    gather_shares(g, world, m->data());
    gather_shares(g, world, v->data());
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
