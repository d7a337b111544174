// Gradient synchronisation across data-parallel ranks: what trains now is summed, nothing else
// (LISA: the active layers, embedding, norm and head; LoRA: the adapters). A decoder layer's sum
// starts as soon as the last micro-batch's backward has finished it, while the layers below still
// compute; the final norm and head start first (the backward finishes them first), what is final
// only at the end (the embedding, LoRA's one group, the sparse embedding rows) follows. Every rank
// starts the sums in the same order. The plan is rebuilt each step into kept capacity: nothing is
// allocated once the groups have been seen.
#pragma once
#include <cstdint>
#include <vector>

#include "comm/comm.h"
#include "train/optim.h"

namespace lisa {

struct grad_sync {
    comm*                                  world = nullptr;
    int64_t                                num_layers = 0;
    std::vector<std::vector<param_group*>> at;     // [l]: groups whose sum starts when layer l is done; [L]: norm, head
    std::vector<param_group*>              after;  // groups whose sum starts after the whole backward
    // Gradients in device memory the host cannot address (a GPU, the checked CPU backend) are
    // summed through the host: downloaded into these buffers when their sum starts, uploaded back
    // when all sums are done. Reused step after step (grown, never shrunk).
    const backend*                         be = nullptr;
    std::vector<std::vector<float>>        staged;
    std::vector<std::pair<float*, size_t>> staged_to;  // device address and values of staged[i]
    size_t                                 n_staged = 0;
};

void grad_sync_init(grad_sync* s, comm* world, int64_t num_layers);
// Sorts this step's dense groups by where their sum can start (a group's role and layer say).
void grad_sync_plan(grad_sync* s, const std::vector<param_group*>& groups);
// The backward has finished layer l (num_layers: the head and final norm): start those sums.
void grad_sync_layer_done(grad_sync* s, int64_t l);
// After the step's last backward: start what is left (every layer's, in order, when this rank had
// no micro-batch), the sparse rows if any (`rows` values), and wait for all sums.
void grad_sync_finish(grad_sync* s, bool had_backward, float* sparse_rows, size_t rows_values);

}  // namespace lisa
