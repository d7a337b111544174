// device_array<T>: the one type through which the model, the trainer and the decoder hold tensor
// memory (parameters, gradients, optimizer state, activations, KV cache), so that a backend with
// its own memory changes this type and nothing above it.
//
// The CPU backend's memory: a zero-initialised anonymous mmap whose pages are only backed once
// written (MAP_NORESERVE: a 7B model's full-size fp32 buffer is reserved, not committed), so a
// full-size parameter buffer of a bf16 model costs nothing for the tensors that stay in bf16, and
// release() gives a span's pages back (madvise) when a LISA layer leaves.
#pragma once
#include <cstddef>
#include <cstring>
#include <sys/mman.h>
#include <utility>
#include <vector>

#include "core/error.h"

namespace lisa {

template <typename T>
class device_array {
  public:
    device_array() = default;
    explicit device_array(size_t n) { allocate(n); }
    device_array(const device_array& o) {
        allocate(o.n_);
        if (n_) std::memcpy(p_, o.p_, n_ * sizeof(T));
    }
    device_array(device_array&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr, o.n_ = 0; }
    device_array& operator=(device_array o) noexcept {
        std::swap(p_, o.p_);
        std::swap(n_, o.n_);
        return *this;
    }
    ~device_array() {
        if (p_) munmap(p_, bytes());
    }
    T*       data() { return p_; }
    const T* data() const { return p_; }
    size_t   size() const { return n_; }
    T&       operator[](size_t i) { return p_[i]; }
    const T& operator[](size_t i) const { return p_[i]; }
    bool     operator==(const device_array& o) const { return n_ == o.n_ && (n_ == 0 || std::memcmp(p_, o.p_, bytes()) == 0); }
    bool     operator!=(const device_array& o) const { return !(*this == o); }
    // n zeroed elements: a new allocation when the size changes, else the same one cleared
    void reset(size_t n) {
        if (n != n_) *this = device_array(n);
        else zero();
    }
    // Makes room for at least n elements (contents kept only when no reallocation is needed).
    void reserve(size_t n) {
        if (n > n_) *this = device_array(n);
    }
    void zero(size_t off = 0, size_t n = (size_t)-1) {
        if (n == (size_t)-1) n = n_ - off;
        if (n) std::memset(p_ + off, 0, n * sizeof(T));
    }
    // Host values into a new allocation of their size.
    void upload(const std::vector<T>& v) {
        *this = device_array(v.size());
        if (!v.empty()) std::memcpy(p_, v.data(), v.size() * sizeof(T));
    }
    // The contents on the host (tests, checkpoints).
    std::vector<T> host_copy() const { return std::vector<T>(p_, p_ + n_); }
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
