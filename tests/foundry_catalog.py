"""An empty Foundry Local model catalog on loopback, so the real SDK runs offline.

The SDK's manager reads its public catalog from Microsoft's asset gallery
(``POST https://api.catalog.azureml.ms/asset-gallery/v1.0/models`` with a JSON filter body).
``Configuration.catalog_urls`` may point it elsewhere; the path must end in
``/asset-gallery/v1.0/models`` and the answer must be JSON with an array-valued ``value``
(or ``summaries``) field (both read from the SDK's native library). An empty list keeps every
lookup local: models come from the SDK's local catalog, where converted folders are registered.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from tests.fake_openai import free_port

CATALOG_PATH = "/asset-gallery/v1.0/models"


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

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass


class _Server(ThreadingHTTPServer):
    requests: list[tuple[str, str, bytes]]


class EmptyCatalog:
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

    def __enter__(self) -> EmptyCatalog:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
