"""llama-cpp-python's OpenAI server, plus the usage and timings its streams leave out.

``python -m rag.models.llama_cpp_server <the arguments of python -m llama_cpp.server>`` runs
llama-cpp-python's server unchanged, except that every streamed chat completion ends with one
more chunk before ``[DONE]``, shaped like llama.cpp's own server's last chunk::

    {"object": "chat.completion.chunk", "choices": [],
     "usage": {"prompt_tokens": 1203, "completion_tokens": 31, "total_tokens": 1234},
     "timings": {"queue_ms": 0.4, "prompt_n": 1051, "cache_n": 152, "prompt_ms": 6120.3,
                 "prompt_per_second": 171.7, "predicted_n": 31, "predicted_ms": 1402.5,
                 "predicted_per_second": 21.4}}

It also stops llama-cpp-python from sorting the whole vocabulary in Python for every token
when logprobs are asked for (see ``top_sorted``): with ``top_logprobs: 0`` that sort is thrown
away, and it cost more than decoding the token.

llama-cpp-python 0.3.36 streams neither usage nor timings (it only prints ``llama_perf`` lines
to its log), so without this the client cannot tell queueing, prompt reading and decoding
apart. ``queue_ms`` is the time a request waited for the model lock (one request runs at a
time); ``prompt_ms`` runs from taking the lock to the first sampled token (chat template,
tokenising, reading the uncached prompt tokens); ``predicted_ms`` from the first to the last
token; ``cache_n`` prompt tokens were reused from the previous request's KV cache (or the
server's prompt cache) and not read again.
"""

from __future__ import annotations

import builtins
import heapq
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class _Trace:
    arrived: float
    started: float
    prompt_total: int = 0
    cached: int = 0
    generated: int = 0
    first: float | None = None
    last: float = 0.0


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class _Running:
    """The running request's top_logprobs count (the model lock runs one request at a time)."""

    top_k: int | None = None


def top_sorted(iterable: Any, /, *, key: Any = None, reverse: bool = False) -> list[Any]:
    """``sorted`` for llama_cpp.llama, whose only calls sort the whole vocabulary (151,936
    (logprob, id) pairs for Qwen) in Python for every generated token, to keep the first
    top_logprobs of them. nlargest gives the same first k items without the full sort."""
    k = _Running.top_k
    if k is not None and reverse and key is None:
        return heapq.nlargest(k, iterable)
    return builtins.sorted(iterable, key=key, reverse=reverse)


def timings_chunk(trace: _Trace, end: float, last: dict[str, Any] | None) -> dict[str, Any]:
    """The closing chunk for one traced completion."""
    first = trace.first if trace.first is not None else end
    prompt_ms = (first - trace.started) * 1000
    predicted_ms = (trace.last - first) * 1000 if trace.generated > 1 else 0.0
    prompt_n = max(trace.prompt_total - trace.cached, 0)
    return {
        "id": (last or {}).get("id", "chatcmpl-timings"),
        "object": "chat.completion.chunk",
        "created": (last or {}).get("created", int(time.time())),
        "model": (last or {}).get("model", ""),
        "choices": [],
        "usage": {
            "prompt_tokens": trace.prompt_total,
            "completion_tokens": trace.generated,
            "total_tokens": trace.prompt_total + trace.generated,
        },
        "timings": {
            "queue_ms": round((trace.started - trace.arrived) * 1000, 2),
            "prompt_n": prompt_n,
            "cache_n": trace.cached,
            "prompt_ms": round(prompt_ms, 2),
            "prompt_per_second": round(prompt_n / (prompt_ms / 1000), 2) if prompt_ms > 0 else 0,
            "predicted_n": trace.generated,
            "predicted_ms": round(predicted_ms, 2),
            "predicted_per_second": (
                round((trace.generated - 1) / (predicted_ms / 1000), 2) if predicted_ms > 0 else 0
            ),
        },
    }


def install() -> None:
    """Patch llama-cpp-python's server in this process so streams end with usage and timings."""
    import llama_cpp
    import llama_cpp.llama as llama_module
    from llama_cpp.server import app as server_app

    original_generate = llama_cpp.Llama.generate
    original_publisher = server_app.get_event_publisher

    def generate(self: Any, tokens: Any, *args: Any, **kwargs: Any) -> Iterator[int]:
        trace: _Trace | None = getattr(self, "_rag_trace", None)
        tokens = list(tokens)
        if trace is not None:
            trace.prompt_total = len(tokens)
            if self.n_tokens > 0:  # Llama.generate reuses the longest common prefix
                reused = _common_prefix(self._input_ids.tolist(), tokens)
                trace.cached = max(min(reused, len(tokens) - 1), 0)
        for token in original_generate(self, tokens, *args, **kwargs):
            if trace is not None:
                now = time.perf_counter()
                if trace.first is None:
                    trace.first = now
                if not llama_cpp.llama_vocab_is_eog(self._model.vocab, token):
                    trace.generated += 1
                    trace.last = now
            yield token

    async def get_event_publisher(
        request: Any,
        inner_send_chan: Any,
        body: Any,
        body_model: str | None,
        llama_call: Callable[..., Any],
        kwargs: dict[str, Any],
    ) -> None:
        arrived = time.perf_counter()

        def traced_call(llama: Any, **kw: Any) -> Any:
            trace = _Trace(arrived=arrived, started=time.perf_counter())
            llama._rag_trace = trace
            top = kw.get("top_logprobs")
            _Running.top_k = (top if isinstance(top, int) else 0) if kw.get("logprobs") else None
            result = llama_call(llama, **kw)
            if isinstance(result, dict):  # not a stream
                llama._rag_trace = None
                return result
            return _closing(result, trace, llama)

        await original_publisher(
            request=request,
            inner_send_chan=inner_send_chan,
            body=body,
            body_model=body_model,
            llama_call=traced_call,
            kwargs=kwargs,
        )

    def _closing(chunks: Iterator[dict[str, Any]], trace: _Trace, llama: Any) -> Iterator[Any]:
        last: dict[str, Any] | None = None
        try:
            for chunk in chunks:
                last = chunk
                yield chunk
        finally:
            llama._rag_trace = None
            _Running.top_k = None
        yield timings_chunk(trace, time.perf_counter(), last)

    # Both are looked up at call time (Llama.generate by _create_completion, the publisher by
    # the chat endpoint), so patching the names is enough.
    setattr(llama_cpp.Llama, "generate", generate)  # noqa: B010
    setattr(server_app, "get_event_publisher", get_event_publisher)  # noqa: B010
    setattr(llama_module, "sorted", top_sorted)  # noqa: B010  (shadows the builtin there only)


def main() -> None:
    """Run llama-cpp-python's server with the timing patch."""
    install()
    from llama_cpp.server.__main__ import main as server_main

    sys.argv[0] = "rag.models.llama_cpp_server"
    server_main()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main()
