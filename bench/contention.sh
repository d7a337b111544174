#!/usr/bin/env bash
# Speed on an idle machine and beside a CPU hog (another program busy on one core), for the
# default thread count (the governor's) against fixed --threads 1 and --threads N, and optionally
# against an earlier revision's default, interleaved round by round; the PyTorch baseline beside
# them when PyTorch is installed (same model shape, same batch shape, its default threads).
#   bench/contention.sh [STEPS] [REV] [ROUNDS]     e.g. bench/contention.sh 40 92ca377 2
# REV may also be the path of an earlier build's lisa binary (nothing is built then).
# Prints wall seconds of `lisa train` (start to saved model) per case and the ratios that matter:
# beside the hog, default / --threads 1 (should be <= 1.0); idle, default / --threads N and
# default / REV's default (should be about 1.0).
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-40}
rev=${2:-}
rounds=${3:-2}
cpus=$(nproc)
work=$(mktemp -d /tmp/lisa_contention.XXXXXX)
hog_pid=
cleanup() {
  [ -n "$hog_pid" ] && kill "$hog_pid" 2>/dev/null || true
  [ -d "$work/old" ] && git worktree remove --force "$work/old" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
cmake --build build -j"$cpus" --target lisa >/dev/null
bins=(new)
old_bin=$work/old/build/lisa
if [ -n "$rev" ] && [ -x "$rev" ]; then
  old_bin=$(realpath "$rev")
  rev=$(basename "$rev")
  bins+=(old)
elif [ -n "$rev" ]; then
  git worktree add -q --detach "$work/old" "$rev"
  cmake -S "$work/old" -B "$work/old/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$work/old/build" -j"$cpus" --target lisa >/dev/null
  bins+=(old)
fi
bin_of() { [ "$1" = old ] && echo "$old_bin" || echo build/lisa; }

# two models on the bundled data: the bundled default's tiny Llama, and a wider one (hidden 512)
build/lisa init --config configs/tiny-llama.json --tokenizer_path data/tokenizer --output_model_path "$work/tiny" --seed 1 >/dev/null
sed -e 's/"hidden_size": 128/"hidden_size": 512/' -e 's/"intermediate_size": 344/"intermediate_size": 1376/' \
    -e 's/"num_attention_heads": 4/"num_attention_heads": 8/' -e 's/"num_key_value_heads": 2/"num_key_value_heads": 8/' \
    configs/tiny-llama.json > "$work/wide.json"
build/lisa init --config "$work/wide.json" --tokenizer_path data/tokenizer --output_model_path "$work/wide" --seed 1 >/dev/null

have_torch=0
/usr/bin/python3 -c "import torch" 2>/dev/null && have_torch=1
if [ $have_torch = 1 ]; then  # the baseline's batches: 16 sequences of 64 tokens, like the runs' shape
  /usr/bin/python3 - "$work/wide.tokens" "$steps" <<'PY'
import random, struct, sys
steps, B, T = int(sys.argv[2]), 16, 64
random.seed(0)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<3i", steps, B, T))
    f.write(struct.pack(f"<{steps*B*T}i", *[random.randrange(512) for _ in range(steps * B * T)]))
PY
fi

results=$work/results.tsv
run_case() {  # scenario model label bin threads-args...
  local scenario=$1 model=$2 label=$3 bin=$4
  shift 4
  local t0 t1
  t0=$(date +%s.%N)
  env -u OMP_NUM_THREADS -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT "$bin" train --model_name_or_path "$work/$model" \
    --dataset_path data/train --output_model_path "$work/out" --overwrite_output_dir --method lisa \
    --lisa_activated_layers 2 --lisa_interval_steps 20 --max_steps "$steps" --per_device_train_batch_size 16 \
    --learning_rate 2e-3 --logging_steps 1000 --seed 1 "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
  t1=$(date +%s.%N)
  printf '%s\t%s\t%s\t%s\n' "$scenario" "$model" "$label" "$(echo "$t1 - $t0" | bc)" >> "$results"
}
run_torch() {  # scenario
  local t
  t=$(/usr/bin/python3 bench/torch_baseline.py --model "$work/wide" --tokens "$work/wide.tokens" --method lisa \
        --threads "$cpus" --gamma 2 --interval 20 | /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)['step_seconds'])")
  printf '%s\t%s\t%s\t%s\n' "$1" wide "pytorch (per step)" "$t" >> "$results"
}
cases() {  # scenario
  for model in tiny wide; do
    for b in "${bins[@]}"; do
      [ "$b" = old ] && run_case "$1" $model "$rev default" "$(bin_of old)" || run_case "$1" $model default "$(bin_of new)"
    done
    run_case "$1" $model "--threads 1" build/lisa --threads 1
    run_case "$1" $model "--threads $cpus" build/lisa --threads "$cpus"
  done
  [ $have_torch = 1 ] && run_torch "$1"
  return 0
}

echo "machine: $cpus CPUs, load before: $(cut -d' ' -f1-3 /proc/loadavg); $steps steps, $rounds rounds" >&2
for round in $(seq "$rounds"); do
  echo "== round $round: idle" >&2
  cases idle
  if [ "$cpus" -gt 1 ]; then
    echo "== round $round: beside a CPU hog on CPU $((cpus - 1))" >&2
    taskset -c $((cpus - 1)) sh -c 'while :; do :; done' &
    hog_pid=$!
    cases hog
    kill $hog_pid
    wait $hog_pid 2>/dev/null || true
    hog_pid=
  fi
done

/usr/bin/python3 - "$results" "$cpus" "$rev" <<'PY'
import sys, statistics
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
cpus, rev = sys.argv[2], sys.argv[3]
by = {}
for scenario, model, label, secs in rows:
    by.setdefault((scenario, model, label), []).append(float(secs))
med = {k: statistics.median(v) for k, v in by.items()}
print(f"{'scenario':8} {'model':5} {'case':22} {'seconds (median)':>16}")
for k in sorted(med):
    print(f"{k[0]:8} {k[1]:5} {k[2]:22} {med[k]:16.2f}")
print()
for model in ("tiny", "wide"):
    def r(scen, a, b):
        return med[(scen, model, a)] / med[(scen, model, b)] if (scen, model, a) in med and (scen, model, b) in med else float("nan")
    print(f"{model}: beside the hog, default / --threads 1 = {r('hog', 'default', '--threads 1'):.2f}; "
          f"idle, default / --threads {cpus} = {r('idle', 'default', '--threads ' + cpus):.2f}"
          + (f"; default / {rev} default: idle {r('idle', 'default', rev + ' default'):.2f}, "
             f"hog {r('hog', 'default', rev + ' default'):.2f}" if rev else ""))
if ("idle", "wide", "pytorch (per step)") in med and ("hog", "wide", "pytorch (per step)") in med:
    print(f"pytorch (wide, {cpus} threads): a step beside the hog takes "
          f"{med[('hog', 'wide', 'pytorch (per step)')] / med[('idle', 'wide', 'pytorch (per step)')]:.2f}x its idle time")
PY
