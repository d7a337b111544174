#!/usr/bin/env bash
# ctest quality.smoke: bench/quality.sh --smoke end to end (data, tokenizer learning, pretraining,
# every method's fine-tuning, owlore sampling, evaluation, exact match, report, plot, quantized
# bases, DPO and ORPO after supervised tuning) with the
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
import json, math, os, re, sys
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
# the quantized-base rows: the runs held their base in blocks, and quant.md lists them beside fp32
quant = open(os.path.join(out, "quant.md")).read()
for method, base in (("lisa_g2_k5", "fp32"), ("lisa_g2_k5", "q8_0"), ("lora_r8", "fp32"), ("lora_r8", "q4_0")):
    assert re.search(r"\| %s \| [^|]+ \| %s \| [0-9.]+ ± " % (method, base), quant), (method, base, quant)
for name, q in (("lisa_g2_k5_q8_0", "q8_0"), ("lora_r8_q4_0", "q4_0")):
    logs = [open(os.path.join(dp, "train.log")).read() for dp, _, fs in os.walk(os.path.join(out, "runs", "define"))
            if "train.log" in fs and os.path.basename(dp).startswith(name + "_lr")]
    assert logs and all("held in ggml blocks (" in l and " " + q + ")" in l for l in logs), (name, logs[:1])
# the preference stage: every objective and method from the supervised start, measured on the
# held-out pairs against it; DPO's reference pass logged; rewards in [0, 1]
pj = json.load(open(os.path.join(out, "pref.json")))
assert {(row["objective"], row["method"]) for row in pj["rows"]} == {
    (o, m) for o in ("dpo", "orpo") for m in ("lisa_g2_k5", "lora_r8", "full")}, pj["rows"]
for row in pj["rows"]:
    for run in row["runs"]:
        assert 0 <= run["reward_accuracy"] <= 1 and 0 <= run["logp_accuracy"] <= 1, run
        assert math.isfinite(run["eval_loss"]) and math.isfinite(run["define_eval_loss"]), run
dpo_logs = [open(os.path.join(dp, "train.log")).read() for dp, _, fs in os.walk(os.path.join(out, "pref", "runs"))
            if "train.log" in fs and os.path.basename(dp).startswith("dpo_")]
assert dpo_logs and all("dpo: reference log-probabilities of" in l for l in dpo_logs), dpo_logs[:1]
assert "| (supervised start) |" in open(os.path.join(out, "pref.md")).read()
png = open(os.path.join(out, "quality.png"), "rb").read()
assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000, len(png)
print("quality.smoke: %d runs checked" % len(r["runs"]))
PY
