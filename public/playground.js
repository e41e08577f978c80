// The streaming playground: POST /playground/stream, read its server-sent events with a
// ReadableStream reader, append tokens as they arrive, chart every run's latency in plain SVG.
// The "In this browser" engine instead runs a GGUF model in the page (playground-local.js,
// loaded on first use), and ranks the pasted reference text with MiniLM on onnxruntime-web
// (playground-minilm.js, BM25 when it is not loaded): the prompt and the reference text never
// leave the page then.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const form = $("form"), promptBox = $("prompt"), referenceBox = $("reference");
  const runButton = $("run"), stopButton = $("stop"), output = $("output"), statusLine = $("status");
  const chart = $("chart"), legend = $("legend"), runsTable = $("runs"), compareTable = $("compare");
  const localPanel = $("local"), modelSelect = $("browser-model"), loadBar = $("load-progress");
  const loadStatus = $("load-status"), sourcesBox = $("sources"), sourceList = $("source-list");
  const SVG = "http://www.w3.org/2000/svg";
  const PALETTE = ["#2f6fde", "#d9622b", "#2a9d6f", "#8b5cf6", "#c2410c", "#0e7490"];
  const runs = [];  // {n, engine, model, role, ttft_ms, total_ms, tokens, tokens_per_s, prompt_tokens, grounded}
  const colours = new Map(); // series (model, or model + "in this browser") -> colour, in order of first use
  let controller = null;
  let manifest = null;   // GET /playground/engines: wllama's files, the models, the prompt wording
  let localLib = null;   // the playground-local.js module, imported once (a promise)
  let engine = null;     // its BrowserEngine, once a model is asked for
  let scorer = null;     // a promise of the loaded MiniLM passage scorer, or of null (BM25 then)
  let scorerProblem = "";  // why MiniLM is not ranking the passages, when it is not
  const fmtBytes = (n) => `${(n / 1e6).toFixed(1)} MB`;

  const fmtMs = (ms) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`);
  const seriesOf = (r) => (r.engine === "browser" ? `${r.model} (in this browser)` : r.model);
  const colourOf = (model) => {
    if (!colours.has(model)) colours.set(model, PALETTE[colours.size % PALETTE.length]);
    return colours.get(model);
  };

  function setStatus(text, isError = false) {
    statusLine.textContent = text;
    statusLine.classList.toggle("error", isError);
  }

  function setRunning(running) {
    runButton.disabled = running;
    $("load-model").disabled = running;
    stopButton.disabled = !running;
    output.classList.toggle("streaming", running);
  }

  // -- the request --------------------------------------------------------------------------

  async function run() {
    const role = form.elements.role.value;
    const prompt = promptBox.value;
    if (!prompt.trim()) {
      setStatus("Type a prompt first.", true);
      promptBox.focus();
      return;
    }
    if (role === "browser") return runInBrowser(prompt.trim(), referenceBox.value);
    sourcesBox.hidden = true;
    output.textContent = "";
    $("answer-model").textContent = role === "slm" ? "· small model" : "· large model";
    setStatus("Waiting for the first token…");
    setRunning(true);
    controller = new AbortController();
    const started = performance.now();
    let firstTokenAt = null;
    let finished = false;
    try {
      const response = await fetch("/playground/stream", {
        method: "POST",
        headers: {"Content-Type": "application/json", Accept: "text/event-stream"},
        body: JSON.stringify({role, prompt, reference: referenceBox.value}),
        signal: controller.signal,
        credentials: "same-origin",
      });
      if (!response.ok) {
        let detail = `HTTP ${response.status}`;
        if (response.status === 401) detail = "Sign in on the chat page first, then come back.";
        else {
          try { detail = (await response.json()).error || detail; } catch (_) { /* not JSON */ }
        }
        setStatus(detail, true);
        return;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, {stream: true});
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data: "))
            .map((l) => l.slice(6)).join("\n");
          if (!data) continue;
          const event = JSON.parse(data);
          if (event.type === "token") {
            if (firstTokenAt === null) {
              firstTokenAt = performance.now();
              setStatus("Streaming…");
            }
            output.append(document.createTextNode(event.text));
            output.scrollTop = output.scrollHeight;
          } else if (event.type === "done") {
            finished = true;
            // The server attached the citations the small model was not asked to write.
            if (event.text && event.text !== output.textContent) output.textContent = event.text;
            addRun({engine: "server", ...event});
            setStatus(`${event.model} · first token ${fmtMs(event.ttft_ms)} · total ` +
              `${fmtMs(event.total_ms)} · ${event.tokens} tokens · ${event.tokens_per_s} tok/s` +
              (event.grounded ? " · answered from the reference text" : ""));
          } else if (event.type === "error") {
            finished = true;
            setStatus(event.message, true);
          }
        }
      }
      if (!finished) setStatus("The stream ended early; run again.", true);
    } catch (err) {
      if (err.name === "AbortError") {
        const ms = performance.now() - started;
        setStatus(`Stopped after ${fmtMs(ms)}.`);
      } else {
        setStatus(`The request failed: ${err.message}. Is the app still running?`, true);
      }
    } finally {
      controller = null;
      setRunning(false);
    }
  }

  // -- the in-browser engine -------------------------------------------------------------------

  // One import, shared by every caller (the panel and a run may ask at the same time).
  const lib = () => (localLib = localLib || import("/public/playground-local.js"));

  async function engines() {
    if (!manifest) {
      const response = await fetch("/playground/engines", {credentials: "same-origin"});
      if (!response.ok) throw new Error(`GET /playground/engines: HTTP ${response.status}`);
      manifest = await response.json();
    }
    return manifest;
  }

  async function showLocalPanel() {
    const on = form.elements.role.value === "browser";
    localPanel.hidden = !on;
    if (!on || modelSelect.options.length) return;
    try {
      const m = await engines();
      for (const spec of m.models) {
        const option = new Option(`${spec.label} · ${fmtBytes(spec.size)}`, spec.name);
        option.disabled = !spec.available;
        if (!spec.available) option.title = spec.problem;
        modelSelect.append(option);
      }
      const first = m.models.find((s) => s.available);
      if (first) modelSelect.value = first.name;
      const backend = await (await lib()).detectBackend();
      $("browser-backend").textContent = backend === "webgpu"
        ? "WebGPU (this browser offers a GPU adapter)"
        : "WebAssembly on the CPU, 1 thread (no WebGPU adapter here)";
      loadStatus.textContent = m.wllama.problem || (first ? "The model loads on the first run, " +
        "once per page; the browser keeps the file for the next visit." : m.models[0].problem);
    } catch (err) {
      loadStatus.textContent = `The in-browser engine is unavailable: ${err.message}`;
    }
  }

  async function loadLocalModel(name) {
    const m = await engines();
    const module = await lib();
    engine = engine || new module.BrowserEngine(m);
    if (engine.model === name) return;
    loadBar.hidden = false;
    loadBar.value = 0;
    setStatus("Loading the model into this page…");
    await engine.load(name, ({loaded, total}) => {
      const pct = total ? Math.round((loaded / total) * 100) : 0;
      loadBar.value = total ? loaded / total : 0;
      loadStatus.textContent = `Loading ${name}: ${fmtBytes(loaded)} of ${fmtBytes(total)} (${pct}%)`;
    });
    loadBar.value = 1;
    const e = engine;
    loadStatus.dataset.loadMs = e.loadMs.toFixed(0);
    loadStatus.dataset.fromCache = String(e.fromCache);
    loadStatus.textContent = `${name} loaded in ${fmtMs(e.loadMs)} ` +
      (e.fromCache ? "from this browser's cache" : "(downloaded once; cached for the next visit)") +
      ` · ${e.backend === "webgpu" ? "WebGPU" : "WebAssembly, 1 thread"}`;
  }

  // MiniLM, loaded once on the first in-browser run with reference text; null when it cannot
  // load (not built, onnxruntime-web missing, a load error), and then BM25 ranks the passages.
  function loadScorer() {
    if (scorer) return scorer;
    const bar = $("scorer-progress"), line = $("scorer-status");
    scorer = (async () => {
      try {
        const spec = (await engines()).embedder;
        if (!spec || !spec.available) throw new Error(spec ? spec.problem : "not offered by the app");
        const {MiniLM} = await import("/public/playground-minilm.js");
        const minilm = new MiniLM(spec);
        bar.hidden = false;
        await minilm.load(({loaded, total}) => {
          bar.value = total ? loaded / total : 0;
          line.textContent = `Loading the MiniLM passage scorer: ${fmtBytes(loaded)} of ` +
            `${fmtBytes(total)} (${total ? Math.round((loaded / total) * 100) : 0}%)`;
        });
        bar.value = 1;
        line.dataset.loadMs = minilm.loadMs.toFixed(0);
        line.textContent = `MiniLM passage scorer (${spec.model_id}, ${spec.variant}, ` +
          `onnxruntime-web ${spec.ort_version}) loaded in ${fmtMs(minilm.loadMs)}`;
        return minilm;
      } catch (err) {
        scorerProblem = `MiniLM is not loaded: ${err.message}`;
        line.textContent = `${scorerProblem} — passages are ranked by BM25 (lexical) instead.`;
        bar.hidden = true;
        return null;
      }
    })();
    return scorer;
  }

  function showSources(sources, scorerName, fallback) {
    sourceList.replaceChildren();
    const cosine = scorerName !== "BM25";
    for (const s of sources) {
      const li = document.createElement("li");
      li.dataset.score = s.score.toFixed(6);
      li.dataset.scorer = scorerName;
      const score = document.createElement("span");
      score.className = "score";
      score.textContent = ` — passage ${s.passage}, ${scorerName} ` +
        (cosine ? `cosine ${s.score.toFixed(3)}` : s.score.toFixed(2));
      li.append(document.createTextNode(s.text), score);
      sourceList.append(li);
    }
    const why = fallback || (scorerName === "BM25" ? scorerProblem : "");
    $("scorer-name").dataset.scorer = scorerName || "";
    $("scorer-name").textContent = cosine
      ? `— ranked in this browser by ${scorerName} (cosine of all-MiniLM-L6-v2 embeddings)`
      : `— ranked in this browser by BM25 (lexical)${why ? `; ${why}` : ""}`;
    sourcesBox.hidden = !sources.length;
  }

  async function runInBrowser(prompt, reference) {
    const name = modelSelect.value;
    output.textContent = "";
    $("answer-model").textContent = `· ${name} in this browser`;
    setRunning(true);
    controller = new AbortController();
    const started = performance.now();
    try {
      const module = await lib();
      let sources = [];
      if (reference.trim()) {
        setStatus("Ranking the reference text's passages in this page…");
        const minilm = await loadScorer();
        const before = minilm ? minilm.embedMs.length : 0;
        const ranked = await module.rankSources(reference, prompt, minilm);
        sources = ranked.sources;
        showSources(sources, ranked.scorer, ranked.fallback);
        if (minilm && ranked.scorer !== "BM25") {
          const times = minilm.embedMs.slice(before);
          const each = times.reduce((a, b) => a + b, 0) / Math.max(times.length, 1);
          const line = $("scorer-status");
          line.dataset.embedMs = each.toFixed(1);
          line.dataset.embedN = String(times.length);
          line.textContent = `MiniLM ranked ${times.length - 1} passage(s): ${fmtMs(each)} per ` +
            `embedding (prompt included, ${times.length} texts) · loaded in ${fmtMs(minilm.loadMs)}`;
        }
      }
      await loadLocalModel(name);
      const messages = module.groundedMessages(prompt, sources, manifest.prompt);
      setStatus("Waiting for the first token…");
      let first = true;
      const maxTokens = Math.min(Math.max(Number($("max-tokens").value) || 128, 1), 1024);
      const timings = await engine.run(messages, {
        signal: controller.signal,
        maxTokens,
        onToken: (text) => {
          if (first) { first = false; setStatus("Streaming…"); }
          output.append(document.createTextNode(text));
          output.scrollTop = output.scrollHeight;
        },
      });
      // The page attaches the citations the small model was not asked to write.
      const cited = module.attachCitations(output.textContent, sources);
      if (cited !== output.textContent) output.textContent = cited;
      const event = {engine: "browser", model: name, role: "browser",
        grounded: sources.length > 0, ...timings};
      addRun(event);
      setStatus(`${name} in this browser · first token ${fmtMs(event.ttft_ms)} · total ` +
        `${fmtMs(event.total_ms)} · ${event.tokens} tokens · ${event.tokens_per_s} tok/s` +
        (event.grounded ? ` · answered from ${sources.length} passage(s) of the reference text` : ""));
    } catch (err) {
      if (err.name === "AbortError" || controller?.signal.aborted) {
        setStatus(`Stopped after ${fmtMs(performance.now() - started)}.`);
      } else {
        setStatus(`The in-browser engine failed: ${err.message}`, true);
      }
    } finally {
      controller = null;
      setRunning(false);
    }
  }

  // -- the chart ------------------------------------------------------------------------------

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // The smallest "round" step (1, 2, 2.5 or 5 times a power of ten) of at least `value`.
  function niceStep(value) {
    if (value <= 0) return 20;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * power >= value) return m * power;
    return 10 * power;
  }

  function addRun(event) {
    runs.push({n: runs.length + 1, ...event});
    draw();
    const row = document.createElement("tr");
    const r = runs[runs.length - 1];
    row.dataset.run = JSON.stringify(r);  // the exact figures, for tests and `tools/bench_playground.py`
    for (const [text, cls] of [[r.n, ""], [engineOf(r), ""], [r.model, ""], [fmtMs(r.ttft_ms), "num"],
      [fmtMs(r.total_ms), "num"], [r.tokens, "num"], [r.tokens_per_s, "num"],
      [promptSize(r), "num"], [r.grounded ? "reference" : "none", ""]]) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      row.append(td);
    }
    runsTable.tBodies[0].append(row);
    runsTable.hidden = false;
    drawComparison();
  }

  // "~" marks an estimate (UTF-8 bytes / 3, as rag estimates) where the engine reported no usage.
  const promptSize = (r) => (r.prompt_tokens == null ? "–" : `${r.tokens_estimated ? "~" : ""}${r.prompt_tokens}`);
  const engineOf = (r) => (r.engine === "browser" ? "browser" : r.role === "slm" ? "server small" : "server large");
  const median = (xs) => {
    const s = [...xs].sort((a, b) => a - b), m = Math.floor(s.length / 2);
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
  };

  // One row per engine and model: medians of first token, tokens/s and total, with prompt size.
  function drawComparison() {
    const groups = new Map();
    for (const r of runs) {
      const key = `${engineOf(r)} · ${r.model}`;
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(r);
    }
    const fastest = Math.max(...runs.map((r) => r.tokens_per_s), 1);
    compareTable.tBodies[0].replaceChildren();
    for (const [key, rs] of groups) {
      const tps = median(rs.map((r) => r.tokens_per_s));
      const prompts = rs.map((r) => r.prompt_tokens).filter((p) => p != null);
      const row = document.createElement("tr");
      row.dataset.engine = engineOf(rs[0]);
      for (const [text, cls] of [[key, ""], [rs.length, "num"], [fmtMs(median(rs.map((r) => r.ttft_ms))), "num"],
        [tps.toFixed(1), "num"], [fmtMs(median(rs.map((r) => r.total_ms))), "num"],
        [prompts.length ? `${rs[0].tokens_estimated ? "~" : ""}${Math.round(median(prompts))}` : "–", "num"]]) {
        const td = document.createElement("td");
        td.textContent = text;
        if (cls) td.className = cls;
        row.append(td);
      }
      const bar = document.createElement("td");
      const fill = document.createElement("span");
      fill.className = "bar";
      fill.style.width = `${Math.max(2, (tps / fastest) * 120)}px`;
      fill.style.background = colourOf(seriesOf(rs[0]));
      fill.title = `${tps.toFixed(1)} tokens/s`;
      bar.append(fill);
      row.append(bar);
      compareTable.tBodies[0].append(row);
    }
    compareTable.hidden = $("compare-title").hidden = !runs.length;
  }

  function draw() {
    chart.replaceChildren();
    const W = 900, H = 270, left = 64, right = 20, top = 16, bottom = 46;
    const plotW = W - left - right, plotH = H - top - bottom;
    if (!runs.length) {
      chart.append(el("text", {x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty"},
        "Run a prompt: each run adds a point (total latency) and a diamond (first token)."));
      legend.replaceChildren();
      return;
    }
    const TICKS = 5;
    const step = niceStep((Math.max(...runs.map((r) => r.total_ms)) * 1.1) / TICKS);
    const yMax = step * TICKS;
    const y = (ms) => top + plotH - (ms / yMax) * plotH;
    const slots = Math.max(runs.length, 8);
    const x = (i) => left + (plotW * (i + 0.5)) / slots;
    for (let k = 0; k <= TICKS; k++) {
      const ms = step * k, yy = y(ms);
      chart.append(el("line", {x1: left, x2: W - right, y1: yy, y2: yy, class: "grid"}));
      chart.append(el("text", {x: left - 8, y: yy + 4, "text-anchor": "end", class: "axis-label"},
        fmtMs(ms)));
    }
    // One line through the totals of each model, so the two models read as two series.
    for (const model of colours.keys()) {
      const pts = runs.map((r, i) => [r, i]).filter(([r]) => seriesOf(r) === model)
        .map(([r, i]) => `${x(i)},${y(r.total_ms)}`);
      if (pts.length > 1) {
        chart.append(el("polyline", {points: pts.join(" "), fill: "none", stroke: colourOf(model),
          "stroke-width": 1.5, "stroke-opacity": 0.45}));
      }
    }
    runs.forEach((r, i) => {
      const colour = colourOf(seriesOf(r)), cx = x(i);
      const crowded = slots > 14;  // many runs: label every few, and leave the values to tooltips
      if (!crowded || i % Math.ceil(slots / 14) === 0) {
        chart.append(el("text", {x: cx, y: H - 20, "text-anchor": "middle", class: "axis-label"},
          crowded ? `#${r.n}` : `#${r.n} ${r.engine === "browser" ? "browser" : r.role === "slm" ? "small" : "large"}`));
        if (!crowded && r.prompt_tokens != null) {
          chart.append(el("text", {x: cx, y: H - 2, "text-anchor": "middle", class: "axis-label"},
            `prompt ${promptSize(r)} tok`));
        }
      }
      const d = 5, ty = y(r.ttft_ms);
      const diamond = el("polygon", {points: `${cx},${ty - d} ${cx + d},${ty} ${cx},${ty + d} ${cx - d},${ty}`,
        fill: "#fff", stroke: colour, "stroke-width": 2, class: "point ttft"});
      diamond.append(el("title", {}, `run ${r.n} · ${r.model} · first token ${fmtMs(r.ttft_ms)}`));
      chart.append(diamond);
      const dot = el("circle", {cx, cy: y(r.total_ms), r: 6, fill: colour, class: "point total",
        "data-model": r.model, "data-run": r.n, "data-engine": r.engine || "server"});
      dot.append(el("title", {}, `run ${r.n} · ${engineOf(r)} · ${r.model} · total ${fmtMs(r.total_ms)} · ` +
        `first token ${fmtMs(r.ttft_ms)} · ${r.tokens} tokens · ${r.tokens_per_s} tok/s · ` +
        `prompt ${promptSize(r)} tokens`));
      chart.append(dot);
      if (!crowded) {
        chart.append(el("text", {x: cx + 9, y: y(r.total_ms) - 8, class: "axis-label"},
          fmtMs(r.total_ms)));
      }
    });
    legend.replaceChildren();
    for (const [model, colour] of colours) {
      const item = document.createElement("span");
      const sw = document.createElement("i");
      sw.className = "swatch";
      sw.style.background = colour;
      item.append(sw, document.createTextNode(`${model} — total`));
      legend.append(item);
    }
    const hollow = document.createElement("span");
    const sw = document.createElement("i");
    sw.className = "swatch hollow";
    hollow.append(sw, document.createTextNode("first token"));
    legend.append(hollow);
  }

  // -- wiring ---------------------------------------------------------------------------------

  form.addEventListener("submit", (e) => { e.preventDefault(); run(); });
  stopButton.addEventListener("click", () => controller && controller.abort());
  $("clear").addEventListener("click", () => {
    runs.length = 0;
    colours.clear();
    runsTable.tBodies[0].replaceChildren();
    runsTable.hidden = true;
    drawComparison();
    draw();
  });
  for (const radio of form.elements.role) radio.addEventListener("change", showLocalPanel);
  $("load-model").addEventListener("click", async () => {
    if (controller) return;
    setRunning(true);
    controller = new AbortController();
    try {
      await loadLocalModel(modelSelect.value);
      setStatus("The model is loaded; Run answers in this page.");
    } catch (err) {
      setStatus(`The in-browser engine failed to load: ${err.message}`, true);
    } finally {
      controller = null;
      setRunning(false);
    }
  });
  form.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); if (!controller) run(); }
  });
  draw();
  showLocalPanel();
})();
