"""The bookkeeping every streaming ChatModel does around its deltas.

Deadlines (first token, then the whole answer), time to first token, the token counts (the
server's, or an estimate), and the end-of-stream checks that turn a blank or unfinished answer
into a typed ModelError.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from rag.config import TimeoutsConfig
from rag.errors import ModelError
from rag.models.base import CallRecord, Message


def estimate_tokens(text: str) -> int:
    """A deliberately high token estimate (UTF-8 bytes / 3) for budgeting without a tokenizer."""
    return math.ceil(len(text.encode("utf-8")) / 3)


class StreamTally:
    """One streamed call's clock and counts, written into ``record`` as the stream runs."""

    def __init__(self, name: str, record: CallRecord, timeouts: TimeoutsConfig) -> None:
        self.name = name
        self.record = record
        self.timeouts = timeouts
        self.t0 = time.perf_counter()
        self.deltas = 0

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.t0) * 1000

    def wait_s(self) -> float:
        """Seconds left to the next deadline: the first token's, then the whole answer's."""
        limit_s = self.timeouts.total_s if self.record.text else self.timeouts.first_token_s
        return max(self.t0 + limit_s - time.perf_counter(), 0.001)

    def add(self, piece: str) -> None:
        """Take one content delta (the first one sets the time to first token)."""
        if not self.record.text:
            self.record.ttft_ms = self.elapsed_ms()
        self.record.text += piece
        self.deltas += 1

    def timed_out(self) -> ModelError:
        """The error for a deadline that passed, naming which one and its limit."""
        which = "first token" if not self.record.text else "whole answer"
        limit_s = self.timeouts.first_token_s if not self.record.text else self.timeouts.total_s
        return ModelError(
            f"{self.name} timed out waiting for the {which} (limit {limit_s:g} s)",
            kind="timeout",
            partial=self.record.text,
        )

    def count_tokens(self, messages: Sequence[Message], reported: tuple[int, int] | None) -> None:
        """The server's (prompt, completion) token counts, or an estimate when it sent none."""
        record = self.record
        if reported is not None:
            record.prompt_tokens, record.completion_tokens = reported
        else:
            record.estimated = True
            record.prompt_tokens = sum(estimate_tokens(m["content"]) for m in messages)
            record.completion_tokens = self.deltas

    def check_complete(self) -> None:
        """Raise for a blank answer ("empty") or one the model did not finish ("cut")."""
        record = self.record
        if not record.text.strip():
            # Blank lines alone are no answer (small models sometimes stop after "\n\n");
            # clear them so callers do not keep whitespace as a partial answer.
            record.text = ""
            raise ModelError(f"{self.name} returned an empty answer", kind="empty")
        if not record.finished:
            raise ModelError(
                f"{self.name}: the answer stream ended before the model finished",
                kind="cut",
                partial=record.text,
            )
