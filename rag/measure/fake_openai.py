"""A fake OpenAI chat-completions server (stdlib only) for tests, benchmarks and browser runs.

It speaks the real wire protocol over real sockets, so base-URL handling, streaming, retries
and timeouts are exercised exactly as against OpenAI, llama.cpp's server or Ollama.

In-process::

    with FakeOpenAI() as fake:
        fake.script("small", ["Paris [1]", Fault.status(503), echo_context])
        client = OpenAI(base_url=fake.base_url, api_key="test")

Standalone, e.g. behind a separate ``chainlit run`` or a load benchmark::

    python -m rag.measure.fake_openai --port 8099 --script script.json

Script format::

    {"models": {"small": {"default": "@echo-context", "replies": ["Hi [1]", {"fault": "status",
     "status": 503}], "token_delay_s": 0.01, "first_token_delay_s": 0.2, "usage": false,
     "logprob": -0.3, "timings": true}}}

Log-probabilities are sent, as llama.cpp's server does, only when the request sets
``logprobs: true`` and ``top_logprobs`` (>= 0): every content token gets ``logprob`` (a number,
or in-process a callable token -> number). ``timings: true`` ends each stream with a
llama.cpp-style ``timings`` object derived from the scripted delays.

A reply in a script is a string, the special string "@echo-context" (see ``echo_context``) or a
fault object: {"fault": "status"|"hang"|"slow_first_token"|"cut_after"|"malformed"|"empty", ...}
with the keyword arguments of the matching ``Fault`` constructor. A model named "*" answers for
names that have no entry of their own.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import re
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self, TypeAlias, TypedDict, Unpack
from urllib.parse import urlsplit

from rag.procs import StartStop

GENERIC_REPLY = "OK [1]"
NOT_FOUND_REPLY = "I could not find that in the documents."
ECHO_CONTEXT = "@echo-context"
WILDCARD_MODEL = "*"
MAX_HANG_S = 120.0

_TOKEN_RE = re.compile(r"\S+\s*|\s+")
_MARKER_RE = re.compile(r"^\s*\[(\d+)\]")
_SOURCE_TAG_RE = re.compile(r'^\s*<source n="(\d+)"[^>]*>\s*$')
_SENTENCE_RE = re.compile(r"^(.+?[.!?])(?=\s|$)")


class FaultKind(StrEnum):
    """The failures the fake can inject."""

    STATUS = "status"  # HTTP error with an OpenAI-style JSON error body
    HANG = "hang"  # never answer (or stall mid-stream) until the server stops or the cap passes
    SLOW_FIRST_TOKEN = "slow_first_token"  # headers at once, first content after `seconds`
    CUT_AFTER = "cut_after"  # n tokens, then the connection is closed without [DONE]
    MALFORMED = "malformed"  # a data: line that is not JSON, after n tokens
    EMPTY = "empty"  # a well-formed stream with no content


@dataclass(frozen=True)
class Fault:
    """A failure to inject into the next request for a model; build one with the classmethods."""

    kind: FaultKind
    status_code: int = 500
    message: str = ""
    seconds: float = 0.0
    n_tokens: int | None = None
    reply: str | ReplyFn | None = None  # content streamed before a cut/stall; model default if None
    retry_after_s: float | None = None

    @classmethod
    def status(
        cls, code: int = 503, message: str = "", *, retry_after_s: float | None = None
    ) -> Fault:
        """HTTP `code` with a JSON error body; `retry_after_s` sets the retry-after-ms header."""
        if code < 400:
            raise ValueError(f"Fault.status needs an error code >= 400, got {code}")
        return cls(FaultKind.STATUS, status_code=code, message=message, retry_after_s=retry_after_s)

    @classmethod
    def hang(
        cls,
        max_s: float = MAX_HANG_S,
        *,
        after_tokens: int | None = None,
        reply: Reply | None = None,
    ) -> Fault:
        """Send nothing (or stall after `after_tokens` stream tokens) until stop() or `max_s`."""
        return cls(FaultKind.HANG, seconds=max_s, n_tokens=after_tokens, reply=_content(reply))

    @classmethod
    def slow_first_token(cls, seconds: float, reply: Reply | None = None) -> Fault:
        """Answer normally, but wait `seconds` before the first content token."""
        return cls(FaultKind.SLOW_FIRST_TOKEN, seconds=seconds, reply=_content(reply))

    @classmethod
    def cut_after(cls, n_tokens: int, reply: Reply | None = None) -> Fault:
        """Send `n_tokens` content tokens, then close the connection without [DONE]."""
        return cls(FaultKind.CUT_AFTER, n_tokens=n_tokens, reply=_content(reply))

    @classmethod
    def malformed(cls, after_tokens: int = 0, reply: Reply | None = None) -> Fault:
        """Send a non-JSON `data:` line after `after_tokens` tokens (non-stream: a bad body)."""
        return cls(FaultKind.MALFORMED, n_tokens=after_tokens, reply=_content(reply))

    @classmethod
    def empty(cls) -> Fault:
        """A well-formed response with no content at all."""
        return cls(FaultKind.EMPTY)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fault:
        """Build a Fault from a script object such as {"fault": "cut_after", "n_tokens": 3}."""
        args = dict(data)
        kind = args.pop("fault", None)
        builders: dict[str, Callable[..., Fault]] = {
            FaultKind.STATUS: lambda status=503, **kw: cls.status(status, **kw),
            FaultKind.HANG: lambda seconds=MAX_HANG_S, **kw: cls.hang(seconds, **kw),
            FaultKind.SLOW_FIRST_TOKEN: cls.slow_first_token,
            FaultKind.CUT_AFTER: cls.cut_after,
            FaultKind.MALFORMED: cls.malformed,
            FaultKind.EMPTY: cls.empty,
        }
        if kind not in builders:
            raise ValueError(
                f"unknown fault {kind!r} in {dict(data)!r}; choose from {', '.join(builders)}"
            )
        if isinstance(args.get("reply"), str):
            args["reply"] = _parse_script_reply(args["reply"])
        try:
            return builders[kind](**args)
        except TypeError as exc:
            raise ValueError(f"bad arguments for fault {kind!r} in {dict(data)!r}: {exc}") from exc


ReplyFn: TypeAlias = Callable[[dict[str, Any]], str | Fault]
Reply: TypeAlias = str | ReplyFn | Fault


def _content(reply: Reply | None) -> str | ReplyFn | None:
    if isinstance(reply, Fault):
        raise TypeError("a Fault's reply must be a string or a callable, not another Fault")
    return reply


def tokenize(text: str) -> list[str]:
    """Split a reply into stream pieces: words with their trailing whitespace."""
    return _TOKEN_RE.findall(text)


def message_text(message: Mapping[str, Any]) -> str:
    """The text of a chat message whose content is a string or a list of text parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


