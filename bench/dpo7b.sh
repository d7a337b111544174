#!/usr/bin/env bash
# DPO with LISA on the Llama-2-7B shape (issue #30): does preference tuning stay within LISA's
# supervised footprint? The same random bf16 model as bench/llama7b.sh (13.5 GB under WORK), the
# same rows per step: supervised LISA on 4 sequences (prompt + reply) in steps of 2, then DPO on
# the 2 pairs they make, one pair (2 sequences) per step, its reference log-probabilities computed
# before the first step. LISA γ 1, embedding and head frozen, --gradient_checkpointing, 2 threads.
# Prints each run's peak RSS (/usr/bin/time) and step time, and the stored reference's size.
#   bench/dpo7b.sh [WORK_DIR] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/lisa_llama7b}
steps=${2:-2}
mkdir -p "$work"
cmake --build build --target lisa >/dev/null
cat > "$work/config.json" <<'JSON'
{"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":32000,"hidden_size":4096,
 "intermediate_size":11008,"num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":32,
 "max_position_embeddings":4096,"rms_norm_eps":1e-5,"tie_word_embeddings":false,"torch_dtype":"bfloat16",
 "bos_token_id":1,"eos_token_id":2}
JSON
[[ -f $work/llama2-7b/config.json ]] ||
  build/lisa init --config "$work/config.json" --output_model_path "$work/llama2-7b" --dtype bfloat16 \
    --tokenizer_path ../shared/assets/tokenizers/mistral
# 2 pairs (prompt ~30 tokens, replies ~100) as preference records, and their 4 sequences as text2text
/usr/bin/python3 - "$work" "$steps" <<'PY'
import json, os, random, sys
work, steps = sys.argv[1], int(sys.argv[2])
random.seed(30)
words = open("/usr/share/dict/words").read().split() if os.path.exists("/usr/share/dict/words") else \
    ["the", "a", "river", "stone", "light", "winter", "road", "small", "house", "green", "quiet", "bird"]
say = lambda n: " " + " ".join(random.choice(words) for _ in range(n)) + "."
pairs = [{"prompt": "Question:" + say(20) + "\nAnswer:", "chosen": say(70), "rejected": say(70)} for _ in range(steps)]
os.makedirs(os.path.join(work, "dpo_pairs"), exist_ok=True)
os.makedirs(os.path.join(work, "dpo_sft"), exist_ok=True)
with open(os.path.join(work, "dpo_pairs", "pairs.jsonl"), "w") as f:
    f.writelines(json.dumps(p) + "\n" for p in pairs)
inst = [{"input": p["prompt"], "output": p[k]} for p in pairs for k in ("chosen", "rejected")]
json.dump({"type": "text2text", "instances": inst}, open(os.path.join(work, "dpo_sft", "sft.json"), "w"))
PY
common=(--model_name_or_path "$work/llama2-7b" --method lisa --lisa_activated_layers 1 --lisa_interval_steps 20
        --lisa_train_embeddings 0 --lisa_train_head 0 --gradient_checkpointing --block_size 256 --max_steps "$steps"
        --logging_steps 1 --save_strategy no --learning_rate 1e-5 --disable_tqdm 1)
for run in sft dpo; do
  out=$work/dpo_out_$run
  rm -rf "$out"  # (the bench's own folder under WORK)
  if [[ $run == sft ]]; then
    args=(--dataset_path "$work/dpo_sft" --per_device_train_batch_size 2)
  else
    args=(--dataset_path "$work/dpo_pairs" --per_device_train_batch_size 1 --objective dpo)
  fi
  echo "== LISA $run: ${args[*]}"
  /usr/bin/time -v build/lisa train "${common[@]}" "${args[@]}" --output_model_path "$out" \
    > "$work/dpo_$run.log" 2> "$work/dpo_$run.time" || { tail -5 "$work/dpo_$run.time"; exit 1; }
  grep -E "Maximum resident|Elapsed" "$work/dpo_$run.time"
  grep -hE "reference log-probabilities|^done:" "$work/dpo_$run.time" "$work/dpo_$run.log" || true
  /usr/bin/python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
log = [json.loads(l) for l in open(os.path.join(out, "trainer_log.jsonl")) if '"loss"' in l]
r = json.load(open(os.path.join(out, "train_results.json")))
ref = os.path.join(out, "reference_logps.json")
print("  peak_rss_mib %.0f, train_runtime %.0f s, tokens/s per step %s, optimizer_state_bytes %d%s" % (
    r["peak_rss_mib"], r["train_runtime"], [round(x["tokens_per_second"], 2) for x in log],
    log[-1]["optimizer_state_bytes"],
    ", reference_logps.json %d bytes" % os.path.getsize(ref) if os.path.exists(ref) else ""))
PY
done
