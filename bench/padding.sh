#!/usr/bin/env bash
# Padding-free batches and packing against right-padded batches (issue #27), on chat-like data of
# skewed lengths: sample lengths drawn from a log-normal fitted to ShareGPT-style conversations
# (median ~250 tokens, long tail, clipped to 20..2000), LISA at batch 8 on a small Llama shape.
# Four runs on the same samples and seed, one after another in this script:
#   padded        --padding_free false    (every row right-padded to the batch's longest)
#   padding-free  (the default)           (samples end to end, attention inside each)
#   packed        --packing               (rows of --block_size filled with whole samples)
#   padded, grouped --padding_free false --group_by_length (HF's remedy: similar lengths per batch)
# It prints the padding share of the padded batches, each run's real (non-padding) tokens per
# second from trainer_log.jsonl, their ratio to padded, the mean loss of the steps (padded and
# padding-free train on the same batches, so their losses agree to rounding; packed batches hold
# other samples) and peak RSS.
#   bench/padding.sh [STEPS] [SAMPLES]     (default 12 steps, 400 samples)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-12}
n=${2:-400}
work=$(mktemp -d /tmp/lisa_padding.XXXXXX)
trap 'rm -rf "$work"' EXIT
cmake --build build --target lisa >/dev/null
cat > "$work/config.json" <<'JSON'
{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":256,"intermediate_size":688,
 "num_hidden_layers":4,"num_attention_heads":8,"num_key_value_heads":8,"vocab_size":512,
 "max_position_embeddings":2048,"rms_norm_eps":1e-5,"torch_dtype":"float32"}
JSON
build/lisa init --config "$work/config.json" --tokenizer_path data/tokenizer --output_model_path "$work/model" \
  --seed 1 >/dev/null
mkdir -p "$work/data"
/usr/bin/python3 - "$n" "$work/data/train.json" <<'PY'
import json, math, random, sys
n, out = int(sys.argv[1]), sys.argv[2]
r = random.Random(0)
words = "the a llama model learns from data quickly small tokens layer sample batch row attention".split()
inst = []
for i in range(n):
    # a length in tokens; these words are about 2.9 tokens each with the bundled byte-level BPE
    k = int(min(2000, max(20, r.lognormvariate(math.log(250), 0.9)))) / 2.9
    prompt = " ".join(r.choice(words) for _ in range(max(2, int(k / 4))))
    inst.append({"input": prompt + "\n", "output": " ".join(r.choice(words) for _ in range(max(3, int(k - k / 4))))})
json.dump({"type": "text2text", "instances": inst}, open(out, "w"))
PY
common=(train --model_name_or_path "$work/model" --dataset_path "$work/data"
        --block_size 2048 --per_device_train_batch_size 8 --max_steps "$steps" --logging_steps "$steps"
        --lisa_activated_layers 2 --lisa_interval_steps 4 --learning_rate 1e-4 --seed 3)
build/lisa inspect-data --model_name_or_path "$work/model" --dataset_path "$work/data" \
  --block_size 2048 --limit 0 --seed 3 --per_device_train_batch_size 8 | grep -E "^(samples|padding):"
run() {  # name, extra flags...
  local name=$1
  shift
  /usr/bin/time -f "%M" -o "$work/$name.rss" build/lisa "${common[@]}" --output_model_path "$work/$name" "$@" \
    > "$work/$name.out" 2>&1
}
run padded --padding_free false
run padding_free
run packed --packing
run padded_by_length --padding_free false --group_by_length
/usr/bin/python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
rows = {}
for name in ("padded", "padding_free", "packed", "padded_by_length"):
    log = [json.loads(l) for l in open(f"{w}/{name}/trainer_log.jsonl") if '"loss"' in l]
    rows[name] = (log[-1]["tokens_per_second"], log[-1]["loss"], int(open(f"{w}/{name}.rss").read()) // 1024)
base = rows["padded"][0]
print("%-17s %14s %10s %10s %8s" % ("", "real tokens/s", "vs padded", "mean loss", "peak MB"))
for name, (tps, loss, rss) in rows.items():
    print("%-17s %14.0f %9.2fx %10.4f %8d" % (name, tps, tps / base, loss, rss))
PY
