#include "train/layer_sampling.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "model/decoder.h"

namespace lisa {

bool layer_sampling_parse(const std::string& s, layer_sampling* out) {
    if (s == "uniform") *out = layer_sampling::uniform;
    else if (s == "owlore") *out = layer_sampling::owlore;
    else return false;
    return true;
}

const char* layer_sampling_name(layer_sampling s) { return s == layer_sampling::owlore ? "owlore" : "uniform"; }

namespace {

// Σ over kept rows of x[row, j]² for each column j (kept: rows that are real tokens); x is an
// activation in device memory, downloaded once (a measurement made once per run)
void add_channel_sq(const backend& be, std::vector<double>* acc, const float* x, int64_t cols,
                    const std::vector<bool>& keep) {
    const std::vector<float> h = device_read(be, x, keep.size() * (size_t)cols);
    for (size_t r = 0; r < keep.size(); r++) {
        if (!keep[r]) continue;
        const float* row = h.data() + r * cols;
        for (int64_t j = 0; j < cols; j++) (*acc)[j] += (double)row[j] * row[j];
    }
}

// Outliers of one [rows, cols] matrix (row-major: out × in) given its input channels' norms.
int64_t count_outliers(const std::vector<float>& w, int64_t rows, int64_t cols, const std::vector<double>& sq,
                       double threshold) {
    std::vector<double> norm(cols);
    for (int64_t j = 0; j < cols; j++) norm[j] = std::sqrt(sq[j]);
    double sum = 0;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) sum += std::fabs((double)w[i * cols + j]) * norm[j];
    const double cut = threshold * sum / (double)(rows * cols);
    int64_t n = 0;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) n += std::fabs((double)w[i * cols + j]) * norm[j] > cut;
    return n;
}

}  // namespace

layer_outliers layer_outliers_measure(const decoder_model& m, const dataset& d, int32_t pad_id, int64_t max_samples,
                                      int64_t batch_size, double threshold) {
    const model_config& c = m.cfg;
    const int L = (int)c.num_layers;
    const int64_t D = c.hidden_size, F = c.intermediate_size, Q = c.num_heads * c.head_dim;
    if (d.samples.empty()) fail("--lisa_layer_sampling owlore: the dataset has no samples to measure outliers on");
    if (!(threshold > 0)) fail(strf("--lisa_outlier_threshold %g: expected a number above 0", threshold));
    const size_t n = std::min<size_t>(d.samples.size(), (size_t)std::max<int64_t>(1, max_samples));
    int64_t maxT = 1;
    for (size_t i = 0; i < n; i++) maxT = std::max<int64_t>(maxT, (int64_t)d.samples[i].ids.size());
    const int64_t B = std::max<int64_t>(1, std::min<int64_t>(batch_size, (int64_t)n));
    // per layer, the squared norms of each Linear input: xn1 (q, k, v), att (o), xn2 (gate, up), h (down)
    struct sums { std::vector<double> xn1, att, xn2, h; };
    std::vector<sums> s(L);
    for (auto& x : s) x = {std::vector<double>(D), std::vector<double>(Q), std::vector<double>(D), std::vector<double>(F)};
    decoder_acts a;
    decoder_acts_init(&a, m, B, maxT, false);
    layer_outliers out;
    std::vector<size_t> idx;
    for (size_t first = 0; first < n; first += B) {
        idx.clear();
        for (size_t i = first; i < std::min(n, first + B); i++) idx.push_back(i);
        batch bt = make_batch(d, idx, pad_id);
        decoder_acts_shape(&a, m, bt.B, bt.T);
        decoder_forward(m, &a, bt.ids.data());
        std::vector<bool> keep(bt.B * bt.T, false);
        for (int64_t b = 0; b < bt.B; b++)
            for (int64_t t = 0; t < (int64_t)d.samples[idx[b]].ids.size(); t++) keep[b * bt.T + t] = true;
        for (bool k : keep) out.tokens += k;
        for (int l = 0; l < L; l++) {
            const decoder_layer_acts& la = a.layers[l];
            add_channel_sq(*m.ctx.be, &s[l].xn1, la.xn1, D, keep);
            add_channel_sq(*m.ctx.be, &s[l].att, la.att, Q, keep);
            add_channel_sq(*m.ctx.be, &s[l].xn2, la.xn2, D, keep);
            add_channel_sq(*m.ctx.be, &s[l].h, la.h, F, keep);
        }
    }
    out.ratio.assign(L, 0.0);
    for (size_t i = 0; i < m.tensors.size(); i++) {
        const decoder_tensor_info& t = m.tensors[i];
        if (t.layer < 0 || kLayerTensors[t.field].lora < 0) continue;  // the Linear weights of a layer
        const sums& ls = s[t.layer];
        const std::vector<double>& sq = t.field == LT_O ? ls.att : t.field == LT_DOWN ? ls.h
                                      : (t.field == LT_GATE || t.field == LT_UP) ? ls.xn2 : ls.xn1;
        out.ratio[t.layer] += (double)count_outliers(decoder_tensor_values(m, i), t.shape[0], t.shape[1], sq, threshold);
    }
    double total = 0;
    for (int l = 0; l < L; l++) {
        int64_t weights = 0;
        for (size_t i = 0; i < m.tensors.size(); i++)
            if (m.tensors[i].layer == l && kLayerTensors[m.tensors[i].field].lora >= 0) weights += m.tensors[i].numel;
        out.ratio[l] /= (double)std::max<int64_t>(1, weights);
        total += out.ratio[l];
    }
    out.prob.assign(L, 1.0 / L);
    if (total > 0)
        for (int l = 0; l < L; l++) out.prob[l] = out.ratio[l] / total;
    return out;
}

