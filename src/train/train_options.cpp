#include "train/train_options.h"

namespace lisa {

static const char* kMethodNames[] = {"lisa", "full", "lora"};

bool train_method_parse(const std::string& s, train_method* out) {
    for (int i = 0; i < 3; i++)
        if (s == kMethodNames[i]) {
            *out = (train_method)i;
            return true;
        }
    return false;
}

const char* train_method_name(train_method m) { return kMethodNames[(int)m]; }

}  // namespace lisa
