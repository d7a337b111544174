// Parameter groups and their optimizer, in one place: every trainable span of parameters is a
// group with one contiguous block of optimizer state and an optimizer of its own (AdamW: the one
// lisa.cpp has), and one optimizer step updates all groups (global gradient-norm clipping folded
// into the update pass). Learning-rate schedules as Hugging Face's get_scheduler. The update
// arithmetic itself is the backend's (kernels.h: adamw_update).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "comm/comm.h"
#include "kernels/device_array.h"
#include "kernels/kernels.h"

namespace lisa {

// What a group holds, which decides where in the backward its gradient is final (grad_sync.h).
enum class group_role { embed, norm, head, layer, adapters };

struct param_group;
struct sparse_rows;

// A group's optimizer: how much state it keeps per parameter value and how a step updates the
// group. A policy may give its groups another one (BAdam's block updates, GaLore-style projected
// moments) without the trainer knowing; checkpoints keep the state's first two moment blocks
// as m and v.
struct optimizer {
    const char* name;
    int         moments;  // state values per parameter value this rank updates (AdamW: m and v)
    // One step of g, its gradient scaled by clip (g.step already counts this step); a sharded
    // group updates [lo, hi) only (optim_step gathers the rest).
    void (*update)(const backend& K, param_group& g, const adamw_hparams& h, float clip, const sparse_rows& sr);
};
const optimizer& optimizer_adamw();  // torch.optim.AdamW, decay on matrices only (HF's Trainer)

// A trainable span of parameters and its optimizer state [grad | m | v] (just [m | v] when the
// gradient is sparse: an untied embedding, whose gradient rows live in decoder_embed_rows).
struct param_group {
    std::string         name;             // "embed", "norm", "head", "layer.3", "lora" (checkpoint keys)
    group_role          role = group_role::adapters;
    int                 layer = -1;       // role layer: the decoder layer it holds now
    float*              param = nullptr;  // first parameter of the span
    size_t              n = 0;
    // --zero_stage 1: this rank holds the moments of (and updates) elements [lo, hi) only, a
    // 1/shards share cut in whole units (a row of the sparse embedding, else one value);
    // unsharded: [0, n)
    size_t              lo = 0, hi = 0, unit = 1;
    int                 shard = 0, shards = 1;
    const optimizer*    opt = &optimizer_adamw();  // its optimizer
    device_array<float> state;
    int64_t             step = 0;         // optimizer steps of this state (AdamW: bias correction)
    bool                sparse = false;
    struct span {
        size_t off, len;
        bool   decay;  // weight decay applies (matrices; not norms and biases, as HF's Trainer)
    };
    std::vector<span> spans;  // per tensor
    std::vector<size_t> share_lo, share_len;  // sharded: every rank's [lo, lo + len) (for gathers)
    float* grad() { return sparse ? nullptr : state.data(); }
    float* m() { return state.data() + (sparse ? 0 : n); }  // moments of [lo, hi)
    float* v() { return m() + (hi - lo); }
    bool   sharded() const { return shards > 1; }
    // fresh state: zero moments and step count (a LISA layer entering)
    void   reset() {
        state.zero();
        step = 0;
    }
};
// A group over `n` values at `param` with the given per-tensor spans; state allocated zeroed.
// shards > 1 (--zero_stage 1): moments only for this `shard`'s share, cut in `unit`s.
// opt: its optimizer (null: AdamW).
param_group param_group_make(const backend& be, const std::string& name, float* param, std::vector<param_group::span> spans,
                             bool sparse = false, int shard = 0, int shards = 1, size_t unit = 1,
                             const optimizer* opt = nullptr);
// The element range [*lo, *hi) that shard r of a group holds.
void param_group_shard_range(const param_group& g, int r, size_t* lo, size_t* hi);

// The sparse rows of the one sparse group, if any (set by whoever owns them).
struct sparse_rows {
    const float*   grad = nullptr;    // [touched rows, width]
    const int32_t* row_of = nullptr;  // [rows]: index into grad, or -1
    int64_t        rows = 0, width = 0, touched = 0;
};

// Zeroes every dense gradient.
void   optim_zero_grads(const backend& K, const std::vector<param_group*>& groups);
// The global gradient norm over all groups.
double optim_grad_norm(const backend& K, const std::vector<param_group*>& groups, const sparse_rows& sr);
// One step of every group by its optimizer, gradients scaled by clip. A sharded group updates its
// share and then gathers every rank's share of the parameters through `world`.
void   optim_step(const backend& K, const std::vector<param_group*>& groups, const adamw_hparams& h, float clip,
                  const sparse_rows& sr, comm* world = nullptr);
// Bytes of optimizer moments (m, v) this rank holds.
size_t optim_state_bytes(const std::vector<param_group*>& groups);
// A sharded group's whole moments, gathered from every rank (for a checkpoint); a collective.
void   optim_gather_moments(param_group& g, comm& world, std::vector<float>* m, std::vector<float>* v);

// ---- learning-rate schedules
enum class lr_schedule { linear, cosine, constant, constant_with_warmup };
bool        lr_schedule_parse(const std::string& s, lr_schedule* out);
const char* lr_schedule_name(lr_schedule k);
// Learning rate at optimizer step `step` (0-based) of `total`, Hugging Face semantics.
double lr_at(lr_schedule kind, double base_lr, int64_t step, int64_t warmup, int64_t total);

}  // namespace lisa
