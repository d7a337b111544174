#!/usr/bin/env bash
# The whole test suite under AddressSanitizer + UndefinedBehaviorSanitizer + LeakSanitizer, in
# build-sanitize/ (-DLISA_SANITIZE=ON). Any report fails the test that produced it.
#   scripts/test-sanitize.sh [ctest args]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=Release -DLISA_SANITIZE=ON >/dev/null
cmake --build build-sanitize -j"$(nproc)"
scripts/install-referees.sh build-sanitize
# OpenMPI keeps some of its own allocations until exit: not ours to free (tests/lsan.supp)
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_odr_violation=0
export LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir build-sanitize --output-on-failure -j"$(nproc)" "$@"
