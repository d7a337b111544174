// Preference objectives (issue #30): DPO (Rafailov et al. 2023) with TRL's loss types and ORPO
// (Hong et al. 2024), as functions of each pair's sequence log-probabilities. The model computes
// Σ log p of each reply's tokens; these functions turn a batch of them into the loss, its
// derivative with respect to each reply's Σ log p (the per-sequence weight the backward gives
// the reply's tokens), and the metrics TRL logs. No model, no tensors: unit-testable alone.
//
// Semantics follow TRL's DPOTrainer and ORPOTrainer:
//   DPO   h = (π_c − π_r) − (ref_c − ref_r), π and ref the summed log-probabilities
//         sigmoid: −(1−ε)·logσ(β·h) − ε·logσ(−β·h)   (ε = label_smoothing; cDPO)
//         hinge:   max(0, 1 − β·h)                     (RSO)
//         ipo:     (h − 1/(2β))², with π and ref the MEAN log-probability per reply token
//         rewards  β·(π − ref) of chosen and rejected (per-token means under ipo)
//   ORPO  π the mean log-probability per reply token; odds = π − log(1 − e^π)
//         loss = NLL(chosen tokens, mean over the batch's chosen tokens) − β·mean logσ(odds_c − odds_r)
//         rewards β·π of chosen and rejected
// The batch loss is the mean over pairs (ORPO's NLL: over chosen tokens).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lisa {

enum class pref_objective { none, dpo, orpo };
enum class pref_loss_type { sigmoid, ipo, hinge };

struct pref_options {
    pref_objective objective = pref_objective::none;  // --objective (none: supervised fine-tuning)
    pref_loss_type loss_type = pref_loss_type::sigmoid;  // --loss_type (DPO)
    double         beta = 0.1;             // --beta: DPO's temperature; ORPO's λ (TRL's name: beta)
    double         label_smoothing = 0.0;  // --label_smoothing: DPO sigmoid's ε (cDPO)
};

// One pair as the model saw it: summed log-probabilities of the chosen and rejected replies, their
// token counts, and the reference model's sums (DPO; unused by ORPO).
struct pref_pair {
    double  logp_chosen = 0, logp_rejected = 0;
    int64_t len_chosen = 0, len_rejected = 0;
    double  ref_chosen = 0, ref_rejected = 0;
};

// What a batch gives: the loss (mean over pairs), per pair d loss / d Σlogp of each reply, and
// TRL's metrics (means over the pairs).
struct pref_result {
    double              loss = 0;
    std::vector<double> dlogp_chosen, dlogp_rejected;
    double rewards_chosen = 0, rewards_rejected = 0, rewards_accuracy = 0, rewards_margin = 0;
    double logps_chosen = 0, logps_rejected = 0;      // the policy's, as the loss uses them
    double nll_loss = 0, log_odds_ratio = 0, log_odds_chosen = 0;  // ORPO only
};

pref_result pref_batch(const pref_options& o, const std::vector<pref_pair>& pairs);
// The same into *r, reusing its vectors' capacity (the training step allocates nothing).
void pref_batch_into(const pref_options& o, const pref_pair* pairs, size_t n, pref_result* r);

// Parses --objective / --loss_type; throws naming the flag and the accepted values.
pref_objective pref_objective_parse(const std::string& s);
pref_loss_type pref_loss_type_parse(const std::string& s);
const char*    pref_objective_name(pref_objective o);
const char*    pref_loss_type_name(pref_loss_type t);

}  // namespace lisa
