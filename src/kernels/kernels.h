// The backend-neutral kernel interface: every loop over tensor data in lisa.cpp is one of these
// functions. A backend is a table of them; the model, LoRA and the optimizer call kernels only
// through a `backend`, so the backend is chosen in one place (`compute_ctx::be`, each model's
// `decoder_model::ctx`, which the trainer's optimizer uses too) and a new one (CUDA, say) implements
// this table and joins the kernel harness
// (tests/test_kernels.cpp), which checks every kernel of a backend against `backend_ref()` and
// every backward by finite differences.
//
// Conventions, for every backend:
// - Buffers are row-major fp32 (bf16 where the name says so) in the backend's memory
//   (`device_array`); sizes are element counts.
// - Each backward ACCUMULATES (+=) into the gradient buffers it is given, so callers zero
//   gradients once and several paths can add into the same buffer (tied embeddings). A gradient
//   pointer that is nullptr is skipped: frozen weights get no weight gradient while their input
//   gradient still flows.
// - Results do not depend on the thread count (fixed reduction orders), so a run is
//   reproducible bit for bit on a given machine.
// - Kernel temporaries live in per-thread buffers that grow on first use and are reused after:
//   a training step in steady state allocates nothing.
#pragma once
#include <cstddef>
#include <cstdint>

namespace lisa {

struct adamw_hparams {
    double lr = 5e-5, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
};

// How one layer's attention scores are formed (per layer: Gemma 3 mixes local and global layers).
struct attn_params {
    float   scale = 0.0f;    // score = scale · q·k (1/sqrt(head_dim) unless the model says otherwise)
    float   softcap = 0.0f;  // > 0: score = softcap · tanh(score / softcap), before the softmax
    int64_t window = 0;      // > 0: query t sees keys t-window+1..t only (sliding window); 0: all of 0..t
    // Several samples in one row (padding-free and packed batches): pos[b·T + t] is token t's
    // position in its own sample, 0 at each sample's first token, so a query sees only the keys
    // of its sample (t - pos[t] .. t), a block-diagonal causal mask with no T×T mask stored.
    // nullptr: one sample per row (positions 0..T-1). Not used by attention_forward_kv.
    const int32_t* pos = nullptr;
};

// The largest shapes a run will give the kernels, so that a backend can size its temporaries once,
// on every thread, before the step loop (a thread seeing its largest shape only at step 9 would
// allocate there).
struct scratch_plan {
    int64_t max_T = 0;      // longest sequence given to attention
    int64_t max_rows = 0;   // most rows given to a norm (tokens × heads for per-head norms)
    int64_t max_width = 0;  // widest row (hidden, intermediate or q size)
    int64_t vocab = 0;      // LM head width
    bool    softcap = false;
    int     threads = 0;    // the most threads a later call may use (0 = the current count)
};

struct backend {
    const char* name;  // "cpu", "ref"

    // Compute threads for the calling thread's kernels from now on (0 = leave as is).
    void (*set_threads)(int n);
    // Sizes the per-thread temporaries for the given shapes on every compute thread.
    void (*reserve)(const scratch_plan& p);

