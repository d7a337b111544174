// Differential golden cases for the tokenizer: random strings drawn from a pool of hard
// characters (whitespace runs, CR/LF, digits, many scripts, combining marks, emoji with ZWJ,
// special-token text), encoded and decoded by the Hugging Face `tokenizers` library (Rust,
// through the npm package @anush008/tokenizers@0.6.0, the same build that made
// ../shared/assets/tokenizer_golden). Writes tests/golden/tokenizer_fuzz/NAME.jsonl.
//   cd /tmp/x && npm install @anush008/tokenizers@0.6.0 && NODE_PATH=/tmp/x/node_modules \
//     node tests/golden/make_tokenizer_fuzz.js ../shared/assets
const fs = require('fs');
const path = require('path');
const { Tokenizer } = require('@anush008/tokenizers');

const assets = process.argv[2] || '../shared/assets';
const out = path.join(__dirname, 'tokenizer_fuzz');
const pool = [
  ' ', ' ', ' ', '  ', '\t', '\n', '\n\n', '\r\n', '\r', '\u00a0', '\u3000', '\u2009',
  'a', 'e', 'T', 'the', 'The', ' the', 'ing', "'s", "'LL", "n't", 'Hello', 'world', 'x',
  '0', '1', '7', '42', '2024', '1234567', '3.14', '½', '²', '١', 'Ⅻ',
  '.', ',', '!', '?', '...', '--', '#', '##', '```', '"', "'", '(', ')', '{', '}', '<', '>', '/', '\\', '_', '$', '%', '&',
  'é', 'e\u0301', 'ñ', 'ß', 'Å', 'ﬁ', 'Ω', 'ç',
  'привет', 'Мир', 'ελληνικά', 'עברית', 'مرحبا', 'हिन्दी', 'ไทย', 'ខ្មែរ', '日本語', 'の', '中文', '你好', '한국어', 'ế',
  '😀', '👍🏽', '🇺🇸', '👨\u200d👩\u200d👧', '🦙', '✅', '\u200d', '\ufe0f',
  '<s>', '</s>', '<unk>', '<|endoftext|>', '<|im_start|>', '<|im_end|>', '<|begin_of_text|>', '<|eot_id|>',
];
let seed = 12345;
function rnd(n) { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; }
const strings = [];
for (let i = 0; i < 250; i++) {
  let s = '';
  const k = 1 + rnd(14);
  for (let j = 0; j < k; j++) s += pool[rnd(pool.length)];
  strings.push(s);
}
const names = { llama3: 'tokenizers/llama3', qwen3: 'tokenizers/qwen3', mistral: 'tokenizers/mistral',
  gpt2: 'tokenizers/gpt2', smollm2: 'tokenizers/smollm2', 'aidreams-260k': 'models/aidreams-260k' };
(async () => {
  fs.mkdirSync(out, { recursive: true });
  for (const [name, dir] of Object.entries(names)) {
    const tok = Tokenizer.fromFile(path.join(assets, dir, 'tokenizer.json'));
    const lines = [];
    for (const text of strings) {
      const ids = (await tok.encode(text, null, { addSpecialTokens: false })).getIds();
      const idsSpecial = (await tok.encode(text, null, { addSpecialTokens: true })).getIds();
      const decoded = await tok.decode(ids, false);
      const decodedSkip = await tok.decode(idsSpecial, true);
      lines.push(JSON.stringify({ text, ids, ids_special: idsSpecial, decoded, decoded_skip_special: decodedSkip }));
    }
    fs.writeFileSync(path.join(out, name + '.jsonl'), lines.join('\n') + '\n');
    console.log(name, lines.length);
  }
})();
