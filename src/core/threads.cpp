#include "core/threads.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace lisa {

// A whole small file read into buf (NUL-terminated); false if it cannot be read.
static bool read_small(const char* path, char* buf, size_t cap, int dirfd = AT_FDCWD) {
    const int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    const ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    if (n <= 0) return false;
    buf[n] = 0;
    return true;
}

int threads_available(std::string* why) {
    int n = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
    if (n <= 0) n = (int)std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
    const int cpus = n;
    // cgroup v2 "QUOTA PERIOD" or "max PERIOD"; v1 the two files
    double quota = -1;
    char buf[128];
    if (read_small("/sys/fs/cgroup/cpu.max", buf, sizeof buf)) {
        long long q = 0, p = 0;
        if (std::sscanf(buf, "%lld %lld", &q, &p) == 2 && q > 0 && p > 0) quota = (double)q / (double)p;
    } else if (read_small("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", buf, sizeof buf)) {
        const long long q = std::atoll(buf);
        char pb[64];
        if (q > 0 && read_small("/sys/fs/cgroup/cpu/cpu.cfs_period_us", pb, sizeof pb) && std::atoll(pb) > 0)
            quota = (double)q / (double)std::atoll(pb);
    }
    if (quota > 0 && std::ceil(quota) < n) n = std::max(1, (int)std::ceil(quota - 1e-9));
    if (why) {
        char w[160];
        if (n < cpus)
            std::snprintf(w, sizeof w, "a cgroup CPU quota of %.2f CPUs", quota);
        else if (cpus == 1)
            std::snprintf(w, sizeof w, "the 1 CPU this process may use");
        else
            std::snprintf(w, sizeof w, "all %d CPUs this process may use", cpus);
        *why = w;
    }
    return n;
}

thread_choice threads_choose(int flag) {
    thread_choice c;
    const char* env = std::getenv("OMP_NUM_THREADS");
    if (flag > 0) {
        c.n = flag, c.fixed = true, c.why = "--threads";
    } else if (env && std::atoi(env) > 0) {
        c.n = std::atoi(env), c.fixed = true, c.why = "OMP_NUM_THREADS";
    } else {
        c.n = threads_available(&c.why);
    }
    const char* policy = std::getenv("OMP_WAIT_POLICY");
    const char* spin = std::getenv("GOMP_SPINCOUNT");
    if (policy && *policy)
        c.wait = std::string("OMP_WAIT_POLICY=") + policy;
    else if (spin && *spin)
        c.wait = std::string("idle threads spin ") + spin + " rounds, then sleep";
    else
        c.wait = "libgomp's default wait policy";
    return c;
}

// getdents64's record (the libc wrapper is not in every glibc this builds with)
struct dirent64_rec {
    uint64_t       ino;
    int64_t        off;
    unsigned short reclen;
    unsigned char  type;
    char           name[1];
};

double threads_wait_seconds() {
    const int dfd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return -1;
    alignas(8) char buf[4096];
    double ns = 0;
    bool any = false;
    for (;;) {
        const long n = syscall(SYS_getdents64, dfd, buf, sizeof buf);
        if (n <= 0) break;
        for (long off = 0; off < n;) {
            const dirent64_rec* d = reinterpret_cast<const dirent64_rec*>(buf + off);
            off += d->reclen;
            if (d->name[0] == '.') continue;
            char path[64], line[128];
            std::snprintf(path, sizeof path, "%s/schedstat", d->name);
            // "time on CPU (ns)  time runnable but waiting (ns)  timeslices"
            unsigned long long run = 0, wait = 0;
            if (read_small(path, line, sizeof line, dfd) && std::sscanf(line, "%llu %llu", &run, &wait) == 2) {
                ns += (double)wait;
                any = true;
            }
        }
    }
    close(dfd);
    return any ? ns * 1e-9 : -1;
}

// A probe must beat the count it challenges by this much per token to win (steps differ in
// their sequences, so small differences are noise).
static const double kProbeGain = 0.08;
// Our threads waiting this share of their time for a CPU means another program holds a core.
static const double kContended = 0.10;
static const int64_t kMinGap = 4, kMaxGap = 64;

void thread_governor_init(thread_governor* g, int max) {
    *g = thread_governor{};
    g->max = std::max(1, max);
    g->cur = g->max;
    g->gap = kMinGap;
    g->next_probe = 2;  // the first step warms caches and buffers: not a fair measure
    g->per_token.assign((size_t)g->max + 1, 0.0);
}

int thread_governor_step(thread_governor* g, double seconds, double tokens, double wait_seconds, std::string* why) {
    g->steps++;
    if (!(seconds > 0) || !(tokens > 0) || g->steps == 1) return g->cur;
    const double spt = seconds / tokens;
    g->last_wait = wait_seconds >= 0 ? wait_seconds / (seconds * g->cur) : -1;
    double& at_cur = g->per_token[(size_t)g->cur];
    if (g->base) {  // this step was a probe at cur, challenging base
        const int base = g->base;
        g->base = 0;
        const double ref = g->per_token[(size_t)base];
        if (spt < ref * (1.0 - kProbeGain)) {  // the probe wins: stay
            if (why) {
                char w[200];
                std::snprintf(w, sizeof w, "%d compute thread%s from now: %.0f%% faster per token than %d%s", g->cur,
                              g->cur == 1 ? "" : "s", 100.0 * (ref / spt - 1.0), base,
                              g->cur < base ? " (another program is using the CPUs)" : " (the CPUs are free again)");
                *why = w;
            }
            at_cur = spt;
            g->seen_at_cur = 1;
            g->gap = kMinGap;
        } else {  // back to base, and try again later than last time
            g->cur = base;
            g->gap = std::min(kMaxGap, g->gap * 2);
        }
        g->next_probe = g->steps + g->gap;
        return g->cur;
    }
    at_cur = at_cur > 0 && g->seen_at_cur > 0 ? 0.75 * at_cur + 0.25 * spt : spt;
    g->seen_at_cur++;
    if (g->steps < g->next_probe || g->seen_at_cur < 2) return g->cur;
    const int step = std::max(1, g->cur / 4);
    if (g->cur > 1 && g->last_wait > kContended) {
        g->base = g->cur;
        g->cur = std::max(1, g->cur - step);
    } else if (g->cur < g->max) {
        g->base = g->cur;
        g->cur = std::min(g->max, g->cur + step);
    }
    return g->cur;
}

}  // namespace lisa
