// Tokenizer variants: real tokenizers from ../shared/assets with some components replaced
// (tests/golden/tokenizer_variants/variants.json), so that components no asset uses
// (Metaspace, Lowercase, Strip, NFKC, Split behaviours, lstrip/rstrip/single_word, ...) are
// checked against the Hugging Face library too. Writes tests/golden/tokenizer_variants/NAME.jsonl
// from the strings of ../shared/assets/tokenizer_golden/strings.json plus the fuzz strings.
//   NODE_PATH=/tmp/hf/node_modules node tests/golden/make_tokenizer_variants.js ../shared/assets
const fs = require('fs');
const os = require('os');
const path = require('path');
const { Tokenizer } = require('@anush008/tokenizers');

const assets = process.argv[2] || '../shared/assets';
const dir = path.join(__dirname, 'tokenizer_variants');
const variants = JSON.parse(fs.readFileSync(path.join(dir, 'variants.json'), 'utf8'));
const strings = JSON.parse(fs.readFileSync(path.join(assets, 'tokenizer_golden', 'strings.json'), 'utf8'));
const fuzz = fs.readFileSync(path.join(__dirname, 'tokenizer_fuzz', 'gpt2.jsonl'), 'utf8')
  .split('\n').filter(Boolean).slice(0, 120).map((l) => JSON.parse(l).text);

function build(v) {
  const t = JSON.parse(fs.readFileSync(path.join(assets, 'tokenizers', v.base, 'tokenizer.json'), 'utf8'));
  for (const [k, val] of Object.entries(v.set || {})) t[k] = val;
  for (const a of t.added_tokens) Object.assign(a, (v.added_flags || {})[a.content] || {});
  return t;
}
module.exports = { build };

if (require.main === module) {
  (async () => {
    for (const [name, v] of Object.entries(variants)) {
      const file = path.join(os.tmpdir(), `variant-${name}.json`);
      fs.writeFileSync(file, JSON.stringify(build(v)));
      const tok = Tokenizer.fromFile(file);
      const lines = [];
      for (const text of strings.concat(fuzz, ['a <|eot_id|> b', 'x<|start_header_id|>y <|start_header_id|> z', '<|end_of_text|>   \n next'])) {
        const ids = (await tok.encode(text, null, { addSpecialTokens: false })).getIds();
        const idsSpecial = (await tok.encode(text, null, { addSpecialTokens: true })).getIds();
        lines.push(JSON.stringify({ text, ids, ids_special: idsSpecial, decoded: await tok.decode(ids, false),
          decoded_skip_special: await tok.decode(idsSpecial, true) }));
      }
      fs.writeFileSync(path.join(dir, name + '.jsonl'), lines.join('\n') + '\n');
      console.log(name, lines.length);
    }
  })();
}
