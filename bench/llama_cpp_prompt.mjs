// llama.cpp's prompt processing speed on a GGUF file (node-llama-cpp's prebuilt llama.cpp), for
// bench/vulkan.sh: the same token count lisa's forward benchmark runs, on the CPU or on Vulkan.
//   node bench/llama_cpp_prompt.mjs NODE_MODULES_DIR MODEL.gguf cpu|vulkan TOKENS REPS
// Prints one JSON line: tokens_per_second (the best of REPS evaluations after a warm-up), device.
import { pathToFileURL } from "node:url";
import path from "node:path";

const [nodeModules, modelPath, device, tokensArg, repsArg] = process.argv.slice(2);
const n = Number(tokensArg), reps = Number(repsArg);
const { getLlama } = await import(pathToFileURL(path.join(nodeModules, "node-llama-cpp", "dist", "index.js")).href);
const llama = await getLlama({ gpu: device === "vulkan" ? "vulkan" : false, build: "never", logLevel: "error" });
// ggml's Vulkan backend skips CPU-type devices such as lavapipe unless GGML_VK_VISIBLE_DEVICES
// names them, and then quietly runs on the CPU: refuse to report that as a Vulkan number.
const gpus = device === "vulkan" ? await llama.getGpuDeviceNames() : [];
if (device === "vulkan" && gpus.length === 0) {
    process.stderr.write("llama_cpp_prompt.mjs: llama.cpp sees no Vulkan device (on lavapipe set GGML_VK_VISIBLE_DEVICES=0)\n");
    process.exit(1);
}
const model = await llama.loadModel({ modelPath, gpuLayers: device === "vulkan" ? "max" : 0 });
const tokens = Array.from({ length: n }, (_, i) => 3 + ((i * 7919) % 400));
let best = 0;
for (let r = 0; r <= reps; r++) {  // r = 0: warm-up
    const context = await model.createContext({ contextSize: n + 8, batchSize: n, threads: 2 });
    const seq = context.getSequence();
    const t0 = performance.now();
    await seq.evaluateWithoutGeneratingNewTokens(tokens);
    const s = (performance.now() - t0) / 1000;
    if (r > 0) best = Math.max(best, n / s);
    await context.dispose();
}
process.stdout.write(JSON.stringify({ impl: "llama.cpp", device: device === "vulkan" ? `vulkan ${gpus.join(", ")}` : device, gpu: llama.gpu, tokens: n, tokens_per_second: best }) + "\n");
await model.dispose();
await llama.dispose();
