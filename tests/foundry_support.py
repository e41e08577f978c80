"""Foundry Local test support: the converted SmolLM2, and an empty model catalog on loopback.

An empty catalog on loopback lets the real SDK run offline.

The SDK's manager reads its public catalog from Microsoft's asset gallery
(``POST https://api.catalog.azureml.ms/asset-gallery/v1.0/models`` with a JSON filter body).
``Configuration.catalog_urls`` may point it elsewhere; the path must end in
``/asset-gallery/v1.0/models`` and the answer must be JSON with an array-valued ``value``
(or ``summaries``) field (both read from the SDK's native library). An empty list keeps every
lookup local: models come from the SDK's local catalog, where converted folders are registered.
"""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

import pytest

from rag.models.foundry import sdk_installed
from rag.models.foundry_build import build_foundry, is_converted, missing_build_modules
from rag.procs import StartStop
from tests.fake_openai import free_port

CATALOG_PATH = "/asset-gallery/v1.0/models"
SMOL = "smollm2-135m-instruct"


def require_extra() -> None:
    """Skip without the `foundry` extra, unless `make test` says it must be there."""
    missing = missing_build_modules() + ([] if sdk_installed() else ["foundry-local-sdk"])
    if missing:
        msg = f"the `foundry` extra is not installed (missing: {', '.join(missing)})"
        if os.environ.get("RAG_REQUIRE_FOUNDRY") == "1":
            pytest.fail(msg + "; `make install` installs it")
        pytest.skip(msg)


def converted_smollm2(repo_root: Path) -> Path:
    """SmolLM2 in ORT GenAI format under the repo's .rag/ (converted on the first run only)."""
    require_extra()
    summary = build_foundry(repo_root / ".rag", [SMOL], progress=print)
    path = Path(summary[SMOL]["path"])
    assert is_converted(path)
    return path


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.server.requests.append((self.command, self.path, self.rfile.read(length)))
        body = json.dumps({"value": []}).encode()
        status = 200 if self.path.split("?")[0] == CATALOG_PATH else 404
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    requests: list[tuple[str, str, bytes]]


class EmptyCatalog(StartStop):
    """``with EmptyCatalog() as cat: cat.url`` — the catalog URL to give the SDK."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", free_port()), _Handler)
        self._server.requests = []
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{CATALOG_PATH}"

    @property
    def requests(self) -> list[tuple[str, str, bytes]]:
        return list(self._server.requests)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
