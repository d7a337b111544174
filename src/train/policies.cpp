// The policy table: each training method, the function that makes its policy and the one that
// checks its own options. A new policy is one file (policy_NAME.cpp) and one row here.
#include "core/error.h"
#include "train/policy.h"

namespace lisa {

std::unique_ptr<train_policy> policy_make_lisa(const train_options& o);
std::unique_ptr<train_policy> policy_make_full(const train_options& o);
std::unique_ptr<train_policy> policy_make_lora(const train_options& o);
void                          policy_validate_lisa(const train_options& o);
void                          policy_validate_lora(const train_options& o);

namespace {

struct policy_entry {
    train_method method;
    std::unique_ptr<train_policy> (*make)(const train_options&);
    void (*validate)(const train_options&);  // null: no options of its own
};

const policy_entry kPolicies[] = {
    {train_method::lisa, policy_make_lisa, policy_validate_lisa},
    {train_method::full, policy_make_full, nullptr},
    {train_method::lora, policy_make_lora, policy_validate_lora},
};

const policy_entry& entry_of(train_method m) {
    for (const policy_entry& e : kPolicies)
        if (e.method == m) return e;
    LISA_ASSERT(false, "policy_make", "a training method without a policy");
    return kPolicies[0];
}

}  // namespace

std::unique_ptr<train_policy> policy_make(const train_options& o) { return entry_of(o.method).make(o); }

void policy_validate(const train_options& o) {
    const policy_entry& e = entry_of(o.method);
    if (e.validate) e.validate(o);
}

}  // namespace lisa
