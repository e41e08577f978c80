"""Files the playground's in-browser engine loads from this app: wllama, onnxruntime-web, models.

Only names listed here are ever served; a request names a key, never a path. The JavaScript
and WebAssembly come from ``webassets/node_modules`` (installed by ``npm ci``, pinned in
``webassets/package-lock.json``); the models are the verified GGUF files `rag models build`
left and the built MiniLM ONNX model with its vocabulary (the passage scorer), addressed by
their sha256 so that a URL always means the same bytes and browsers may cache it for good. Pure functions: app.py (or its successor) only turns an ``Asset`` into a
response.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.errors import RagError
from rag.models.artifacts import (
    QWEN_05B,
    SMOLLM2,
    SMOLLM2_NAME,
    embedding_model_dir,
    gguf_path,
    read_embedding_manifest,
)
from rag.playground import REFERENCE_TITLE
from rag.prompts import DRAFT_HINT, DRAFT_SYSTEM, NOT_IN_DOCS

REPO_ROOT = Path(__file__).resolve().parent.parent
WEBASSETS_DIR = REPO_ROOT / "webassets"
NODE_MODULES = WEBASSETS_DIR / "node_modules"
NPM_FIX = "run `make install` (or `cd webassets && npm ci`; needs Node 20 and npm)"

ASSETS_ROUTE = "playground/assets"  # + /<key>
MODELS_ROUTE = "playground/models"  # + /<sha256[:16]>/<name>.gguf
EMBEDDER_ROUTE = "playground/embedder"  # + /<sha256[:16]>/<model.onnx | vocab.txt>

_JS = "text/javascript; charset=utf-8"

# URL key -> (file under node_modules, media type). wllama's JS and .wasm must be one release.
VENDOR: dict[str, tuple[str, str]] = {
    "wllama/index.js": ("@wllama/wllama/esm/index.js", _JS),
    "wllama/wllama.wasm": ("@wllama/wllama/esm/wasm/wllama.wasm", "application/wasm"),
    # onnxruntime-web's WebAssembly-only build: the module imports the Emscripten glue (.mjs)
    # and fetches the .wasm from ort.env.wasm.wasmPaths, which the page sets to ORT_PREFIX.
    "ort/ort.wasm.min.mjs": ("onnxruntime-web/dist/ort.wasm.min.mjs", _JS),
    "ort/ort-wasm-simd-threaded.mjs": ("onnxruntime-web/dist/ort-wasm-simd-threaded.mjs", _JS),
    "ort/ort-wasm-simd-threaded.wasm": (
        "onnxruntime-web/dist/ort-wasm-simd-threaded.wasm",
        "application/wasm",
    ),
}
VENDOR_PACKAGES: dict[str, str] = {"wllama": "@wllama/wllama", "ort": "onnxruntime-web"}
ORT_PREFIX = f"{ASSETS_ROUTE}/ort/"

# The MiniLM files the page's passage scorer loads: URL name -> the manifest's variant (or file).
# fp32 (90 MB) rather than int8 (23 MB): in onnxruntime-web's WebAssembly the fp32 vectors equal
# native onnxruntime's (OnnxEncoder "fp32") to ~1e-7, while the int8 file, quantised for x86's
# AVX2 kernels, came out up to 0.014 off per component and no faster (measured here in node).
BROWSER_EMBEDDING_VARIANT = "fp32"
EMBEDDER_FILES: dict[str, tuple[str, str]] = {
    "model.onnx": ("variant", "application/octet-stream"),
    "vocab.txt": ("vocab.txt", "text/plain; charset=utf-8"),
}


@dataclass(frozen=True)
class BrowserModel:
    """A GGUF chat model the page may load; ``sha256`` pins the bytes its URL names."""

    name: str
    label: str
    sha256: str
    size: int


# The first one is the page's default: small enough to download and run anywhere.
BROWSER_MODELS: dict[str, BrowserModel] = {
    m.name: m
    for m in (
        BrowserModel(SMOLLM2_NAME, "SmolLM2-135M Instruct (Q4_1)", SMOLLM2.sha256, SMOLLM2.size),
        BrowserModel(
            QWEN_05B.name, "Qwen2.5-Coder-0.5B Instruct (Q4_K_M)", QWEN_05B.sha256, QWEN_05B.size
        ),
    )
}

# Content-addressed model URLs never change meaning; vendor files are revalidated (cheap 304s).
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "public, no-cache"


@dataclass(frozen=True)
class Asset:
    """A file to send: where it is, what it is, and its validators."""

    path: Path
    media_type: str
    etag: str  # quoted, as sent in the ETag header
    last_modified: str  # an HTTP date
    cache_control: str

    def headers(self) -> dict[str, str]:
        """The caching headers of every response for this file (200, 206 and 304 alike)."""
        return {
            "ETag": self.etag,
            "Last-Modified": self.last_modified,
            "Cache-Control": self.cache_control,
            "Accept-Ranges": "bytes",
        }


def _http_date(mtime: float) -> str:
    return email.utils.formatdate(mtime, usegmt=True)


def vendor_asset(key: str, node_modules: Path = NODE_MODULES) -> Asset | None:
    """The whitelisted node_modules file for ``key``; None for any other key or a missing file."""
    entry = VENDOR.get(key)
    if entry is None:
        return None
    rel, media = entry
    path = node_modules / rel
    if not path.is_file():
        return None
    st = path.stat()
    return Asset(
        path=path,
        media_type=media,
        etag=f'"{st.st_size:x}-{st.st_mtime_ns:x}"',
        last_modified=_http_date(st.st_mtime),
        cache_control=REVALIDATE,
    )


def model_url(model: BrowserModel) -> str:
    """The content-addressed URL path of a model (relative to the app's root)."""
    return f"{MODELS_ROUTE}/{model.sha256[:16]}/{model.name}.gguf"


# (name, data_dir) -> (path, size, mtime_ns) of a file gguf_path verified in this process: without
# a built models folder to hold its stamp (SmolLM2 lives in its package), each check would
# re-hash the whole file.
_VERIFIED: dict[tuple[str, Path], tuple[Path, int, int]] = {}


def verified_gguf(name: str, data_dir: Path) -> Path:
    """gguf_path, remembered while the file keeps its size and mtime; raises RagError like it."""
    known = _VERIFIED.get((name, data_dir))
    if known is not None:
        path, size, mtime_ns = known
        with contextlib.suppress(OSError):
            st = path.stat()
            if (st.st_size, st.st_mtime_ns) == (size, mtime_ns):
                return path
    path = gguf_path(name, data_dir)
    st = path.stat()
    _VERIFIED[(name, data_dir)] = (path, st.st_size, st.st_mtime_ns)
    return path


def model_asset(digest: str, filename: str, data_dir: Path) -> Asset | None:
    """The GGUF behind a model URL, if the name is listed, the digest is its own and it is built."""
    name = filename.removesuffix(".gguf")
    model = BROWSER_MODELS.get(name)
    if model is None or filename != f"{name}.gguf" or digest != model.sha256[:16]:
        return None
    try:
        path = verified_gguf(name, data_dir)  # checked against the pinned sha256
    except RagError:
        return None
    return Asset(
        path=path,
        media_type="application/octet-stream",
        etag=f'"{model.sha256}"',
        last_modified=_http_date(path.stat().st_mtime),
        cache_control=IMMUTABLE,
    )


def _embedder_files(data_dir: Path) -> dict[str, tuple[str, str, int]]:
    """URL name -> (file in the model folder, sha256, size), from the build's manifest.

    Raises RagError (RetrieverUnavailable) with the fix when the model is not built or changed.
    """
    manifest = read_embedding_manifest(embedding_model_dir(data_dir))
    out = {}
    for name, (rel, _) in EMBEDDER_FILES.items():
        if rel == "variant":
            manifest.variant_path(BROWSER_EMBEDDING_VARIANT)  # raises with the fix if not built
            rel = manifest.variants[BROWSER_EMBEDDING_VARIANT]
        meta = manifest.files.get(rel) or {}
        path = manifest.model_dir / rel
        if not path.is_file() or path.stat().st_size != meta.get("size"):
            raise RagError(f"{path} is missing or changed since the build: run `rag models build`")
        out[name] = (rel, str(meta["sha256"]), int(meta["size"]))
    return out


def embedder_url(name: str, sha256: str) -> str:
    """The content-addressed URL path of one MiniLM file (relative to the app's root)."""
    return f"{EMBEDDER_ROUTE}/{sha256[:16]}/{name}"


def embedder_asset(digest: str, filename: str, data_dir: Path) -> Asset | None:
    """A MiniLM file behind an embedder URL, if the name is listed and the digest is its own."""
    if filename not in EMBEDDER_FILES:
        return None
    try:
        rel, sha256, _ = _embedder_files(data_dir)[filename]
    except RagError:
        return None
    if digest != sha256[:16]:
        return None
    path = embedding_model_dir(data_dir) / rel
    return Asset(
        path=path,
        media_type=EMBEDDER_FILES[filename][1],
        etag=f'"{sha256}"',
        last_modified=_http_date(path.stat().st_mtime),
        cache_control=IMMUTABLE,
    )


def embedder_manifest(data_dir: Path, node_modules: Path = NODE_MODULES) -> dict[str, Any]:
    """What the page's MiniLM scorer needs: onnxruntime-web's URLs, the model's and the vocab's."""
    version = vendor_version(VENDOR_PACKAGES["ort"], node_modules)
    spec: dict[str, Any] = {
        "name": "MiniLM",
        "model_id": "",
        "variant": BROWSER_EMBEDDING_VARIANT,
        "ort_version": version,
        "module": f"{ASSETS_ROUTE}/ort/ort.wasm.min.mjs",
        "wasm_prefix": ORT_PREFIX,
        "model": "",
        "vocab": "",
        "size": 0,
        "max_seq_length": 0,
        "available": False,
        "problem": ""
        if version
        else f"onnxruntime-web is not installed in {node_modules}: {NPM_FIX}",
    }
    try:
        files = _embedder_files(data_dir)
        manifest = read_embedding_manifest(embedding_model_dir(data_dir))
    except RagError as exc:
        spec["problem"] = spec["problem"] or str(exc)
        return spec
    _, model_sha, size = files["model.onnx"]
    spec.update(
        model_id=manifest.model_id,
        model=embedder_url("model.onnx", model_sha),
        vocab=embedder_url("vocab.txt", files["vocab.txt"][1]),
        size=size,
        max_seq_length=manifest.max_seq_length,
        available=bool(version),
    )
    return spec


def not_modified(request_headers: Mapping[str, str], asset: Asset) -> bool:
    """True when the browser's validators (If-None-Match, else If-Modified-Since) still hold."""
    tags = request_headers.get("if-none-match")
    if tags is not None:
        wanted = {t.strip().removeprefix("W/") for t in tags.split(",")}
        return "*" in wanted or asset.etag in wanted
    since = request_headers.get("if-modified-since")
    if since is None:
        return False
    try:
        then = email.utils.parsedate_to_datetime(since)
        mine = email.utils.parsedate_to_datetime(asset.last_modified)
    except (TypeError, ValueError):
        return False
    return mine <= then


def vendor_version(package: str, node_modules: Path = NODE_MODULES) -> str | None:
    """The installed version of an npm package, or None when `npm ci` has not run."""
    try:
        data = json.loads((node_modules / package / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    version = data.get("version") if isinstance(data, dict) else None
    return str(version) if version else None


def engines_manifest(data_dir: Path, node_modules: Path = NODE_MODULES) -> dict[str, Any]:
    """What the page needs to run a model itself: asset URLs, models, and the prompt wording.

    The system prompt and the draft hint are rag.prompts' own, so an answer in the browser is
    asked for exactly as the server's small model is.
    """
    models = []
    for model in BROWSER_MODELS.values():
        available, problem = True, ""
        try:
            verified_gguf(model.name, data_dir)
        except RagError as exc:
            available, problem = False, str(exc)
        models.append(
            {
                "name": model.name,
                "label": model.label,
                "size": model.size,
                "url": model_url(model),
                "available": available,
                "problem": problem,
            }
        )
    version = vendor_version(VENDOR_PACKAGES["wllama"], node_modules)
    return {
        "wllama": {
            "version": version,
            "module": f"{ASSETS_ROUTE}/wllama/index.js",
            "wasm": f"{ASSETS_ROUTE}/wllama/wllama.wasm",
            "problem": "" if version else f"wllama is not installed in {node_modules}: {NPM_FIX}",
        },
        "models": models,
        "embedder": embedder_manifest(data_dir, node_modules),
        "prompt": {
            "system": DRAFT_SYSTEM,  # the browser builds the small model's (draft) prompt
            "draft_hint": DRAFT_HINT,
            "not_in_docs": NOT_IN_DOCS,
            "reference_title": REFERENCE_TITLE,
        },
    }
