"""The FakeOpenAI server object: scripting per model name, the request log, start and stop."""

from __future__ import annotations

import itertools
import json
import socket
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Self, Unpack

from rag.measure.fake_openai.script import (
    GENERIC_REPLY,
    SETTINGS,
    WILDCARD_MODEL,
    Fault,
    ModelSettings,
    RecordedRequest,
    Reply,
    _ModelState,
    _or_generic,
    _parse_script_reply,
    _Plan,
)
from rag.measure.fake_openai.wire import _HTTPServer
from rag.procs import StartStop


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def closed_port_url() -> str:
    """A base URL on loopback where nothing listens, so connecting is refused."""
    return f"http://127.0.0.1:{free_port()}/v1"


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
