"""The ChatModel protocol and the record one streamed call leaves behind."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, fields
from typing import Protocol, TypedDict, Unpack

from rag.logprobs import answer_logprob_stats
from rag.types import Usage


class Message(TypedDict):
    role: str
    content: str


@dataclass
class CallRecord:
    """Filled in while a stream runs; complete once the stream ends or fails."""

    model: str
    text: str = ""
    ttft_ms: float = 0.0
    total_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False
    finished: bool = False  # the server said the answer ended (finish_reason)
    # per-token log-probabilities of the answer's content, in order; None = not returned
    logprobs: list[tuple[str, float]] | None = None
    queue_ms: float | None = None  # the server-side split (see Usage); None = not reported
    prompt_ms: float | None = None
    prompt_eval_tokens: int | None = None
    cached_tokens: int | None = None
    decode_ms: float | None = None
    sent_ms: float = 0.0

    def usage(self) -> Usage:
        lp_mean, lp_min = answer_logprob_stats(self.logprobs)
        copied = {name: getattr(self, name) for name in _SAME_NAMED}
        return Usage(
            **copied, tokens_estimated=self.estimated, logprob_mean=lp_mean, logprob_min=lp_min
        )


# Usage's fields that CallRecord holds under the same name (all but the three computed above).
_SAME_NAMED = tuple(
    f.name
    for f in fields(Usage)
    if f.name not in {"tokens_estimated", "logprob_mean", "logprob_min"}
)


class Sampling(TypedDict, total=False):
    """Per-call overrides of the model's configured sampling; a key left out (or None) keeps it."""

    max_tokens: int | None
    temperature: float | None
    seed: int | None


class ChatModel(Protocol):
    """A streaming chat model on some server.

    ``stream`` yields text deltas as they arrive and fills ``record`` (timings, tokens);
    ``sampling`` overrides the configured max_tokens and temperature, and may set a seed.
    It raises rag.errors.ModelError with a ``kind`` of refused, http, timeout, cut,
    malformed or empty; after a cut, ``record.text`` keeps what arrived.
    """

    name: str

    def stream(
        self, messages: Sequence[Message], record: CallRecord, **sampling: Unpack[Sampling]
    ) -> AsyncIterator[str]: ...
