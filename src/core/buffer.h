// A zero-initialised array whose pages are only backed by memory once written: anonymous mmap
// (MAP_NORESERVE: a 7B model's full-size fp32 buffer is reserved, not committed),
// so a full-size parameter buffer of a bf16 model costs nothing for the tensors that stay in
// bf16, and release() gives a span's pages back (madvise) when a LISA layer leaves.
#pragma once
#include <cstddef>
#include <cstring>
#include <sys/mman.h>
#include <utility>

#include "core/error.h"

namespace lisa {

template <typename T>
class lazy_array {
  public:
    lazy_array() = default;
    explicit lazy_array(size_t n) { allocate(n); }
    lazy_array(const lazy_array& o) {
        allocate(o.n_);
        if (n_) std::memcpy(p_, o.p_, n_ * sizeof(T));
    }
    lazy_array(lazy_array&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr, o.n_ = 0; }
    lazy_array& operator=(lazy_array o) noexcept {
        std::swap(p_, o.p_);
        std::swap(n_, o.n_);
        return *this;
    }
    ~lazy_array() {
        if (p_) munmap(p_, bytes());
    }
    T*       data() { return p_; }
    const T* data() const { return p_; }
    size_t   size() const { return n_; }
    T&       operator[](size_t i) { return p_[i]; }
    const T& operator[](size_t i) const { return p_[i]; }
    bool     operator==(const lazy_array& o) const { return n_ == o.n_ && (n_ == 0 || std::memcmp(p_, o.p_, bytes()) == 0); }
    bool     operator!=(const lazy_array& o) const { return !(*this == o); }
    // Zeroes [off, off+n) and returns the whole pages inside it to the system.
    void release(size_t off, size_t n) {
        const size_t page = 4096;
        char* b = (char*)(p_ + off);
        char* e = (char*)(p_ + off + n);
        char* pb = (char*)(((size_t)b + page - 1) / page * page);
        char* pe = (char*)((size_t)e / page * page);
        if (pe > pb) {
            std::memset(b, 0, pb - b);
            madvise(pb, pe - pb, MADV_DONTNEED);  // anonymous private pages read back as zero
            std::memset(pe, 0, e - pe);
        } else {
            std::memset(b, 0, e - b);
        }
    }

  private:
    size_t bytes() const { return n_ * sizeof(T); }
    void   allocate(size_t n) {
        n_ = n;
        if (n == 0) return;
        void* p = mmap(nullptr, bytes(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) fail(strf("out of memory: cannot reserve %zu MiB", bytes() >> 20));
        p_ = (T*)p;
    }
    T*     p_ = nullptr;
    size_t n_ = 0;
};

}  // namespace lisa
