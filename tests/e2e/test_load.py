"""`rag bench load`: concurrent sessions through the real Chainlit server, and its verdict logic.

The e2e test runs the real thing small (3 sessions x 2 questions); the others feed `analyse`
hand-made socket logs, so the cross-talk detector is shown to catch what it claims to catch.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

import rag.measure.load.client
from rag.measure.load import (
    Asked,
    ChatSession,
    SessionLog,
    analyse,
    bench_load,
    questions_for,
    running_app,
)

REPORT_KEYS = {
    "sessions",
    "questions",
    "errors",
    "cross_talk",
    "p50_ms",
    "p95_ms",
    "baseline_p50_ms",
    "added_p50_ms",
    "added_p95_ms",
    "wall_s",
}


@pytest.mark.e2e
def test_three_sessions_get_their_own_answers() -> None:
    report = bench_load(sessions=3, questions=2)

    assert set(report) >= REPORT_KEYS, report
    assert report["errors"] == 0, report
    assert report["cross_talk"] == 0, report
    assert report["answers"] == 6, report
    assert report["p50_ms"] > 0, report
    assert report["baseline_p50_ms"] > 0, report


@pytest.mark.e2e
def test_real_cross_talk_is_caught(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second socket reusing s00's sessionId mid-answer takes the rest of s00's answer."""
    monkeypatch.setattr(
        rag.measure.load.client, "ANSWER_TIMEOUT_S", 5.0
    )  # s00's task_end goes astray

    async def hijack(url: str) -> list[SessionLog]:
        victim = ChatSession(url, "s00")
        thief = ChatSession(url, "s01", session_id=victim.session_id)
        assert await victim.start(), victim.log.failure
        asking = asyncio.create_task(victim.ask_all(["How do we roll back a bad release?"]))
        deadline = time.monotonic() + 30
        while not any(event == "stream_start" for _t, event, _d in victim.log.events):
            assert time.monotonic() < deadline, "the answer never started streaming"
            await asyncio.sleep(0.01)
        await thief.connect()  # Chainlit restores s00's server session onto this socket
        await asking
        await asyncio.gather(victim.close(), thief.close())
        return [victim.log, thief.log]

    with running_app(0.02, None, tmp_path) as url:
        victim, thief = asyncio.run(hijack(url))

    tally = analyse([victim, thief], questions=1)
    assert tally.cross_talk == 1, tally.samples
    assert any("s01 received the answer to s00" in s for s in tally.samples), tally.samples
    assert tally.errors >= 1  # s00 never saw its answer end


# -- the verdict, on hand-made socket logs ---------------------------------------------------------


def _step(sid: str, parent: str | None, type_: str = "run", output: str = "", **kw: Any) -> Any:
    return {"id": sid, "parentId": parent, "type": type_, "output": output, "input": "", **kw}


def _answered(log: SessionLog, n: int, *, answer: str = "Roll back first. [1]") -> Asked:
    """Append to `log` a question and the events Chainlit sends for a normal answer."""
    qid = f"{log.name}-user-{n}"
    run, msg = f"{log.name}-run-{n}", f"{log.name}-answer-{n}"
    text = f"How? [ref {log.name}-q{n}]"
    asked = Asked(log.name, n, text, qid, sent=float(n), done=n + 0.5)
    log.asked.append(asked)
    log.events += [
        (n + 0.1, "task_start", {}),
        (n + 0.1, "new_message", _step(run, qid)),
        (n + 0.2, "stream_start", _step(msg, run, "assistant_message", answer[:5])),
        (n + 0.3, "stream_token", {"id": msg, "token": answer[5:], "isSequence": False}),
        (n + 0.4, "element", {"id": f"{msg}-el", "forId": msg, "name": "[1]"}),
        (n + 0.4, "update_message", _step(run, qid, input=text)),
        (n + 0.5, "task_end", {}),
    ]
    return asked


def test_clean_sessions_have_no_errors_and_no_cross_talk() -> None:
    a, b = SessionLog("s00"), SessionLog("s01")
    _answered(a, 1)
    _answered(b, 1)

    tally = analyse([a, b], questions=1)

    assert (tally.errors, tally.cross_talk, tally.unattributed) == (0, 0, 0), tally.samples
    assert tally.latencies_ms == [500.0, 500.0]


def test_an_answer_streamed_to_the_wrong_socket_is_cross_talk() -> None:
    a, b = SessionLog("s00"), SessionLog("s01")
    _answered(a, 1)
    _answered(b, 1)
    # s01's answer tokens (ids under s01's question) also arrive on s00's socket.
    a.events.append((1.45, "stream_token", {"id": "s01-answer-1", "token": "x"}))

    tally = analyse([a, b], questions=1)

    assert tally.cross_talk == 1
    assert "s00 received the answer to s01" in tally.samples[0]


def test_another_sessions_question_in_my_events_is_cross_talk() -> None:
    a, b = SessionLog("s00"), SessionLog("s01")
    _answered(a, 1)
    _answered(b, 1)
    # Ids look right, but the content is s01's question: server-side state mixed up.
    a.events.append(
        (1.45, "update_message", _step("s00-run-1", "s00-user-1", input="[ref s01-q1]"))
    )

    assert analyse([a, b], questions=1).cross_talk == 1


def test_a_shared_server_root_counts_once_per_extra_session() -> None:
    a, b = SessionLog("s00"), SessionLog("s01")
    _answered(a, 1)
    _answered(b, 1)
    for log in (a, b):  # the same on_chat_start run delivered to both sessions
        log.events.append((0.0, "new_message", _step("chat-start-run", None)))

    assert analyse([a, b], questions=1).cross_talk == 1


def test_a_notice_instead_of_an_answer_is_an_error_and_a_warning() -> None:
    log = SessionLog("s00")
    _answered(log, 1, answer="⚠️ No model could answer (refused).")

    tally = analyse([log], questions=1)

    assert (tally.errors, tally.warnings) == (1, 1)
    assert "no answer message" in tally.samples[0]
    assert tally.latencies_ms == []


def test_timeouts_and_unasked_questions_are_errors() -> None:
    log = SessionLog("s00")
    _answered(log, 1)
    log.asked.append(Asked("s00", 2, "Why? [ref s00-q2]", "s00-user-2", sent=2.0, note="no answer"))

    tally = analyse([log, SessionLog("s01", failure="s01: could not connect")], questions=3)

    assert tally.errors == 1 + 1 + 3  # q2 timed out, q3 never asked, s01 asked nothing
    assert tally.latencies_ms == [500.0]


def test_every_session_asks_the_baseline_questions_in_its_own_order() -> None:
    baseline = questions_for(0, 5)

    for index in range(20):
        mine = questions_for(index, 5)
        assert sorted(mine) == sorted(baseline)
    assert questions_for(1, 5)[0] != baseline[0]
