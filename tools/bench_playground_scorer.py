"""Measure the playground's in-browser passage scorer: MiniLM on onnxruntime-web, in the page.

Opens /playground in Debian's headless Chromium, loads the page's own MiniLM module from the
app (onnxruntime-web's WebAssembly build, the built fp32 ONNX model), embeds `--n` passages of
the corpus (generated ones if it is missing), one text per run as the page does, and prints the
load time and milliseconds per embedding (median, mean, p90), with the native onnxruntime
figure for the same texts on this machine beside it (OnnxEncoder "fp32", one thread).

    RAG__SERVER__PORT=9510 .venv/bin/rag serve &   # or any running app with a built MiniLM
    .venv/bin/python tools/bench_playground_scorer.py --url http://127.0.0.1:9510 --n 64
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench_playground import _local  # tools/ is on sys.path when run as a script
from playwright.sync_api import sync_playwright

from rag.config import load_config
from rag.measure.embed_bench import bench_passages
from rag.models.artifacts import embedding_model_dir
from rag.playground_assets import BROWSER_EMBEDDING_VARIANT
from rag.retrieval.encoder import OnnxEncoder

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]

EMBED = """async (texts) => {
    const spec = (await (await fetch('/playground/engines')).json()).embedder;
    const {MiniLM} = await import('/public/playground-minilm.js');
    const m = new MiniLM(spec);
    await m.load();
    await m.embed(texts.slice(0, 2));  // warm-up, not counted
    m.embedMs.length = 0;
    await m.embed(texts);
    return {load_ms: m.loadMs, ms: m.embedMs, threads: globalThis.crossOriginIsolated};
}"""


def _summary(ms: list[float]) -> str:
    p90 = sorted(ms)[max(int(len(ms) * 0.9) - 1, 0)]
    return (
        f"median {statistics.median(ms):.1f} ms, mean {statistics.fmean(ms):.1f} ms, "
        f"p90 {p90:.1f} ms per embedding (n={len(ms)})"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url", required=True, help="the running app, e.g. http://127.0.0.1:9510")
    ap.add_argument("--n", type=int, default=64, help="passages to embed (default 64)")
    ap.add_argument("--config", default="rag.yaml")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    texts, source = bench_passages(cfg, args.n)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_context().new_page()
        page.route("**/*", _local)
        page.set_default_timeout(600_000)
        page.goto(f"{args.url}/playground")
        result = page.evaluate(EMBED, texts)
        browser.close()
    print(f"passages: {source}")
    print(f"in the page (onnxruntime-web, WebAssembly, 1 thread): load {result['load_ms']:.0f} ms")
    print(f"  {_summary(result['ms'])}")
    native = OnnxEncoder(embedding_model_dir(cfg.data_dir), BROWSER_EMBEDDING_VARIANT, threads=1)
    native.encode(texts[:2])
    ms = []
    for text in texts:
        t0 = time.perf_counter()
        native.encode([text])
        ms.append((time.perf_counter() - t0) * 1000)
    print(f"native onnxruntime ({BROWSER_EMBEDDING_VARIANT}, 1 thread): {_summary(ms)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
