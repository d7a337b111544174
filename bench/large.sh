#!/usr/bin/env bash
# Peak memory and step time of LISA on a large model shape (random bf16 weights from `lisa init`):
# does a real-size step fit this machine? Writes the model under WORK (7.8 GB for Gemma 3 4B).
#   bench/large.sh CONFIG.json [WORK_DIR] [STEPS] [extra bench_train flags, e.g. --freeze_embeddings]
#   bench/large.sh configs/gemma-3-4b-text.json /tmp/lisa_large 2
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:?usage: bench/large.sh CONFIG.json [WORK_DIR] [STEPS] [flags]}
work=${2:-/tmp/lisa_large}
steps=${3:-2}
shift 3 || shift $#
name=$(basename "$config" .json)
mkdir -p "$work"
cmake --build build --target lisa bench_train >/dev/null
[[ -f $work/$name/config.json ]] ||
  build/lisa init --config "$config" --output_model_path "$work/$name" --dtype bfloat16 >/dev/null
python3 - "$work/tokens.bin" "$steps" "$config" <<'PY'
import json, random, struct, sys
steps, B, T = int(sys.argv[2]), 1, 256
V = json.load(open(sys.argv[3]))["vocab_size"]
random.seed(0)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<3i", steps, B, T))
    f.write(struct.pack(f"<{steps*B*T}i", *[random.randrange(V) for _ in range(steps * B * T)]))
PY
/usr/bin/time -v build/bench_train --model "$work/$name" --tokens "$work/tokens.bin" --method lisa \
  --gamma 1 --interval 20 --threads 2 "$@" 2> "$work/time.txt"
grep -E "Maximum resident|Elapsed" "$work/time.txt"
