"""OpenAICompatModel against a real local server speaking the streaming protocol (FakeOpenAI)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import pytest

from rag.config import ModelConfig, TimeoutsConfig, load_config
from rag.errors import ModelError
from rag.measure.fake_openai import FakeOpenAI, Fault, closed_port_url, tokenize
from rag.models import CallRecord, Message, OpenAICompatModel, estimate_tokens, make_chat_model

MODEL = "tiny-chat"
REPLY = "Meals are reimbursed up to 45 euros per day [1]."
LONG_REPLY = " ".join(f"word{i}" for i in range(40)) + " [1]."
MESSAGES: list[Message] = [
    {"role": "system", "content": "You answer from the sources."},
    {"role": "user", "content": "How much are meals reimbursed per day?"},
]


def make_model(
    base_url: str,
    *,
    max_tokens: int = 64,
    temperature: float = 0.2,
    **timeouts: Any,
) -> OpenAICompatModel:
    settings: dict[str, Any] = {
        "connect_s": 1.0,
        "first_token_s": 3.0,
        "total_s": 5.0,
        "retries": 2,
        "backoff_s": 0.05,
    }
    return OpenAICompatModel(
        ModelConfig(model=MODEL, max_tokens=max_tokens, temperature=temperature),
        base_url,
        TimeoutsConfig(**(settings | timeouts)),
    )


@dataclass
class Outcome:
    pieces: list[str]
    record: CallRecord
    error: ModelError | None
    seconds: float

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def run_stream(
    model: OpenAICompatModel, messages: list[Message] = MESSAGES, **kwargs: Any
) -> Outcome:
    """Stream one answer in a fresh event loop; a ModelError is captured, not raised."""

    async def go() -> Outcome:
        record = CallRecord(model=model.name)
        pieces: list[str] = []
        error: ModelError | None = None
        t0 = time.perf_counter()
        try:
            async for piece in model.stream(messages, record, **kwargs):
                pieces.append(piece)
        except ModelError as exc:
            error = exc
        finally:
            seconds = time.perf_counter() - t0
            await model.aclose()
        return Outcome(pieces, record, error, seconds)

    return asyncio.run(go())


def wait_for_outcome(fake: FakeOpenAI, expected: str, timeout: float = 2.0) -> str:
    """The first request's outcome once it is no longer "ok"/"in_progress" (or after timeout)."""
    deadline = time.monotonic() + timeout
    outcome = fake.requests[0].outcome
    while outcome != expected and time.monotonic() < deadline:
        time.sleep(0.02)
        outcome = fake.requests[0].outcome
    return outcome


# -- successful streams ---------------------------------------------------------------------


