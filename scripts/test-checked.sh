#!/usr/bin/env bash
# The suites that drive the model, the trainer, checkpoints, LoRA, MPI ranks and every kernel,
# again with LISA_CHECK_DEVICE_MEMORY=1: device memory inaccessible to the host outside kernel
# calls and every kernel pointer checked to be device memory (docs/reliability.md). Runs on the
# build of scripts/test.sh.
#   scripts/test-checked.sh [ctest args]
set -euo pipefail
cd "$(dirname "$0")/.."
export LISA_CHECK_DEVICE_MEMORY=1
ctest --test-dir build --output-on-failure -j"$(nproc)" \
  -R '^(backends/|cpu_threads|flavours/|golden|aidreams|tinystories|train\.|no_allocation|policy|model_io|mpi|archs/archs\.|archs/vulkan_e2e|vulkan|quantized_base|gguf_commands|objectives/|preference_train|preference_eval)' "$@"
