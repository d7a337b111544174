#!/usr/bin/env bash
# Tokenizer throughput, ours vs the Hugging Face `tokenizers` library, on the same ~1 MB text
# (lines of three random picks among the 1,500 hard strings of tests/golden/tokenizer_fuzz,
# so long unsplit segments rarely repeat), in one run.
#   bench/tokenizer.sh [ASSETS_DIR]      needs node + npm (Debian's nodejs/npm) for the HF side
set -euo pipefail
cd "$(dirname "$0")/.."
assets=${1:-../shared/assets}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --build build --target bench_tokenizer >/dev/null
python3 - "$work/text.txt" <<'PY'
import glob, json, random, sys
texts = [json.loads(l)["text"] for f in sorted(glob.glob("tests/golden/tokenizer_fuzz/*.jsonl")) for l in open(f)]
random.seed(0)
lines, size = [], 0
while size < (1 << 20):
    lines.append(" ".join(random.sample(texts, 3)))
    size += len(lines[-1].encode()) + 1
open(sys.argv[1], "w").write("\n".join(lines))
PY
build/bench_tokenizer "$assets" "$work/text.txt" > "$work/ours.txt"
(cd "$work" && npm install --silent @anush008/tokenizers@0.6.0 >/dev/null 2>&1)
NODE_PATH="$work/node_modules" node bench/bench_tokenizer_hf.js "$assets" "$work/text.txt" > "$work/hf.txt"
echo "text: $(wc -c < "$work/text.txt") bytes"
printf "%-10s %10s %14s %14s %8s\n" tokenizer tokens "lisa tok/s" "HF tok/s" ratio
join <(sort "$work/ours.txt") <(sort "$work/hf.txt") | while read -r name n1 r1 n2 r2; do
  same=$([[ "$n1" == "$n2" ]] && echo "" || echo " (token counts differ: $n1 vs $n2)")
  printf "%-10s %10s %14s %14s %8.2fx%s\n" "$name" "$n1" "$r1" "$r2" "$(echo "$r1 / $r2" | bc -l)" "$same"
done
