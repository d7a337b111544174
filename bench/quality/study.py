#!/usr/bin/env python3
"""The quality study: does LISA, as lisa.cpp implements it, learn as well as LoRA and full
fine-tuning? Run by bench/quality.sh; see docs/quality.md for the design and the results.

  study.py --lisa BUILD/lisa --out DIR [--smoke] [--stages data,base,sweep,main,report,quant,pref]

Stages (each keeps its outputs under DIR and is skipped when they are already there, so an
interrupted study resumes where it stopped):
  data    bench/quality/prepare.py: corpus, tokenizer, tasks
  base    pretrain a small Llama from scratch on the King James Bible (full training)
  sweep   every method on the definitions task, one seed, a small learning-rate grid
  main    every method at its best learning rate on both tasks, all seeds; owlore sampling beside
          uniform for two LISA settings
  report  DIR/report.md (tables), DIR/results.json, DIR/quality.png (plot)
  quant   LISA and LoRA on quantized bases beside the fp32 base: DIR/quant.md
  pref    DPO and ORPO after supervised tuning, LISA against LoRA and full: DIR/pref.md
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

# ---- settings ----------------------------------------------------------------------------------
# The base model: 8 layers, hidden 256, a 4096-token BPE vocabulary (8.4M parameters).
FULL = {
    "base_config": os.path.join(HERE, "base_config.json"),
    "base_args": ["--method", "full", "--block_size", "128", "--group_texts", "1",
                  "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "16",
                  "--learning_rate", "2e-3", "--lr_scheduler_type", "cosine", "--warmup_steps", "40",
                  "--weight_decay", "0.1", "--max_steps", "800", "--eval_steps", "100", "--logging_steps", "20",
                  "--seed", "1"],
    "steps": {"define": 160, "fortunes": 60},  # fine-tuning steps (equal for all methods of a task)
    "eval_every": {"define": 40, "fortunes": 20},  # held-out loss every N steps (the plot's curves)
    "seeds": [1, 2, 3],
    "em_tokens": 12,        # greedy tokens generated per held-out word (the first words are scored)
    "tasks": {
        "define": ["--block_size", "64", "--per_device_train_batch_size", "16"],
        "fortunes": ["--block_size", "128", "--per_device_train_batch_size", "8"],
    },
}
SMOKE = {
    "base_config": None,    # a tiny model: see smoke_config()
    "base_args": ["--method", "full", "--block_size", "64", "--group_texts", "1",
                  "--per_device_train_batch_size", "8", "--learning_rate", "3e-3", "--lr_scheduler_type", "cosine",
                  "--max_steps", "12", "--eval_steps", "6", "--logging_steps", "6", "--seed", "1"],
    "steps": {"define": 6, "fortunes": 6},
    "eval_every": {"define": 3, "fortunes": 3},
    "seeds": [1],
    "em_tokens": 8,
    "tasks": {
        "define": ["--block_size", "48", "--per_device_train_batch_size", "4"],
        "fortunes": ["--block_size", "48", "--per_device_train_batch_size", "4"],
    },
}

# Methods: name -> (flags, learning rates swept). LISA and full share a grid; LoRA (whose update
# is scaled by alpha / r = 2 here) is usually run at higher rates, so its grid sits higher.
LR_DENSE = ["3e-4", "1e-3", "3e-3"]
LR_LORA = ["1e-3", "3e-3", "1e-2"]
METHODS = {
    "lisa_g1_k5": (["--method", "lisa", "--lisa_activated_layers", "1", "--lisa_interval_steps", "5"], LR_DENSE),
    "lisa_g1_k20": (["--method", "lisa", "--lisa_activated_layers", "1", "--lisa_interval_steps", "20"], LR_DENSE),
    "lisa_g2_k5": (["--method", "lisa", "--lisa_activated_layers", "2", "--lisa_interval_steps", "5"], LR_DENSE),
    "lisa_g2_k20": (["--method", "lisa", "--lisa_activated_layers", "2", "--lisa_interval_steps", "20"], LR_DENSE),
    "lora_r8": (["--method", "lora", "--lora_r", "8", "--lora_alpha", "16", "--lora_dropout", "0.05"], LR_LORA),
    "lora_r64": (["--method", "lora", "--lora_r", "64", "--lora_alpha", "128", "--lora_dropout", "0.05"], LR_LORA),
    "full": (["--method", "full"], LR_DENSE),
}
# Preference tuning (issue #30, stage pref): DPO and ORPO from one supervised model (full
# fine-tuning on the definitions), on pairs "Define: WORD" -> the word's definition (chosen)
# against another word's definition of as many words (rejected); LISA against LoRA and full at
# equal steps, each method and objective's rate picked from PREF_LR on held-out preference loss.
PREF = {"full": {"pairs_train": 2000, "steps": 80, "batch": 8, "eval_every": 20},
        "smoke": {"pairs_train": 40, "steps": 4, "batch": 4, "eval_every": 2}}
PREF_METHODS = ("lisa_g2_k5", "lora_r8", "full")
PREF_LR = {"lisa_g2_k5": ["1e-4", "3e-4", "1e-3"], "full": ["1e-4", "3e-4", "1e-3"], "lora_r8": ["3e-4", "1e-3", "3e-3"]}
PREF_OBJECTIVES = {"dpo": ["--objective", "dpo", "--beta", "0.1"], "orpo": ["--objective", "orpo", "--beta", "0.1"]}
# Outlier-weighted sampling, each beside its uniform twin (same γ, K and learning rate).
OWLORE = {"lisa_g1_k20_owlore": "lisa_g1_k20", "lisa_g2_k5_owlore": "lisa_g2_k5"}
# What LISA's parts are worth: the same run with the embedding and the head frozen.
ABLATIONS = {"lisa_g2_k5_frozen_emb_head": ("lisa_g2_k5", ["--lisa_train_embeddings", "0", "--lisa_train_head", "0"])}
# A quantized base (issue #29): the same runs with the base's frozen matrices held in ggml blocks
# (--base_quant), beside the fp32 base, definitions only. The base's down_proj rows (688 values)
# are not whole blocks: those stay in bf16.
QUANT = {"%s_%s" % (twin, q): (twin, ["--base_quant", q]) for twin in ("lisa_g2_k5", "lora_r8")
         for q in ("q8_0", "q4_0", "q4_K")}
QUANT_SMOKE = ("lisa_g2_k5_q8_0", "lora_r8_q4_0")
COMMON = ["--lr_scheduler_type", "linear", "--warmup_steps", "10", "--weight_decay", "0", "--max_grad_norm", "1",
          "--per_device_eval_batch_size", "32", "--disable_tqdm", "1"]


def smoke_config(out):
    path = os.path.join(out, "smoke_config.json")
    vocab = json.load(open(os.path.join(out, "data", "tokenizer", "tokenizer.json")))["model"]["vocab"]
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": len(vocab),
           "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
           "num_key_value_heads": 4, "max_position_embeddings": 128, "rms_norm_eps": 1e-5,
           "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 0, "torch_dtype": "float32"}
    json.dump(cfg, open(path, "w"))
    return path


# ---- helpers -----------------------------------------------------------------------------------
def log(msg):
    print("quality: " + msg, flush=True)


def run(cmd, out_file=None):
    """Runs a command; its output goes to out_file (and is shown if it fails)."""
    with open(out_file or os.devnull, "w") as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        tail = open(out_file).read()[-3000:] if out_file else ""
        sys.exit("quality: failed (exit %d): %s\n%s" % (p.returncode, " ".join(cmd), tail))


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def fmt_lr(x):
    """A learning rate as the grids write them: 9e-3, 2.7e-2, 3.33e-5."""
    m, e = ("%.2e" % x).split("e")
    return "%se%d" % (m.rstrip("0").rstrip("."), int(e))


def words(s):
    return re.findall(r"[a-z']+", s.lower())


def exact_match(pred, answer, n):
    """The first n words of the completion equal the answer's (all of them if it has fewer)."""
    a = words(answer)[:n]
    return words(pred)[:len(a)] == a if a else False


