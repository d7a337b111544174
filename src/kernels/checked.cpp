// The checked CPU backends (LISA_CHECK_DEVICE_MEMORY=1): the proof, on a machine without a GPU,
// that host code treats device memory as a GPU would force it to. Every allocation is mapped
// PROT_NONE except while a call of the backend that uses it runs (the allocations a call's pointer
// arguments lie in are opened for the call, then closed again), so a host read or write of a
// tensor outside a kernel faults at the line that did it; and every pointer a kernel is given must
// lie inside a live allocation, so host buffers (token ids, targets, row maps) passed where device
// memory belongs fail by name. Calls are serialised by one lock. A test mode, not a product: two
// mprotect calls per argument per call.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <execinfo.h>
#include <map>
#include <mutex>
#include <sys/mman.h>
#include <type_traits>
#include <unistd.h>
#include <vector>

#include "core/error.h"
#include "kernels/host_memory.h"
#include "kernels/kernels.h"

namespace lisa {

bool device_memory_checked() {
    static const bool on = [] {
        const char* e = std::getenv("LISA_CHECK_DEVICE_MEMORY");
        return e && std::strcmp(e, "1") == 0;
    }();
    return on;
}

namespace {

const size_t kPage = 4096;
size_t       page_round(size_t b) { return (b + kPage - 1) / kPage * kPage; }

struct allocation {
    size_t bytes;
    int    open;  // calls in progress that use it (accessible while > 0)
};
std::recursive_mutex             g_mu;
std::map<uintptr_t, allocation>  g_live;  // base -> allocation, of every backend's checked allocations

void protect(uintptr_t base, const allocation& a, int prot) {
    if (mprotect((void*)base, page_round(a.bytes), prot) != 0) fail("LISA_CHECK_DEVICE_MEMORY: mprotect failed");
}

// the allocation holding p, or g_live.end()
std::map<uintptr_t, allocation>::iterator find(const void* p) {
    const uintptr_t a = (uintptr_t)p;
    auto it = g_live.upper_bound(a);
    if (it == g_live.begin()) return g_live.end();
    --it;
    return a < it->first + std::max<size_t>(it->second.bytes, 1) ? it : g_live.end();
}

// One backend call: every pointer it is given must lie in a live allocation, and exactly those
// allocations are accessible until it returns (a kernel reaches memory only through its arguments).
class open_guard {
  public:
    template <typename... A>
    explicit open_guard(const char* what, const A&... a) {
        int i = 0;
        (take(what, ++i, a), ...);
        for (int k = 0; k < n_; k++)
            if (opened_[k]->second.open++ == 0) protect(opened_[k]->first, opened_[k]->second, PROT_READ | PROT_WRITE);
    }
    ~open_guard() {
        for (int k = 0; k < n_; k++)
            if (--opened_[k]->second.open == 0) protect(opened_[k]->first, opened_[k]->second, PROT_NONE);
    }

