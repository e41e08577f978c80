"""The ChatModel protocol and the record one streamed call leaves behind."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypedDict

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
        return Usage(
            model=self.model,
            ttft_ms=self.ttft_ms,
            total_ms=self.total_ms,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            tokens_estimated=self.estimated,
            logprob_mean=lp_mean,
            logprob_min=lp_min,
            queue_ms=self.queue_ms,
            prompt_ms=self.prompt_ms,
            prompt_eval_tokens=self.prompt_eval_tokens,
            cached_tokens=self.cached_tokens,
            decode_ms=self.decode_ms,
            sent_ms=self.sent_ms,
        )


class ChatModel(Protocol):
    """A streaming chat model on some server.

    ``stream`` yields text deltas as they arrive and fills ``record`` (timings, tokens).
    It raises rag.errors.ModelError with a ``kind`` of refused, http, timeout, cut,
    malformed or empty; after a cut, ``record.text`` keeps what arrived.
    """

    name: str

    def stream(
        self,
        messages: Sequence[Message],
        record: CallRecord,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
    ) -> AsyncIterator[str]: ...
