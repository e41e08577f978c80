"""The HTTP side: routing, OpenAI's streaming and non-streaming answers, injected faults."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import sys
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from rag.measure.fake_openai.script import (
    MAX_HANG_S,
    FaultKind,
    RecordedRequest,
    _Plan,
    message_text,
    tokenize,
)

if TYPE_CHECKING:
    from rag.measure.fake_openai.server import FakeOpenAI


def _compact_json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()  # compact, as OpenAI sends it


def _timings(plan: _Plan, first_delay: float, usage: dict[str, int]) -> dict[str, Any]:
    """A llama.cpp-style timings object from the scripted delays (no queue, no cache)."""
    n = usage["completion_tokens"]
    return {
        "queue_ms": 0.0,
        "prompt_n": usage["prompt_tokens"],
        "cache_n": 0,
        "prompt_ms": first_delay * 1000,
        "predicted_n": n,
        "predicted_ms": plan.token_delay_s * max(n - 1, 0) * 1000,
    }


def _count_words(text: str) -> int:
    return len(re.findall(r"\S+", text))


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() closes connections itself; never wait on a hung handler
    request_queue_size = 128  # load tests open many connections at once

    def __init__(self, address: tuple[str, int], fake: FakeOpenAI) -> None:
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conn_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (timeouts, cancelled streams) are routine here, not server bugs.
        if isinstance(sys.exc_info()[1], ConnectionError) or self.fake._stopping.is_set():
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        # Wakes handlers blocked reading a kept-alive connection or writing to a slow client.
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Aborted(Exception):
    """The handler gave up on the connection (server stopping or fault cut it)."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    server_version = "FakeOpenAI/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.fake.verbose:
            super().log_message(format, *args)

    # -- routing ---------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        if path.endswith("/models"):
            created = int(time.time())
            data = [
                {"id": name, "object": "model", "created": created, "owned_by": "fake-openai"}
                for name in self.server.fake.models
            ]
            self._send_json(200, {"object": "list", "data": data})
        elif path.endswith("/health") or path == "":
            self._send_json(200, {"status": "ok"})
        else:
            self._send_error_json(404, f"no route for GET {path}", "invalid_request_error")

    def do_POST(self) -> None:
        path = urlsplit(self.path).path.rstrip("/")
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not path.endswith("/chat/completions"):
            self._send_error_json(404, f"no route for POST {path}", "invalid_request_error")
            return
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the request body must be a JSON object")
        except ValueError as exc:
            self._send_error_json(400, f"invalid JSON body: {exc}", "invalid_request_error")
            return
        fake = self.server.fake
        if fake.api_key and self.headers.get("Authorization") != f"Bearer {fake.api_key}":
            self._send_error_json(401, "Incorrect API key provided.", "invalid_request_error")
            return
        model = str(body.get("model") or "")
        messages = body.get("messages")
        record = RecordedRequest(
            model=model,
            messages=list(messages) if isinstance(messages, list) else [],
            body=body,
            path=path,
            headers={k.lower(): v for k, v in self.headers.items()},
        )
        fake._record(record)
        try:
            plan = fake._plan(model, body)
        except Exception as exc:  # a test's reply callable failed: say so instead of hanging
            record.outcome = f"error:{exc!r}"
            self._send_error_json(
                500, f"scripted reply for {model!r} raised {exc!r}", "server_error"
            )
            return
        record.outcome = f"fault:{plan.fault.kind}" if plan.fault else "ok"
        try:
            self._answer(plan, body)
        except (_Aborted, BrokenPipeError, ConnectionResetError):
            if not (plan.fault or fake._stopping.is_set()):
                record.outcome = "disconnected"
            self._drop_connection()

    # -- answering -------------------------------------------------------------------------

    def _answer(self, plan: _Plan, body: dict[str, Any]) -> None:
        fault = plan.fault
        kind = fault.kind if fault else None
        if fault is not None and kind is FaultKind.STATUS:
            message = fault.message or f"injected fault: HTTP {fault.status_code}"
            headers: dict[str, str] = {}
            if fault.retry_after_s is not None:
                headers["retry-after-ms"] = str(int(fault.retry_after_s * 1000))
            self._send_error_json(fault.status_code, message, "server_error", headers)
            return
        if fault is not None and kind is FaultKind.HANG and fault.n_tokens is None:
            self._pause(fault.seconds)
            raise _Aborted
        first_delay = plan.first_token_delay_s
        if fault is not None and kind is FaultKind.SLOW_FIRST_TOKEN:
            first_delay = fault.seconds
        tokens = [] if kind is FaultKind.EMPTY else tokenize(plan.text)
        usage = self._usage(body, tokens)
        if body.get("stream"):
            self._stream(plan, body, tokens, first_delay, usage)
        else:
            self._complete(plan, tokens, first_delay, usage)

    def _stream(
        self,
        plan: _Plan,
        body: dict[str, Any],
        tokens: list[str],
        first_delay: float,
        usage: dict[str, int],
    ) -> None:
        options = body.get("stream_options")
        include_usage = plan.usage and isinstance(options, dict) and options.get("include_usage")
        cid, created = self.server.fake._next_id(), int(time.time())

        # llama.cpp's rule: logprobs only with top_logprobs set as well (else null)
        want_logprobs = body.get("logprobs") is True and isinstance(body.get("top_logprobs"), int)

        def logprobs_of(delta: dict[str, Any]) -> dict[str, Any] | None:
            token = delta.get("content")
            if not want_logprobs or not token:
                return None
            lp = plan.logprob(token) if callable(plan.logprob) else plan.logprob
            entry = {"token": token, "logprob": lp, "bytes": None, "top_logprobs": []}
            return {"content": [entry], "refusal": None}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            event: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": plan.model,
                "choices": [
                    {
                        "index": 0,
                        "delta": delta,
                        "logprobs": logprobs_of(delta),
                        "finish_reason": finish,
                    }
                ],
            }
            if include_usage:
                event["usage"] = None  # as OpenAI does on every chunk but the last
            return event

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._event(chunk({"role": "assistant", "content": ""}))
        fault = plan.fault
        for i in range(len(tokens) + 1):
            if fault is not None and fault.n_tokens == i:
                if fault.kind is FaultKind.CUT_AFTER:
                    raise _Aborted
                if fault.kind is FaultKind.HANG:
                    self._pause(fault.seconds)
                    raise _Aborted
                if fault.kind is FaultKind.MALFORMED:
                    self._write_chunk(b'data: {"id": "' + cid.encode() + b'", "choices": [\n\n')
            if i == len(tokens):
                break
            self._pause(first_delay if i == 0 else plan.token_delay_s)
            self._event(chunk({"content": tokens[i]}))
        self._event(chunk({}, "stop"))
        if include_usage:
            self._event({**chunk({}), "choices": [], "usage": usage})
        if plan.timings:  # llama.cpp's server (and rag.models.llama_cpp_server) end like this
            self._event({**chunk({}), "choices": [], "timings": _timings(plan, first_delay, usage)})
        self._write_chunk(b"data: [DONE]\n\n")
        self._write_chunk(b"")  # the zero-length chunk that ends the body

    def _complete(
        self, plan: _Plan, tokens: list[str], first_delay: float, usage: dict[str, int]
    ) -> None:
        fault = plan.fault
        if fault is not None and fault.kind is FaultKind.HANG:
            self._pause(fault.seconds)
            raise _Aborted
        self._pause(first_delay + plan.token_delay_s * max(len(tokens) - 1, 0))
        payload = {
            "id": self.server.fake._next_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": plan.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(tokens)},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
        data = _compact_json(payload)
        if fault is not None and fault.kind is FaultKind.MALFORMED:
            data = b'{"id": "chatcmpl-broken", "choices": ['
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if fault is not None and fault.kind is FaultKind.CUT_AFTER:
            self.wfile.write(data[: len(data) // 2])
            raise _Aborted
        self.wfile.write(data)

    # -- helpers ---------------------------------------------------------------------------

    def _usage(self, body: dict[str, Any], tokens: list[str]) -> dict[str, int]:
        messages = body.get("messages")
        if not isinstance(messages, list):
            messages = []
        prompt = sum(_count_words(message_text(m)) for m in messages if isinstance(m, Mapping))
        return {
            "prompt_tokens": prompt,
            "completion_tokens": len(tokens),
            "total_tokens": prompt + len(tokens),
        }

    def _pause(self, seconds: float) -> None:
        if seconds > 0 and self.server.fake._stopping.wait(min(seconds, MAX_HANG_S)):
            raise _Aborted
        if self.server.fake._stopping.is_set():
            raise _Aborted

    def _event(self, payload: dict[str, Any]) -> None:
        self._write_chunk(b"data: " + _compact_json(payload) + b"\n\n")

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _drop_connection(self) -> None:
        # FIN, not RST: the client still reads every byte sent, then sees the body end early.
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send_json(
        self, status: int, payload: Any, headers: Mapping[str, str] | None = None
    ) -> None:
        data = _compact_json(payload)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_error_json(
        self,
        status: int,
        message: str,
        error_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        error = {"message": message, "type": error_type, "param": None, "code": str(status)}
        self._send_json(status, {"error": error}, headers)
