"""Measure the playground's engines in one run: the server's two models and the in-browser ones.

Drives /playground in Debian's headless Chromium (Playwright, as the browser tests do): the
same prompt and reference text go to each engine `--runs` times; the page's own timings
(first token, tokens/s, total, prompt size) are read from its runs table, and for each
in-browser model the load time of the first visit (download + start) and of a second visit
(from the browser's cache). Prints a Markdown table.

    # the app with the embedded llama.cpp servers, on ports of your choice, answers capped
    # like the in-browser ones (--max-tokens):
    RAG__SERVER__PORT=8510 RAG__MODELS__EMBEDDED__SLM_PORT=8511 \\
    RAG__MODELS__EMBEDDED__LLM_PORT=8512 RAG__MODELS__SLM__MAX_TOKENS=32 \\
    RAG__MODELS__LLM__MAX_TOKENS=32 .venv/bin/rag serve &
    .venv/bin/python tools/bench_playground.py --url http://127.0.0.1:8510 --runs 3 --max-tokens 32
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from playwright.sync_api import Page, Route, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
PROMPT = "In one sentence: what does a ferry do?"
GROUNDED_PROMPT = "When does Project Kestrel launch, and from which office?"
REFERENCE = "\n\n".join(
    [
        "The support team answers tickets in English and Portuguese; weekend cover rotates monthly.",
        "Project Kestrel launches on 3 March from the Lisbon office. It replaces the old ticket "
        "tool for the support team, and training sessions start one week before the launch.",
        "The Lisbon office is on the fourth floor; visitors sign in at the front desk.",
    ]
)
SERVER = {"slm": "server small", "llm": "server large"}
BROWSER_MODELS = ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct")


def _local(route: Route) -> None:
    host = urlsplit(route.request.url).hostname or ""
    if route.request.url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
        route.continue_()
    else:
        route.abort("internetdisconnected")


def _runs(page: Page) -> list[dict[str, Any]]:
    rows = page.locator("#runs tbody tr").evaluate_all("rs => rs.map(r => r.dataset.run)")
    return [json.loads(r) for r in rows]


def _run_once(page: Page, timeout_ms: int) -> dict[str, Any]:
    before = len(_runs(page))
    page.locator("#run").click()
    page.wait_for_function(
        f"document.querySelectorAll('#runs tbody tr').length > {before} || "
        "document.getElementById('status').classList.contains('error')",
        timeout=timeout_ms,
    )
    runs = _runs(page)
    if len(runs) == before:
        raise RuntimeError(page.locator("#status").inner_text())
    return runs[-1]


def _open(page: Page, url: str, grounded: bool) -> None:
    page.goto(f"{url}/playground")
    page.locator("#prompt").fill(GROUNDED_PROMPT if grounded else PROMPT)
    page.locator("#reference").fill(REFERENCE if grounded else "")


def _browser_engine(page: Page, model: str, max_tokens: int) -> None:
    page.locator("label[for=role-browser]").click()
    page.wait_for_function("document.getElementById('browser-model').options.length > 0")
    page.locator("#browser-model").select_option(model)
    page.locator("#max-tokens").fill(str(max_tokens))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--url", required=True, help="the running app, e.g. http://127.0.0.1:8510")
    ap.add_argument(
        "--runs", type=int, default=3, help="runs per engine (default 3; in-browser: runs + 1)"
    )
    ap.add_argument("--max-tokens", type=int, default=128, help="in-browser answer cap")
    ap.add_argument("--models", nargs="+", default=list(BROWSER_MODELS))
    ap.add_argument("--skip-server", action="store_true", help="only the in-browser engines")
    ap.add_argument(
        "--grounded",
        action="store_true",
        help="add the reference text (system prompt + sources: ~200 prompt tokens, slow to read "
        "on one busy WebAssembly thread); by default a plain one-line prompt",
    )
    ap.add_argument("--timeout-s", type=float, default=600)
    args = ap.parse_args(argv)
    timeout_ms = int(args.timeout_s * 1000)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as pw:
        # A persistent profile, so the second visit finds what the first one cached.
        context = pw.chromium.launch_persistent_context(
            str(Path(profile)), executable_path=CHROMIUM, args=ARGS, headless=True
        )
        context.route("**/*", _local)
        context.set_default_timeout(timeout_ms)
        page = context.new_page()
        _open(page, args.url, args.grounded)
        if not args.skip_server:
            for role, label in SERVER.items():
                page.locator(f"label[for=role-{role}]").click()
                runs = [_run_once(page, timeout_ms) for _ in range(args.runs)]
                results.append({"engine": label, "model": runs[0]["model"], "runs": runs})
                print(f"{label}: {len(runs)} runs", file=sys.stderr)
        for model in args.models:
            loads, visits = [], []
            for visit in ("first visit", "second visit"):
                _open(page, args.url, args.grounded)
                _browser_engine(page, model, args.max_tokens)
                t0 = time.perf_counter()
                visits.append(_run_once(page, timeout_ms))
                status = page.locator("#load-status")
                loads.append(float(status.get_attribute("data-load-ms") or "nan"))
                print(
                    f"{model} {visit}: load {loads[-1]:.0f} ms, run {time.perf_counter() - t0:.1f} s "
                    f"(cache: {status.get_attribute('data-from-cache')})",
                    file=sys.stderr,
                )
            # Both visits' runs count (a fresh page each: no prompt cache), then runs - 1 more.
            runs = visits + [_run_once(page, timeout_ms) for _ in range(args.runs - 1)]
            results.append(
                {
                    "engine": "browser (wasm, 1 thread)",
                    "model": model,
                    "runs": runs,
                    "load_ms": loads[0],
                    "cached_load_ms": loads[1],
                }
            )
        context.close()
    print(table(results))
    return 0


def _fmt_ms(ms: float | None) -> str:
    if ms is None or ms != ms:
        return "–"
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.0f} ms"


def table(results: list[dict[str, Any]]) -> str:
    """Medians per engine as a Markdown table."""
    lines = [
        "| engine | model | load (first visit) | load (cached) | first token | tokens/s | total | "
        "tokens | prompt tokens | n |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        runs = r["runs"]

        def med(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return float(statistics.median(x[key] for x in runs))

        prompts = [x["prompt_tokens"] for x in runs if x.get("prompt_tokens") is not None]
        approx = "~" if any(x.get("tokens_estimated") for x in runs) else ""
        prompt = f"{approx}{statistics.median(prompts):.0f}" if prompts else "–"
        lines.append(
            f"| {r['engine']} | {r['model']} | {_fmt_ms(r.get('load_ms'))} | "
            f"{_fmt_ms(r.get('cached_load_ms'))} | {_fmt_ms(med('ttft_ms'))} | "
            f"{med('tokens_per_s'):.1f} | {_fmt_ms(med('total_ms'))} | {med('tokens'):.0f} | "
            f"{prompt} | {len(runs)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
