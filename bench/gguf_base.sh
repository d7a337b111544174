#!/usr/bin/env bash
# A quantized base beside the bf16 one (issue #29), on the Llama-2-7B shape: the same random model
# (bench/llama7b.sh's, bf16) exported to q8_0 and q4_0 GGUF files, then LoRA and LISA (γ 1,
# embedding and head frozen) from each, in one run: peak RSS and step time. Writes a 13.5 GB
# folder and 7.2 + 3.8 GB of files under WORK. CHECKPOINTING=1 adds --gradient_checkpointing
# (the configuration the issue's memory targets are for).
#   [CHECKPOINTING=1] bench/gguf_base.sh [WORK_DIR] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/lisa_llama7b}
steps=${2:-3}
mkdir -p "$work"
cmake --build build --target lisa bench_train >/dev/null
cat > "$work/config.json" <<'JSON'
{"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":32000,"hidden_size":4096,
 "intermediate_size":11008,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":32,
 "max_position_embeddings":4096,"rms_norm_eps":1e-5,"tie_word_embeddings":false,"torch_dtype":"bfloat16",
 "bos_token_id":1,"eos_token_id":2}
JSON
[[ -f $work/llama2-7b/config.json ]] ||
  build/lisa init --config "$work/config.json" --output_model_path "$work/llama2-7b" --dtype bfloat16 \
    --tokenizer_path ../shared/assets/tokenizers/mistral
for q in q8_0 q4_0; do
  [[ -f $work/llama2-7b-$q.gguf ]] ||
    build/lisa export-gguf --model_name_or_path "$work/llama2-7b" --outfile "$work/llama2-7b-$q.gguf" --outtype $q
done
extra=""
[[ ${CHECKPOINTING:-0} == 1 ]] && extra="--gradient_checkpointing"
python3 - "$work/tokens.bin" "$steps" <<'PY'
import random, struct, sys
steps, B, T = int(sys.argv[2]), 1, 256
random.seed(0)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<3i", steps, B, T))
    f.write(struct.pack(f"<{steps*B*T}i", *[random.randrange(32000) for _ in range(steps * B * T)]))
PY
for method in "lora" "lisa --gamma 1 --interval 20 --freeze_embeddings"; do
  for model in "$work/llama2-7b" "$work/llama2-7b-q8_0.gguf" "$work/llama2-7b-q4_0.gguf"; do
    echo "== $method $extra on $(basename "$model")"
    /usr/bin/time -v build/bench_train --model "$model" --tokens "$work/tokens.bin" --method $method --threads 2 $extra \
      2> "$work/time.txt" | tail -1
    grep -E "Maximum resident" "$work/time.txt"
  done
done
