// The playground's in-browser engine: wllama (llama.cpp in WebAssembly) runs a GGUF model in
// this page, and the pasted reference text is split and ranked here too. Nothing this module
// does sends the prompt or the reference text anywhere: it fetches only the app's own static
// files (wllama's JS and .wasm, the model), whose URLs never carry user text.

// -- passages and a lexical (BM25) scorer ------------------------------------------------------

const STOPWORDS = new Set(("a an and are as at be by does did do for from has have how i in is " +
  "it its of on or that the their there this to was were what when where which who why will " +
  "with you your").split(" "));

export function words(text) {
  const out = [];
  for (const m of text.toLowerCase().matchAll(/[\p{L}\p{N}]+/gu)) {
    let w = m[0];
    if (STOPWORDS.has(w)) continue;
    if (w.length > 4 && w.endsWith("es")) w = w.slice(0, -2);
    else if (w.length > 3 && w.endsWith("s") && !w.endsWith("ss")) w = w.slice(0, -1);
    out.push(w);
  }
  return out;
}

// Paragraphs (blank-line separated); a long one is cut at sentence ends near `maxChars`.
export function splitPassages(text, maxChars = 500) {
  const passages = [];
  for (const para of text.split(/\n\s*\n/)) {
    const clean = para.replace(/\s+/g, " ").trim();
    if (!clean) continue;
    if (clean.length <= maxChars) { passages.push(clean); continue; }
    let current = "";
    for (const sentence of clean.match(/[^.!?]+(?:[.!?]+|$)\s*/g) || [clean]) {
      if (current && current.length + sentence.length > maxChars) {
        passages.push(current.trim());
        current = "";
      }
      current += sentence;
    }
    if (current.trim()) passages.push(current.trim());
  }
  return passages;
}

// Okapi BM25 of every passage for `query`; returns [{index, text, score}] best first.
export function rankPassages(passages, query, {k1 = 1.2, b = 0.75} = {}) {
  const docs = passages.map(words);
  const avgLen = docs.reduce((s, d) => s + d.length, 0) / Math.max(docs.length, 1) || 1;
  const df = new Map();
  for (const d of docs) for (const w of new Set(d)) df.set(w, (df.get(w) || 0) + 1);
  const terms = [...new Set(words(query))];
  const N = docs.length;
  return docs.map((d, index) => {
    const tf = new Map();
    for (const w of d) tf.set(w, (tf.get(w) || 0) + 1);
    let score = 0;
    for (const t of terms) {
      const f = tf.get(t) || 0;
      if (!f) continue;
      const n = df.get(t);
      const idf = Math.log(1 + (N - n + 0.5) / (n + 0.5));
      score += idf * (f * (k1 + 1)) / (f + k1 * (1 - b + (b * d.length) / avgLen));
    }
    return {index, text: passages[index], score};
  }).sort((x, y) => y.score - x.score || x.index - y.index);
}

// The best `k` passages that share a word with the prompt (the first passage if none does),
// numbered 1..k in order of relevance.
export function selectSources(reference, prompt, k = 3, maxChars = 500) {
  const passages = splitPassages(reference, maxChars);
  if (!passages.length) return [];
  const ranked = rankPassages(passages, prompt);
  const hits = ranked.filter((r) => r.score > 0).slice(0, k);
  const chosen = hits.length ? hits : ranked.slice(0, 1);
  return chosen.map((r, i) => ({n: i + 1, passage: r.index + 1, text: r.text, score: r.score}));
}

// The sources for a prompt and the scorer that chose them: the MiniLM `embedder`
// (playground-minilm.js) when it is given and works, its best `k` by cosine; else BM25 as
// selectSources. `fallback` says why MiniLM did not rank them, when it was asked to.
export async function rankSources(reference, prompt, embedder = null, {k = 3, maxChars = 500} = {}) {
  const passages = splitPassages(reference, maxChars);
  if (!passages.length) return {scorer: null, sources: [], fallback: ""};
  let fallback = "";
  if (embedder) {
    try {
      const ranked = await embedder.rank(passages, prompt);
      const sources = ranked.slice(0, k).map((r, i) =>
        ({n: i + 1, passage: r.index + 1, text: r.text, score: r.score}));
      return {scorer: embedder.name || "MiniLM", sources, fallback};
    } catch (err) {
      fallback = `MiniLM failed (${err.message})`;
    }
  }
  return {scorer: "BM25", sources: selectSources(reference, prompt, k, maxChars), fallback};
}

// -- the prompt: rag/prompts.py's answer_messages(draft=True), wording served by the app -------

// rag/prompts.py's _escape and format_source: the title line carries no "[n]" (small models
// copied it as their answer); passage p of the reference text is the heading "passage p".
const escapeSource = (s) => s.replaceAll("<source", "‹source").replaceAll("</source", "‹/source");

export function formatSource(source, title = "Reference text") {
  return `<source n="${source.n}">\n${escapeSource(`${title} › passage ${source.passage}`)}\n` +
    `${escapeSource(source.text)}\n</source>`;
}

export function groundedMessages(prompt, sources, wording) {
  if (!sources.length) return [{role: "user", content: prompt}];
  const title = wording.reference_title || "Reference text";
  const context = sources.map((s) => formatSource(s, title)).join("\n\n");
  const user = `Sources:\n\n${context}\n\nQuestion: ${prompt}\n\n${wording.draft_hint}`;
  return [{role: "system", content: wording.system}, {role: "user", content: user}];
}

