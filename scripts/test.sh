#!/usr/bin/env bash
# The README's test command: install dependencies, build (Release), run every test under ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
scripts/install-referees.sh build
ctest --test-dir build --output-on-failure -j"$(nproc)" "$@"
