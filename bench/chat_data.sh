#!/usr/bin/env bash
# Reading chat data: N conversations (system + 3 exchanges, unicode, some with reasoning) in the
# model's own Jinja template, as `lisa inspect-data` / `lisa train` read them (render, the
# sentinel re-renders that find each reply, tokenize the whole text, align, label), beside
# jinja2 with Hugging Face's settings rendering the same conversations once each (text only:
# no tokenizer, no labels; Python's HF tokenizers are not installable here). Peak RSS of each.
#   bench/chat_data.sh [N] [TEMPLATE_DIR]   (default 4000, ../shared/assets/tokenizers/qwen3)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-4000}
tdir=${2:-../shared/assets/tokenizers/qwen3}
work=$(mktemp -d /tmp/lisa_chat.XXXXXX)
trap 'rm -rf "$work"' EXIT
cmake --build build --target lisa >/dev/null
mkdir -p "$work/model" "$work/data"
cp "$tdir"/tokenizer.json "$tdir"/tokenizer_config.json "$work/model/"
cat > "$work/model/config.json" <<'JSON'
{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":32,"intermediate_size":64,
 "num_hidden_layers":1,"num_attention_heads":4,"num_key_value_heads":4,"vocab_size":262144,
 "max_position_embeddings":4096,"rms_norm_eps":1e-6,"torch_dtype":"float32"}
JSON
/usr/bin/python3 - "$n" "$work/data/chat.jsonl" <<'PY'
import json, random, sys
n, out = int(sys.argv[1]), sys.argv[2]
r = random.Random(0)
words = "the a llama model learns from data quickly über café 日本 🦙 tokens layer".split()
say = lambda k: " ".join(r.choice(words) for _ in range(k))
with open(out, "w") as f:
    for i in range(n):
        msgs = [{"role": "system", "content": say(8)}]
        for t in range(3):
            msgs.append({"role": "user", "content": say(r.randint(5, 40))})
            reply = say(r.randint(10, 80))
            if t == 2 and i % 3 == 0:
                reply = "<think>\n" + say(20) + "\n</think>\n\n" + reply
            msgs.append({"role": "assistant", "content": reply})
        f.write(json.dumps({"messages": msgs}, ensure_ascii=False) + "\n")
PY
/usr/bin/time -f "%e %M" -o "$work/lisa.time" build/lisa inspect-data --model_name_or_path "$work/model" \
  --dataset_path "$work/data" --limit 1 --block_size 4096 > "$work/lisa.out"
/usr/bin/time -f "%e %M" -o "$work/py.time" /usr/bin/python3 - "$work/model/tokenizer_config.json" "$work/data/chat.jsonl" <<'PY'
import json, sys
sys.path.insert(0, "tests/golden")
from hf_jinja import ENV
cfg = json.load(open(sys.argv[1]))
tmpl = ENV.from_string(cfg["chat_template"])
specials = {k: cfg[k] for k in ("bos_token", "eos_token") if isinstance(cfg.get(k), str)}
total = 0
for line in open(sys.argv[2]):
    total += len(tmpl.render(messages=json.loads(line)["messages"], tools=None, add_generation_prompt=False, **specials))
print(total)
PY
read -r ls lk < "$work/lisa.time"
read -r ps pk < "$work/py.time"
grep -E "^samples:" "$work/lisa.out"
printf '%-44s %8s %10s\n' "" seconds peak_MB
printf '%-44s %8.2f %10.0f\n' "lisa.cpp: render + spans + tokenize + labels" "$ls" "$((lk / 1024))"
printf '%-44s %8.2f %10.0f\n' "jinja2 (HF settings): render once, text only" "$ps" "$((pk / 1024))"
python3 -c "print('conversations/s: lisa.cpp %.0f, jinja2 render only %.0f; time ratio lisa/jinja2 %.2f' % ($n/$ls, $n/$ps, $ls/$ps))"
