// Hugging Face `tokenizers` (Rust, via npm @anush008/tokenizers) on the same text file, for the
// side-by-side table printed by bench/tokenizer.sh. Single call on the whole text, as ours.
const fs = require('fs');
const { Tokenizer } = require('@anush008/tokenizers');
const [assets, textFile] = process.argv.slice(2);
const text = fs.readFileSync(textFile, 'utf8');
(async () => {
  for (const name of ['llama3', 'qwen3', 'mistral', 'gpt2', 'smollm2']) {
    const tok = Tokenizer.fromFile(`${assets}/tokenizers/${name}/tokenizer.json`);
    tok.disableTruncation();
    const t0 = process.hrtime.bigint();
    const ids = (await tok.encode(text, null, { addSpecialTokens: false })).getIds();
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    console.log(`${name} ${ids.length} ${(ids.length / s).toFixed(0)}`);
  }
})();