// rag/citations.py's attach_citations: the small model is asked for the fact, not for markers,
// so the page attaches " [n]" to each sentence for the source holding the largest share of its
// words, when that share is at least `minSupport`. A sentence no source supports stays bare;
// an answer that already cites is the model's own and is left as it is.
export function attachCitations(text, sources, minSupport = 0.5) {
  if (!text.trim() || !sources.length || /\[\d+\]/.test(text)) return text;
  const known = sources.map((s) => [s.n, new Set(words(s.text))]);
  return text.trim().split(/(?<=[.!?])\s+(?=["'(\[A-Z0-9])/).map((sentence) => {
    const mine = new Set(words(sentence));
    let bestN = 0, best = 0;
    for (const [n, set] of known) {
      let shared = 0;
      for (const w of mine) if (set.has(w)) shared += 1;
      const share = mine.size ? shared / mine.size : 0;
      if (share > best) { bestN = n; best = share; }
    }
    if (!bestN || best < minSupport) return sentence;
    const cut = sentence.search(/[.!?:;]*\s*$/);
    return `${sentence.slice(0, cut)} [${bestN}]${sentence.slice(cut).trim()}`;
  }).join(" ");
}

// -- the engine -----------------------------------------------------------------------------

// "webgpu" only when the browser hands out an adapter; headless and GPU-less browsers often
// expose navigator.gpu but return no adapter, and then WebAssembly on the CPU is the engine.
export async function detectBackend() {
  try {
    if (navigator.gpu && (await navigator.gpu.requestAdapter())) return "webgpu";
  } catch (_) { /* no adapter */ }
  return "wasm";
}

export class BrowserEngine {
  constructor(manifest) {
    this.manifest = manifest;
    this.wllama = null;
    this.model = null;     // name of the loaded model
    this.backend = null;   // "webgpu" | "wasm"
    this.loadMs = null;
    this.fromCache = false;
  }

  // Load `name` once per page; onProgress({loaded, total}) while the file downloads.
  async load(name, onProgress = () => {}) {
    if (this.model === name) return;
    const spec = this.manifest.models.find((m) => m.name === name);
    if (!spec) throw new Error(`unknown in-browser model ${name}`);
    if (!spec.available) throw new Error(spec.problem);
    if (this.manifest.wllama.problem) throw new Error(this.manifest.wllama.problem);
    if (this.wllama) { await this.wllama.exit(); this.wllama = null; this.model = null; }
    const base = document.baseURI;
    const {Wllama, LoggerWithoutDebug} = await import(new URL(this.manifest.wllama.module, base).href);
    const wllama = new Wllama({default: new URL(this.manifest.wllama.wasm, base).href},
      {logger: LoggerWithoutDebug, suppressNativeLog: true, parallelDownloads: 1});
    // Never the "compat" build: wllama would fetch it from a CDN. Chromium has JSPI and Memory64.
    wllama.setCompat(null);
    this.backend = await detectBackend();
    const started = performance.now();
    let downloaded = false;
    await wllama.loadModelFromUrl(new URL(spec.url, base).href, {
      n_threads: 1,  // no COOP/COEP here, and on a few shared cores one thread is fastest
      n_ctx: 2048,
      n_gpu_layers: this.backend === "webgpu" ? 99999 : 0,
      useCache: true,  // wllama keeps the file in the Origin Private File System for next time
      progressCallback: ({loaded, total}) => {
        if (loaded < total) downloaded = true;
        onProgress({loaded, total});
      },
    });
    this.loadMs = performance.now() - started;
    this.fromCache = !downloaded;
    this.wllama = wllama;
    this.model = name;
  }

  // Stream one answer: onToken(text) per piece; resolves with the run's timings.
  async run(messages, {onToken, signal, maxTokens = 256}) {
    if (!this.wllama) throw new Error("load a model first");
    const started = performance.now();
    let firstAt = null, pieces = 0, usage = null;
    const stream = await this.wllama.createChatCompletion({
      messages, stream: true, max_tokens: maxTokens, temperature: 0, abortSignal: signal,
    });
    for await (const chunk of stream) {
      const text = chunk.choices?.[0]?.delta?.content;
      if (chunk.usage) usage = chunk.usage;
      if (!text) continue;
      if (firstAt === null) firstAt = performance.now();
      pieces += 1;
      onToken(text);
    }
    const total = performance.now() - started;
    const ttft = firstAt === null ? total : firstAt - started;
    const tokens = usage?.completion_tokens || pieces;
    const gen = total - ttft;
    return {
      ttft_ms: Math.round(ttft * 10) / 10,
      total_ms: Math.round(total * 10) / 10,
      tokens,
      // Without usage from wllama: rag's own estimate (UTF-8 bytes / 3), flagged as estimated.
      prompt_tokens: usage?.prompt_tokens ??
        Math.ceil(new TextEncoder().encode(messages.map((m) => m.content).join("\n")).length / 3),
      tokens_estimated: !usage,
      tokens_per_s: tokens > 1 && gen > 0 ? Math.round(((tokens - 1) / (gen / 1000)) * 10) / 10 : 0,
    };
  }
}
