// AdamW (decoupled weight decay, as torch.optim.AdamW) over contiguous fp32 spans, learning-rate
// schedules as Hugging Face's get_scheduler, and global gradient-norm clipping.
#pragma once
#include <cstdint>
#include <string>

namespace lisa {

struct adamw_hparams {
    double lr = 5e-5, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0;
};

// One AdamW step on n parameters: p -= lr·wd·p; m, v updated; p -= lr·m̂/(√v̂ + eps).
// `step` is this span's 1-based step count (bias correction); decay=false skips weight decay.
// grad_scale multiplies g on the fly (global-norm clipping without a separate pass).
void adamw_update(float* p, const float* g, float* m, float* v, size_t n, const adamw_hparams& h, int64_t step,
                  bool decay, float grad_scale = 1.0f);

// AdamW over a [rows, width] matrix whose gradient is stored for some rows only: row r's
// gradient is grad[row_of[r]] if row_of[r] >= 0, else zero (m and v still decay, as in torch).
void adamw_update_rows(float* p, const float* grad, const int32_t* row_of, float* m, float* v, int64_t rows,
                       int64_t width, const adamw_hparams& h, int64_t step, bool decay, float grad_scale);

// Learning rate at optimizer step `step` (0-based) of `total`, Hugging Face semantics.
// kind: linear | cosine | constant | constant_with_warmup.
double lr_at(const std::string& kind, double base_lr, int64_t step, int64_t warmup, int64_t total);
bool   lr_kind_valid(const std::string& kind);

double sum_of_squares(const float* g, size_t n);  // deterministic (fixed-order blocks)

}  // namespace lisa
