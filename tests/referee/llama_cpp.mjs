// The llama.cpp referee (node-llama-cpp's prebuilt llama.cpp, CPU only): reads a JSON job on
// stdin, prints one JSON answer.
//   node tests/referee/llama_cpp.mjs NODE_MODULES_DIR MODEL.gguf < job.json
// Jobs: {"tokenize": ["text", ...]}            -> {"ids": [[...], ...], "bos": id|null, "add_bos": bool}
//       {"generate": {"prompt": [ids], "n": N, "lora": "ADAPTER.gguf"?}} -> {"ids": [...], "top2": [[p1, p2], ...]}
// (with "lora", the GGUF LoRA adapter is applied at scale 1, as llama.cpp's --lora does)
// Tokenization parses special-token text but adds no BOS/EOS (Hugging Face's
// add_special_tokens=False); generation is greedy (temperature 0), no penalties.
import { pathToFileURL } from "node:url";
import { readFileSync } from "node:fs";
import path from "node:path";

const [nodeModules, modelPath] = process.argv.slice(2);
const { getLlama } = await import(pathToFileURL(path.join(nodeModules, "node-llama-cpp", "dist", "index.js")).href);
const job = JSON.parse(readFileSync(0, "utf8"));
const llama = await getLlama({ gpu: false, build: "never", logLevel: "error" });
const model = await llama.loadModel({ modelPath });
const out = {};
if (job.tokenize) {
    out.ids = job.tokenize.map((s) => Array.from(model.tokenize(s, true)));
    out.bos = model.tokens.bos ?? null;
    out.add_bos = model.tokens.shouldPrependBosToken ?? null;
}
if (job.generate) {
    const { prompt, n, lora } = job.generate;
    const context = await model.createContext({ contextSize: Math.max(64, prompt.length + n + 8), threads: 2,
                                                ...(lora ? { lora: { adapters: [{ filePath: lora, scale: 1 }] } } : {}) });
    const seq = context.getSequence();
    out.ids = [];
    out.top2 = [];
    for await (const step of seq.evaluateWithMetadata(prompt, { probabilities: true }, { temperature: 0, yieldEogToken: true })) {
        out.ids.push(step.token);
        const probs = [...step.probabilities.values()].sort((a, b) => b - a);
        out.top2.push([probs[0] ?? 0, probs[1] ?? 0]);
        if (out.ids.length >= n) break;
    }
    await context.dispose();
}
await model.dispose();
await llama.dispose();
process.stdout.write(JSON.stringify(out) + "\n");
