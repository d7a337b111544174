#!/usr/bin/env bash
# LISA fine-tuning, with the command line LMFlow users know:
#
#   ./run_finetune_with_lisa.sh \
#     --model_name_or_path PATH --dataset_path data/train \
#     --output_model_path output_models/finetuned --lisa_activated_layers 1 --lisa_interval_steps 20
#
# Every other `lisa train` flag is passed through (see docs/training.md); flags given here
# override the defaults below; LMFlow's -m / -d / -o work too. Relative paths are taken from the
# folder you run it in. Without a model it runs the bundled default: a small Llama made by
# `lisa init`, fine-tuned with LISA on the facts task in data/train, evaluated on the held-out
# phrasings in data/eval before and after, then asked a question; flags given then (--threads 2,
# --max_steps 50) apply to it.
# The program is built first if needed (scripts/install-deps.sh installs what it needs).
set -euo pipefail
# Paths mean what they mean in the caller's shell: the script does not change directory; the
# project's own files (the program, the bundled model config and data) are found beside it.
here=$(cd "$(dirname "$0")" && pwd)

if [[ ! -x $here/build/lisa ]]; then
  "$here"/scripts/install-deps.sh
  cmake -S "$here" -B "$here"/build -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$here"/build -j"$(nproc)" --target lisa
fi
LISA=$here/build/lisa

# The seed script's defaults (LMFlow's run_finetune_with_lisa.sh), then the user's flags.
defaults=(--method lisa --lisa_activated_layers 1 --lisa_interval_steps 20 --num_train_epochs 1
          --learning_rate 2e-5 --lr_scheduler_type cosine --per_device_train_batch_size 1
          --logging_steps 20 --output_model_path output_models/finetuned --plot_loss)

# A run on the user's model: any flag naming a model (LMFlow's -m too). Without one, the bundled
# default runs, taking the flags given (e.g. --threads 2) on each of its commands.
own_model=0
for a in "$@"; do
  case $a in -m|--model_name_or_path|--model_name_or_path=*) own_model=1 ;; esac
done
if ((own_model)); then
  exec "$LISA" train "${defaults[@]}" "$@"
fi
# global flags (--threads N) go to every command; the rest to the training
global=() extra=()
while (($#)); do
  case $1 in
    --threads) global+=("$1" "${2:?--threads needs a number}"); shift 2 ;;
    --threads=*) global+=("$1"); shift ;;
    *) extra+=("$1"); shift ;;
  esac
done

# ---- the bundled default (OUTPUT_ROOT moves its folders, e.g. for tests)
root=${OUTPUT_ROOT:-output_models}
base=$root/default-base
out=$root/finetuned
lisa() { "$LISA" ${global[@]+"${global[@]}"} "$@"; }
if [[ ! -f $base/config.json ]]; then
  lisa init --config "$here"/configs/tiny-llama.json --tokenizer_path "$here"/data/tokenizer --output_model_path "$base" --seed 42
fi
# the bundled run replaces its own earlier result, never a model of yours in the same folder
overwrite=()
if [[ ! -e $out ]] || grep -qF "\"model_name_or_path\": \"$(cd "$base" && pwd)\"" "$out/training_args.json" 2>/dev/null; then
  overwrite=(--overwrite_output_dir)
fi
echo "== held-out loss before fine-tuning"
lisa eval --model_name_or_path "$base" --dataset_path "$here"/data/eval
lisa train --model_name_or_path "$base" --dataset_path "$here"/data/train --output_model_path "$out" \
  ${overwrite[@]+"${overwrite[@]}"} --method lisa --lisa_activated_layers 2 --lisa_interval_steps 20 \
  --num_train_epochs 30 --learning_rate 2e-3 --lr_scheduler_type cosine --warmup_ratio 0.03 \
  --per_device_train_batch_size 16 --logging_steps 25 --seed 42 \
  --eval_dataset_path "$here"/data/eval --eval_steps 150 ${extra[@]+"${extra[@]}"}
echo "== held-out loss after fine-tuning"
lisa eval --model_name_or_path "$out" --dataset_path "$here"/data/eval
for q in "What sound does a dog make?" "Tell me the opposite of hot."; do
  echo "== lisa generate --prompt \"$q\""
  lisa generate --model_name_or_path "$out" --prompt "$q" --max_new_tokens 24
done
