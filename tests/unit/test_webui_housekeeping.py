"""webui/housekeeping.py: closed chats' messages and cancelled timers (each holding its chat's
context) leave memory."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import weakref

import nest_asyncio
import pytest

from webui.housekeeping import drop_closed_chat_contexts, keep_purging, purge_cancelled_timers


class Chat:
    """Stands for a chat session: what a timer's context keeps alive."""


CURRENT: contextvars.ContextVar[Chat | None] = contextvars.ContextVar("current", default=None)


async def one_chat(loop: asyncio.AbstractEventLoop) -> weakref.ref[Chat]:
    chat = Chat()
    CURRENT.set(chat)
    for _ in range(300):  # as a streamed answer does: wait_for per token, the token comes first
        await asyncio.wait_for(asyncio.sleep(0), timeout=300)
    return weakref.ref(chat)


def test_a_closed_chat_outlives_its_cancelled_timers_until_they_are_purged() -> None:
    loop = asyncio.new_event_loop()
    nest_asyncio.apply(loop)  # as `chainlit run` does
    # A live timer due sooner (a socket ping, another chat's timeout): nest_asyncio drops
    # cancelled timers only from the top of the heap, so the ones behind it stay.
    loop.call_later(200, print)
    try:
        chat = loop.run_until_complete(loop.create_task(one_chat(loop)))
        loop.run_until_complete(asyncio.sleep(0.01))
        gc.collect()
        assert chat() is not None  # nest_asyncio's loop kept the 300 cancelled timers
        assert purge_cancelled_timers(loop) >= 300
        assert not [h for h in loop._scheduled if h.cancelled()]  # type: ignore[attr-defined]
        gc.collect()
        assert chat() is None
        assert purge_cancelled_timers(loop) == 0
    finally:
        loop.close()


def test_live_timers_stay_and_still_fire_in_order() -> None:
    loop = asyncio.new_event_loop()
    nest_asyncio.apply(loop)
    fired: list[int] = []
    try:
        handles = [loop.call_later(0.01 * (i + 1), fired.append, i) for i in range(6)]
        for h in handles[::2]:
            h.cancel()
        assert purge_cancelled_timers(loop) == 3
        loop.run_until_complete(asyncio.sleep(0.2))
        assert fired == [1, 3, 5]
    finally:
        loop.close()


def test_keep_purging_runs_in_the_background_and_refuses_a_bad_interval() -> None:
    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        purger = asyncio.create_task(keep_purging(0.02))
        loop.call_later(100, print).cancel()
        await asyncio.sleep(0.1)
        purger.cancel()
        return sum(h.cancelled() for h in loop._scheduled)  # type: ignore[attr-defined]

    loop = asyncio.new_event_loop()
    nest_asyncio.apply(loop)
    try:
        assert loop.run_until_complete(scenario()) == 0
        with pytest.raises(ValueError, match="interval_s must be above 0"):
            loop.run_until_complete(keep_purging(0))
    finally:
        loop.close()


def test_the_messages_of_closed_chats_are_dropped_and_live_ones_kept() -> None:
    from chainlit.chat_context import chat_contexts
    from chainlit.session import ws_sessions_id

    live, closed = "soak-test-live", "soak-test-closed"
    ws_sessions_id[live] = object()  # type: ignore[assignment]  # only membership is read
    chat_contexts[live] = []
    chat_contexts[closed] = []
    try:
        assert drop_closed_chat_contexts() >= 1
        assert live in chat_contexts and closed not in chat_contexts
    finally:
        ws_sessions_id.pop(live, None)
        chat_contexts.pop(live, None)
        chat_contexts.pop(closed, None)
