"""Latency breakdown, log-probabilities, warm-up and `rag bench latency` against FakeOpenAI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from rag.config import ModelConfig, TimeoutsConfig
from rag.latency import latency_json
from rag.measure.eval.answers import QAItem, eval_answers
from rag.models import CallRecord, Message, OpenAICompatModel
from rag.models.embedded import ServerSpec
from rag.models.openai_compat import estimate_tokens
from rag.models.warmup import WARM_UP_TOKENS, warm_up
from rag.prompts import DRAFT_SYSTEM, SYSTEM
from tests.fake_openai import FakeOpenAI
from tests.integration.test_assistant import (
    GOOD_DRAFT,
    LLM,
    LLM_ANSWER,
    Q_MEALS,
    SLM,
    ask,
    done_of,
    make_assistant,
    make_config,
)
from tests.integration.test_cli import rag_env, run_rag

MESSAGES: list[Message] = [
    {"role": "system", "content": "You answer from the sources."},
    {"role": "user", "content": "How much are meals reimbursed per day?"},
]


def _model(base_url: str, logprobs: bool) -> OpenAICompatModel:
    return OpenAICompatModel(
        ModelConfig(model="m", max_tokens=32, logprobs=logprobs),
        base_url,
        TimeoutsConfig(connect_s=1, first_token_s=3, total_s=5, retries=0),
    )


def _stream(model: OpenAICompatModel) -> CallRecord:
    record = CallRecord(model=model.name)

    async def go() -> None:
        try:
            async for _ in model.stream(MESSAGES, record):
                pass
        finally:
            await model.aclose()

    asyncio.run(go())
    return record


# -- log-probabilities ------------------------------------------------------------------------


def test_logprobs_are_requested_parsed_and_markers_left_out(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(
        "m",
        ["Up to 45 euros per day [1]."],
        logprob=lambda token: -3.0 if "[" in token else -0.5,  # the marker would drag the min
    )
    record = _stream(_model(fake_openai.base_url, logprobs=True))
    usage = record.usage()

    body = fake_openai.requests_for("m")[0].body
    assert body["logprobs"] is True and body["top_logprobs"] == 0
    assert record.logprobs is not None and len(record.logprobs) == 7  # "[1]." is one
    assert (usage.logprob_mean, usage.logprob_min) == (-0.5, -0.5)


def test_logprobs_not_asked_for_stay_unknown(fake_openai: FakeOpenAI) -> None:
    fake_openai.script("m", ["Up to 45 euros [1]."])
    record = _stream(_model(fake_openai.base_url, logprobs=False))

    assert "logprobs" not in fake_openai.requests_for("m")[0].body
    assert record.logprobs is None
    assert (record.usage().logprob_mean, record.usage().logprob_min) == (None, None)


# -- the server's timings ---------------------------------------------------------------------


def test_server_timings_fill_queue_prompt_and_decode(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(
        "m", ["one two three four five"], timings=True, first_token_delay_s=0.2, token_delay_s=0.01
    )
    usage = _stream(_model(fake_openai.base_url, logprobs=False)).usage()

    assert usage.queue_ms == 0.0
    assert usage.prompt_ms == pytest.approx(200.0)
    assert usage.decode_ms == pytest.approx(40.0)
    assert usage.prompt_eval_tokens == usage.prompt_tokens and usage.cached_tokens == 0
    assert usage.tokens_per_s == pytest.approx(100.0)
    assert 0 < usage.sent_ms <= usage.ttft_ms  # the client's own clock still runs


def test_without_timings_the_split_is_not_reported(fake_openai: FakeOpenAI) -> None:
    fake_openai.script("m", ["one two three"])
    usage = _stream(_model(fake_openai.base_url, logprobs=False)).usage()

    assert (usage.queue_ms, usage.prompt_ms, usage.decode_ms) == (None, None, None)
    assert usage.ttft_ms > 0


def test_answer_metrics_carry_packing_and_the_stage_split(
    fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    fake_openai.set_default(SLM, GOOD_DRAFT)
    fake_openai.configure(SLM, timings=True, first_token_delay_s=0.05)
    cfg = make_config(tmp_path, fake_openai.base_url, escalation__mode="never")
    done = done_of(ask(make_assistant(cfg), Q_MEALS, temperature=0.0))

    out = latency_json(done.metrics)
    draft = out["stages"]["draft"]
    assert out["packing_ms"] > 0 and out["prep_ms"] >= 0
    assert draft["prompt_ms"] == pytest.approx(50.0) and draft["queue_ms"] == 0.0
    assert draft["logprob_mean"] == -0.25  # the fake's default; slm asks by default
    assert out["first_token_ms"] >= draft["ttft_ms"]
    parts = out["prep_ms"] + out["retrieval_ms"] + out["packing_ms"] + draft["total_ms"]
    assert parts + out["other_ms"] == pytest.approx(out["total_ms"], abs=1.0)


def test_eval_details_carry_the_breakdown(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    fake_openai.set_default(SLM, GOOD_DRAFT)
    fake_openai.set_default(LLM, LLM_ANSWER)
    assistant = make_assistant(make_config(tmp_path, fake_openai.base_url))
    items = [QAItem("q1", Q_MEALS, ("45 euros",), False)]
    details: list[dict[str, Any]] = []
    asyncio.run(eval_answers(assistant, items, ["never"], details=details))

    assert len(details) == 1
    timings = details[0]["timings"]
    assert set(timings["stages"]) == {"draft"}
    assert {"packing_ms", "first_token_ms", "other_ms"} <= set(timings)
    assert timings["stages"]["draft"]["queue_ms"] is None  # the fake sent no timings here


# -- warm-up --------------------------------------------------------------------------------


def test_warm_up_sends_the_system_prompt_and_logs_it(fake_openai: FakeOpenAI) -> None:
    port = int(fake_openai.base_url.rsplit(":", 1)[1].split("/")[0])
    spec = ServerSpec("slm", "tiny", Path("unused.gguf"), port, 512, 1)
    big = ServerSpec("llm", "big", Path("unused.gguf"), port, 512, 1)
    lines: list[str] = []
    out = warm_up([spec, big], lines.append)

    req = fake_openai.requests_for("tiny")[0]
    # the prefix every real question to that model shares: the draft's, the full answer's
    assert req.messages[0]["content"] == DRAFT_SYSTEM
    assert fake_openai.requests_for("big")[0].messages[0]["content"] == SYSTEM
    assert req.body["max_tokens"] == 1
    # one passage about as long as a real compressed context, in the real source format
    user = req.messages[1]["content"]
    assert '<source n="1">' in user and estimate_tokens(user) >= WARM_UP_TOKENS
    assert out["slm"] is not None and out["slm"] > 0
    assert lines == [f"warmed slm in {out['slm']:.0f} ms", f"warmed llm in {out['llm']:.0f} ms"]


def test_warm_up_failure_is_logged_not_raised(free_port: int) -> None:
    spec = ServerSpec("llm", "tiny", Path("unused.gguf"), free_port, 512, 1)
    lines: list[str] = []
    assert warm_up([spec], lines.append) == {"llm": None}
    assert "warm-up request failed" in lines[0]


# -- rag bench latency ------------------------------------------------------------------------


def test_bench_latency_prints_one_line_per_configuration(
    fake_openai: FakeOpenAI, tmp_path: Path, repo_root: Path
) -> None:
    fake_openai.set_default(SLM, GOOD_DRAFT)
    fake_openai.set_default(LLM, LLM_ANSWER)
    fake_openai.configure(SLM, timings=True, first_token_delay_s=0.05)
    qa = tmp_path / "qa"
    qa.mkdir()
    rows = [("q1", Q_MEALS, ["45 euros"], False), ("q2", "Who do I call when on call?", [], True),
            ("q3", "How do I connect to the VPN?", ["zzz-not-in-context"], False),
            # q4 is abstained before drafting (no word of it is in the corpus), so it reaches
            # no model and cannot warm one: q5 is the warm-up question
            ("q4", "Xylophone quasar zebra?", [], True),
            ("q5", Q_MEALS + " Please.", ["45 euros"], False)]  # fmt: skip
    (qa / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t, _, _ in rows)
    )
    (qa / "answers.jsonl").write_text(
        "".join(
            json.dumps({"_id": i, "answers": a, "is_impossible": x}) + "\n" for i, _, a, x in rows
        )
    )
    env = rag_env(tmp_path, fake_openai.base_url, fake_openai.base_url)
    proc = run_rag(["bench", "latency", "--data", str(qa), "--limit", "3", "--json"], env, repo_root,
                   timeout=120)  # fmt: skip

    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert [r["config"] for r in lines] == ["baseline", "default"]
    keys = {"config", "n", "prompt_tokens_p50", "ttft_ms_p50", "ttft_ms_p95", "total_ms_p50",
            "total_ms_p95", "gold_in_context"}  # fmt: skip
    for row in lines:
        assert keys <= set(row)
        assert row["n"] == 3
        assert row["gold_in_context"] == 0.5  # q1's gold is in the context, q3's is not
        assert 0 < row["ttft_ms_p50"] <= row["ttft_ms_p95"]
        # first tokens are over the questions a model answered, totals over all of them (an
        # abstained question has no first token), so only the tails are comparable
        assert (
            row["ttft_ms_p50"] <= row["total_ms_p95"] and row["total_ms_p50"] <= row["total_ms_p95"]
        )
        assert row["prompt_tokens_p50"] > 0
        assert row["slm_ttft_ms_p50"] > 0  # the small model drafted
        assert row["warmup"] == "q5"  # outside the timed three, and the first to reach a model
        assert row["first_total_ms"] > 0
        # ... asked again after the timed three: the same question first and later
        assert row["again_total_ms"] > 0
        slowdown = row["first_total_ms"] / row["again_total_ms"] - 1  # of the rounded times
        assert row["first_slowdown"]["total"] == pytest.approx(slowdown, abs=0.01)
        assert "prompt" in row["first_slowdown"]  # the fake server reports timings
        parts = row["breakdown_p50"]
        assert parts["draft.prompt_tokens"] == row["prompt_tokens_p50"]
        assert 0 < parts["draft.ttft_ms"] <= parts["draft.total_ms"]  # medians over drafts
        assert parts["total_ms"] == row["total_ms_p50"] and parts["retrieval_ms"] >= 0
    # each pass: the warm-up question, three, the warm-up question again; only `default` asks the small model for logprobs
    slm = fake_openai.requests_for(SLM)
    assert len(slm) >= 4 and len(slm) % 2 == 0
    half = len(slm) // 2
    assert not any("logprobs" in r.body for r in slm[:half])
    assert all(r.body.get("logprobs") is True for r in slm[half:])
