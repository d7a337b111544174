#!/usr/bin/env bash
# The Vulkan backend beside the CPU backend and beside llama.cpp's own Vulkan backend, on one model
# and one device, in one run (docs/performance.md, "Vulkan"):
#   bench/vulkan.sh [CONFIG] [TOKENS] [REPS] [PEAK_TFLOPS]
#     CONFIG  a config.json for `lisa init` (default configs/tiny-llama.json widened: see below)
#     TOKENS  tokens per forward (default 512); REPS timed passes (default 3)
#     PEAK_TFLOPS  the device's fp32 peak, to print the fraction reached (optional)
# Prints, per line: lisa.cpp forward on cpu and vulkan, llama.cpp prompt processing on cpu and
# vulkan (node-llama-cpp's prebuilt binaries, the model exported to GGUF f32), lisa.cpp's training
# step (forward + backward) on cpu and vulkan; then the ratios. On Mesa's lavapipe the "GPU" is
# these CPUs: the numbers compare implementations, not hardware.
set -euo pipefail
cd "$(dirname "$0")/.."
tokens=${2:-512}
reps=${3:-3}
peak=${4:-0}
work=$(mktemp -d /tmp/lisa_vulkan.XXXXXX)
trap 'rm -rf "$work"' EXIT
cmake --build build --target lisa bench_device >/dev/null
scripts/install-referees.sh build
config=${1:-}
if [ -z "$config" ]; then  # a 20M Llama: wide enough that matrix products dominate
  python3 - "$work/config.json" <<'PY'
import json, sys
c = json.load(open("configs/tiny-llama.json"))
c.update(hidden_size=512, intermediate_size=1376, num_hidden_layers=6, num_attention_heads=8,
         num_key_value_heads=4, max_position_embeddings=1024)
json.dump(c, open(sys.argv[1], "w"))
PY
  config=$work/config.json
fi
build/lisa init --config "$config" --output_model_path "$work/model" --tokenizer_path data/tokenizer --seed 1 >/dev/null
build/lisa export-gguf --model_name_or_path "$work/model" --outfile "$work/model.gguf" --outtype f32 >/dev/null
pk=()
[ "$peak" != 0 ] && pk=(--peak_tflops "$peak")
run() { echo "$1" >&2; eval "$1" | tee -a "$work/results.jsonl"; }
run "build/bench_device --model $work/model --device cpu --tokens $tokens --reps $reps ${pk[*]:-}"
run "build/bench_device --model $work/model --device vulkan --tokens $tokens --reps $reps ${pk[*]:-}"
nm=build/referee/node_modules
if [ -d "$nm/node-llama-cpp" ]; then
  run "node bench/llama_cpp_prompt.mjs $nm $work/model.gguf cpu $tokens $reps"
  # ggml skips CPU-type Vulkan devices (lavapipe) unless told: the same device lisa's run used
  run "GGML_VK_VISIBLE_DEVICES=${GGML_VK_VISIBLE_DEVICES:-0} node bench/llama_cpp_prompt.mjs $nm $work/model.gguf vulkan $tokens $reps"
fi
run "build/bench_device --model $work/model --device cpu --tokens $tokens --reps $reps --train ${pk[*]:-}"
run "build/bench_device --model $work/model --device vulkan --tokens $tokens --reps $reps --train ${pk[*]:-}"
python3 - "$work/results.jsonl" <<'PY'
import json, sys
r = [json.loads(l) for l in open(sys.argv[1])]
def tps(impl, dev, what=None):
    for x in r:
        if x["impl"] == impl and x["device"].startswith(dev) and (what is None or x.get("what", "").startswith(what)):
            return x["tokens_per_second"]
    return None
lv, lc = tps("lisa.cpp", "vulkan", "forward +"), tps("lisa.cpp", "cpu", "forward +")
gv, gc = tps("llama.cpp", "vulkan"), tps("llama.cpp", "cpu")
tv, tc = tps("lisa.cpp", "vulkan", "forward+backward"), tps("lisa.cpp", "cpu", "forward+backward")
if gv: print(f"forward, lisa.cpp vulkan / llama.cpp vulkan: {lv / gv:.2f}x")
if gc: print(f"forward, lisa.cpp cpu / llama.cpp cpu: {lc / gc:.2f}x")
print(f"forward, lisa.cpp vulkan / lisa.cpp cpu: {lv / lc:.2f}x")
print(f"training step, lisa.cpp vulkan / lisa.cpp cpu: {tv / tc:.2f}x (step time ratio {tc / tv:.2f})")
PY
