#!/usr/bin/env bash
# The quality study (docs/quality.md): LISA (γ 1, 2; K 5, 20) against LoRA (r 8, 64) and full
# fine-tuning at equal steps, learning rates swept per method, 3 seeds, on a Llama pretrained here
# from scratch on the King James Bible and fine-tuned on Webster's 1913 definitions and on fortunes;
# outlier-weighted LISA layer sampling (--lisa_layer_sampling owlore) beside uniform.
#   bench/quality.sh [--smoke] [--out DIR] [--lisa BINARY] [--stages data,base,sweep,main,report]
# Output: DIR/report.md (tables), DIR/results.json, DIR/quality.png; default DIR bench/out/quality
# (bench/out/quality-smoke with --smoke). Every stage keeps its results there, so a rerun resumes
# where an interrupted one stopped. Data: Debian's bible-kjv, dict-gcide and fortunes (installed
# here when missing). About 75 minutes on 2 cores; --smoke (a tiny model, a few steps) under a minute.
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
# the data and the plotting library, from Debian
pkgs=(bible-kjv dict-gcide fortunes python3-matplotlib)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo "quality: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ -z "$lisa" ]; then
  scripts/install-deps.sh >/dev/null
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build --target lisa -j"$(nproc)" >/dev/null
  lisa=build/lisa
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
exec /usr/bin/python3 bench/quality/study.py --lisa "$lisa" --out "$out" "${smoke[@]}" "${stages[@]}"
