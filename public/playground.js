// The streaming playground: POST /playground/stream, read its server-sent events with a
// ReadableStream reader, append tokens as they arrive, chart every run's latency in plain SVG.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const form = $("form"), promptBox = $("prompt"), referenceBox = $("reference");
  const runButton = $("run"), stopButton = $("stop"), output = $("output"), statusLine = $("status");
  const chart = $("chart"), legend = $("legend"), runsTable = $("runs");
  const SVG = "http://www.w3.org/2000/svg";
  const PALETTE = ["#2f6fde", "#d9622b", "#2a9d6f", "#8b5cf6", "#c2410c", "#0e7490"];
  const runs = [];          // {n, model, role, ttft_ms, total_ms, tokens, tokens_per_s, grounded}
  const colours = new Map(); // model name -> colour, in order of first use
  let controller = null;

  const fmtMs = (ms) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`);
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
            addRun(event);
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
    for (const [text, cls] of [[r.n, ""], [r.model, ""], [fmtMs(r.ttft_ms), "num"],
      [fmtMs(r.total_ms), "num"], [r.tokens, "num"], [r.tokens_per_s, "num"],
      [r.grounded ? "reference" : "none", ""]]) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      row.append(td);
    }
    runsTable.tBodies[0].append(row);
    runsTable.hidden = false;
  }

  function draw() {
    chart.replaceChildren();
    const W = 900, H = 260, left = 64, right = 20, top = 16, bottom = 36;
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
      const pts = runs.map((r, i) => [r, i]).filter(([r]) => r.model === model)
        .map(([r, i]) => `${x(i)},${y(r.total_ms)}`);
      if (pts.length > 1) {
        chart.append(el("polyline", {points: pts.join(" "), fill: "none", stroke: colourOf(model),
          "stroke-width": 1.5, "stroke-opacity": 0.45}));
      }
    }
    runs.forEach((r, i) => {
      const colour = colourOf(r.model), cx = x(i);
      const crowded = slots > 14;  // many runs: label every few, and leave the values to tooltips
      if (!crowded || i % Math.ceil(slots / 14) === 0) {
        chart.append(el("text", {x: cx, y: H - 14, "text-anchor": "middle", class: "axis-label"},
          crowded ? `#${r.n}` : `#${r.n} ${r.role === "slm" ? "small" : "large"}`));
      }
      const d = 5, ty = y(r.ttft_ms);
      const diamond = el("polygon", {points: `${cx},${ty - d} ${cx + d},${ty} ${cx},${ty + d} ${cx - d},${ty}`,
        fill: "#fff", stroke: colour, "stroke-width": 2, class: "point ttft"});
      diamond.append(el("title", {}, `run ${r.n} · ${r.model} · first token ${fmtMs(r.ttft_ms)}`));
      chart.append(diamond);
      const dot = el("circle", {cx, cy: y(r.total_ms), r: 6, fill: colour, class: "point total",
        "data-model": r.model, "data-run": r.n});
      dot.append(el("title", {}, `run ${r.n} · ${r.model} · total ${fmtMs(r.total_ms)} · ` +
        `first token ${fmtMs(r.ttft_ms)} · ${r.tokens} tokens`));
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
    draw();
  });
  form.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); if (!controller) run(); }
  });
  draw();
})();
