#!/usr/bin/env bash
# Data-parallel training over MPI on this machine: bytes all-reduced per optimizer step (from
# trainer_log.jsonl's allreduce_bytes) for LISA (2 active layers), LoRA (r 8, q/v) and full
# fine-tuning on the 60M Llama shape, and the step time of 1 process (2 threads, batch 8) against
# 2 ranks (1 thread each, batch 4 each: the same global batch), as tokens/s and their ratio.
#   bench/mpi.sh [STEPS]   (default 6)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-6}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
work=$(mktemp -d /tmp/lisa_mpi.XXXXXX)
trap 'rm -rf "$work"' EXIT
cmake --build build --target lisa >/dev/null
echo '{"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":32000,"hidden_size":512,"intermediate_size":1376,"num_hidden_layers":8,"num_attention_heads":8,"num_key_value_heads":8,"max_position_embeddings":1024,"rms_norm_eps":1e-5,"tie_word_embeddings":false}' > "$work/60m.json"
build/lisa init --config "$work/60m.json" --tokenizer_path data/tokenizer --output_model_path "$work/base" --seed 1 >/dev/null
common=(train --model_name_or_path "$work/base" --dataset_path data/train --max_steps "$steps" --logging_steps 1
        --lisa_activated_layers 2 --lisa_interval_steps 3 --lora_r 8 --lora_dropout 0 --seed 1)
printf '%-6s %16s %14s %14s %8s\n' method allreduce_MB/step "1 proc tok/s" "2 ranks tok/s" ratio
for method in lisa lora full; do
  OMP_NUM_THREADS=2 build/lisa "${common[@]}" --method $method --per_device_train_batch_size 8 \
    --output_model_path "$work/one-$method" >/dev/null 2>&1
  OMP_NUM_THREADS=1 mpirun -np 2 --oversubscribe build/lisa "${common[@]}" --method $method \
    --per_device_train_batch_size 4 --output_model_path "$work/two-$method" >/dev/null 2>&1
  python3 - "$work/one-$method/trainer_log.jsonl" "$work/two-$method/trainer_log.jsonl" "$method" <<'PY'
import json, sys
one = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
two = [json.loads(l) for l in open(sys.argv[2]) if '"loss"' in l]
def tps(log):  # mean tokens/s over the steps after the first (warm-up)
    tok = [r["tokens_per_second"] for r in log[1:]]
    return sum(tok) / len(tok)
mb = sum(r["allreduce_bytes"] for r in two) / len(two) / 1e6
t1, t2 = tps(one), tps(two)
print("%-6s %16.2f %14.0f %14.0f %8.2f" % (sys.argv[3], mb, t1, t2, t2 / t1))
PY
done
# --zero_stage 1: AdamW moments sharded over the 2 ranks (full fine-tuning holds the most)
echo
printf '%-22s %22s %18s %18s\n' "full, 2 ranks" optimizer_state_MB/rank rank_RSS_MB allgather_MB/step
for z in 0 1; do
  OMP_NUM_THREADS=1 mpirun -np 2 --oversubscribe build/lisa "${common[@]}" --method full --zero_stage $z \
    --per_device_train_batch_size 4 --output_model_path "$work/zero$z" >/dev/null 2>&1
  python3 - "$work/zero$z/trainer_log.jsonl" "$z" <<'PY'
import json, sys
log = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
print("%-22s %22.1f %18.0f %18.1f" % ("--zero_stage " + sys.argv[2], log[-1]["optimizer_state_bytes"] / 1e6,
      max(r["rss_mib"] for r in log), sum(r.get("allgather_bytes", 0) for r in log) / len(log) / 1e6))
PY
done