void lisa_draw_layers_into(std::vector<int>* out, std::vector<int>* scratch, uint64_t seed, int64_t interval,
                           int n_layers, int gamma) {
    LISA_ASSERT(gamma >= 1 && gamma <= n_layers, "lisa_draw_layers", "gamma out of range");
    rng r;
    rng_init(&r, seed ^ (0x5851f42d4c957f2dull * (uint64_t)(interval + 1)));
    std::vector<int>& all = *scratch;
    all.resize(n_layers);
    for (int i = 0; i < n_layers; i++) all[i] = i;
    for (int i = 0; i < gamma; i++) std::swap(all[i], all[i + rng_below(&r, n_layers - i)]);  // partial shuffle
    out->assign(all.begin(), all.begin() + gamma);
    std::sort(out->begin(), out->end());
}

std::vector<int> lisa_draw_layers(uint64_t seed, int64_t interval, int n_layers, int gamma) {
    std::vector<int> out, scratch;
    lisa_draw_layers_into(&out, &scratch, seed, interval, n_layers, gamma);
    return out;
}

void lisa_draw_layers_weighted_into(std::vector<int>* out, std::vector<int>* scratch, uint64_t seed,
                                    int64_t interval, const std::vector<double>& w, int gamma) {
    const int L = (int)w.size();
    LISA_ASSERT(gamma >= 1 && gamma <= L, "lisa_draw_layers_weighted", "gamma out of range");
    rng r;
    rng_init(&r, seed ^ (0x2545f4914f6cdd1dull * (uint64_t)(interval + 1)));
    std::vector<int>& taken = *scratch;
    taken.assign(L, 0);
    out->clear();
    for (int k = 0; k < gamma; k++) {
        double mass = 0;
        for (int l = 0; l < L; l++)
            if (!taken[l]) mass += std::max(0.0, w[l]);
        int chosen = -1;
        if (mass > 0) {
            double u = rng_uniform(&r) * mass;
            for (int l = 0; l < L && chosen < 0; l++) {
                if (taken[l] || !(w[l] > 0)) continue;
                if (u < w[l]) chosen = l;
                else u -= w[l];
            }
            if (chosen < 0)  // rounding left u at the very top: the last layer with mass
                for (int l = L - 1; l >= 0 && chosen < 0; l--)
                    if (!taken[l] && w[l] > 0) chosen = l;
        } else {  // only layers of probability 0 remain: uniformly among them (the j-th left, in order)
            int left = 0;
            for (int l = 0; l < L; l++) left += !taken[l];
            uint64_t j = rng_below(&r, (uint64_t)left);
            for (int l = 0; l < L && chosen < 0; l++)
                if (!taken[l] && j-- == 0) chosen = l;
        }
        taken[chosen] = 1;
        out->push_back(chosen);
    }
    std::sort(out->begin(), out->end());
}

std::vector<int> lisa_draw_layers_weighted(uint64_t seed, int64_t interval, const std::vector<double>& prob,
                                           int gamma) {
    std::vector<int> out, scratch;
    lisa_draw_layers_weighted_into(&out, &scratch, seed, interval, prob, gamma);
    return out;
}

}  // namespace lisa
