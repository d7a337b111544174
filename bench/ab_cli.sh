#!/usr/bin/env bash
# Training speed and memory of two built `lisa` binaries through the CLI (tokens/s and peak RSS
# from train_results.json), LISA / full / LoRA on the 60M Llama shape, interleaved round by round
# with the order alternating, 2 threads: a refactor's cost without rebuilding the old revision.
#   bench/ab_cli.sh OLD_LISA [NEW_LISA] [ROUNDS]      (NEW_LISA defaults to build/lisa)
set -euo pipefail
old=$(realpath "${1:?usage: bench/ab_cli.sh OLD_LISA [NEW_LISA] [ROUNDS]}")
new=$(realpath "${2:-$(dirname "$0")/../build/lisa}")
rounds=${3:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/lisa_ab_cli.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
echo '{"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":32000,"hidden_size":512,"intermediate_size":1376,"num_hidden_layers":8,"num_attention_heads":8,"num_key_value_heads":8,"max_position_embeddings":1024,"rms_norm_eps":1e-5,"tie_word_embeddings":false}' > 60m.json
"$new" init --config 60m.json --output_model_path 60m --tokenizer_path "$here/data/tokenizer" --seed 1 > /dev/null
python3 - <<'PY'
import json, random
random.seed(0)
words = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex the jovial king".split()
inst = [{"text": " ".join(random.choice(words) for _ in range(400))} for _ in range(64)]
json.dump({"type": "text_only", "instances": inst}, open("data.json", "w"))
PY
printf '%-6s %-5s %-4s %10s %8s\n' round method impl tokens/s rss_MiB
for round in $(seq "$rounds"); do
  order="old new"; [ $((round % 2)) = 0 ] && order="new old"
  for method in lisa full lora; do
    for impl in $order; do
      bin=$old; [ "$impl" = new ] && bin=$new
      rm -rf out
      "$bin" train --model_name_or_path 60m --dataset_path data.json --output_model_path out --method "$method" \
        --block_size 256 --per_device_train_batch_size 4 --max_steps 8 --threads 2 --lisa_activated_layers 2 \
        --lisa_interval_steps 4 --logging_steps 100 > log.txt 2>&1
      python3 -c "import json;r=json.load(open('out/train_results.json'));print('%-6s %-5s %-4s %10.1f %8.1f'%('$round','$method','$impl',r['train_tokens_per_second'],r['peak_rss_mib']))"
    done
  done
done
