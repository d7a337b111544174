#!/usr/bin/env bash
# Runs the bundled default (./run_finetune_with_lisa.sh, no arguments) from a fresh output folder
# and records its whole output with the command, the commit and the machine's state in
# docs/runs/bundled-default.txt. docs/training.md quotes that file, and a test checks every quoted
# line is in it, so the documentation shows a run that happened.
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/runs/bundled-default.txt
root=$(mktemp -d /tmp/lisa_default.XXXXXX)
trap 'rm -rf "$root"' EXIT
cmake --build build -j"$(nproc)" --target lisa >/dev/null
load=$(cut -d' ' -f1-3 /proc/loadavg)
t0=$(date +%s.%N)
OUTPUT_ROOT=$root ./run_finetune_with_lisa.sh > "$root/log" 2>&1
t1=$(date +%s.%N)
{
  echo "# recorded by scripts/record_default_run.sh"
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo ' (with uncommitted changes to src/)')"
  echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/{print $2}') GiB, load average before: $load"
  echo "command: ./run_finetune_with_lisa.sh"
  printf 'wall: %.1f s (model init, two evaluations, training, two generations)\n' "$(echo "$t1 - $t0" | bc)"
  echo "--- output (stdout and stderr)"
  sed "s|$root|output_models|g" "$root/log"
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "recorded $out"
