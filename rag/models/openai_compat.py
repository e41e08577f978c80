"""One ChatModel for every OpenAI-compatible server (Foundry Local, Ollama, vLLM, llama.cpp)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any, Unpack

import openai

from rag.config import ModelConfig, TimeoutsConfig
from rag.errors import ModelError
from rag.models.base import CallRecord, Message, Sampling
from rag.models.streaming import StreamTally
from rag.models.streaming import estimate_tokens as estimate_tokens  # its import path before


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def read_timings(timings: dict[str, Any], record: CallRecord) -> None:
    """Fill the server-side split from a llama.cpp-style ``timings`` object (missing keys stay None)."""
    record.queue_ms = _num(timings.get("queue_ms"))
    record.prompt_ms = _num(timings.get("prompt_ms"))
    record.decode_ms = _num(timings.get("predicted_ms"))
    n, cached = _num(timings.get("prompt_n")), _num(timings.get("cache_n"))
    record.prompt_eval_tokens = None if n is None else int(n)
    record.cached_tokens = None if cached is None else int(cached)


def _logprobs_of(choice: Any) -> list[tuple[str, float]]:
    """(token, logprob) pairs of a streamed choice's content; [] when it carries none."""
    content = getattr(getattr(choice, "logprobs", None), "content", None) or ()
    return [
        (str(t.token), float(t.logprob))
        for t in content
        if getattr(t, "token", None) is not None and isinstance(t.logprob, int | float)
    ]


class OpenAICompatModel:
    """Streams chat completions with connect / first-token / total timeouts and typed errors."""

    def __init__(
        self,
        cfg: ModelConfig,
        base_url: str,
        timeouts: TimeoutsConfig,
        *,
        model_id: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = cfg.model
        self.model_id = model_id or cfg.model
        self.base_url = base_url
        self.timeouts = timeouts
        key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        self._client = openai.AsyncOpenAI(
            base_url=base_url,
            api_key=key or "not-needed",
            max_retries=0,
            timeout=openai.Timeout(timeouts.total_s, connect=timeouts.connect_s),
        )

    async def aclose(self) -> None:
        """Close the HTTP client and its pooled connections."""
        await self._client.close()

    async def _open(self, body: dict[str, Any]) -> Any:
        try:
            return await self._client.chat.completions.create(**body)
        except openai.APIConnectionError as exc:
            raise ModelError(
                f"cannot reach model server `{self.base_url}` ({self.name}): {exc.__cause__ or exc}",
                kind="refused",
            ) from None
        except openai.APIStatusError as exc:
            raise ModelError(
                f"model server `{self.base_url}` answered HTTP {exc.status_code} for {self.name}",
                kind=f"http-{exc.status_code}",
            ) from None

    async def _open_with_retries(self, body: dict[str, Any]) -> Any:
        attempt = 0
        while True:
            try:
                return await self._open(body)
            except ModelError as exc:
                retryable = exc.kind == "refused" or exc.kind in (
                    "http-500",
                    "http-502",
                    "http-503",
                )
                if not retryable or attempt >= self.timeouts.retries:
                    raise
                await asyncio.sleep(self.timeouts.backoff_s * (2**attempt))
                attempt += 1

    async def stream(
        self, messages: Sequence[Message], record: CallRecord, **sampling: Unpack[Sampling]
    ) -> AsyncIterator[str]:
        """Yield content deltas; see ChatModel.stream for the error contract."""
        temperature, seed = sampling.get("temperature"), sampling.get("seed")
        body: dict[str, Any] = {
            "model": self.model_id,
            "messages": list(messages),
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": sampling.get("max_tokens") or self.cfg.max_tokens,
            "temperature": self.cfg.temperature if temperature is None else temperature,
        }
        if seed is not None:
            body["seed"] = seed
        if self.cfg.logprobs:
            # llama.cpp's server returns per-token logprobs only with top_logprobs set (>= 0)
            body["logprobs"] = True
            body["top_logprobs"] = 0
            record.logprobs = []
        tally = StreamTally(self.name, record, self.timeouts)
        usage: Any = None
        stream: Any = None
        try:
            stream = await asyncio.wait_for(
                self._open_with_retries(body), timeout=self.timeouts.first_token_s
            )
            record.sent_ms = tally.elapsed_ms()
            iterator = stream.__aiter__()
            while True:
                try:
                    chunk = await asyncio.wait_for(iterator.__anext__(), timeout=tally.wait_s())
                except StopAsyncIteration:
                    break
                if getattr(chunk, "usage", None):
                    usage = chunk.usage
                timings = (chunk.model_extra or {}).get("timings")
                if isinstance(timings, dict):
                    read_timings(timings, record)
                for choice in chunk.choices or ():
                    piece = choice.delta.content if choice.delta else None
                    if record.logprobs is not None:
                        record.logprobs.extend(_logprobs_of(choice))
                    if choice.finish_reason:
                        record.finished = True
                    if piece:
                        tally.add(piece)
                        yield piece
        except TimeoutError:
            raise tally.timed_out() from None
        except ModelError:
            raise
        except json.JSONDecodeError:
            raise ModelError(
                f"{self.name} sent a malformed stream chunk (not JSON)",
                kind="malformed",
                partial=record.text,
            ) from None
        except Exception as exc:  # httpx2 transport errors, openai.APIError mid-stream
            kind = "cut" if record.text else "refused"
            raise ModelError(
                f"{self.name}: the connection to `{self.base_url}` broke"
                f"{' mid-answer' if record.text else ''} ({type(exc).__name__})",
                kind=kind,
                partial=record.text,
            ) from None
        finally:
            record.total_ms = tally.elapsed_ms()
            if stream is not None:
                # Release the connection even when the caller stops reading early (a user
                # pressed stop): the server sees the hang-up and stops generating.
                with contextlib.suppress(Exception):
                    await stream.close()
            if record.logprobs == []:
                record.logprobs = None  # asked for, none came: unknown, not confident
            reported = None
            if usage is not None:
                reported = (int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0))
            tally.count_tokens(messages, reported)
        tally.check_complete()