def echo_context(request: Mapping[str, Any]) -> str:
    """Answer with the first sentence of passage [1] in the prompt, cited: "<sentence> [1]".

    The passage is the first line of text of the ``<source n="1">`` block (after its heading
    line), or the first non-blank line after a line that starts with "[1]" (or the rest of that
    line when nothing follows it). The newest system/user message holding passage 1 wins, so in
    a multi-turn chat the current turn's context is used.
    """
    messages = [m for m in request.get("messages") or [] if isinstance(m, Mapping)]
    for message in reversed(messages):
        if message.get("role") not in ("system", "user"):
            continue
        lines = message_text(message).splitlines()
        for i, line in enumerate(lines):
            tag = _SOURCE_TAG_RE.match(line)
            if tag and tag.group(1) == "1":
                body = [x.strip() for x in lines[i + 1 :] if x.strip()]
                if len(body) > 1 and not body[1].startswith("</source"):
                    sentence = _SENTENCE_RE.match(body[1])
                    return f"{sentence.group(1) if sentence else body[1]} [1]"
            marker = _MARKER_RE.match(line)
            if not marker or marker.group(1) != "1":
                continue
            passage = line[marker.end() :].strip()
            for following in lines[i + 1 :]:
                if not following.strip():
                    continue
                if not _MARKER_RE.match(following):
                    passage = following.strip()
                break
            if passage:
                sentence = _SENTENCE_RE.match(passage)
                return f"{sentence.group(1) if sentence else passage} [1]"
    return NOT_FOUND_REPLY


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def closed_port_url() -> str:
    """A base URL on loopback where nothing listens, so connecting is refused."""
    return f"http://127.0.0.1:{free_port()}/v1"


