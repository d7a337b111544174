// The communication seam: everything the trainer needs from other ranks, in one small
// interface. A single process is the one-rank case (comm_single); data-parallel ranks over MPI
// (comm_mpi.cpp, when built with MPI and started by mpirun / srun) implement the same interface.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace lisa {

class comm {
  public:
    virtual ~comm() = default;
    virtual int  rank() const = 0;  // 0 .. size-1; rank 0 writes models, logs and checkpoints
    virtual int  size() const = 0;
    // Element-wise sum over ranks, in place, the same result on every rank.
    virtual void all_reduce_sum(float* x, size_t n) = 0;
    virtual void all_reduce_sum(double* x, size_t n) = 0;
    // The same sum, started now and finished by wait_all (the buffer must stay untouched until
    // then); collectives must be started in the same order on every rank. progress() lets
    // started sums advance while the caller computes.
    virtual void all_reduce_sum_start(float* x, size_t n) = 0;
    virtual void progress() = 0;
    virtual void wait_all() = 0;
    // Rank `root`'s bytes to every rank.
    virtual void broadcast(void* data, size_t bytes, int root) = 0;
    // Each rank's x[offset[r] .. offset[r] + count[r]) to every rank (counts in floats; offset and
    // count arrays have size() entries).
    virtual void all_gather(float* x, const size_t* offset, const size_t* count) = 0;
    virtual void barrier() = 0;
    // Ends every rank at once after an error on this one (the others would wait forever in a
    // collective). A single process just returns.
    virtual void abort(int code) = 0;
    bool         is_root() const { return rank() == 0; }
    // Bytes this rank has sent into all-reduces so far (each element counted once), for logs.
    uint64_t     reduced_bytes = 0;
    // Bytes of the arrays all-gathered so far (the whole gathered array, each time), for logs.
    uint64_t     gathered_bytes = 0;
};

// One process: rank 0 of 1; every collective is the identity.
std::unique_ptr<comm> comm_single();

// The process's world: MPI's when this binary was built with MPI and started by a launcher that
// set up more than one rank (OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK in the environment),
// else a single process. Created on first use and kept for the life of the process.
comm& comm_world();
// "mpi" when built with MPI, else "none".
const char* comm_backend_name();

}  // namespace lisa
