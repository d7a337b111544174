#!/usr/bin/env bash
# Byte-identity of a refactor: runs the same fine-tunes (LISA, full, LoRA, bf16, gradient
# checkpointing, two MPI ranks), exports, evaluations and generations with a `lisa` binary and
# prints one hash per output file; timings and absolute paths are left out of the hashes.
#   scripts/same-outputs.sh [LISA_BINARY] > hashes.txt      (default: build/lisa)
# Compare two revisions with diff: build each, run this once per binary.
set -euo pipefail
cd "$(dirname "$0")/.."
lisa=$(realpath "${1:-build/lisa}")
assets=${LISA_ASSETS:-$(realpath ../shared/assets)}
base=$assets/models/aidreams-260k
data=$PWD/tests/golden/aidreams_data/text_only
chat=$PWD/data/train
work=$(mktemp -d /tmp/lisa_same.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
run() { "$lisa" "$@" >"$work/last.log" 2>&1 || { echo "FAILED: lisa $*" >&2; cat "$work/last.log" >&2; exit 1; }; }
common=(--dataset_path "$data" --block_size 64 --logging_steps 1 --threads 2 --seed 7)

run train --model_name_or_path "$base" --output_model_path lisa "${common[@]}" --max_steps 6 \
  --lisa_activated_layers 1 --lisa_interval_steps 2 --save_steps 3
run train --model_name_or_path "$base" --output_model_path full "${common[@]}" --max_steps 4 --method full
run train --model_name_or_path "$base" --output_model_path lora "${common[@]}" --max_steps 4 --method lora \
  --lora_r 4 --lora_dropout 0.1
run train --model_name_or_path "$base" --output_model_path ckpt "${common[@]}" --max_steps 4 \
  --gradient_checkpointing --lisa_interval_steps 2
# a bf16 model: the base saved in bf16, then LISA in half mode
run train --model_name_or_path "$base" --output_model_path bf16base "${common[@]}" --max_steps 1 --method full \
  --learning_rate 0 --torch_dtype bfloat16
run train --model_name_or_path bf16base --output_model_path bf16 "${common[@]}" --max_steps 4 \
  --lisa_interval_steps 2
for arch in qwen3 gemma3; do
  case $arch in
    qwen3) cfg='{"architectures":["Qwen3ForCausalLM"],"model_type":"qwen3","vocab_size":512,"hidden_size":48,"intermediate_size":96,"num_hidden_layers":4,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":16,"max_position_embeddings":256,"use_sliding_window":true,"sliding_window":6,"max_window_layers":2,"tie_word_embeddings":true,"bos_token_id":1,"eos_token_id":2}' ;;
    gemma3) cfg='{"architectures":["Gemma3ForCausalLM"],"model_type":"gemma3_text","vocab_size":512,"hidden_size":48,"intermediate_size":96,"num_hidden_layers":4,"num_attention_heads":2,"num_key_value_heads":1,"head_dim":32,"max_position_embeddings":256,"query_pre_attn_scalar":32,"sliding_window":5,"sliding_window_pattern":2,"final_logit_softcapping":30.0,"bos_token_id":1,"eos_token_id":2,"torch_dtype":"bfloat16"}' ;;
  esac
  echo "$cfg" >"$arch.json"
  run init --config "$arch.json" --output_model_path "${arch}_init" --tokenizer_path "$base" --seed 3
  run train --model_name_or_path "${arch}_init" --output_model_path "$arch" "${common[@]}" --max_steps 4 \
    --lisa_interval_steps 2
  run train --model_name_or_path "${arch}_init" --output_model_path "${arch}_lora" "${common[@]}" --max_steps 3 \
    --method lora
done
if command -v mpirun >/dev/null; then
  mpirun --allow-run-as-root --oversubscribe -np 2 "$lisa" train --model_name_or_path "$base" \
    --output_model_path mpi "${common[@]}" --threads 1 --max_steps 4 --lisa_interval_steps 2 >"$work/last.log" 2>&1 \
    || { echo "FAILED: mpirun" >&2; cat "$work/last.log" >&2; exit 1; }
fi
run export-gguf --model_name_or_path lisa --outfile lisa.q8_0.gguf --outtype q8_0
run export-gguf --model_name_or_path "$base" --lora_model_path lora --outfile lora.f16.gguf --outtype f16
run merge-lora --model_name_or_path "$base" --lora_model_path lora --output_model_path merged
for m in lisa full merged gemma3; do
  "$lisa" eval --model_name_or_path "$m" --dataset_path "$data" --block_size 64 >"eval_$m.txt" 2>/dev/null
  "$lisa" generate --model_name_or_path "$m" --prompt "Once upon" --max_new_tokens 12 --seed 1 --temperature 0.8 \
    >"gen_$m.txt" 2>/dev/null
done
"$lisa" eval --model_name_or_path "$base" --lora_model_path lora --dataset_path "$data" --block_size 64 \
  >eval_lora.txt 2>/dev/null

# hashes: every file, with times and this run's folder taken out of the text ones
find . -type f ! -name last.log ! -name '*.lock' | LC_ALL=C sort | while read -r f; do
  case $f in
    *.json | *.jsonl | *.txt)
      sed -E -e 's#'"$work"'#WORK#g' -e 's/"[a-z_]*(runtime|time|per_second|elapsed|seconds|rss)[a-z_]*": *[-0-9.e+]+/"T": 0/g' \
        -e 's/"(date|created|started|finished)[a-z_]*": *"[^"]*"/"D": ""/g' "$f" | sha256sum | sed "s#-#$f#" ;;
    *.svg) ;;  # plots: drawn from the log hashed above
    *) sha256sum "$f" ;;
  esac
done
