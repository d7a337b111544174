#include "train/grad_sync.h"

namespace lisa {

void grad_sync_init(grad_sync* s, comm* world, int64_t num_layers) {
    s->world = world;
    s->num_layers = num_layers;
    s->at.assign(num_layers + 1, {});
    s->after.clear();
    // room for every group a policy makes, so that the per-step plan never grows a list (LISA's
    // draws bring layers never seen before)
    for (auto& v : s->at) v.reserve(4);
    s->after.reserve(8);
}

void grad_sync_plan(grad_sync* s, const std::vector<param_group*>& groups) {
    for (auto& v : s->at) v.clear();  // keeps capacity: no allocation once every group was seen
    s->after.clear();
    for (param_group* g : groups) {
        if (g->sparse) continue;  // its rows are summed at the end (grad_sync_finish)
        switch (g->role) {
            case group_role::norm:
            case group_role::head: s->at[s->num_layers].push_back(g); break;
            case group_role::layer: s->at[g->layer].push_back(g); break;
            default: s->after.push_back(g); break;
        }
    }
}

// Starts the sum of n values at device address x: in place where the host can address them,
// else through a host buffer (downloaded now, uploaded by grad_sync_finish).
static void start_sum(grad_sync* s, float* x, size_t n) {
    if (float* h = s->be ? (float*)s->be->mem_host(x) : x) {
        s->world->all_reduce_sum_start(h, n);
        return;
    }
    if (s->n_staged == s->staged.size()) {
        s->staged.emplace_back();
        s->staged_to.emplace_back();
    }
    std::vector<float>& buf = s->staged[s->n_staged];
    if (buf.size() < n) buf.resize(n);
    s->be->mem_download(buf.data(), x, n * sizeof(float));
    s->staged_to[s->n_staged++] = {x, n};
    s->world->all_reduce_sum_start(buf.data(), n);
}

void grad_sync_layer_done(grad_sync* s, int64_t l) {
    for (param_group* g : s->at[l]) start_sum(s, g->grad(), g->n);
    s->world->progress();
}

void grad_sync_finish(grad_sync* s, bool had_backward, float* sparse_rows, size_t rows_values) {
    if (!had_backward)  // nothing of this step's batch here: start the same sums, in the same order
        for (int64_t l = s->num_layers; l >= 0; l--) grad_sync_layer_done(s, l);
    for (param_group* g : s->after) start_sum(s, g->grad(), g->n);
    if (sparse_rows) start_sum(s, sparse_rows, rows_values);
    s->world->wait_all();
    for (size_t i = 0; i < s->n_staged; i++)
        s->be->mem_upload(s->staged_to[i].first, s->staged[i].data(), s->staged_to[i].second * sizeof(float));
    s->n_staged = 0;
}

}  // namespace lisa
