// How many compute threads, and keeping that count right while other programs use the CPUs.
//
// The kernels' results do not depend on the thread count (see kernels/cpu/backend_cpu.cpp), so
// the count is purely a matter of speed and may change from one step to the next.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lisa {

// The CPUs this process may use: its affinity mask (taskset, Slurm, MPI binding), capped by a
// cgroup CPU quota (a container's --cpus). `why`, when given, says which limit applied.
int threads_available(std::string* why);

// The count a command starts with: --threads (flag > 0), else OMP_NUM_THREADS, both fixed; else
// threads_available, adapted to the load by a thread_governor where the command has steps.
struct thread_choice {
    int         n = 1;             // threads to start with
    bool        fixed = false;     // set by the user: never changed
    std::string why;               // where n came from, for the first log line
    std::string wait;              // what a worker thread without work does, for the same line
};
thread_choice threads_choose(int flag);

// The spin count set before libgomp reads its environment (see cli/main.cpp) unless the user set
// OMP_WAIT_POLICY or GOMP_SPINCOUNT: a worker without work spins this many rounds, then sleeps.
static const char* const kDefaultSpinCount = "300";

// Seconds this process's threads have spent runnable but waiting for a CPU since they started
// (the kernel's /proc/self/task/*/schedstat), or -1 where the kernel does not say. Allocates
// nothing, so it may be called in the step loop.
double threads_wait_seconds();

// Chooses the thread count step by step when the user did not fix it. After each step it is told
// how long the step's compute took, how much work it did (tokens) and how long our threads waited
// for a CPU. When they waited (another program holds a core), it tries one step with fewer
// threads and keeps whichever count computes a token faster; from a reduced count it tries more
// threads now and then, so the count comes back when the machine frees up. Probes that lose are
// tried again less and less often.
struct thread_governor {
    int                 max = 1;          // the most threads it uses (threads_available)
    int                 cur = 1;          // threads for the next step
    int                 base = 0;         // the count before a probe; 0 when not probing
    int64_t             steps = 0;        // steps seen
    int64_t             next_probe = 0;   // no probe before this many steps
    int64_t             gap = 0;          // steps between probes now (doubles after a losing probe)
    int                 seen_at_cur = 0;  // steps timed at `cur` since it was adopted
    std::vector<double> per_token;        // recent seconds per token at each count (index = threads), 0 = none
    double              last_wait = -1;   // the wait fraction of the last step (for the log)
};

void thread_governor_init(thread_governor* g, int max);

// Records one step run with g->cur threads: `seconds` of compute for `tokens` tokens, during which
// our threads waited `wait_seconds` for a CPU (< 0: unknown). Returns the count for the next step;
// `why`, when given and the count changes for good, gets a short reason.
int thread_governor_step(thread_governor* g, double seconds, double tokens, double wait_seconds, std::string* why);

}  // namespace lisa