# ---- stages ------------------------------------------------------------------------------------
class Study:
    def __init__(self, lisa, out, smoke):
        self.lisa, self.out, self.smoke = lisa, out, smoke
        self.s = SMOKE if smoke else FULL
        self.data = os.path.join(out, "data")

    def stage_data(self):
        if os.path.exists(os.path.join(self.data, "define", "eval_words.json")):
            return
        t = time.time()
        cmd = [sys.executable, os.path.join(HERE, "prepare.py"), self.data] + (["--smoke"] if self.smoke else [])
        run(cmd, os.path.join(self.out, "prepare.log"))
        log("data: %s (%.0f s)" % (open(os.path.join(self.out, "prepare.log")).read().strip(), time.time() - t))

    def stage_base(self):
        base = os.path.join(self.out, "base")
        if os.path.exists(os.path.join(base, "train_results.json")):
            return
        t = time.time()
        cfg = self.s["base_config"] or smoke_config(self.out)
        init = os.path.join(self.out, "init")
        if not os.path.exists(os.path.join(init, "config.json")):
            run([self.lisa, "init", "--config", cfg, "--output_model_path", init, "--tokenizer_path",
                 os.path.join(self.data, "tokenizer"), "--seed", "1"])
        shutil.rmtree(base, ignore_errors=True)  # an interrupted pretraining starts over
        run([self.lisa, "train", "--model_name_or_path", init, "--dataset_path", os.path.join(self.data, "kjv/train"),
             "--eval_dataset_path", os.path.join(self.data, "kjv/eval"), "--output_model_path", base,
             "--disable_tqdm", "1"] + self.s["base_args"], os.path.join(self.out, "base.log"))
        ev = [r["eval_loss"] for r in read_jsonl(os.path.join(base, "trainer_log.jsonl")) if "eval_loss" in r]
        log("base: pretrained in %.0f s, held-out loss %s" % (time.time() - t, " -> ".join("%.3f" % e for e in ev)))

    def run_one(self, task, name, flags, lr, seed):
        """One fine-tuning run; returns its metrics (cached in the run's folder)."""
        d = os.path.join(self.out, "runs", task, "%s_lr%s_s%d" % (name, lr, seed))
        mfile = os.path.join(d, "metrics.json")
        if os.path.exists(mfile):
            return json.load(open(mfile))
        shutil.rmtree(d, ignore_errors=True)
        model = os.path.join(d, "model")
        os.makedirs(d)
        base = os.path.join(self.out, "base")
        t = time.time()
        run([self.lisa, "train", "--model_name_or_path", base, "--dataset_path", os.path.join(self.data, task, "train"),
             "--eval_dataset_path", os.path.join(self.data, task, "eval"), "--output_model_path", model,
             "--learning_rate", lr, "--seed", str(seed), "--max_steps", str(self.s["steps"][task]),
             "--eval_steps", str(self.s["eval_every"][task]), "--logging_steps", str(self.s["eval_every"][task])]
            + COMMON + self.s["tasks"][task] + flags, os.path.join(d, "train.log"))
        wall = time.time() - t
        recs = read_jsonl(os.path.join(model, "trainer_log.jsonl"))
        res = json.load(open(os.path.join(model, "train_results.json")))
        evals = [(r["step"], r["eval_loss"]) for r in recs if "eval_loss" in r]
        m = {"task": task, "method": name, "lr": lr, "seed": seed, "eval_loss": evals[-1][1], "eval_curve": evals,
             "train_loss": res["train_loss"], "peak_rss_mib": res["peak_rss_mib"],
             "tokens_per_second": res["train_tokens_per_second"], "train_runtime": res["train_runtime"],
             "wall_s": wall,
             "optimizer_state_mib": max(r.get("optimizer_state_bytes", 0) for r in recs) / 1048576.0}
        if task == "define":
            m.update(self.exact_match(model, d, "--method lora" in " ".join(flags)))
        json.dump(m, open(mfile + ".tmp", "w"))
        os.replace(mfile + ".tmp", mfile)
        for f in os.listdir(model):  # keep the logs, not the weights
            if f.endswith(".safetensors"):
                os.remove(os.path.join(model, f))
        log("%-8s %-20s lr %-5s seed %d: eval loss %.4f%s, %.0f tok/s, peak RSS %.0f MiB, %.0f s" % (
            task, name, lr, seed, m["eval_loss"], ", EM@3 %.3f" % m["em3"] if "em3" in m else "",
            m["tokens_per_second"], m["peak_rss_mib"], wall))
        return m

    def exact_match(self, model, d, lora):
        """Greedy completions of the held-out words: first word and first three words exact."""
        words_file = os.path.join(self.data, "define", "eval_words.json")
        items = json.load(open(words_file))
        prompts = os.path.join(d, "prompts.jsonl")
        with open(prompts, "w") as f:
            for it in items:
                f.write(json.dumps({"prompt": it["prompt"], "answer": it["answer"]}) + "\n")
        base = os.path.join(self.out, "base")
        cmd = [self.lisa, "generate", "--prompts_file", prompts, "--max_new_tokens", str(self.s["em_tokens"])]
        cmd += ["--model_name_or_path", base, "--lora_model_path", model] if lora else ["--model_name_or_path", model]
        out = os.path.join(d, "completions.jsonl")
        run(cmd, out)
        got = read_jsonl(out)
        assert len(got) == len(items), "generate: %d completions for %d prompts" % (len(got), len(items))
        return {"em1": sum(exact_match(g["completion"], g["answer"], 1) for g in got) / len(got),
                "em3": sum(exact_match(g["completion"], g["answer"], 3) for g in got) / len(got),
                "example": got[0]}

    def methods(self):
        return METHODS

    def stage_sweep(self):
        """Learning rates: each method's grid on the definitions task, first seed."""
        best = {}
        for name, (flags, lrs) in self.methods().items():
            grid = lrs if not self.smoke else lrs[1:2]
            runs = [self.run_one("define", name, flags, lr, self.s["seeds"][0]) for lr in grid]
            pick = min(runs, key=lambda m: m["eval_loss"])["lr"]  # chosen on held-out loss
            for _ in range(0 if self.smoke else 2):  # at an edge: up to two more steps outwards
                lrs_run = sorted((m["lr"] for m in runs), key=float)
                if pick not in (lrs_run[0], lrs_run[-1]):
                    break
                lr = fmt_lr(float(pick) * (3 if pick == lrs_run[-1] else 1 / 3.0))
                runs.append(self.run_one("define", name, flags, lr, self.s["seeds"][0]))
                pick = min(runs, key=lambda m: m["eval_loss"])["lr"]
            best[name] = pick
        json.dump(best, open(os.path.join(self.out, "best_lr.json"), "w"), indent=1)
        return best

    def stage_main(self, best):
        results = []
        for task in self.s["tasks"]:
            for name, (flags, _) in self.methods().items():
                for seed in self.s["seeds"]:
                    results.append(self.run_one(task, name, flags, best[name], seed))
            for name, twin in OWLORE.items():  # (definitions only: its exact match is the sharper test)
                if task != "define":
                    continue
                flags = METHODS[twin][0] + ["--lisa_layer_sampling", "owlore"]
                for seed in self.s["seeds"]:
                    results.append(self.run_one(task, name, flags, best[twin], seed))
        for name, (twin, extra) in ABLATIONS.items():  # definitions only
            for seed in self.s["seeds"]:
                results.append(self.run_one("define", name, METHODS[twin][0] + extra, best[twin], seed))
        return results

    def stage_quant(self, best):
        """The quantized-base rows beside their fp32 twins (definitions, every seed); quant.md."""
        if best is None:  # (run alone: the sweep's choice if there was one)
            f = os.path.join(self.out, "best_lr.json")
            best = json.load(open(f)) if os.path.exists(f) else {}
        names = [n for n in QUANT if not self.smoke or n in QUANT_SMOKE]
        rows = []
        for twin in dict.fromkeys(QUANT[n][0] for n in names):
            lr = best.get(twin, "3e-3")  # 3e-3: the sweep's choice for both twins (docs/quality.md)
            for name, extra in [(twin, [])] + [(n, QUANT[n][1]) for n in names if QUANT[n][0] == twin]:
                rs = [self.run_one("define", name, METHODS[twin][0] + extra, lr, seed) for seed in self.s["seeds"]]
                rows.append((name, lr, extra[1] if extra else "fp32", rs))
        L = ["Quantized base (definitions, mean ± sd over %d seeds; --base_quant, down_proj stays bf16)" %
             len(self.s["seeds"]), "",
             "| method | lr | base | held-out loss | Δ loss vs fp32 | EM first word | EM first 3 words | peak RSS MiB |",
             "|---|---|---|---|---|---|---|---|"]
        ref = {}
        for name, lr, q, rs in rows:
            loss = mean_sd([m["eval_loss"] for m in rs])
            twin = QUANT[name][0] if name in QUANT else name
            if q == "fp32":
                ref[twin] = loss[0]
            L.append("| %s | %s | %s | %.3f ± %.3f | %s | %.3f ± %.3f | %.3f ± %.3f | %.0f |" % (
                twin, lr, q, loss[0], loss[1], "–" if q == "fp32" else "%+.3f" % (loss[0] - ref[twin]),
                *mean_sd([m["em1"] for m in rs]), *mean_sd([m["em3"] for m in rs]),
                mean_sd([m["peak_rss_mib"] for m in rs])[0]))
        text = "\n".join(L) + "\n"
        open(os.path.join(self.out, "quant.md"), "w").write(text)
        print(text)

    # ---- preference tuning ----------------------------------------------------------------------
    def pref_data(self):
        """Pairs from the definitions: chosen the word's own definition, rejected the same with two of
        its words traded (the same words, so neither length nor vocabulary gives the answer away:
        only order does; a full shuffle was too easy: the supervised model already preferred the
        original in 99% of pairs); train from the training words, eval from the held-out ones. Written
        once (seeded). (A first design, rejected = another word's definition of as many words,
        did not move in 80 steps: its held-out preference loss stayed at 0.69 for every rate, the
        8M model cannot tie unseen headwords to their meanings.)"""
        d = os.path.join(self.out, "pref")
        if os.path.exists(os.path.join(d, "eval", "pairs.jsonl")):
            return d
        import random
        rng = random.Random(30)
        cfg = PREF["smoke" if self.smoke else "full"]
        for part, n in (("train", cfg["pairs_train"]), ("eval", None)):
            inst = json.load(open(os.path.join(self.data, "define", part, "define.json")))["instances"]
            pairs = []
            for x in inst[:n] if n else inst:
                w = x["output"].split()
                spots = [(i, j) for i in range(len(w)) for j in range(i + 1, len(w)) if w[i] != w[j]]
                if not spots:
                    continue
                i, j = rng.choice(spots)  # two words trade places
                swapped = w[:]
                swapped[i], swapped[j] = w[j], w[i]
                pairs.append({"prompt": x["input"], "chosen": x["output"], "rejected": " " + " ".join(swapped)})
            os.makedirs(os.path.join(d, part), exist_ok=True)
            with open(os.path.join(d, part, "pairs.jsonl.tmp"), "w") as f:
                for p in pairs:
                    f.write(json.dumps(p) + "\n")
            os.replace(os.path.join(d, part, "pairs.jsonl.tmp"), os.path.join(d, part, "pairs.jsonl"))
        return d

    def pref_sft(self):
        """The supervised start: full fine-tuning on the definitions (the main study's rate, seed 1)."""
        sft = os.path.join(self.out, "pref", "sft")
        if os.path.exists(os.path.join(sft, "train_results.json")):
            return sft
        shutil.rmtree(sft, ignore_errors=True)
        run([self.lisa, "train", "--model_name_or_path", os.path.join(self.out, "base"), "--dataset_path",
             os.path.join(self.data, "define", "train"), "--output_model_path", sft, "--learning_rate", "3e-3",
             "--seed", "1", "--max_steps", str(self.s["steps"]["define"]), "--save_strategy", "no"]
            + COMMON + self.s["tasks"]["define"] + ["--method", "full"], os.path.join(self.out, "pref", "sft.log"))
        return sft

    def pref_eval(self, model, lora, out):
        """Held-out pairs: DPO's reward accuracy and margin against the supervised start, and each
        reply's log-likelihood (no reference): the same measure for every objective and method."""
        sft = os.path.join(self.out, "pref", "sft")
        m = ["--model_name_or_path", sft, "--lora_model_path", model] if lora else ["--model_name_or_path", model]
        pairs = os.path.join(self.out, "pref", "eval", "pairs.jsonl")
        run([self.lisa, "eval"] + m + ["--dataset_path", pairs, "--block_size", "64", "--objective", "dpo",
                                        "--beta", "0.1", "--ref_model_path", sft], out + ".dpo.json")
        run([self.lisa, "eval"] + m + ["--dataset_path", pairs, "--block_size", "64"], out + ".logps.json")
        run([self.lisa, "eval"] + m + ["--dataset_path", os.path.join(self.data, "define", "eval"), "--block_size",
                                        "64"], out + ".sft.json")
        last = lambda f: json.loads(open(f).read().strip().splitlines()[-1])
        a, b, c = last(out + ".dpo.json"), last(out + ".logps.json"), last(out + ".sft.json")
        return {"reward_accuracy": a["rewards/accuracies"], "reward_margin": a["rewards/margins"],
                "logp_accuracy": b["logps/accuracies"], "logp_margin": b["logps/margins"],
                "chosen_logp": b["logps/chosen"], "define_eval_loss": c["loss"]}

    def pref_run(self, method, objective, lr, seed):
        d = os.path.join(self.out, "pref", "runs", "%s_%s_lr%s_s%d" % (objective, method, lr, seed))
        mfile = os.path.join(d, "metrics.json")
        if os.path.exists(mfile):
            return json.load(open(mfile))
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        model = os.path.join(d, "model")
        cfg = PREF["smoke" if self.smoke else "full"]
        flags = METHODS[method][0]
        t = time.time()
        run([self.lisa, "train", "--model_name_or_path", self.pref_sft(), "--dataset_path",
             os.path.join(self.out, "pref", "train"), "--eval_dataset_path", os.path.join(self.out, "pref", "eval"),
             "--output_model_path", model, "--learning_rate", lr, "--seed", str(seed), "--max_steps",
             str(cfg["steps"]), "--per_device_train_batch_size", str(cfg["batch"]), "--eval_steps",
             str(cfg["eval_every"]), "--logging_steps", str(cfg["eval_every"]), "--block_size", "64",
             "--save_strategy", "no"] + COMMON + flags + PREF_OBJECTIVES[objective], os.path.join(d, "train.log"))
        wall = time.time() - t
        recs = read_jsonl(os.path.join(model, "trainer_log.jsonl"))
        res = json.load(open(os.path.join(model, "train_results.json")))
        evals = [r for r in recs if "eval_loss" in r]
        m = {"method": method, "objective": objective, "lr": lr, "seed": seed, "eval_loss": evals[-1]["eval_loss"],
             "eval_curve": [(r["step"], r["eval_rewards/accuracies"]) for r in evals],
             "peak_rss_mib": res["peak_rss_mib"], "wall_s": wall,
             "optimizer_state_mib": max(r.get("optimizer_state_bytes", 0) for r in recs) / 1048576.0}
        m.update(self.pref_eval(model, method.startswith("lora"), os.path.join(d, "eval")))
        json.dump(m, open(mfile + ".tmp", "w"))
        os.replace(mfile + ".tmp", mfile)
        for f in os.listdir(model):
            if f.endswith(".safetensors"):
                os.remove(os.path.join(model, f))
        log("pref %-4s %-10s lr %-5s seed %d: held-out preference loss %.4f, reward accuracy %.3f, logp accuracy "
            "%.3f, %.0f s" % (objective, method, lr, seed, m["eval_loss"], m["reward_accuracy"], m["logp_accuracy"], wall))
        return m

    def stage_pref(self):
        """DPO and ORPO after supervised tuning: a rate per method and objective (seed 1, held-out
        preference loss), then every seed; DIR/pref.md."""
        self.pref_data()
        sft = self.pref_sft()
        start_f = os.path.join(self.out, "pref", "sft_metrics.json")
        if not os.path.exists(start_f):
            json.dump(self.pref_eval(sft, False, os.path.join(self.out, "pref", "sft_eval")), open(start_f, "w"))
        start = json.load(open(start_f))
        rows = []
        for objective in PREF_OBJECTIVES:
            for method in PREF_METHODS:
                grid = PREF_LR[method] if not self.smoke else PREF_LR[method][1:2]
                sweep = [self.pref_run(method, objective, lr, self.s["seeds"][0]) for lr in grid]
                lr = min(sweep, key=lambda m: m["eval_loss"])["lr"]
                rs = [self.pref_run(method, objective, lr, seed) for seed in self.s["seeds"]]
                rows.append((objective, method, lr, rs, {m["lr"]: m["eval_loss"] for m in sweep}))
        f = lambda rs, k: "%.3f ± %.3f" % mean_sd([m[k] for m in rs])
        L = ["Preference tuning after supervised fine-tuning (definitions: the word's definition against the same "
             "with two words traded; %d held-out pairs; mean ± sd over %d seeds)" % (
                 sum(1 for _ in open(os.path.join(self.out, "pref", "eval", "pairs.jsonl"))), len(self.s["seeds"])), "",
             "| objective | method | lr | reward accuracy | reward margin | log-lik. accuracy | log-lik. margin "
             "| chosen log-lik. | definitions held-out loss | AdamW state MiB | peak RSS MiB | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|",
             "| (supervised start) | full | – | – | – | %.3f | %.3f | %.3f | %.3f | – | – | – |" % (
                 start["logp_accuracy"], start["logp_margin"], start["chosen_logp"], start["define_eval_loss"])]
        for objective, method, lr, rs, _ in rows:
            L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %.1f | %.0f | %.0f |" % (
                objective, method, lr, f(rs, "reward_accuracy"), f(rs, "reward_margin"), f(rs, "logp_accuracy"),
                f(rs, "logp_margin"), f(rs, "chosen_logp"), f(rs, "define_eval_loss"),
                rs[0]["optimizer_state_mib"], mean_sd([m["peak_rss_mib"] for m in rs])[0],
                mean_sd([m["wall_s"] for m in rs])[0]))
        L += ["", "Rate picked per method and objective (seed %d, held-out preference loss):" % self.s["seeds"][0], ""]
        for objective, method, lr, _, sweep in rows:
            L.append("- %s %s: %s" % (objective, method, ", ".join("%s %.4f" % kv for kv in sweep.items())))
        text = "\n".join(L) + "\n"
        open(os.path.join(self.out, "pref.md"), "w").write(text)
        json.dump({"start": start, "rows": [{"objective": o, "method": m, "lr": lr, "runs": rs}
                                             for o, m, lr, rs, _ in rows]},
                  open(os.path.join(self.out, "pref.json"), "w"), indent=1)
        print(text)

    def base_metrics(self):
        """The base model before fine-tuning: held-out loss of both tasks and the exact match."""
        f = os.path.join(self.out, "base_metrics.json")
        if os.path.exists(f):
            return json.load(open(f))
        base = os.path.join(self.out, "base")
        m = {}
        for task in self.s["tasks"]:
            out = os.path.join(self.out, "base_eval_%s.json" % task)
            bs = self.s["tasks"][task][1]
            run([self.lisa, "eval", "--model_name_or_path", base, "--dataset_path",
                 os.path.join(self.data, task, "eval"), "--block_size", bs], out)
            m[task + "_eval_loss"] = json.loads(open(out).read().strip().splitlines()[-1])["loss"]
        d = os.path.join(self.out, "base_em")
        os.makedirs(d, exist_ok=True)
        m.update(self.exact_match(base, d, False))
        json.dump(m, open(f, "w"))
        return m


