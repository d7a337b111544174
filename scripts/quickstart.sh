#!/usr/bin/env bash
# The README's first quick-start command: install dependencies, build, then run the main job.
# Today the main job stops at what is built (model I/O and an exact forward/backward):
# it makes the bundled tiny Llama with `lisa init` and loads it back with `lisa info`.
# The LISA fine-tune on the bundled data lands with run_finetune_with_lisa.sh (issue #5).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target lisa
out=output_models/tiny-llama-init
build/lisa init --config configs/tiny-llama.json --output_model_path "$out" --seed 42
build/lisa info --model_name_or_path "$out"
