// The playground's passage scorer in the page: all-MiniLM-L6-v2 (the ONNX file `rag models build`
// made, fp32, served by the app) on onnxruntime-web's WebAssembly build, with a BERT WordPiece
// tokenizer written here. It reproduces rag/retrieval/encoder.py's OnnxEncoder: the same
// tokens as the `tokenizers` library (BertNormalizer + BertPreTokenizer + WordPiece, truncated
// at max_seq_length), one text per run, the attention-masked mean of the token vectors,
// L2-normalised, so its vectors equal OnnxEncoder("fp32")'s to ~1e-6. It fetches only the app's own
// files (onnxruntime-web's JS and .wasm, the model, the vocabulary); no text leaves the page.

// -- the tokenizer: HF tokenizers' BertNormalizer, BertPreTokenizer and WordPiece ---------------

const isWhitespace = (c) => c === "\t" || c === "\n" || c === "\r" || /\s/u.test(c);
// Rust's char::is_other (Cc, Cf, Cs, Co, Cn) minus \t \n \r, as `tokenizers` defines control.
const isControl = (c) => c !== "\t" && c !== "\n" && c !== "\r" && /\p{C}/u.test(c);
// ASCII punctuation (which includes $ + < = > ^ ` | ~) or any Unicode punctuation (P*).
const isPunctuation = (c) => /[!-/:-@[-`{-~]/.test(c) || /\p{P}/u.test(c);

function isChinese(cp) {
  return (cp >= 0x4e00 && cp <= 0x9fff) || (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x20000 && cp <= 0x2a6df) || (cp >= 0x2a700 && cp <= 0x2b73f) ||
    (cp >= 0x2b740 && cp <= 0x2b81f) || (cp >= 0x2b820 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) || (cp >= 0x2f800 && cp <= 0x2fa1f);
}

// clean_text, handle_chinese_chars, strip_accents (NFD, drop Mn), lowercase — in that order.
export function normalize(text) {
  let out = "";
  for (const c of text) {
    const cp = c.codePointAt(0);
    if (cp === 0 || cp === 0xfffd || isControl(c)) continue;
    if (isWhitespace(c)) out += " ";
    else if (isChinese(cp)) out += ` ${c} `;
    else out += c;
  }
  return out.normalize("NFD").replace(/\p{Mn}/gu, "").toLowerCase();
}

// Whitespace-separated words, each punctuation character a word of its own.
export function preTokenize(text) {
  const words = [];
  let current = "";
  for (const c of text) {
    if (isWhitespace(c)) {
      if (current) words.push(current);
      current = "";
    } else if (isPunctuation(c)) {
      if (current) words.push(current);
      words.push(c);
      current = "";
    } else {
      current += c;
    }
  }
  if (current) words.push(current);
  return words;
}

export class WordPiece {
  // `vocab`: vocab.txt's text, one token a line (the line number is the id).
  constructor(vocab, {maxInputCharsPerWord = 100} = {}) {
    this.ids = new Map();
    vocab.split("\n").forEach((line, i) => {
      const token = line.replace(/\r$/, "");
      if (token && !this.ids.has(token)) this.ids.set(token, i);
    });
    for (const t of ["[CLS]", "[SEP]", "[UNK]", "[PAD]"]) {
      if (!this.ids.has(t)) throw new Error(`vocab.txt has no ${t} token`);
    }
    this.maxInputCharsPerWord = maxInputCharsPerWord;
  }

  // Greedy longest-match-first; a word with an unmatched piece (or too long) is one [UNK].
  wordIds(word) {
    const chars = [...word];
    if (chars.length > this.maxInputCharsPerWord) return [this.ids.get("[UNK]")];
    const pieces = [];
    for (let start = 0; start < chars.length;) {
      let end = chars.length, id;
      for (; end > start; end--) {
        const piece = (start > 0 ? "##" : "") + chars.slice(start, end).join("");
        id = this.ids.get(piece);
        if (id !== undefined) break;
      }
      if (end === start) return [this.ids.get("[UNK]")];
      pieces.push(id);
      start = end;
    }
    return pieces;
  }

  // [CLS] tokens [SEP], truncated to maxLength ids in all (tokenizers' "longest first" for one text).
  encode(text, maxLength = 256) {
    const ids = [];
    for (const word of preTokenize(normalize(text))) ids.push(...this.wordIds(word));
    return [this.ids.get("[CLS]"), ...ids.slice(0, Math.max(maxLength - 2, 0)), this.ids.get("[SEP]")];
  }
}

// -- pooling and similarity ----------------------------------------------------------------------

// Mean of the token vectors where mask is 1, then L2-normalised (eps as torch's normalize).
export function meanPool(hidden, mask, dim) {
  const out = new Float64Array(dim);
  let count = 0;
  mask.forEach((m, t) => {
    if (!m) return;
    count += 1;
    for (let d = 0; d < dim; d++) out[d] += hidden[t * dim + d];
  });
  let norm = 0;
  for (let d = 0; d < dim; d++) { out[d] /= Math.max(count, 1e-9); norm += out[d] * out[d]; }
  norm = Math.max(Math.sqrt(norm), 1e-12);
  return Float32Array.from(out, (v) => v / norm);
}

export function cosine(a, b) {
  let dot = 0;
  for (let i = 0; i < a.length; i++) dot += a[i] * b[i];
  return dot;  // both are unit vectors
}

// -- the model -----------------------------------------------------------------------------------

// Fetch `url` with onProgress({loaded, total}) per chunk; resolves with the bytes.
async function fetchBytes(url, onProgress) {
  const response = await fetch(url, {credentials: "same-origin"});
  if (!response.ok) throw new Error(`GET ${url}: HTTP ${response.status}`);
  const total = Number(response.headers.get("Content-Length")) || 0;
  const reader = response.body.getReader();
  const parts = [];
  let loaded = 0;
  for (;;) {
    const {done, value} = await reader.read();
    if (done) break;
    parts.push(value);
    loaded += value.length;
    onProgress({loaded, total: Math.max(total, loaded)});
  }
  const bytes = new Uint8Array(loaded);
  let at = 0;
  for (const p of parts) { bytes.set(p, at); at += p.length; }
  return bytes;
}

export class MiniLM {
  // `spec`: the app's /playground/engines "embedder" entry; URLs are relative to `base`.
  constructor(spec, base = document.baseURI) {
    this.spec = spec;
    this.base = base;
    this.name = spec.name || "MiniLM";
    this.session = null;
    this.tokenizer = null;
    this.loadMs = null;
    this.embedMs = [];  // milliseconds per embedded text, for the page's figures
  }

  // Load onnxruntime-web, the vocabulary and the model once; onProgress({loaded, total}).
  async load(onProgress = () => {}) {
    if (this.session) return;
    if (!this.spec.available) throw new Error(this.spec.problem || "the MiniLM model is not served");
    const started = performance.now();
    const url = (u) => new URL(u, this.base).href;
    const ort = await import(url(this.spec.module));
    ort.env.wasm.wasmPaths = url(this.spec.wasm_prefix);  // the app's route, never a CDN
    // Threads need SharedArrayBuffer (COOP/COEP); on a few shared cores one is as fast anyway.
    ort.env.wasm.numThreads = globalThis.crossOriginIsolated ? Math.min(navigator.hardwareConcurrency || 1, 4) : 1;
    ort.env.wasm.proxy = false;
    const response = await fetch(url(this.spec.vocab), {credentials: "same-origin"});
    if (!response.ok) throw new Error(`GET ${this.spec.vocab}: HTTP ${response.status}`);
    const vocab = await response.text();
    this.tokenizer = new WordPiece(vocab);
    const model = await fetchBytes(url(this.spec.model), onProgress);
    this.ort = ort;
    this.session = await ort.InferenceSession.create(model, {executionProviders: ["wasm"]});
    this.loadMs = performance.now() - started;
  }

  // One L2-normalised Float32Array(dim) per text, one text per run: no padding, no batch-mates.
  async embed(texts) {
    if (!this.session) throw new Error("load the MiniLM model first");
    const out = [];
    for (const text of texts) {
      const started = performance.now();
      const ids = this.tokenizer.encode(text, this.spec.max_seq_length || 256);
      const n = ids.length;
      const tensor = (values) => new this.ort.Tensor("int64", BigInt64Array.from(values, BigInt), [1, n]);
      const mask = new Array(n).fill(1);
      const feeds = {input_ids: tensor(ids), attention_mask: tensor(mask)};
      if (this.session.inputNames.includes("token_type_ids")) feeds.token_type_ids = tensor(new Array(n).fill(0));
      const results = await this.session.run(feeds);
      const hidden = results[this.session.outputNames[0]];
      out.push(meanPool(hidden.data, mask, hidden.dims[2]));
      this.embedMs.push(performance.now() - started);
    }
    return out;
  }

  // Cosine of every passage with `query`: [{index, text, score}] best first.
  async rank(passages, query) {
    const [q, ...vectors] = await this.embed([query, ...passages]);
    return vectors.map((v, index) => ({index, text: passages[index], score: cosine(q, v)}))
      .sort((x, y) => y.score - x.score || x.index - y.index);
  }
}