# ---- report ------------------------------------------------------------------------------------
def mean_sd(xs):
    if not xs:
        return float("nan"), float("nan")
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def report(study, best, results, wall):
    out = study.out
    base = study.base_metrics()
    names = list(METHODS) + list(OWLORE) + list(ABLATIONS)
    twin = dict(OWLORE, **{k: v[0] for k, v in ABLATIONS.items()})
    rows = []
    for name in names:
        r = {"method": name, "lr": best[twin.get(name, name)]}
        for task in study.s["tasks"]:
            rs = [m for m in results if m["task"] == task and m["method"] == name]
            r[task] = {k: mean_sd([m[k] for m in rs]) for k in ("eval_loss", "peak_rss_mib", "tokens_per_second",
                                                                "wall_s", "optimizer_state_mib")}
            if task == "define":
                r[task]["em1"] = mean_sd([m["em1"] for m in rs])
                r[task]["em3"] = mean_sd([m["em3"] for m in rs])
            r[task]["n"] = len(rs)
        rows.append(r)
    json.dump({"best_lr": best, "base": base, "rows": rows, "runs": results, "wall_s": wall},
              open(os.path.join(out, "results.json"), "w"), indent=1)

    def f(ms, fmt="%.3f"):
        m, s = ms
        return (fmt + " ± " + fmt) % (m, s)

    L = []
    L.append("Definitions (GCIDE, %d held-out words): held-out loss, exact match of the first word / first three "
             "words under greedy decoding; mean ± sd over %d seeds" % (
                 len(json.load(open(os.path.join(study.data, "define", "eval_words.json")))), len(study.s["seeds"])))
    L.append("")
    L.append("| method | lr | held-out loss | EM first word | EM first 3 words | AdamW state MiB | peak RSS MiB "
             "| tokens/s | wall s |")
    L.append("|---|---|---|---|---|---|---|---|---|")
    L.append("| base (no fine-tuning) | – | %.3f | %.3f | %.3f | – | – | – | – |" % (
        base["define_eval_loss"], base["em1"], base["em3"]))
    for r in rows:
        d = r["define"]
        L.append("| %s | %s | %s | %s | %s | %.1f | %.0f | %.0f | %.1f |" % (
            r["method"], r["lr"], f(d["eval_loss"]), f(d["em1"]), f(d["em3"]), d["optimizer_state_mib"][0],
            d["peak_rss_mib"][0], d["tokens_per_second"][0], d["wall_s"][0]))
    L.append("")
    L.append("Fortunes (text_only, held-out fortunes): held-out loss; mean ± sd over %d seeds" % len(study.s["seeds"]))
    L.append("")
    L.append("| method | lr | held-out loss | AdamW state MiB | peak RSS MiB | tokens/s | wall s |")
    L.append("|---|---|---|---|---|---|---|")
    L.append("| base (no fine-tuning) | – | %.3f | – | – | – | – |" % base["fortunes_eval_loss"])
    for r in rows:
        d = r["fortunes"]
        if not d["n"]:
            continue
        L.append("| %s | %s | %s | %.1f | %.0f | %.0f | %.1f |" % (
            r["method"], r["lr"], f(d["eval_loss"]), d["optimizer_state_mib"][0], d["peak_rss_mib"][0],
            d["tokens_per_second"][0], d["wall_s"][0]))
    L.append("")
    L.append("Learning-rate sweep (definitions, seed %d, held-out loss; the best is used above):" % study.s["seeds"][0])
    L.append("")
    lrs = set(LR_DENSE + LR_LORA)
    for name in METHODS:
        for f_ in os.listdir(os.path.join(out, "runs", "define")):
            m_ = re.fullmatch(re.escape(name) + r"_lr([0-9.e-]+)_s%d" % study.s["seeds"][0], f_)
            if m_:
                lrs.add(m_.group(1))
    lrs = sorted(lrs, key=float)
    L.append("| method | " + " | ".join("lr %s" % lr for lr in lrs) + " |")
    L.append("|---|" + "---|" * len(lrs))
    for name in METHODS:
        cells = []
        for lr in lrs:
            f_ = os.path.join(out, "runs", "define", "%s_lr%s_s%d" % (name, lr, study.s["seeds"][0]), "metrics.json")
            cells.append("%.3f" % json.load(open(f_))["eval_loss"] if os.path.exists(f_) else "–")
        L.append("| %s | %s |" % (name, " | ".join(cells)))
    L.append("")
    L.append("Study wall time: %s" % ", ".join("%s %.0f s" % kv for kv in wall.items()))
    text = "\n".join(L) + "\n"
    open(os.path.join(out, "report.md"), "w").write(text)
    print(text)
    plot(study, rows, results, base)


