#!/usr/bin/env bash
# A longer fuzzing run of every parser, under the sanitizers (build-sanitize/, -DLISA_SANITIZE=ON).
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 600 s each, all targets
# Findings (inputs that crashed, or made the library throw something other than lisa::error) are
# written to fuzz_findings/ and the script exits 1. Fix each, then add its input to
# tests/fuzz/corpus/TARGET/ as TARGET-crash-... so the suite replays it from then on, and record
# the run in docs/reliability.md.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
shift || true
targets=("${@:-safetensors config tokenizer tokenizer_config adapter_config dataset jinja gguf gguf_in outputs}")
read -r -a targets <<< "${targets[*]}"
cpus=$(nproc)  # before OMP_NUM_THREADS=1 below, which nproc obeys
# fresh seeds each run unless FUZZ_SEED is given (printed, so a run can be repeated)
base=${FUZZ_SEED:-$(date +%s)}
echo "fuzz: seed base $base (FUZZ_SEED=$base repeats this run)"
cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=Release -DLISA_SANITIZE=ON >/dev/null
cmake --build build-sanitize -j"$(nproc)" --target lisa_fuzz >/dev/null
mkdir -p fuzz_findings
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 OMP_NUM_THREADS=1
status=0
for t in "${targets[@]}"; do
  # one process per CPU, each from its own seed
  pids=()
  for k in $(seq "$cpus"); do
    build-sanitize/tests/lisa_fuzz "$t" --seconds "$seconds" --seed "$((base + k * 7919 + ${#t}))" --findings fuzz_findings &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || status=1; done
done
exit $status