    // ---- general matrix product: C[M,N] = alpha · op(A)·op(B) + beta · C, op = transpose when
    // the flag is set; lda/ldb/ldc are row strides (BLAS sgemm, row-major).
    void (*gemm)(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                 int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

    // ---- linear: y[N,out] = x[N,in] · W[out,in]ᵀ + b[out] (b may be null). HF nn.Linear layout.
    void (*linear_forward)(float* y, const float* x, const float* w, const float* b, int64_t N, int64_t in,
                           int64_t out);
    // dx += dy·W ; dw += dyᵀ·x ; db += Σ_rows dy   (each may be null)
    void (*linear_backward)(float* dx, float* dw, float* db, const float* dy, const float* x, const float* w,
                            int64_t N, int64_t in, int64_t out);
    // the same with a bf16 weight held frozen: converted block by block, never copied whole
    void (*linear_forward_bf16)(float* y, const float* x, const uint16_t* w, const float* b, int64_t N, int64_t in,
                                int64_t out);
    // dx += dy·W
    void (*linear_backward_bf16)(float* dx, const float* dy, const uint16_t* w, int64_t N, int64_t in, int64_t out);
    // the same with the frozen weight in a ggml block type (q8_0, q4_0, q4_K, ...: io/ggml_quants.h):
    // each row of `in` values is whole blocks, dequantized a block of rows at a time (issue #29).
    // Every backend: the CPU ones in tiles of 256 rows, Vulkan in tiles of ~16 MiB (dequant.comp).
    void (*linear_forward_q)(float* y, const float* x, const uint8_t* w, uint32_t type, const float* b, int64_t N,
                             int64_t in, int64_t out);
    void (*linear_backward_q)(float* dx, const float* dy, const uint8_t* w, uint32_t type, int64_t N, int64_t in,
                              int64_t out);

    // ---- RMSNorm: y = x / sqrt(mean(x²) + eps) * (w_offset + w), in fp32; saves rstd[N] for the
    // backward. w_offset is 0 for Llama, 1 for Gemma (whose norms store w - 1).
    void (*rmsnorm_forward)(float* y, float* rstd, const float* x, const float* w, int64_t N, int64_t D, float eps,
                            float w_offset);
    // dx += ∂L/∂x ; dw += Σ_rows dy·x·rstd   (dx, dw may be null)
    void (*rmsnorm_backward)(float* dx, float* dw, const float* dy, const float* x, const float* w,
                             const float* rstd, int64_t N, int64_t D, float w_offset);

    // ---- rotary embedding, rotate-half convention (HF): x [B,T,H,hd] in place; the first `rot`
    // values of each head rotate (halves of rot; rot == hd but for partial rotary, Phi-3), the
    // rest pass; cos/sin [>= max position + 1, rot/2]; token t of row b is at position
    // pos[b·T + t] (its place in its own sample, as attn_params::pos), or t when pos is nullptr
    void (*rope_forward)(float* x, const float* cos, const float* sin, const int32_t* pos, int64_t B, int64_t T,
                         int64_t H, int64_t hd, int64_t rot);
    // the transposed map, in place on the gradient (the rotation's inverse when scale is 1)
    void (*rope_backward)(float* dx, const float* cos, const float* sin, const int32_t* pos, int64_t B, int64_t T,
                          int64_t H, int64_t hd, int64_t rot);
    // cos/sin [T, rot/2] of positions 0..T-1 from inv_freq [rot/2], each times scale (1, or
    // longrope's attention factor)
    void (*rope_tables)(float* cos, float* sin, const float* inv_freq, int64_t T, int64_t rot, float scale);

    // ---- causal self-attention with grouped KV heads: q [B,T,Hq,hd], k,v [B,T,Hkv,hd],
    // out [B,T,Hq,hd], lse [B,Hq,T] (log-sum-exp of each query's final scores, for the backward).
    // Scores are scaled, soft-capped, windowed and confined to each sample as `ap` says. No T×T
    // score matrix is ever stored; a sliding window limits the work to T×window, and samples
    // packed in a row to about Σ (sample length)².
    void (*attention_forward)(float* out, float* lse, const float* q, const float* k, const float* v, int64_t B,
                              int64_t T, int64_t Hq, int64_t Hkv, int64_t hd, const attn_params& ap);
    // dq, dk, dv += gradients (probabilities recomputed from q, k and lse)
    void (*attention_backward)(float* dq, float* dk, float* dv, const float* dout, const float* out,
                               const float* lse, const float* q, const float* k, const float* v, int64_t B,
                               int64_t T, int64_t Hq, int64_t Hkv, int64_t hd, const attn_params& ap);
    // n new queries at positions pos0.. over a KV cache holding positions 0..pos0+n-1:
    // q/out [n,Hq,hd], kc/vc [>= pos0+n, Hkv, hd]. Inference only.
    void (*attention_forward_kv)(float* out, const float* q, const float* kc, const float* vc, int64_t n,
                                 int64_t pos0, int64_t Hq, int64_t Hkv, int64_t hd, const attn_params& ap);

    // ---- SwiGLU: h = silu(g) * u over n values; dg, du += gradients
    void (*swiglu_forward)(float* h, const float* g, const float* u, int64_t n);
    void (*swiglu_backward)(float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n);
    // ---- GeGLU (tanh-approximated GELU, Gemma): h = gelu_tanh(g) * u; dg, du += gradients
    void (*geglu_forward)(float* h, const float* g, const float* u, int64_t n);
    void (*geglu_backward)(float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n);

    // ---- elementwise: y += x over n values; x *= s; x = cap·tanh(x/cap); x = 0; dst = src
    void (*add)(float* y, const float* x, int64_t n);
    void (*scale)(float* x, int64_t n, float s);
    void (*softcap)(float* x, int64_t n, float cap);
    void (*zero)(float* x, int64_t n);
    void (*copy)(float* dst, const float* src, int64_t n);
    // out = x ⊙ mask / (1-p), the mask drawn from (key, index): the same key gives the same mask,
    // so a backward regenerates it instead of storing it
    void (*dropout)(float* out, const float* x, int64_t n, float p, uint64_t key);

    // ---- embedding: x[N,D] = table[tokens[n]]
    void (*embedding_forward)(float* x, const int32_t* tokens, const float* table, int64_t N, int64_t D);
    void (*embedding_forward_bf16)(float* x, const int32_t* tokens, const uint16_t* table, int64_t N, int64_t D);
    // the table in a ggml block type (each row of D values whole blocks), rows dequantized as
    // looked up.
    void (*embedding_forward_q)(float* x, const int32_t* tokens, const uint8_t* table, uint32_t type, int64_t N,
                                int64_t D);
    // dtable[tokens[n]] += dx[n]
    void (*embedding_backward)(float* dtable, const float* dx, const int32_t* tokens, int64_t N, int64_t D);
    // sparse: grad[row_of[tokens[n]]] += dx[n] (row_of maps a token to its gradient row)
    void (*embedding_backward_rows)(float* grad, const int32_t* row_of, const float* dx, const int32_t* tokens,
                                    int64_t N, int64_t D);

    // ---- LM head fused with cross-entropy, in row chunks: never more than chunk×V logits.
    // Rows with targets[n] >= 0: loss_n = logsumexp(x_n·Wᵀ) - (x_n·Wᵀ)[target]; returns Σ loss_n.
    // dx, dw (may be null) += gradients of grad_scale · Σ loss_n. w16: the head held frozen when w
    // is null, in bf16 (w16_type 30) or a ggml block type. scratch holds lmhead_scratch_floats(chunk, D, V) floats. softcap > 0: the
    // logits are cap·tanh(logit/cap) (Gemma's final_logit_softcapping).
    double (*lmhead_xent)(float* dx, float* dw, const float* x, const float* w, const void* w16, uint32_t w16_type,
                          const int32_t* targets, int64_t N, int64_t D, int64_t V, float grad_scale, float* scratch,
                          int64_t chunk, float softcap);

    // ---- W[out,in] += scale · B[out,r]·A[r,in] (folding a LoRA adapter into its weight)
    void (*lora_fold)(float* w, const float* A, const float* B, int64_t out, int64_t in, int64_t r, float scale);

    // ---- optimizer
    // One AdamW step (torch.optim.AdamW) on n values; grad_scale multiplies g on the fly (clipping).
    // step is the 1-based step of this state (bias correction); decay=false skips weight decay.
    void (*adamw_update)(float* p, const float* g, float* m, float* v, int64_t n, const adamw_hparams& h,
                         int64_t step, bool decay, float grad_scale);
    // AdamW on a [rows, width] matrix whose gradient exists for some rows: row r's is
    // grad[row_of[r]] when row_of[r] >= 0, else zero (m and v still decay, as in torch)
    void (*adamw_update_rows)(float* p, const float* grad, const int32_t* row_of, float* m, float* v, int64_t rows,
                              int64_t width, const adamw_hparams& h, int64_t step, bool decay, float grad_scale);
    // Σ g² in double, in fixed-order blocks
    double (*sum_of_squares)(const float* g, int64_t n);

    // ---- init: normal(0, std) into n values (fp32, or bf16 when dst16 is set), from a stream
    // keyed by (seed, stream) in blocks of 2^20 values, independent of the thread count
    void (*fill_normal)(float* dst, uint16_t* dst16, int64_t n, double std, uint64_t seed, uint64_t stream);
    // dst = value over n floats (identity norms)
    void (*fill)(float* dst, int64_t n, float value);

    // ---- dtype conversion on the device, n values: bf16 -> fp32 (exact), fp32 -> bf16 (round to
    // nearest even, NaN kept a NaN), as core/dtype.h does on the host
    void (*bf16_to_f32)(float* dst, const uint16_t* src, int64_t n);
    void (*f32_to_bf16)(uint16_t* dst, const float* src, int64_t n);

    // ---- device memory. Every tensor buffer (device_array) is allocated here, and host code
    // reaches its contents only through these calls: a pointer into device memory is an address
    // for kernels, not for the host to dereference (on a GPU it is not host memory at all; under
    // LISA_CHECK_DEVICE_MEMORY=1 the CPU backends make it inaccessible outside kernel calls).
    // Sizes in bytes. Work queued on the device before a download is finished first.
    void* (*mem_alloc)(size_t bytes);                               // zeroed; fails with a message
    void  (*mem_free)(void* p, size_t bytes);                       // the whole allocation
    void  (*mem_upload)(void* dst, const void* host, size_t bytes);   // host -> device
    void  (*mem_download)(void* host, const void* src, size_t bytes); // device -> host
    void  (*mem_copy)(void* dst, const void* src, size_t bytes);      // device -> device
    void  (*mem_zero)(void* p, size_t bytes);
    // zeroes [p, p+bytes) and gives its backing memory back where the device can (a LISA layer
    // leaving: its fp32 masters and optimizer state)
    void  (*mem_release)(void* p, size_t bytes);
    // the host address of device memory when the host may use it directly (the plain CPU
    // backends), else nullptr: callers then go through upload/download
    void* (*mem_host)(void* p);
    // waits for every kernel queued so far (a no-op where kernels run synchronously)
    void  (*sync)();
};

// floats of scratch the LM-head kernel needs for chunks of `chunk` rows
inline int64_t lmhead_scratch_floats(int64_t chunk, int64_t D, int64_t V) { return chunk * V + 2 * chunk * D; }

// The CPU backends. Under LISA_CHECK_DEVICE_MEMORY=1 in the environment each is the checked
// variant (src/kernels/checked.cpp): its device memory is mapped inaccessible except while one of
// its kernels or memory calls runs, and every pointer a kernel is given must lie in live device
// memory, so host code that reads, writes or passes host memory where device memory belongs fails
// at once, as it would on a GPU.
const backend& backend_cpu();  // OpenBLAS + OpenMP (src/kernels/cpu)
const backend& backend_ref();  // plain loops, obviously correct, slow (src/kernels/ref)
// the backend named "cpu", "ref", "vulkan" or "vulkan:N" (started on first use; fails in one line
// when Vulkan cannot start); nullptr for another name
const backend* backend_by_name(const char* name);

}  // namespace lisa
