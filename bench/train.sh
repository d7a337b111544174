#!/usr/bin/env bash
# Training speed and memory, lisa.cpp vs the PyTorch baseline (bench/torch_baseline.py), side by
# side in one run, same model folder, same token batches, same thread count.
#   bench/train.sh [STEPS] [SHAPES...]       default: 12 steps, shapes 60m wide128k
# A shape is a name below or a file configs/NAME.json (qwen3-0.6b, gemma-3-1b, ...), optionally
# with @T for the block size (default 256; batch 4 at 256, else 1 sequence): 60m@2048.
# METHODS="lisa" limits the methods (default: lisa full lora).
# Needs PyTorch for the baseline: scripts/install-deps.sh --golden
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-12}
shift || true
shapes=("${@:-60m wide128k}")
read -r -a shapes <<< "${shapes[*]}"
threads=2
work=$(mktemp -d /tmp/lisa_bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cmake --build build --target lisa bench_train >/dev/null
results=$work/results.jsonl
build/bench_train --sgemm --threads $threads > "$work/sgemm.json"

config() {  # name -> config.json (Llama-2 style shapes, or a file of configs/)
  if [ -f "configs/$1.json" ]; then cat "configs/$1.json"; return; fi
  case $1 in
    60m) echo '{"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":32000,"hidden_size":512,"intermediate_size":1376,"num_hidden_layers":8,"num_attention_heads":8,"num_key_value_heads":8,"max_position_embeddings":1024,"rms_norm_eps":1e-5,"tie_word_embeddings":false}' ;;
    wide128k) echo '{"architectures":["LlamaForCausalLM"],"model_type":"llama","vocab_size":128256,"hidden_size":512,"intermediate_size":1376,"num_hidden_layers":4,"num_attention_heads":8,"num_key_value_heads":8,"max_position_embeddings":1024,"rms_norm_eps":1e-5,"rope_theta":500000.0,"tie_word_embeddings":false}' ;;
    *) echo "unknown shape $1" >&2; exit 2 ;;
  esac
}

for shape in "${shapes[@]}"; do
  name=${shape%@*}
  T=256
  [ "$name" != "$shape" ] && T=${shape#*@}
  config "$name" > "$work/$shape.json"
  [ -d "$work/$name" ] || build/lisa init --config "$work/$shape.json" --output_model_path "$work/$name" --seed 1 >/dev/null
  python3 - "$work/$shape.json" "$work/$shape.tokens" "$steps" "$T" <<'PY'
import json, struct, sys, random
cfg = json.load(open(sys.argv[1])); steps = int(sys.argv[3]); T = int(sys.argv[4]); B = 4 if T == 256 else 1
random.seed(0)
with open(sys.argv[2], "wb") as f:
    f.write(struct.pack("<3i", steps, B, T))
    f.write(struct.pack(f"<{steps*B*T}i", *[random.randrange(cfg["vocab_size"]) for _ in range(steps * B * T)]))
PY
  for method in ${METHODS:-lisa full lora}; do
    args=(--model "$work/$name" --tokens "$work/$shape.tokens" --method $method --threads $threads --gamma 2 --interval 3)
    echo "== $shape $method" >&2
    build/bench_train "${args[@]}" | sed "s/^{/{\"shape\":\"$shape\",/" >> "$results"
    OMP_NUM_THREADS=$threads /usr/bin/python3 bench/torch_baseline.py "${args[@]}" | sed "s/^{/{\"shape\":\"$shape\",/" >> "$results"
  done
done

/usr/bin/python3 - "$results" "$work/sgemm.json" "$work" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
sgemm = json.load(open(sys.argv[2]))["sgemm_gflops"]
def flops_per_token(shape, method, gamma=2):
    c = json.load(open(f"{sys.argv[3]}/{shape}.json"))
    T = int(shape.split("@")[1]) if "@" in shape else 256
    D, F, L, V = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    H = c["num_attention_heads"]
    hd = c.get("head_dim") or D // H
    Q, KV = H * hd, c.get("num_key_value_heads", H) * hd
    layer = 2 * D * Q + 2 * D * KV + 3 * D * F      # matrix parameters of one decoder layer
    attn = 6 * T * Q                                  # causal attention, forward + backward (no window credit)
    head = 6 * V * D if method in ("full", "lisa") else 4 * V * D   # frozen head: dX only
    if method == "full":
        layers = L * (6 * layer + attn)
    elif method == "lisa":                            # gamma layers train (6), the rest pass dX (4)
        layers = gamma * 6 * layer + (L - gamma) * 4 * layer + L * attn
    else:                                             # lora: base frozen (4), adapters negligible
        layers = L * (4 * layer + attn)
    return layers + head
print(f"sgemm: {sgemm:.1f} GFLOP/s ({json.load(open(sys.argv[2]))['threads']} threads, 2048^3)")
print(f"{'shape':9} {'method':6} {'lisa tok/s':>10} {'torch tok/s':>11} {'speed':>6} {'lisa MiB':>9} {'torch MiB':>9} {'mem':>5} {'lisa MFU':>8} {'torch MFU':>9}  lisa RSS per step (MiB)")
by = {}
for r in rows:
    by.setdefault((r["shape"], r["method"]), {})[r["impl"]] = r
for (shape, method), d in by.items():
    a, b = d["lisa.cpp"], d["pytorch"]
    f = flops_per_token(shape, method)
    mfu = lambda r: r["tokens_per_second"] * f / 1e9 / sgemm
    print(f"{shape:9} {method:6} {a['tokens_per_second']:10.0f} {b['tokens_per_second']:11.0f} "
          f"{a['tokens_per_second']/b['tokens_per_second']:5.2f}x {a['peak_rss_mib']:9.0f} {b['peak_rss_mib']:9.0f} "
          f"{a['peak_rss_mib']/b['peak_rss_mib']:5.2f} {mfu(a):8.0%} {mfu(b):9.0%}  "
          f"{' '.join(f'{x:.0f}' for x in a['rss_mib'])}")
    if method == "lisa":
        print(f"{'':16} torch RSS per step (MiB): {' '.join(f'{x:.0f}' for x in b['rss_mib'])}")
PY
