#!/usr/bin/env bash
# ctest quality.smoke: bench/quality.sh --smoke end to end (data, tokenizer learning, pretraining,
# every method's fine-tuning, owlore sampling, evaluation, exact match, report, plot) with the
# binary under test, then checks what it wrote. Exit 77 (skipped) when Debian's data packages
# are not installed (scripts/install-deps.sh installs them).
#   tests/quality_smoke.sh LISA_BINARY
set -euo pipefail
cd "$(dirname "$0")/.."
lisa=$1
for need in /usr/bin/bible /usr/share/dictd/gcide.index /usr/share/games/fortunes/fortunes; do
  [ -e "$need" ] || { echo "quality.smoke: skipped: $need is missing (bible-kjv, dict-gcide, fortunes)"; exit 77; }
done
/usr/bin/python3 -c 'import matplotlib' 2>/dev/null || { echo "quality.smoke: skipped: no python3-matplotlib"; exit 77; }
out=$(mktemp -d /tmp/lisa_quality_smoke.XXXXXX)
trap 'rm -rf "$out"' EXIT
bench/quality.sh --smoke --lisa "$lisa" --out "$out"
/usr/bin/python3 - "$out" <<'PY'
import json, math, os, sys
out = sys.argv[1]
r = json.load(open(os.path.join(out, "results.json")))
methods = {"lisa_g1_k5", "lisa_g1_k20", "lisa_g2_k5", "lisa_g2_k20", "lora_r8", "lora_r64", "full",
           "lisa_g1_k20_owlore", "lisa_g2_k5_owlore", "lisa_g2_k5_frozen_emb_head"}
assert {row["method"] for row in r["rows"]} == methods, r["rows"]
base = r["base"]
for run in r["runs"]:
    assert math.isfinite(run["eval_loss"]) and run["peak_rss_mib"] > 0 and run["tokens_per_second"] > 0, run
    key = run["task"] + "_eval_loss"
    # a few steps at the swept rate lower the held-out loss below the base model's
    assert run["eval_loss"] < base[key], (run["method"], run["task"], run["eval_loss"], base[key])
    if run["task"] == "define":
        assert 0 <= run["em3"] <= run["em1"] <= 1, run
# the memory model: full > LISA γ=2 > LISA γ=1 in AdamW state; owlore costs what uniform costs
mem = {row["method"]: row["define"]["optimizer_state_mib"][0] for row in r["rows"]}
assert mem["full"] > mem["lisa_g2_k5"] > mem["lisa_g1_k5"], mem
assert mem["lisa_g2_k5_owlore"] == mem["lisa_g2_k5"], mem
assert mem["lisa_g2_k5_frozen_emb_head"] < mem["lisa_g2_k5"], mem
# owlore measured the layers and drew by them
log = open([os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(out, "runs", "define"))
            for f in fs if f == "train.log" and "owlore" in dp][0]).read()
assert "owlore sampling: outlier ratios" in log, log
report = open(os.path.join(out, "report.md")).read()
for m in methods:
    assert "| %s |" % m in report, m
png = open(os.path.join(out, "quality.png"), "rb").read()
assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000, len(png)
print("quality.smoke: %d runs checked" % len(r["runs"]))
PY