@dataclass
class RecordedRequest:
    """One chat-completions request as the server received it."""

    model: str
    messages: list[dict[str, Any]]
    body: dict[str, Any]
    path: str
    headers: dict[str, str]  # lower-cased names
    received_at: float = field(default_factory=time.monotonic)
    # "in_progress", then "ok", "fault:<kind>", "disconnected" or "error:<message>"
    outcome: str = "in_progress"

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def text(self) -> str:
        """All message contents joined by newlines, for `in` assertions on the prompt."""
        return "\n".join(message_text(m) for m in self.messages)


LogprobFn: TypeAlias = Callable[[str], float]
DEFAULT_LOGPROB = -0.25


class ModelSettings(TypedDict, total=False):
    """How a model's streams behave; in ``script``/``configure`` a key left out or None keeps it."""

    token_delay_s: float | None
    first_token_delay_s: float | None
    usage: bool | None
    logprob: float | LogprobFn | None
    timings: bool | None


SETTINGS: tuple[str, ...] = tuple(ModelSettings.__annotations__)


@dataclass
class _ModelState:
    queue: deque[Reply] = field(default_factory=deque)
    default: Reply | None = None
    token_delay_s: float = 0.0
    first_token_delay_s: float = 0.0
    usage: bool = True
    logprob: float | LogprobFn = DEFAULT_LOGPROB
    timings: bool = False


@dataclass(frozen=True)
class _Plan:
    model: str
    text: str
    fault: Fault | None
    token_delay_s: float
    first_token_delay_s: float
    usage: bool
    logprob: float | LogprobFn = DEFAULT_LOGPROB
    timings: bool = False


