// Data-parallel ranks over MPI. MPI is started only when a launcher (mpirun, srun) made more
// than one rank, so a plain `lisa train` never touches it; it is finalized at exit.
#include <mpi.h>

#include <climits>
#include <cstdlib>
#include <vector>

#include "comm/comm.h"
#include "core/error.h"

namespace lisa {

namespace {

// MPI counts are ints: large buffers go in pieces
constexpr size_t kChunk = (size_t)1 << 30;

void check(int rc, const char* op) {
    if (rc == MPI_SUCCESS) return;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    fail(strf("MPI %s: %.*s", op, len, msg));
}

class mpi_comm final : public comm {
  public:
    mpi_comm() {
        int inited = 0;
        MPI_Initialized(&inited);
        if (!inited) {
            int provided = 0;
            check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init");
            std::atexit([] {
                int fin = 0;
                MPI_Finalized(&fin);
                if (!fin) MPI_Finalize();
            });
        }
        MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
        MPI_Comm_size(MPI_COMM_WORLD, &size_);
        // errors come back as codes (and become lisa::error), not as MPI's own abort
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
        // the step loop allocates nothing: requests of a step's all-reduces, all-gather tables
        pending_.reserve(4096);
        counts_.assign(size_, 0);
        displs_.assign(size_, 0);
    }
    int  rank() const override { return rank_; }
    int  size() const override { return size_; }
    void all_reduce_sum(float* x, size_t n) override {
        reduced_bytes += n * sizeof(float);
        for (size_t o = 0; o < n; o += kChunk)
            check(MPI_Allreduce(MPI_IN_PLACE, x + o, (int)std::min(kChunk, n - o), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD),
                  "all-reduce");
    }
    void all_reduce_sum(double* x, size_t n) override {
        for (size_t o = 0; o < n; o += kChunk)
            check(MPI_Allreduce(MPI_IN_PLACE, x + o, (int)std::min(kChunk, n - o), MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD),
                  "all-reduce");
    }
    void all_reduce_sum_start(float* x, size_t n) override {
        reduced_bytes += n * sizeof(float);
        for (size_t o = 0; o < n; o += kChunk) {
            MPI_Request r;
            check(MPI_Iallreduce(MPI_IN_PLACE, x + o, (int)std::min(kChunk, n - o), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &r),
                  "all-reduce (start)");
            pending_.push_back(r);
        }
    }
    void progress() override {
        if (pending_.empty()) return;
        int done = 0;
        check(MPI_Testall((int)pending_.size(), pending_.data(), &done, MPI_STATUSES_IGNORE), "all-reduce (progress)");
        if (done) pending_.clear();
    }
    void wait_all() override {
        if (pending_.empty()) return;
        check(MPI_Waitall((int)pending_.size(), pending_.data(), MPI_STATUSES_IGNORE), "all-reduce (wait)");
        pending_.clear();
    }
    void broadcast(void* data, size_t bytes, int root) override {
        for (size_t o = 0; o < bytes; o += kChunk)
            check(MPI_Bcast((char*)data + o, (int)std::min(kChunk, bytes - o), MPI_BYTE, root, MPI_COMM_WORLD), "broadcast");
    }
    void all_gather(float* x, const size_t* offset, const size_t* count) override {
        std::vector<int>& counts = counts_;
        std::vector<int>& displs = displs_;
        for (int r = 0; r < size_; r++) gathered_bytes += count[r] * sizeof(float);
        for (int r = 0; r < size_; r++) {
            if (count[r] > (size_t)INT_MAX || offset[r] > (size_t)INT_MAX)
                fail("all-gather: a shard of over 2^31 floats (use more ranks)");
            counts[r] = (int)count[r];
            displs[r] = (int)offset[r];
        }
        check(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, x, counts.data(), displs.data(), MPI_FLOAT,
                             MPI_COMM_WORLD),
              "all-gather");
    }
    void barrier() override { check(MPI_Barrier(MPI_COMM_WORLD), "barrier"); }
    void abort(int code) override { MPI_Abort(MPI_COMM_WORLD, code); }

  private:
    int                      rank_ = 0, size_ = 1;
    std::vector<MPI_Request> pending_;  // started all-reduces
    std::vector<int>         counts_, displs_;  // all_gather's tables, one entry per rank
};

bool launched_with_ranks() {
    for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"}) {
        const char* s = std::getenv(v);
        if (s && std::atoi(s) > 1) return true;
    }
    return false;
}

}  // namespace

comm& comm_world() {
    static std::unique_ptr<comm> w = launched_with_ranks() ? std::unique_ptr<comm>(new mpi_comm()) : comm_single();
    return *w;
}
const char* comm_backend_name() { return "mpi"; }

}  // namespace lisa
