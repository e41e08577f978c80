"""The playground's in-browser engine: real wllama, the real SmolLM2 GGUF, in headless Chromium.

The page loads wllama's JS and .wasm and the model from the app (rag/playground_assets.py),
ranks the pasted reference text itself with the built MiniLM ONNX model on onnxruntime-web
(checked against native onnxruntime here) and streams the answer in the page. The test records
every request of the browser context (page and workers) and proves that none carried the
prompt or the reference text, and that nothing left loopback. Selectors: the engine toggle's
`label[for=role-browser]`, `#browser-model`, `#max-tokens`, `#load-status`, `#scorer-status`,
`#scorer-name`, `#source-list li`, `#chart circle.total[data-engine=browser]`, `#compare tbody tr`.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, quote_plus, urlsplit

import numpy as np
import pytest
from playwright.sync_api import Page, Request, expect

from rag.config import load_config
from rag.models.artifacts import SMOLLM2_NAME, embedding_model_dir
from rag.playground_assets import (
    BROWSER_EMBEDDING_VARIANT,
    BROWSER_MODELS,
    NODE_MODULES,
    embedder_manifest,
    model_url,
)
from rag.retrieval.encoder import OnnxEncoder
from tests.conftest import REPO_ROOT, is_loopback_host
from tests.e2e.conftest import SLM, PageRequests, run_chainlit, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.slow]

LOAD_TIMEOUT_MS = 300_000  # download, load and the first prompt on a busy 2-core machine
PROMPT = "Which harbour does the Osprey ferry leave from?"
# Distinct words so that a leak of any part is found in a URL or a request body.
RELEVANT = "The Osprey ferry leaves from Quillby harbour every morning at seven."
REFERENCE = "\n\n".join(
    [
        "Canteen menus rotate weekly; the vegetarian option is marked with a leaf.",
        RELEVANT,
        "Parking permits for the Zanthor garage are renewed each January.",
    ]
)
SECRETS = [PROMPT, REFERENCE, RELEVANT, "Osprey", "Quillby", "Zanthor", "Canteen"]

WATCH = """() => {
    const out = document.getElementById('output'), load = document.getElementById('load-status');
    const lengths = window.__lengths = [], progress = window.__progress = [];
    new MutationObserver(() => {
        const n = out.textContent.length;
        if (n && !lengths.includes(n)) lengths.push(n);
    }).observe(out, {subtree: true, childList: true, characterData: true});
    new MutationObserver(() => progress.push(load.textContent))
        .observe(load, {subtree: true, childList: true, characterData: true});
}"""


@dataclass
class Seen:
    """Every request of the browser context: URL, method and body (workers' requests too)."""

    requests: list[tuple[str, str, bytes]] = field(default_factory=list)

    def record(self, request: Request) -> None:
        self.requests.append((request.url, request.method, request.post_data_buffer or b""))

    def leaks(self) -> list[str]:
        found = []
        for url, method, body in self.requests:
            for secret in SECRETS:
                forms = {secret, quote(secret), quote_plus(secret), secret.lower()}
                if any(f in url or f in url.lower() for f in forms) or any(
                    f.encode() in body for f in forms
                ):
                    found.append(f"{method} {url} carries {secret!r}")
        return found


def _needs_wllama() -> None:
    for package in ("@wllama/wllama", "onnxruntime-web"):
        if not (NODE_MODULES / package / "package.json").is_file():
            pytest.fail(
                f"{package} is not installed in {NODE_MODULES}: run `make install` (npm ci)"
            )


def _built_minilm() -> Path:
    """The MiniLM folder `rag models build` made for rag.yaml's data_dir."""
    cfg = load_config(REPO_ROOT / "rag.yaml", environ={})
    data_dir = cfg.data_dir if cfg.data_dir.is_absolute() else REPO_ROOT / cfg.data_dir
    folder = embedding_model_dir(data_dir)
    if not (folder / "manifest.json").is_file():
        pytest.fail(f"the MiniLM model is not built in {folder}: run `rag models build`")
    return folder


@pytest.fixture(scope="module")
def local_app_url(tmp_path_factory: pytest.TempPathFactory, fake_models_url: str) -> Iterator[str]:
    """The app, with the built MiniLM model in its data folder (linked, not copied)."""
    workdir = tmp_path_factory.mktemp("chainlit-local")
    target = embedding_model_dir(workdir / "data")
    target.parent.mkdir(parents=True)
    target.symlink_to(_built_minilm(), target_is_directory=True)
    with run_chainlit(workdir, fake_models_url) as url:
        yield url


# Runs in the page: the page's own MiniLM module, loaded from the app like the page loads it.
EMBED_IN_PAGE = """async (texts) => {
    const spec = (await (await fetch('/playground/engines')).json()).embedder;
    const {MiniLM} = await import('/public/playground-minilm.js');
    const m = new MiniLM(spec);
    await m.load();
    return (await m.embed(texts)).map((v) => Array.from(v));
}"""


def _pick_browser_engine(page: Page) -> None:
    page.locator("label[for=role-browser]").click()
    expect(page.locator("#role-browser")).to_be_checked()
    expect(page.locator("#browser-model")).to_have_value(SMOLLM2_NAME)
    expect(page.locator("#browser-backend")).to_contain_text("WebAssembly")  # no GPU adapter here
    page.locator("#max-tokens").fill("8")


def test_browser_engine_answers_in_the_page_and_sends_nothing(
    page: Page, local_app_url: str, page_requests: PageRequests
) -> None:
    _needs_wllama()
    app_url = local_app_url
    native = OnnxEncoder(_built_minilm(), BROWSER_EMBEDDING_VARIANT, threads=1)
    seen = Seen()
    page.context.on("request", seen.record)
    page.goto(f"{app_url}/playground")
    page.locator("#prompt").fill(PROMPT)
    page.locator("#reference").fill(REFERENCE)

    # One server run first, so the chart has an engine to compare with.
    page.locator("#run").click()
    expect(page.locator("#chart circle.total")).to_have_count(1)

    _pick_browser_engine(page)
    page.evaluate(WATCH)
    sent_before = len(seen.requests)
    page.locator("#run").click()
    point = page.locator("#chart circle.total[data-engine=browser]")
    expect(point).to_have_count(1, timeout=LOAD_TIMEOUT_MS)
    expect(point).to_have_attribute("data-model", SMOLLM2_NAME)

    # Streamed token by token, from a model loaded with visible progress.
    lengths = page.evaluate("window.__lengths")
    assert len(lengths) >= 3, f"the answer did not stream token by token: {lengths}"
    progress = " | ".join(page.evaluate("window.__progress"))
    assert "MB of" in progress and "%" in progress, progress
    expect(page.locator("#load-status")).to_contain_text("loaded in")
    expect(page.locator("#status")).to_contain_text("in this browser")
    expect(page.locator("#status")).not_to_have_class("error")

    # The reference text was split and ranked here by MiniLM: the relevant passage first, and
    # every cosine equal to native onnxruntime's for the same model.
    expect(page.locator("#scorer-status")).to_contain_text("per embedding")
    expect(page.locator("#scorer-name")).to_contain_text("by MiniLM")
    sources = page.locator("#source-list li")
    expect(sources).to_have_count(3)
    expect(sources.first).to_contain_text(RELEVANT)
    expect(sources.first).to_contain_text("MiniLM cosine")
    passages = REFERENCE.split("\n\n")
    vectors = native.encode([PROMPT, *passages])
    want = {p: float(vectors[0] @ v) for p, v in zip(passages, vectors[1:], strict=True)}
    got = {}
    for i in range(3):
        li = sources.nth(i)
        assert li.get_attribute("data-scorer") == "MiniLM"
        text = li.inner_text().split(" — passage")[0]
        got[text] = float(li.get_attribute("data-score") or "nan")
    assert got.keys() == want.keys()
    for text, score in got.items():
        assert abs(score - want[text]) < 1e-3, (text, score, want[text])
    assert max(want, key=want.__getitem__) == RELEVANT

    # Side by side: one row per engine in the comparison, each run in the table.
    expect(page.locator("#compare tbody tr")).to_have_count(2)
    expect(page.locator("#compare")).to_contain_text(SLM)
    expect(page.locator("#compare")).to_contain_text(SMOLLM2_NAME)
    expect(page.locator("#runs tbody tr")).to_have_count(2)
    screenshot(page, "playground-browser-engine.png")

    # Private by construction: the browser run fetched only static files, none naming the text.
    during = seen.requests[sent_before:]
    assert during, "the browser run made no request at all: was the model loaded?"
    assert [u for u, _, _ in during if "/playground/stream" in u] == []
    assert {m for _, m, _ in during} <= {"GET", "HEAD"}, during
    assert any(u.endswith(".gguf") for u, _, _ in during), [u for u, _, _ in during]
    assert any(u.endswith("wllama.wasm") for u, _, _ in during), [u for u, _, _ in during]
    assert any(u.endswith("/model.onnx") for u, _, _ in during), [u for u, _, _ in during]
    assert any(u.endswith("ort-wasm-simd-threaded.wasm") for u, _, _ in during), during
    assert Seen(during).leaks() == []  # (the server run before it did POST the prompt, as it must)

    # Offline: everything came from this app.
    assert page_requests.blocked == [], f"the page tried to reach: {page_requests.blocked}"
    remote = [u for u, _, _ in seen.requests if "//" in u and not _loopback(u)]
    assert remote == [], remote

    # The page's vectors themselves (accents, punctuation, a long input) equal native ones.
    texts = [PROMPT, "Café naïve résumé — Ångström, 5% off: e-mail foo@bar.com!", RELEVANT * 30]
    in_page = np.array(page.evaluate(EMBED_IN_PAGE, texts), dtype=np.float32)
    np.testing.assert_allclose(in_page, native.encode(texts), atol=1e-3)

    # The next visit loads the model from the browser's cache: no second download.
    page.reload()
    page.locator("label[for=role-browser]").click()
    expect(page.locator("#browser-model")).to_have_value(SMOLLM2_NAME)
    before_reload = len(seen.requests)
    page.locator("#load-model").click()
    expect(page.locator("#load-status")).to_contain_text(
        "from this browser's cache", timeout=LOAD_TIMEOUT_MS
    )
    again = [u for u, m, _ in seen.requests[before_reload:] if m == "GET"]
    assert not any(u.endswith(".gguf") for u in again), again


def _loopback(url: str) -> bool:
    return is_loopback_host(urlsplit(url).hostname or "")


def _fetch(url: str, headers: dict[str, str] | None = None, method: str = "GET"):  # type: ignore[no-untyped-def]
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        return urllib.request.urlopen(request, timeout=30)
    except urllib.error.HTTPError as exc:
        return exc


def test_model_and_wllama_files_are_served_with_cache_headers(local_app_url: str) -> None:
    _needs_wllama()
    app_url = local_app_url
    url = f"{app_url}/{model_url(BROWSER_MODELS[SMOLLM2_NAME])}"
    with _fetch(url, {"Range": "bytes=0-3"}) as resp:
        assert resp.status == 206
        assert resp.read() == b"GGUF"
        etag = resp.headers["ETag"]
        assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert resp.headers["Last-Modified"]
    with _fetch(url, method="HEAD") as resp:
        assert resp.status == 200
        assert int(resp.headers["Content-Length"]) == BROWSER_MODELS[SMOLLM2_NAME].size
    with _fetch(url, {"If-None-Match": etag}) as resp:
        assert resp.status == 304
    wasm = f"{app_url}/playground/assets/wllama/wllama.wasm"
    with _fetch(wasm) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/wasm"
        assert resp.read(4) == b"\0asm"
        validators = {"If-None-Match": resp.headers["ETag"]}
    with _fetch(wasm, validators) as resp:
        assert resp.status == 304
    # MiniLM for the passage scorer: content-addressed, immutable; onnxruntime-web revalidated.
    spec = embedder_manifest(_built_minilm().parent.parent)
    with _fetch(f"{app_url}/{spec['model']}", {"Range": "bytes=0-1"}) as resp:
        assert resp.status == 206 and len(resp.read()) == 2
        assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        model_etag = resp.headers["ETag"]
    with _fetch(f"{app_url}/{spec['model']}", {"If-None-Match": model_etag}) as resp:
        assert resp.status == 304
    with _fetch(f"{app_url}/{spec['vocab']}") as resp:
        assert resp.status == 200 and b"[CLS]" in resp.read()
    with _fetch(f"{app_url}/playground/assets/ort/ort-wasm-simd-threaded.wasm") as resp:
        assert resp.status == 200 and resp.read(4) == b"\0asm"
        assert resp.headers["Cache-Control"] == "public, no-cache"
    # Only whitelisted names: a wrong digest or another file of the package answer 404.
    wrong = url.replace(BROWSER_MODELS[SMOLLM2_NAME].sha256[:16], "0" * 16)
    wrong_onnx = f"{app_url}/{spec['model']}".replace(spec["model"].split("/")[-2], "0" * 16)
    for bad in (
        wrong,
        f"{app_url}/playground/assets/wllama/package.json",
        wrong_onnx,
        f"{app_url}/{spec['model'].replace('model.onnx', 'manifest.json')}",
    ):
        with _fetch(bad) as resp:
            assert resp.status == 404, bad
    # A path in the URL never reaches a file (Chainlit's catch-all may answer with the chat page).
    for bad, secret in (
        (f"{app_url}/playground/assets/..%2F..%2F..%2Fpyproject.toml", "pyproject.toml"),
        (f"{app_url}/playground/models/x/..%2F..%2F..%2Frag.yaml", "rag.yaml"),
    ):
        with _fetch(bad) as resp:
            body = resp.read()
        assert (REPO_ROOT / secret).read_bytes()[:200] not in body, bad