def test_streamed_text_equals_reply_and_timings_are_ordered(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(MODEL, [REPLY], token_delay_s=0.01)

    out = run_stream(make_model(fake_openai.base_url))

    assert out.error is None
    assert out.text == REPLY
    assert out.pieces == tokenize(REPLY)
    assert out.record.text == REPLY
    assert out.record.finished
    assert 0 < out.record.ttft_ms < out.record.total_ms
    # total_ms covers the server's pauses: 10 ms before each piece after the first
    assert out.record.total_ms >= 10 * (len(out.pieces) - 1)


def test_usage_reported_by_the_server_is_used(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(MODEL, [REPLY], usage=True)

    out = run_stream(make_model(fake_openai.base_url))

    # The fake counts prompt words; our estimate counts UTF-8 bytes / 3, which is far higher.
    words = sum(len(m["content"].split()) for m in MESSAGES)
    assert out.record.prompt_tokens == words
    assert out.record.completion_tokens == len(tokenize(REPLY))
    assert out.record.estimated is False
    assert out.record.usage().tokens_estimated is False


def test_usage_is_estimated_when_the_server_sends_none(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(MODEL, [LONG_REPLY], usage=False)

    out = run_stream(make_model(fake_openai.base_url))

    assert out.error is None
    assert out.record.estimated is True
    assert out.record.usage().tokens_estimated is True
    assert out.record.completion_tokens == len(out.pieces) == 41
    assert out.record.prompt_tokens == sum(estimate_tokens(m["content"]) for m in MESSAGES)


def test_request_body_carries_model_settings_and_overrides(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(MODEL, [REPLY, REPLY])
    url = fake_openai.base_url

    run_stream(make_model(url, max_tokens=77, temperature=0.25))
    run_stream(make_model(url, max_tokens=77), max_tokens=33, temperature=0.9, seed=1234)

    default, override = (r.body for r in fake_openai.requests_for(MODEL))
    assert default["model"] == MODEL
    assert default["stream"] is True
    assert default["stream_options"] == {"include_usage": True}
    assert default["messages"] == MESSAGES
    assert default["max_tokens"] == 77
    assert default["temperature"] == 0.25
    assert "seed" not in default
    assert (override["max_tokens"], override["temperature"], override["seed"]) == (33, 0.9, 1234)


def test_temperature_zero_is_sent_not_replaced_by_the_default(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(MODEL, [REPLY])

    run_stream(make_model(fake_openai.base_url, temperature=0.7), temperature=0.0, seed=0)

    body = fake_openai.requests_for(MODEL)[0].body
    assert body["temperature"] == 0.0
    assert body["seed"] == 0


@pytest.mark.parametrize("suffix", ["", "/"], ids=["no-slash", "trailing-slash"])
def test_base_url_with_or_without_trailing_slash(fake_openai: FakeOpenAI, suffix: str) -> None:
    fake_openai.script(MODEL, [REPLY])

    out = run_stream(make_model(fake_openai.base_url + suffix))

    assert out.text == REPLY
    assert [r.path for r in fake_openai.requests] == ["/v1/chat/completions"]


def test_make_chat_model_strips_a_trailing_slash_from_the_config(
    fake_openai: FakeOpenAI,
) -> None:
    cfg = load_config(
        None,
        {
            "RAG__MODELS__SLM__BASE_URL": fake_openai.base_url + "/",
            "RAG__MODELS__SLM__MODEL": MODEL,
            "RAG__MODELS__SLM__PROVIDER": "openai-compatible",
        },
    )
    fake_openai.script(MODEL, [REPLY])
    model = make_chat_model(cfg, "slm")

    out = run_stream(model)

    assert model.base_url == fake_openai.base_url
    assert out.text == REPLY
    assert fake_openai.requests[0].path == "/v1/chat/completions"


# -- failures before the first token: retries with backoff -----------------------------------


def test_connection_refused_after_retries_with_backoff() -> None:
    url = closed_port_url()

    out = run_stream(make_model(url, retries=2, backoff_s=0.1))

    assert out.error is not None
    assert out.error.kind == "refused"
    assert url in str(out.error)
    assert out.error.partial == ""
    # two retries: 0.1 s then 0.2 s of backoff before giving up
    assert 0.3 <= out.seconds < 3.0


def test_connection_refused_without_retries_fails_at_once() -> None:
    out = run_stream(make_model(closed_port_url(), retries=0, backoff_s=2.0))

    assert out.error is not None and out.error.kind == "refused"
    assert out.seconds < 2.0  # a retry would have waited 2 s first


def test_503_then_success_is_retried(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(MODEL, [Fault.status(503), REPLY])

    out = run_stream(make_model(fake_openai.base_url, retries=2))

    assert out.error is None
    assert out.text == REPLY
    assert [r.outcome for r in fake_openai.requests_for(MODEL)] == ["fault:status", "ok"]


def test_persistent_500_gives_up_after_the_retries(fake_openai: FakeOpenAI) -> None:
    fake_openai.set_default(MODEL, Fault.status(500))

    out = run_stream(make_model(fake_openai.base_url, retries=2, backoff_s=0.05))

    assert out.error is not None
    assert out.error.kind == "http-500"
    assert "HTTP 500" in str(out.error)
    assert len(fake_openai.requests_for(MODEL)) == 3  # the first try and two retries
    assert out.seconds >= 0.05 + 0.1


@pytest.mark.parametrize("code", [400, 404])
def test_client_errors_are_not_retried(fake_openai: FakeOpenAI, code: int) -> None:
    fake_openai.set_default(MODEL, Fault.status(code))

    out = run_stream(make_model(fake_openai.base_url, retries=3, backoff_s=2.0))

    assert out.error is not None
    assert out.error.kind == f"http-{code}"
    assert len(fake_openai.requests_for(MODEL)) == 1
    assert out.seconds < 2.0  # a retry would have waited 2 s first


def test_a_cut_after_the_first_token_is_not_retried(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(MODEL, [Fault.cut_after(2), REPLY])

    out = run_stream(make_model(fake_openai.base_url, retries=2))

    assert out.error is not None and out.error.kind == "cut"
    assert len(fake_openai.requests_for(MODEL)) == 1


# -- timeouts -------------------------------------------------------------------------------


def test_slow_first_token_times_out(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(MODEL, [Fault.slow_first_token(5.0, REPLY)])

    out = run_stream(make_model(fake_openai.base_url, first_token_s=0.5, total_s=5.0))

    assert out.error is not None
    assert out.error.kind == "timeout"
    assert "first token" in str(out.error) and "0.5 s" in str(out.error)
    assert out.error.partial == ""
    assert 0.45 <= out.seconds < 3.0


def test_slow_first_token_within_the_limit_succeeds(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(MODEL, [Fault.slow_first_token(0.2, REPLY)])

    out = run_stream(make_model(fake_openai.base_url, first_token_s=2.0))

    assert out.error is None
    assert out.text == REPLY
    assert out.record.ttft_ms >= 180


def test_a_hung_server_times_out(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(MODEL, [Fault.hang(10)])

    out = run_stream(make_model(fake_openai.base_url, first_token_s=0.5))

    assert out.error is not None
    assert out.error.kind == "timeout"
    assert out.seconds < 3.0


def test_total_timeout_mid_stream_keeps_the_partial_answer(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(MODEL, [LONG_REPLY], token_delay_s=0.05)

    # 41 pieces 50 ms apart take 2 s; the answer may take 1 s in all
    out = run_stream(make_model(fake_openai.base_url, first_token_s=1.0, total_s=1.0))

    assert out.error is not None
    assert out.error.kind == "timeout"
    assert "whole answer" in str(out.error)
    assert out.error.partial == out.record.text == out.text
    assert out.text and LONG_REPLY.startswith(out.text) and out.text != LONG_REPLY
    assert out.seconds < 1.8
    # the connection is closed, so the server stops generating for nobody
    assert wait_for_outcome(fake_openai, "disconnected") == "disconnected"


def test_stopping_early_releases_the_connection(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(MODEL, [LONG_REPLY], token_delay_s=0.05)
    model = make_model(fake_openai.base_url)

    async def first_piece() -> tuple[str, CallRecord]:
        record = CallRecord(model=model.name)
        gen = model.stream(MESSAGES, record)
        try:
            piece = await gen.__anext__()
        finally:
            await gen.aclose()
            await model.aclose()
        return piece, record

    piece, record = asyncio.run(first_piece())

    assert piece == tokenize(LONG_REPLY)[0]
    assert record.total_ms > 0
    assert wait_for_outcome(fake_openai, "disconnected") == "disconnected"


# -- broken streams -------------------------------------------------------------------------


def test_cut_stream_keeps_the_tokens_that_arrived(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(MODEL, [Fault.cut_after(3, LONG_REPLY)])

    out = run_stream(make_model(fake_openai.base_url))

    expected = "".join(tokenize(LONG_REPLY)[:3])
    assert out.error is not None
    assert out.error.kind == "cut"
    assert "mid-answer" in str(out.error)
    assert out.error.partial == out.record.text == out.text == expected
    assert len(out.pieces) == 3
    assert out.record.finished is False


def test_malformed_chunk(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(MODEL, [Fault.malformed(after_tokens=2, reply=LONG_REPLY)])

    out = run_stream(make_model(fake_openai.base_url))

    assert out.error is not None
    assert out.error.kind == "malformed"
    assert "malformed" in str(out.error)
    assert out.error.partial == "".join(tokenize(LONG_REPLY)[:2])


def test_empty_answer(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(MODEL, [Fault.empty()])

    out = run_stream(make_model(fake_openai.base_url))

    assert out.error is not None
    assert out.error.kind == "empty"
    assert "empty" in str(out.error)
    assert out.pieces == []
    assert len(fake_openai.requests_for(MODEL)) == 1  # an empty answer is not retried


@pytest.mark.parametrize("blank", ["\n\n", " \n "], ids=["newlines", "spaces"])
def test_a_blank_answer_counts_as_empty(fake_openai: FakeOpenAI, blank: str) -> None:
    fake_openai.script(MODEL, [blank])

    out = run_stream(make_model(fake_openai.base_url))

    assert out.text == blank  # the pieces were streamed as they came
    assert out.error is not None
    assert out.error.kind == "empty"
    assert out.record.text == ""  # but nobody keeps whitespace as an answer
