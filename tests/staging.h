// Host vectors for kernel tests on any backend. The kernel harness keeps its data in host vectors
// (hvec) and calls kernels through staged(K): a wrapper of backend K whose every kernel call copies
// each hvec it is given into K's device memory, calls K's kernel on the device copies, and copies
// the buffers the kernel may write (non-const pointers) back into their hvecs. So one test body
// checks the CPU backends, their checked variants (LISA_CHECK_DEVICE_MEMORY=1) and a GPU backend
// alike. A pointer that is in no live hvec passes through unchanged (device memory the test
// allocated itself).
#pragma once
#include <cstdint>
#include <cstring>
#include <set>
#include <type_traits>
#include <vector>

#include "kernels/kernels.h"

namespace lisa_test {

struct hvec_base {
    virtual ~hvec_base() = default;
    virtual void*  bytes_at() = 0;
    virtual size_t bytes() const = 0;
};

inline std::set<hvec_base*>& hvec_registry() {
    static std::set<hvec_base*> live;
    return live;
}

// Registers its owner for as long as the owner lives (copies register themselves).
struct hvec_reg {
    hvec_base* owner;
    explicit hvec_reg(hvec_base* o) : owner(o) { hvec_registry().insert(o); }
    hvec_reg(const hvec_reg&) = delete;
    hvec_reg& operator=(const hvec_reg&) { return *this; }
    ~hvec_reg() { hvec_registry().erase(owner); }
};

template <typename T>
class hvec : public std::vector<T>, public hvec_base {
  public:
    using std::vector<T>::vector;
    hvec(const hvec& o) : std::vector<T>(o) {}
    hvec(hvec&& o) : std::vector<T>(std::move(o)) {}
    hvec(const std::vector<T>& o) : std::vector<T>(o) {}
    hvec(std::vector<T>&& o) : std::vector<T>(std::move(o)) {}
    hvec& operator=(const hvec& o) = default;
    hvec& operator=(hvec&& o) = default;
    void*  bytes_at() override { return this->data(); }
    size_t bytes() const override { return this->size() * sizeof(T); }

  private:
    hvec_reg reg_{this};
};
using fvec = hvec<float>;
using ivec = hvec<int32_t>;

// One kernel call's device copies.
class stage_call {
  public:
    explicit stage_call(const lisa::backend& be) : be_(be) {}
    ~stage_call() {
        for (auto& c : copies_) {
            if (c.written) be_.mem_download(c.owner->bytes_at(), c.dev, c.owner->bytes());
            be_.mem_free(c.dev, c.owner->bytes());
        }
    }
    template <typename A>
    A map(A a) {
        if constexpr (std::is_pointer_v<A>) {
            if (!a) return a;
            constexpr bool writes = !std::is_const_v<std::remove_pointer_t<A>>;
            return (A)device_of((const void*)a, writes);
        } else if constexpr (std::is_same_v<A, lisa::attn_params>) {
            lisa::attn_params p = a;
            if (p.pos) p.pos = (const int32_t*)device_of(p.pos, false);
            return p;
        } else {
            return a;
        }
    }

  private:
    struct copy {
        hvec_base* owner;
        void*      dev;
        bool       written;
    };
    void* device_of(const void* p, bool writes) {
        for (hvec_base* h : hvec_registry()) {
            char* base = (char*)h->bytes_at();
            if (!base || (const char*)p < base || (const char*)p >= base + h->bytes()) continue;
            for (auto& c : copies_)
                if (c.owner == h) {
                    c.written |= writes;
                    return (char*)c.dev + ((const char*)p - base);
                }
            void* dev = be_.mem_alloc(h->bytes());
            be_.mem_upload(dev, base, h->bytes());
            copies_.push_back({h, dev, writes});
            return (char*)dev + ((const char*)p - base);
        }
        return const_cast<void*>(p);  // not a host vector: the test's own device memory
    }
    const lisa::backend& be_;
    std::vector<copy>    copies_;
};

template <int W>
const lisa::backend& staged_table(const lisa::backend& in) {
    static const lisa::backend* inner = &in;
    static const lisa::backend table = [] {
        lisa::backend t = *inner;
#define LISA_STAGED(f)                                  \
    t.f = [](auto... a) -> decltype(auto) {             \
        stage_call s(*inner);                           \
        return inner->f(s.map(a)...);                   \
    }
        LISA_STAGED(gemm);
        LISA_STAGED(linear_forward);
        LISA_STAGED(linear_backward);
        LISA_STAGED(linear_forward_bf16);
        LISA_STAGED(linear_backward_bf16);
        LISA_STAGED(linear_forward_q);
        LISA_STAGED(linear_backward_q);
        LISA_STAGED(rmsnorm_forward);
        LISA_STAGED(rmsnorm_backward);
        LISA_STAGED(rope_forward);
        LISA_STAGED(rope_backward);
        LISA_STAGED(rope_tables);
        LISA_STAGED(attention_forward);
        LISA_STAGED(attention_backward);
        LISA_STAGED(attention_forward_kv);
        LISA_STAGED(swiglu_forward);
        LISA_STAGED(swiglu_backward);
        LISA_STAGED(geglu_forward);
        LISA_STAGED(geglu_backward);
        LISA_STAGED(add);
        LISA_STAGED(scale);
        LISA_STAGED(softcap);
        LISA_STAGED(zero);
        LISA_STAGED(copy);
        LISA_STAGED(dropout);
        LISA_STAGED(embedding_forward);
        LISA_STAGED(embedding_forward_bf16);
        LISA_STAGED(embedding_forward_q);
        LISA_STAGED(embedding_backward);
        LISA_STAGED(embedding_backward_rows);
        LISA_STAGED(lmhead_xent);
        LISA_STAGED(lora_fold);
        LISA_STAGED(adamw_update);
        LISA_STAGED(adamw_update_rows);
        LISA_STAGED(sum_of_squares);
        LISA_STAGED(fill_normal);
        LISA_STAGED(fill);
        LISA_STAGED(bf16_to_f32);
        LISA_STAGED(f32_to_bf16);
#undef LISA_STAGED
        return t;
    }();
    return table;
}

// The staged wrapper of a backend by name ("ref", "cpu", "vulkan"); nullptr when there is none.
inline const lisa::backend* staged(const char* name) {
    const lisa::backend* b = lisa::backend_by_name(name);
    if (!b) return nullptr;
    const std::string n = name;
    if (n == "ref") return &staged_table<0>(*b);
    if (n == "cpu") return &staged_table<1>(*b);
    return &staged_table<2>(*b);
}

}  // namespace lisa_test
