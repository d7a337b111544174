// Which decoder layers LISA draws, and with what probability.
//
// uniform (LISA, Pan et al. 2024): every layer alike, γ drawn without replacement.
// owlore (outlier-weighted sampling: OwLore / OWS, Li et al. 2024, after OWL, Yin et al. 2023):
//   a weight's outlier score is |W_ij| · ‖X_j‖₂, the weight times the norm of its input channel
//   over calibration tokens (Wanda's importance); a weight is an outlier when its score exceeds
//   M times the mean score of its matrix; a layer's outlier ratio is the share of outliers among
//   all the weights of its Linear layers (q, k, v, o, gate, up, down). Layers are drawn with
//   probability proportional to their ratio: layers with more outliers, which the papers find
//   better trained, are fine-tuned more often.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lisa {

struct decoder_model;
struct dataset;

enum class layer_sampling { uniform, owlore };
bool        layer_sampling_parse(const std::string& s, layer_sampling* out);  // "uniform" | "owlore"
const char* layer_sampling_name(layer_sampling s);

struct layer_outliers {
    std::vector<double> ratio;   // per layer: share of its Linear weights that are outliers
    std::vector<double> prob;    // per layer: sampling probability (ratio normalised; uniform if all 0)
    int64_t             tokens = 0;  // calibration tokens the channel norms were taken over
};

// Runs the model (forward only) over up to `max_samples` samples of `d` (the first ones, in file
// order), `batch_size` at a time, and measures every layer's outlier ratio with threshold M.
// Padding positions are left out of the channel norms. CPU memory (reads the activations).
layer_outliers layer_outliers_measure(const decoder_model& m, const dataset& d, int32_t pad_id, int64_t max_samples,
                                      int64_t batch_size, double threshold);

// The LISA draw of interval k: γ of n layers, uniformly without replacement, from the seed.
std::vector<int> lisa_draw_layers(uint64_t seed, int64_t interval, int n_layers, int gamma);
// The draw of interval k: γ distinct layers, each pick with probability proportional to `prob`
// among the layers not yet picked (sampling without replacement); deterministic in (seed, k).
// Layers of probability 0 are drawn only when fewer than γ layers have any.
std::vector<int> lisa_draw_layers_weighted(uint64_t seed, int64_t interval, const std::vector<double>& prob,
                                           int gamma);
// The same draws into `out`, with `scratch` for the work: no allocation once both hold n_layers
// (the trainer's step loop draws this way).
void lisa_draw_layers_into(std::vector<int>* out, std::vector<int>* scratch, uint64_t seed, int64_t interval,
                           int n_layers, int gamma);
void lisa_draw_layers_weighted_into(std::vector<int>* out, std::vector<int>* scratch, uint64_t seed,
                                    int64_t interval, const std::vector<double>& prob, int gamma);

}  // namespace lisa