def plot(study, rows, results, base):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("no matplotlib: quality.png not drawn (apt-get install python3-matplotlib)")
        return
    from matplotlib.ticker import FuncFormatter
    fig, ax = plt.subplots(1, 3, figsize=(16, 5))
    styles = {"lisa": "-", "lora": "--", "full": ":"}
    palette = plt.get_cmap("tab10").colors
    color = {r["method"]: palette[i % len(palette)] for i, r in enumerate(rows)}
    for r in rows:
        name = r["method"]
        rs = [m for m in results if m["task"] == "define" and m["method"] == name]
        if not rs:
            continue
        steps = [s for s, _ in rs[0]["eval_curve"]]
        curve = [statistics.mean(m["eval_curve"][i][1] for m in rs) for i in range(len(steps))]
        ax[0].plot([0] + steps, [base["define_eval_loss"]] + curve, styles[name.split("_")[0]], marker="o", ms=3,
                   label=name, color=color[name])
    ax[0].set_xlabel("fine-tuning step")
    ax[0].set_ylabel("held-out loss (definitions)")
    ax[0].set_title("Held-out loss, mean of seeds")
    ax[0].legend(fontsize=7)
    for k, task, key, label in ((1, "define", "em3", "exact match, first 3 words (definitions)"),
                                (2, "fortunes", "eval_loss", "held-out loss (fortunes)")):
        for r in rows:
            d = r[task]
            if not d["n"]:
                continue
            ax[k].errorbar(d["optimizer_state_mib"][0], d[key][0], yerr=d[key][1], fmt="o", capsize=3,
                           color=color[r["method"]], label=r["method"])
        ax[k].set_xscale("log")
        ax[k].xaxis.set_major_formatter(FuncFormatter(lambda v, _: "%g" % v))
        ax[k].xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax[k].legend(fontsize=7)
        ax[k].set_xlabel("AdamW state (m, v), MiB (log scale)")
        ax[k].set_ylabel(label)
        ax[k].set_title("Quality against training memory")
    fig.tight_layout()
    path = os.path.join(study.out, "quality.png")
    fig.savefig(path + ".tmp.png", dpi=110)
    os.replace(path + ".tmp.png", path)
    log("plot: " + path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lisa", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--stages", default="data,base,sweep,main,report,quant,pref")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    st = Study(os.path.abspath(a.lisa), os.path.abspath(a.out), a.smoke)
    stages = a.stages.split(",")
    wall = {}
    best, results = None, None
    for stage in ("data", "base", "sweep", "main", "report", "quant", "pref"):
        if stage not in stages and not (stage in ("sweep", "main") and "report" in stages):
            continue
        t = time.time()
        if stage == "data":
            st.stage_data()
        elif stage == "base":
            st.stage_base()
        elif stage == "sweep":
            best = st.stage_sweep()
        elif stage == "main":
            results = st.stage_main(best)
        elif stage == "quant":
            st.stage_quant(best)
        elif stage == "pref":
            st.stage_pref()
        else:
            report(st, best, results, wall)
        wall[stage] = time.time() - t


if __name__ == "__main__":
    main()
