"""What a scripted model answers: replies, faults, tokens, and the settings of its streams."""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeAlias, TypedDict

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
