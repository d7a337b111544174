#!/usr/bin/env bash
# Training speed and memory of this checkout against an earlier revision, interleaved in one run
# (same model folder, same token batches, 2 threads), so that a refactor's cost is measured
# rather than guessed on a noisy machine.
#   bench/ab.sh REV [ROUNDS]        e.g. bench/ab.sh 0466e2a 2
# REV's bench_train is built in a temporary git worktree.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: bench/ab.sh REV [ROUNDS]}
rounds=${2:-2}
work=$(mktemp -d /tmp/lisa_ab.XXXXXX)
trap 'git worktree remove --force "$work/old" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git worktree add -q --detach "$work/old" "$rev"
cmake -S "$work/old" -B "$work/old/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$work/old/build" -j"$(nproc)" --target bench_train >/dev/null
cmake --build build -j"$(nproc)" --target lisa bench_train >/dev/null
echo '{"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":32000,"hidden_size":512,"intermediate_size":1376,"num_hidden_layers":8,"num_attention_heads":8,"num_key_value_heads":8,"max_position_embeddings":1024,"rms_norm_eps":1e-5,"tie_word_embeddings":false}' > "$work/60m.json"
build/lisa init --config "$work/60m.json" --output_model_path "$work/60m" --seed 1 >/dev/null
python3 - "$work/60m.tokens" <<'PY'
import struct, sys, random
steps, B, T = 10, 4, 256
random.seed(0)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<3i", steps, B, T))
    f.write(struct.pack(f"<{steps*B*T}i", *[random.randrange(32000) for _ in range(steps * B * T)]))
PY
printf '%-6s %-5s %-5s %12s %14s\n' round method impl tokens/s peak_RSS_MiB
for round in $(seq "$rounds"); do
  for method in lisa full lora; do
    for impl in old new; do
      bin=build/bench_train
      [[ $impl == old ]] && bin=$work/old/build/bench_train
      "$bin" --model "$work/60m" --tokens "$work/60m.tokens" --method $method --threads 2 --gamma 2 --interval 3 |
        python3 -c "import json,sys; j=json.load(sys.stdin); print('%-6s %-5s %-5s %12.1f %14.1f' % ('$round', '$method', '$impl', j['tokens_per_second'], j['peak_rss_mib']))"
    done
  done
done
