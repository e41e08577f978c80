"""A fake OpenAI chat-completions server (stdlib only) for tests, benchmarks and browser runs.

It speaks the real wire protocol over real sockets, so base-URL handling, streaming, retries
and timeouts are exercised exactly as against OpenAI, llama.cpp's server or Ollama.

In-process::

    with FakeOpenAI() as fake:
        fake.script("small", ["Paris [1]", Fault.status(503), echo_context])
        client = OpenAI(base_url=fake.base_url, api_key="test")

Standalone (``__main__.py``), e.g. behind a separate ``chainlit run`` or a load benchmark::

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

The package: ``script`` (replies, faults, per-model settings), ``server`` (the FakeOpenAI object:
scripting, the request log, start/stop) and ``wire`` (the HTTP handler that streams the answers).
"""

from __future__ import annotations

from rag.measure.fake_openai.script import (
    DEFAULT_LOGPROB,
    ECHO_CONTEXT,
    GENERIC_REPLY,
    MAX_HANG_S,
    NOT_FOUND_REPLY,
    SETTINGS,
    WILDCARD_MODEL,
    Fault,
    FaultKind,
    LogprobFn,
    ModelSettings,
    RecordedRequest,
    Reply,
    ReplyFn,
    echo_context,
    message_text,
    tokenize,
)
from rag.measure.fake_openai.server import FakeOpenAI, closed_port_url, free_port

__all__ = [
    "DEFAULT_LOGPROB",
    "ECHO_CONTEXT",
    "GENERIC_REPLY",
    "MAX_HANG_S",
    "NOT_FOUND_REPLY",
    "SETTINGS",
    "WILDCARD_MODEL",
    "FakeOpenAI",
    "Fault",
    "FaultKind",
    "LogprobFn",
    "ModelSettings",
    "RecordedRequest",
    "Reply",
    "ReplyFn",
    "closed_port_url",
    "echo_context",
    "free_port",
    "message_text",
    "tokenize",
]
