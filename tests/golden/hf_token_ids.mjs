// Token ids from the Hugging Face tokenizers library (npm @anush008/tokenizers@0.6.0), as
// apply_chat_template(tokenize=True) gets them: the whole text, add_special_tokens=False.
// stdin: [{"name", "tokenizer": path to tokenizer.json, "texts": [str | null]}]
// stdout: {"name": [[ids] | null, ...]}
// Needs the package where node resolves it, e.g. NODE_PATH=/tmp/hft/node_modules.
import { createRequire } from "node:module";
const require = createRequire(import.meta.url);
const { Tokenizer } = require("@anush008/tokenizers");

let input = "";
for await (const chunk of process.stdin) input += chunk;
const out = {};
for (const job of JSON.parse(input)) {
  const tok = Tokenizer.fromFile(job.tokenizer);
  out[job.name] = [];
  for (const text of job.texts) {
    if (text === null || text === undefined) { out[job.name].push(null); continue; }
    const enc = await tok.encode(text, null, { addSpecialTokens: false });
    out[job.name].push(Array.from(enc.getIds()));
  }
}
process.stdout.write(JSON.stringify(out));
