#!/usr/bin/env bash
# The paper's headline on a CPU box: LISA steps of a Llama-2-7B-shaped model (random weights from
# `lisa init`, bf16) within this machine's memory. Writes a 13.5 GB model under WORK.
#   bench/llama7b.sh [WORK_DIR] [STEPS] [extra bench_train flags, e.g. --freeze_embeddings]
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/lisa_llama7b}
steps=${2:-3}
shift 2 || true
mkdir -p "$work"
cmake --build build --target lisa bench_train >/dev/null
cat > "$work/config.json" <<'JSON'
{"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":32000,"hidden_size":4096,
 "intermediate_size":11008,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":32,
 "max_position_embeddings":4096,"rms_norm_eps":1e-5,"tie_word_embeddings":false,"torch_dtype":"bfloat16",
 "bos_token_id":1,"eos_token_id":2}
JSON
[[ -f $work/llama2-7b/config.json ]] ||
  build/lisa init --config "$work/config.json" --output_model_path "$work/llama2-7b" --dtype bfloat16
python3 - "$work/tokens.bin" "$steps" <<'PY'
import random, struct, sys
steps, B, T = int(sys.argv[2]), 1, 256
random.seed(0)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<3i", steps, B, T))
    f.write(struct.pack(f"<{steps*B*T}i", *[random.randrange(32000) for _ in range(steps * B * T)]))
PY
/usr/bin/time -v build/bench_train --model "$work/llama2-7b" --tokens "$work/tokens.bin" --method lisa \
  --gamma 1 --interval 20 --threads 2 "$@" 2> "$work/time.txt"
grep -E "Maximum resident|Elapsed" "$work/time.txt"
