#!/usr/bin/env bash
# LISA fine-tuning, with the command line LMFlow users know:
#
#   ./run_finetune_with_lisa.sh \
#     --model_name_or_path PATH --dataset_path data/train \
#     --output_model_path output_models/finetuned --lisa_activated_layers 1 --lisa_interval_steps 20
#
# Every other `lisa train` flag is passed through (see docs/training.md); flags given here
# override the defaults below. With no arguments it runs the bundled default: a small Llama made
# by `lisa init`, fine-tuned with LISA on the facts task in data/train, evaluated on the held-out
# phrasings in data/eval before and after, then asked a question.
# The program is built first if needed (scripts/install-deps.sh installs what it needs).
set -euo pipefail
cd "$(dirname "$0")"

if [[ ! -x build/lisa ]]; then
  scripts/install-deps.sh
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build -j"$(nproc)" --target lisa
fi
LISA=build/lisa

# The seed script's defaults (LMFlow's run_finetune_with_lisa.sh), then the user's flags.
defaults=(--method lisa --lisa_activated_layers 1 --lisa_interval_steps 20 --num_train_epochs 1
          --learning_rate 2e-5 --lr_scheduler_type cosine --per_device_train_batch_size 1
          --logging_steps 20 --output_model_path output_models/finetuned --plot_loss)

if [[ $# -gt 0 ]]; then
  exec "$LISA" train "${defaults[@]}" "$@"
fi

# ---- the bundled default (OUTPUT_ROOT moves its folders, e.g. for tests)
root=${OUTPUT_ROOT:-output_models}
base=$root/default-base
out=$root/finetuned
if [[ ! -f $base/config.json ]]; then
  "$LISA" init --config configs/tiny-llama.json --tokenizer_path data/tokenizer --output_model_path "$base" --seed 42
fi
echo "== held-out loss before fine-tuning"
"$LISA" eval --model_name_or_path "$base" --dataset_path data/eval
"$LISA" train --model_name_or_path "$base" --dataset_path data/train --output_model_path "$out" \
  --overwrite_output_dir --method lisa --lisa_activated_layers 2 --lisa_interval_steps 20 \
  --num_train_epochs 30 --learning_rate 2e-3 --lr_scheduler_type cosine --warmup_ratio 0.03 \
  --per_device_train_batch_size 16 --logging_steps 25 --seed 42 \
  --eval_dataset_path data/eval --eval_steps 150
echo "== held-out loss after fine-tuning"
"$LISA" eval --model_name_or_path "$out" --dataset_path data/eval
for q in "What sound does a dog make?" "Tell me the opposite of hot."; do
  echo "== lisa generate --prompt \"$q\""
  "$LISA" generate --model_name_or_path "$out" --prompt "$q" --max_new_tokens 24
done
