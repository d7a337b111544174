// The communication seam: everything the trainer needs from other ranks, in one small
// interface. A single process is the one-rank case (comm_single); data-parallel ranks over MPI
// implement the same interface, and the trainer does not change.
#pragma once
#include <cstddef>
#include <memory>

namespace lisa {

class comm {
  public:
    virtual ~comm() = default;
    virtual int  rank() const = 0;  // 0 .. size-1; rank 0 writes models, logs and checkpoints
    virtual int  size() const = 0;
    // Element-wise sum over ranks, in place, the same result on every rank.
    virtual void all_reduce_sum(float* x, size_t n) = 0;
    virtual void all_reduce_sum(double* x, size_t n) = 0;
    // Rank `root`'s bytes to every rank.
    virtual void broadcast(void* data, size_t bytes, int root) = 0;
    virtual void barrier() = 0;
    bool         is_root() const { return rank() == 0; }
};

// One process: rank 0 of 1; every collective is the identity.
std::unique_ptr<comm> comm_single();

}  // namespace lisa