  private:
    void open_ptr(const char* what, int i, const void* p) {
        if (!p) return;
        auto it = find(p);
        if (it == g_live.end())
            fail(strf("LISA_CHECK_DEVICE_MEMORY: %s, argument %d (%p) is not device memory", what, i, p));
        for (int k = 0; k < n_; k++)
            if (opened_[k] == it) return;
        LISA_ASSERT(n_ < kMaxArgs, "LISA_CHECK_DEVICE_MEMORY", "more pointer arguments than the guard holds");
        opened_[n_++] = it;
    }
    template <typename A>
    void take(const char* what, int i, const A& a) {
        if constexpr (std::is_pointer_v<A>) open_ptr(what, i, (const void*)a);
        else if constexpr (std::is_same_v<A, attn_params>) open_ptr(what, i, a.pos);
    }
    // a fixed array: the step loop allocates nothing, in this mode too (tests/test_alloc)
    static const int                                 kMaxArgs = 16;
    std::lock_guard<std::recursive_mutex>            lock_{g_mu};
    std::map<uintptr_t, allocation>::iterator        opened_[kMaxArgs];
    int                                              n_ = 0;
};

void on_segv(int sig, siginfo_t* si, void*) {
    char msg[200];
    const int n = std::snprintf(msg, sizeof msg,
                                "lisa: LISA_CHECK_DEVICE_MEMORY: the host touched %p outside a kernel call "
                                "(device memory is only for kernels; use upload/download):\n",
                                si->si_addr);
    if (n > 0) (void)!write(2, msg, (size_t)n);
    void* frames[48];
    backtrace_symbols_fd(frames, backtrace(frames, 48), 2);
    signal(sig, SIG_DFL);  // the faulting access repeats and ends the process
}

void install_segv_report() {
    static std::once_flag once;
    std::call_once(once, [] {
        struct sigaction sa {};
        sa.sa_sigaction = on_segv;
        sa.sa_flags = SA_SIGINFO;
        sigaction(SIGSEGV, &sa, nullptr);
    });
}

// One wrapped table per inner backend (W: which), its lambdas calling through `inner`.
template <int W>
const backend& make_checked(const backend& in) {
    static const backend* inner = &in;
    static const backend table = [] {
        backend t = *inner;
#define LISA_CHECKED(f)                                    \
    t.f = [](auto... a) -> decltype(auto) {                \
        open_guard g("kernel " #f, a...);                  \
        return inner->f(a...);                             \
    }
        LISA_CHECKED(gemm);
        LISA_CHECKED(linear_forward);
        LISA_CHECKED(linear_backward);
        LISA_CHECKED(linear_forward_bf16);
        LISA_CHECKED(linear_backward_bf16);
        LISA_CHECKED(linear_forward_q);
        LISA_CHECKED(linear_backward_q);
        LISA_CHECKED(rmsnorm_forward);
        LISA_CHECKED(rmsnorm_backward);
        LISA_CHECKED(rope_forward);
        LISA_CHECKED(rope_backward);
        LISA_CHECKED(rope_tables);
        LISA_CHECKED(attention_forward);
        LISA_CHECKED(attention_backward);
        LISA_CHECKED(attention_forward_kv);
        LISA_CHECKED(swiglu_forward);
        LISA_CHECKED(swiglu_backward);
        LISA_CHECKED(geglu_forward);
        LISA_CHECKED(geglu_backward);
        LISA_CHECKED(add);
        LISA_CHECKED(scale);
        LISA_CHECKED(softcap);
        LISA_CHECKED(zero);
        LISA_CHECKED(copy);
        LISA_CHECKED(dropout);
        LISA_CHECKED(embedding_forward);
        LISA_CHECKED(embedding_forward_bf16);
        LISA_CHECKED(embedding_forward_q);
        LISA_CHECKED(embedding_backward);
        LISA_CHECKED(embedding_backward_rows);
        LISA_CHECKED(lmhead_xent);
        LISA_CHECKED(lora_fold);
        LISA_CHECKED(adamw_update);
        LISA_CHECKED(adamw_update_rows);
        LISA_CHECKED(sum_of_squares);
        LISA_CHECKED(fill_normal);
        LISA_CHECKED(fill);
        LISA_CHECKED(bf16_to_f32);
        LISA_CHECKED(f32_to_bf16);
#undef LISA_CHECKED
        t.mem_alloc = [](size_t bytes) -> void* {
            std::lock_guard<std::recursive_mutex> lock(g_mu);
            void* p = inner->mem_alloc(bytes);
            if (!p) return p;
            g_live[(uintptr_t)p] = {bytes, 0};
            protect((uintptr_t)p, g_live[(uintptr_t)p], PROT_NONE);
            return p;
        };
        t.mem_free = [](void* p, size_t bytes) {
            if (!p) return;
            std::lock_guard<std::recursive_mutex> lock(g_mu);
            LISA_ASSERT(g_live.count((uintptr_t)p) && g_live[(uintptr_t)p].bytes == bytes &&
                            g_live[(uintptr_t)p].open == 0,
                        "mem_free", "not the base and size of a live allocation, or in use by a call");
            g_live.erase((uintptr_t)p);
            inner->mem_free(p, bytes);
        };
        t.mem_upload = [](void* dst, const void* host, size_t bytes) {
            open_guard g("mem_upload", dst);
            inner->mem_upload(dst, host, bytes);
        };
        t.mem_download = [](void* host, const void* src, size_t bytes) {
            open_guard g("mem_download", src);
            inner->mem_download(host, src, bytes);
        };
        t.mem_copy = [](void* dst, const void* src, size_t bytes) {
            open_guard g("mem_copy", dst, src);
            inner->mem_copy(dst, src, bytes);
        };
        t.mem_zero = [](void* p, size_t bytes) {
            open_guard g("mem_zero", p);
            inner->mem_zero(p, bytes);
        };
        t.mem_release = [](void* p, size_t bytes) {
            open_guard g("mem_release", p);
            inner->mem_release(p, bytes);
        };
        t.mem_host = [](void*) -> void* { return nullptr; };  // never: everything goes through the calls
        return t;
    }();
    install_segv_report();
    return table;
}

}  // namespace

const backend& backend_checked(const backend& inner, int which) {
    return which == 0 ? make_checked<0>(inner) : make_checked<1>(inner);
}

}  // namespace lisa
