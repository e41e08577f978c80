"""Talking to Milvus: one shared client per (uri, token), retries on transient errors, clear failures."""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from rag.config import MilvusConfig
from rag.errors import RetrieverUnavailable

BACKOFF_S = 0.5  # first retry delay; doubles each time
TRANSIENT_MARKERS = (
    "unavailable",
    "fail connecting",
    "connection refused",
    "deadline exceeded",
    "rate limit",
    "too many requests",
    "socket closed",
)
T = TypeVar("T")
log = logging.getLogger(__name__)


class _DropMvccWarning(logging.Filter):
    """milvus-lite returns no MVCC timestamp to query iterators; pymilvus warns on every scan."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "mvccTs" not in record.getMessage()


logging.getLogger("pymilvus.client.iterator.query_iterator").addFilter(_DropMvccWarning())


def display_uri(uri: str) -> str:
    """The URI without any user:password part, fit for messages and saved state."""
    if uri.endswith(".db") or "@" not in uri:
        return uri
    parts = urlsplit(uri)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _is_transient(exc: BaseException) -> bool:
    text = str(exc).lower()
    if "retry timeout" in text or "retry run out" in text:
        return False  # pymilvus already retried this call for timeout_s: give up now
    code = getattr(exc, "code", None)
    code = code() if callable(code) else code
    if getattr(code, "name", None) in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"):
        return True
    return any(marker in text for marker in TRANSIENT_MARKERS)


# ---- connections: one client per (uri, token), shared by every retriever in the process ----

_CLIENTS: dict[tuple[str, str], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def _client_for(uri: str, token: str, timeout: float) -> Any:
    from pymilvus import MilvusClient

    # pymilvus logs every failed RPC with a traceback on its own stderr handler; our
    # RetrieverUnavailable already carries the reason, so keep the CLI and chat logs readable.
    # (Set the "pymilvus" logger to DEBUG again to see them.)
    logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
    with _CLIENTS_LOCK:
        client = _CLIENTS.get((uri, token))
        if client is None:
            options: dict[str, Any] = {}
            if uri.endswith(".db"):
                Path(uri).parent.mkdir(parents=True, exist_ok=True)
                # The embedded server runs gRPC's default ping policy and answers pymilvus'
                # idle keepalive pings (every 10 s) with GOAWAY "too_many_pings" while a long
                # build encodes; in process there is no idle connection worth probing.
                options["grpc_options"] = {"grpc.keepalive_permit_without_calls": 0}
            client = MilvusClient(uri=uri, token=token, timeout=timeout, **options)
            _CLIENTS[(uri, token)] = client
        return client


def _forget_client(uri: str, token: str) -> None:
    with _CLIENTS_LOCK:
        client = _CLIENTS.pop((uri, token), None)
    if client is not None:
        try:
            client.close()
        except Exception as exc:  # closing a broken channel must not hide the real error
            log.debug("closing the Milvus client for %s failed: %s", display_uri(uri), exc)


def release(uri: str) -> None:
    """Close this process's clients for ``uri``; for a ``.db`` also stop its embedded milvus-lite."""
    resolved = resolve_uri(uri)
    with _CLIENTS_LOCK:
        keys = [key for key in _CLIENTS if key[0] == resolved]
    for key in keys:
        _forget_client(*key)
    if resolved.endswith(".db"):
        try:
            manager: Any = importlib.import_module("milvus_lite.server_manager")
        except ImportError:
            return
        manager.server_manager_instance.release_server(resolved)


def resolve_uri(uri: str) -> str:
    """A ``.db`` path made absolute (milvus-lite keys its servers by path); URLs as given."""
    return str(Path(uri).expanduser().resolve()) if uri.endswith(".db") else uri


class Connection:
    """Calls on the Milvus at ``uri`` with the configured timeout, retries and token."""

    def __init__(self, uri: str, settings: MilvusConfig) -> None:
        self.uri = uri
        self.settings = settings
        self.client: Any = None

    def token(self) -> str:
        env = self.settings.token_env
        if not env:
            return ""
        token = os.environ.get(env)
        if not token:
            raise RetrieverUnavailable(
                f"retrieval.milvus.token_env names {env}, but {env} is not set; "
                f"export {env}=user:password (or an API token), or set token_env: null"
            )
        return token

    def unavailable(self, what: str, exc: BaseException) -> RetrieverUnavailable:
        reason = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        where = display_uri(self.uri)
        hint = "check that Milvus is running there and that MILVUS_URI (or retrieval.milvus.uri) points at it"
        if self.uri.endswith(".db") and "open local milvus failed" in reason.lower():
            hint = (
                "milvus-lite allows one process per data directory: stop the other process, or "
                f"serve it with `milvus-lite server --data-dir {where} --host 127.0.0.1` and set "
                "MILVUS_URI=http://127.0.0.1:19530 in every process"
            )
        return RetrieverUnavailable(
            f"retrieval on Milvus at {where} is unavailable ({what} failed: {reason}); {hint}. "
            "What still works: the lexical retriever, and the local store "
            "(retrieval.store: local or RAG__RETRIEVAL__STORE=local, then `rag index`)."
        )

    def call(self, what: str, fn: Callable[[Any], T]) -> T:
        """``fn(client)``, retried with backoff on transient gRPC errors; RetrieverUnavailable after."""
        from pymilvus.exceptions import MilvusException

        grpc: Any = importlib.import_module("grpc")  # no type stubs; pymilvus depends on it
        failures: tuple[type[BaseException], ...] = (MilvusException, grpc.RpcError)
        delay = BACKOFF_S
        for attempt in range(self.settings.retries + 1):
            try:
                if self.client is None:
                    self.client = _client_for(self.uri, self.token(), self.settings.timeout_s)
                return fn(self.client)
            except failures as exc:
                # gRPC channels reconnect by themselves: keep the (shared) client and retry
                if not _is_transient(exc) or attempt == self.settings.retries:
                    stage = what if self.client is not None else "connecting"
                    raise self.unavailable(stage, exc) from None
                log.info("milvus %s failed (%s); retrying in %.1f s", what, exc, delay)
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover
