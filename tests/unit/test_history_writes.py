"""webui/history.py's step writes: latest state per step, one transaction per batch, no pile-up."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy

from rag.history import conninfo, ensure_schema
from webui.history import SQLiteDataLayer


def step(step_id: str, thread_id: str, output: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": step_id, "threadId": thread_id, "name": "Assistant", "type": "assistant_message",
        "output": output, "createdAt": "2026-01-01T00:00:00Z", "streaming": False,
        "metadata": {}, **extra,
    }  # fmt: skip


def stored(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute('SELECT "id", "output" FROM steps').fetchall())


def threads(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute('SELECT "id" FROM threads')}


def test_steps_are_written_later_latest_state_only_in_one_transaction(tmp_path: Path) -> None:
    from chainlit.context import init_http_context

    path = tmp_path / "chat.db"
    ensure_schema(path)

    async def scenario() -> tuple[dict[str, str], int, int, dict[str, str]]:
        init_http_context()  # outside a websocket session Chainlit writes at once
        layer = SQLiteDataLayer(conninfo=conninfo(path))
        commits: list[int] = []
        sqlalchemy.event.listen(layer.engine.sync_engine, "commit", lambda _c: commits.append(1))
        try:
            # A streamed answer: created empty, then updated; 200 of them in two threads.
            for i in range(200):
                sid, tid = f"s{i}", f"t{i % 2}"
                await layer.create_step(step(sid, tid, ""))  # type: ignore[arg-type]
                await layer.update_step(step(sid, tid, f"partial {i}"))  # type: ignore[arg-type]
                await layer.update_step(step(sid, tid, f"answer {i}"))  # type: ignore[arg-type]
            before = stored(path)  # the calls returned without writing: nothing is stored yet
            tasks = len(asyncio.all_tasks())  # this one and the writer, not one per write
            await layer.flush()
            return before, tasks, len(commits), stored(path)
        finally:
            await layer.close()

    before, tasks, commits, after = asyncio.run(scenario())
    assert before == {}
    assert tasks == 2
    assert commits == 1
    assert after == {f"s{i}": f"answer {i}" for i in range(200)}
    assert threads(path) == {"t0", "t1"}


def test_a_bad_step_is_logged_and_the_rest_of_its_batch_is_written(
    tmp_path: Path, caplog: Any
) -> None:
    from chainlit.context import init_http_context

    path = tmp_path / "chat.db"
    ensure_schema(path)

    async def scenario() -> None:
        init_http_context()
        layer = SQLiteDataLayer(conninfo=conninfo(path))
        try:
            await layer.create_step(step("good1", "t1", "one"))  # type: ignore[arg-type]
            await layer.create_step(step("bad", "t1", "x", noSuchColumn=1))  # type: ignore[arg-type]
            await layer.create_step(step("good2", "t2", "two"))  # type: ignore[arg-type]
            await layer.flush()
        finally:
            await layer.close()

    asyncio.run(scenario())
    assert stored(path) == {"good1": "one", "good2": "two"}
    assert threads(path) == {"t1", "t2"}  # the rolled-back threads were created again
    assert "writing 3 chat history steps at once failed" in caplog.text


def test_a_resumed_thread_has_the_steps_written_just_before(tmp_path: Path) -> None:
    from chainlit.context import init_http_context

    path = tmp_path / "chat.db"
    ensure_schema(path)

    async def scenario() -> Any:
        init_http_context()
        layer = SQLiteDataLayer(conninfo=conninfo(path))
        try:
            await layer.update_thread("t1", name="A question")
            await layer.create_step(step("s1", "t1", "the answer"))  # type: ignore[arg-type]
            return await layer.get_thread("t1")  # no flush: get_thread waits for the writer
        finally:
            await layer.close()

    thread = asyncio.run(scenario())
    assert [s["output"] for s in thread["steps"]] == ["the answer"]
