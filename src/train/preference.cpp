// Preference objectives: see preference.h for the formulas and whose semantics they follow.
#include "train/preference.h"

#include <cmath>

#include "core/error.h"

namespace lisa {

// log σ(x) and σ(x) without overflow on either side
static double log_sigmoid(double x) { return x >= 0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x)); }
static double sigmoid(double x) {
    if (x >= 0) return 1.0 / (1.0 + std::exp(-x));
    const double e = std::exp(x);
    return e / (1.0 + e);
}

pref_result pref_batch(const pref_options& o, const std::vector<pref_pair>& pairs) {
    pref_result r;
    pref_batch_into(o, pairs.data(), pairs.size(), &r);
    return r;
}

void pref_batch_into(const pref_options& o, const pref_pair* pairs, size_t P, pref_result* out) {
    LISA_ASSERT(o.objective != pref_objective::none, "pref_batch", "a preference objective");
    pref_result& r = *out;
    {  // zero the sums, keep the vectors' capacity
        std::vector<double> c = std::move(r.dlogp_chosen), j = std::move(r.dlogp_rejected);
        r = pref_result{};
        r.dlogp_chosen = std::move(c);
        r.dlogp_rejected = std::move(j);
    }
    r.dlogp_chosen.assign(P, 0.0);
    r.dlogp_rejected.assign(P, 0.0);
    if (P == 0) return;
    const double beta = o.beta;
    const bool mean_logps = o.objective == pref_objective::orpo || o.loss_type == pref_loss_type::ipo;
    int64_t chosen_tokens = 0;
    for (size_t i = 0; i < P; i++) chosen_tokens += pairs[i].len_chosen;
    for (size_t i = 0; i < P; i++) {
        const pref_pair& p = pairs[i];
        LISA_ASSERT(p.len_chosen > 0 && p.len_rejected > 0, "pref_batch", "every reply has tokens");
        // the policy's (and reference's) log-probabilities as the loss sees them: sums, or per-token means
        const double sc = mean_logps ? 1.0 / (double)p.len_chosen : 1.0;
        const double sr = mean_logps ? 1.0 / (double)p.len_rejected : 1.0;
        const double pc = p.logp_chosen * sc, pr = p.logp_rejected * sr;
        double dc = 0, dr = 0;  // d loss_i / d pc, d loss_i / d pr
        double rc, rr;          // rewards
        if (o.objective == pref_objective::dpo) {
            const double refc = p.ref_chosen * sc, refr = p.ref_rejected * sr;
            const double h = (pc - pr) - (refc - refr);
            double l, dh;
            switch (o.loss_type) {
                case pref_loss_type::sigmoid: {
                    const double e = o.label_smoothing, z = beta * h;
                    l = -(1 - e) * log_sigmoid(z) - e * log_sigmoid(-z);
                    dh = beta * (-(1 - e) * sigmoid(-z) + e * sigmoid(z));
                    break;
                }
                case pref_loss_type::hinge:
                    l = std::max(0.0, 1 - beta * h);
                    dh = 1 - beta * h > 0 ? -beta : 0.0;
                    break;
                case pref_loss_type::ipo: {
                    const double d = h - 1 / (2 * beta);
                    l = d * d;
                    dh = 2 * d;
                    break;
                }
                default: LISA_ASSERT(false, "pref_batch", "a DPO loss type");
            }
            r.loss += l / (double)P;
            dc = dh / (double)P;
            dr = -dh / (double)P;
            rc = beta * (pc - refc);
            rr = beta * (pr - refr);
        } else {  // ORPO: the odds-ratio term; the NLL below
            const double odds = (pc - pr) - (std::log1p(-std::exp(pc)) - std::log1p(-std::exp(pr)));
            const double ratio = log_sigmoid(odds);
            r.loss -= beta * ratio / (double)P;
            r.log_odds_ratio += ratio / (double)P;
            r.log_odds_chosen += odds / (double)P;
            // d odds / d pc = 1 / (1 − e^pc), d odds / d pr = −1 / (1 − e^pr)
            const double d_odds = -beta * sigmoid(-odds) / (double)P;
            dc = d_odds * (-1.0 / std::expm1(pc));
            dr = d_odds * (1.0 / std::expm1(pr));
            rc = beta * pc;
            rr = beta * pr;
        }
        r.dlogp_chosen[i] = dc * sc;  // through the mean: d pc / d Σlogp = 1 / len
        r.dlogp_rejected[i] = dr * sr;
        r.rewards_chosen += rc / (double)P;
        r.rewards_rejected += rr / (double)P;
        r.rewards_accuracy += (rc > rr ? 1.0 : 0.0) / (double)P;
        r.rewards_margin += (rc - rr) / (double)P;
        r.logps_chosen += pc / (double)P;
        r.logps_rejected += pr / (double)P;
    }
    if (o.objective == pref_objective::orpo) {  // NLL of the chosen replies: mean over their tokens
        double nll = 0;
        for (size_t i = 0; i < P; i++) nll -= pairs[i].logp_chosen;
        r.nll_loss = nll / (double)chosen_tokens;
        r.loss += r.nll_loss;
        for (size_t i = 0; i < P; i++) r.dlogp_chosen[i] -= 1.0 / (double)chosen_tokens;
    }
}

pref_objective pref_objective_parse(const std::string& s) {
    if (s == "sft" || s == "none" || s.empty()) return pref_objective::none;
    if (s == "dpo") return pref_objective::dpo;
    if (s == "orpo") return pref_objective::orpo;
    fail(strf("--objective %s: expected sft (supervised, the default), dpo or orpo", s.c_str()));
}

pref_loss_type pref_loss_type_parse(const std::string& s) {
    if (s == "sigmoid") return pref_loss_type::sigmoid;
    if (s == "ipo") return pref_loss_type::ipo;
    if (s == "hinge") return pref_loss_type::hinge;
    fail(strf("--loss_type %s: expected sigmoid (DPO, the default), ipo or hinge", s.c_str()));
}

const char* pref_objective_name(pref_objective o) {
    return o == pref_objective::dpo ? "dpo" : o == pref_objective::orpo ? "orpo" : "sft";
}
const char* pref_loss_type_name(pref_loss_type t) {
    return t == pref_loss_type::ipo ? "ipo" : t == pref_loss_type::hinge ? "hinge" : "sigmoid";
}

}  // namespace lisa
