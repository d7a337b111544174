#!/usr/bin/env bash
# The quality study (docs/quality.md): LISA (γ 1, 2; K 5, 20) against LoRA (r 8, 64) and full
# fine-tuning at equal steps, learning rates swept per method, 3 seeds, on a Llama pretrained here
# from scratch on the King James Bible and fine-tuned on Webster's 1913 definitions and on fortunes;
# outlier-weighted LISA layer sampling (--lisa_layer_sampling owlore) beside uniform.
# Quantized-base rows (issue #29, stage quant: LISA and LoRA with --base_quant q8_0/q4_0/q4_K beside
# the fp32 base) go to DIR/quant.md; `--stages data,base,quant` runs them alone (about 40 minutes).
#   bench/quality.sh [--smoke] [--out DIR] [--lisa BINARY] [--stages data,base,sweep,main,report,quant]
# Output: DIR/report.md (tables), DIR/results.json, DIR/quality.png; default DIR bench/out/quality
# (bench/out/quality-smoke with --smoke). Every stage keeps its results there, so a rerun resumes
# where an interrupted one stopped. Data: Debian's bible-kjv, dict-gcide and fortunes (installed
# here when missing). About 2 hours on 2 cores; --smoke (a tiny model, a few steps) under a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
smoke=() out="" lisa="" stages=()
while (($#)); do
  case $1 in
    --smoke) smoke=(--smoke) ;;
    --out) out=$2; shift ;;
    --lisa) lisa=$2; shift ;;
    --stages) stages=(--stages "$2"); shift ;;
    *) echo "bench/quality.sh: unknown argument $1 (see the comment at the top)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$out" ] || out=bench/out/quality${smoke:+-smoke}
if [ -z "$lisa" ]; then  # (tests pass --lisa and have checked the data themselves)
  scripts/install-deps.sh >/dev/null  # also the study's data and matplotlib (test-only there)
fi
for need in /usr/bin/bible /usr/share/dictd/gcide.index /usr/share/games/fortunes/fortunes; do
  [ -e "$need" ] || { echo "bench/quality.sh: $need is missing: apt-get install bible-kjv dict-gcide fortunes" >&2; exit 1; }
done
if [ -z "$lisa" ]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build --target lisa -j"$(nproc)" >/dev/null
  lisa=build/lisa
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
exec /usr/bin/python3 bench/quality/study.py --lisa "$lisa" --out "$out" "${smoke[@]}" "${stages[@]}"
