#!/usr/bin/env bash
# GGUF export: file size, export time and peak memory per --outtype, and how long llama.cpp's
# greedy path at that type follows the f32 one (the referee of the tests, node-llama-cpp).
#   bench/gguf.sh [MODEL_DIR] [BIG_CONFIG] [BIG_TOKENIZER]
#     MODEL_DIR   a model to export at every type (default: ../shared/assets/models/aidreams-260k)
#     BIG_CONFIG  a config made with `lisa init` (bf16) to measure streaming export's peak RSS on
#                 (default configs/gemma-3-1b.json; "none" to skip)
#     BIG_TOKENIZER its tokenizer folder (default ../shared/assets/tokenizers/gemma3)
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-../shared/assets/models/aidreams-260k}
big=${2:-configs/gemma-3-1b.json}
big_tok=${3:-../shared/assets/tokenizers/gemma3}
work=$(mktemp -d /tmp/lisa_gguf.XXXXXX)
trap 'rm -rf "$work"' EXIT
cmake --build build --target lisa >/dev/null
scripts/install-referees.sh build
nm=build/referee/node_modules
greedy() {  # GGUF -> 40 greedy ids from BOS, one JSON list
  echo '{"generate": {"prompt": [1], "n": 40}}' |
    node tests/referee/llama_cpp.mjs "$nm" "$1" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["ids"]))'
}
printf '%-6s %12s %10s %12s %s\n' type size_MB export_s peak_RSS_MB "greedy tokens equal to f32's (of 40)"
for t in f32 f16 bf16 q8_0; do
  /usr/bin/time -f "%e %M" -o "$work/time" build/lisa export-gguf --model_name_or_path "$model" \
    --outfile "$work/m-$t.gguf" --outtype $t >/dev/null 2>&1
  read -r secs kb < "$work/time"
  if [ -d "$nm/node-llama-cpp" ]; then greedy "$work/m-$t.gguf" > "$work/$t.ids"; else echo "[]" > "$work/$t.ids"; fi
  same=$(python3 - "$work/f32.ids" "$work/$t.ids" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
n = 0
while n < min(len(a), len(b)) and a[n] == b[n]:
    n += 1
print(n if a else "n/a (no referee)")
PY
)
  printf '%-6s %12.2f %10s %12.0f %s\n' $t "$(echo "$(stat -c %s "$work/m-$t.gguf") / 1000000" | bc -l)" "$secs" \
    "$(echo "$kb / 1024" | bc -l)" "$same"
done
if [ "$big" != none ]; then
  build/lisa init --config "$big" --output_model_path "$work/big" --dtype bfloat16 --tokenizer_path "$big_tok" >/dev/null
  src=$(du -sm "$work/big" | cut -f1)
  for t in q8_0 f16; do
    /usr/bin/time -f "%e %M" -o "$work/time" build/lisa export-gguf --model_name_or_path "$work/big" \
      --outfile "$work/big-$t.gguf" --outtype $t >/dev/null 2>&1 || { echo "export of $big failed"; cat "$work/time"; }
    read -r secs kb < "$work/time"
    echo "$(basename "$big" .json) (bf16, $src MB on disk) -> $t: $(du -m "$work/big-$t.gguf" | cut -f1) MB in ${secs} s, peak RSS $((kb / 1024)) MB"
    rm -f "$work/big-$t.gguf"
  done
fi