class FakeOpenAI(StartStop):
    """An OpenAI-compatible chat server on loopback, scripted per model name.

    Any model name is accepted; unscripted ones answer ``GENERIC_REPLY``. Thread-safe: tests may
    script and read the log while requests are in flight.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str | None = None,
        verbose: bool = False,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.api_key = api_key  # when set, requests without "Bearer <api_key>" get 401
        self.verbose = verbose
        self._models: dict[str, _ModelState] = {}
        self._requests: list[RecordedRequest] = []
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind and serve in a daemon thread; returns self."""
        if self._httpd is not None:
            raise RuntimeError("FakeOpenAI is already running; call stop() first")
        self._stopping.clear()
        self._httpd = _HTTPServer((self.host, self._requested_port), self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-openai:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; hung and streaming requests are dropped, nothing blocks."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("FakeOpenAI is not running; use `with FakeOpenAI() as fake:`")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Server root, e.g. http://127.0.0.1:PORT."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL, e.g. http://127.0.0.1:PORT/v1."""
        return f"{self.url}/v1"

    # -- scripting -------------------------------------------------------------------------

    def script(
        self,
        model: str,
        replies: Iterable[Reply] = (),
        *,
        default: Reply | None = None,
        **settings: Unpack[ModelSettings],
    ) -> None:
        """Queue `replies` for `model` (one per request, in order); None keeps a setting as is.

        A reply is a string, a callable taking the request JSON and returning a string or a
        Fault, or a Fault. `usage=False` drops the usage chunk even when the client asks for it,
        as llama.cpp's server does.
        """
        with self._cond:
            state = self._models.setdefault(model, _ModelState())
            state.queue.extend(replies)
            if default is not None:
                state.default = default
            for key, value in settings.items():
                if key not in SETTINGS:
                    raise TypeError(f"unknown setting {key!r}; choose from {', '.join(SETTINGS)}")
                if value is not None:
                    setattr(state, key, value)

    def set_default(self, model: str, reply: Reply) -> None:
        """The reply `model` gives once its queue is empty (a Fault makes it fail every time)."""
        self.script(model, default=reply)

    def configure(self, model: str, **settings: Unpack[ModelSettings]) -> None:
        """Set timing, usage, logprob or timings reporting for `model` without queueing replies."""
        self.script(model, **settings)

    def pending(self, model: str) -> int:
        """How many queued replies `model` has not used yet."""
        with self._cond:
            state = self._models.get(model)
            return len(state.queue) if state else 0

    @property
    def models(self) -> list[str]:
        """Scripted model names, as GET /v1/models lists them."""
        with self._cond:
            return [name for name in self._models if name != WILDCARD_MODEL]

    def reset(self) -> None:
        """Forget all scripts, settings and recorded requests."""
        with self._cond:
            self._models.clear()
            self._requests.clear()

    def load_script(self, data: Mapping[str, Any]) -> None:
        """Apply a script object: {"models": {name: {"default", "replies", ...}}}."""
        allowed = {"default", "replies", *SETTINGS}
        unknown_top = set(data) - {"models"}
        if unknown_top:
            raise ValueError(f"unknown script keys {sorted(unknown_top)}; the only key is 'models'")
        for name, spec in dict(data.get("models") or {}).items():
            unknown = set(spec) - allowed
            if unknown:
                raise ValueError(
                    f"unknown keys {sorted(unknown)} for model {name!r}; "
                    f"choose from {', '.join(sorted(allowed))}"
                )
            default = spec.get("default")
            self.script(
                name,
                [_parse_script_reply(r) for r in spec.get("replies", [])],
                default=None if default is None else _parse_script_reply(default),
                **{key: spec[key] for key in SETTINGS if key in spec},
            )

    @classmethod
    def from_script(cls, path: str | Path, **kwargs: Any) -> FakeOpenAI:
        """A (not yet started) server configured from a JSON script file."""
        fake = cls(**kwargs)
        fake.load_script(json.loads(Path(path).read_text(encoding="utf-8")))
        return fake

    # -- request log -----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of all chat-completions requests so far, oldest first."""
        with self._cond:
            return list(self._requests)

    def requests_for(self, model: str) -> list[RecordedRequest]:
        """The recorded requests that named `model`."""
        return [r for r in self.requests if r.model == model]

    def wait_for_requests(
        self, n: int, *, model: str | None = None, timeout: float = 5.0
    ) -> list[RecordedRequest]:
        """Wait until `n` requests (for `model`, if given) have arrived; TimeoutError if not."""

        def matching() -> list[RecordedRequest]:
            return [r for r in self._requests if model is None or r.model == model]

        with self._cond:
            if not self._cond.wait_for(lambda: len(matching()) >= n, timeout=timeout):
                got = len(matching())
                raise TimeoutError(f"expected {n} request(s) for {model or 'any model'}, got {got}")
            return matching()

    # -- internals used by the handler -----------------------------------------------------

    def _record(self, record: RecordedRequest) -> None:
        with self._cond:
            self._requests.append(record)
            self._cond.notify_all()

    def _plan(self, model: str, body: dict[str, Any]) -> _Plan:
        with self._cond:
            state = self._models.get(model) or self._models.get(WILDCARD_MODEL) or _ModelState()
            item: Reply = state.queue.popleft() if state.queue else _or_generic(state.default)
            default = _or_generic(state.default)
            settings = (
                state.token_delay_s,
                state.first_token_delay_s,
                state.usage,
                state.logprob,
                state.timings,
            )
        fault: Fault | None = None
        # Callables run outside the lock: they may be slow or script further replies.
        for _ in range(4):
            if isinstance(item, Fault):
                if fault is not None:  # a default that is itself a Fault has no content to give
                    item = GENERIC_REPLY
                    continue
                fault = item
                item = item.reply if item.reply is not None else default
            elif callable(item):
                item = item(body)
            else:
                break
        if not isinstance(item, str):
            raise TypeError(f"scripted reply for {model!r} did not resolve to a string: {item!r}")
        return _Plan(model, item, fault, *settings)

    def _next_id(self) -> str:
        return f"chatcmpl-fake{next(self._ids)}"


def _or_generic(reply: Reply | None) -> Reply:
    return GENERIC_REPLY if reply is None else reply


def _parse_script_reply(raw: Any) -> Reply:
    if raw == ECHO_CONTEXT:
        return echo_context
    if isinstance(raw, str):
        return raw
    if isinstance(raw, Mapping):
        return Fault.from_json(raw)
    raise ValueError(f"a scripted reply must be a string or a fault object, got {raw!r}")


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


def main(argv: list[str] | None = None) -> int:
    """Run the fake until SIGINT/SIGTERM: python -m rag.measure.fake_openai --port N --script F."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--script", type=Path, help="JSON script; without it every model says OK")
    parser.add_argument("--api-key", help="require this bearer token")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    kwargs: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "api_key": args.api_key,
        "verbose": args.verbose,
    }
    try:
        fake = (
            FakeOpenAI.from_script(args.script, **kwargs) if args.script else FakeOpenAI(**kwargs)
        )
    except (OSError, ValueError) as exc:
        print(f"fake-openai: cannot load script {args.script}: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    with fake:
        models = ", ".join(fake.models) or "any model"
        print(f"fake-openai listening on {fake.base_url} ({models})", flush=True)
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
