"""Chat history for Chainlit: its SQL data layer on SQLite, and element files on local disk.

The schema and the JSON mapping live in rag/history.py; this module adapts Chainlit's classes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextvars import Context, ContextVar
from pathlib import Path
from typing import Any, TypeVar, cast

import sqlalchemy
from chainlit.config import config as chainlit_config
from chainlit.data.sql_alchemy import SQLAlchemyDataLayer
from chainlit.data.storage_clients.base import BaseStorageClient
from chainlit.data.utils import queue_until_user_message
from chainlit.step import StepDict
from chainlit.types import ThreadDict
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from rag.history import (
    conninfo,
    decode_thread,
    file_url,
    sqlite_params,
    sqlite_pragmas,
    stored_file,
)
from webui.context import AppContext

THREADS_SEEN_MAX = 4096
log = logging.getLogger("rag.app")
_M = TypeVar("_M", bound=Callable[..., Awaitable[None]])


def _until_first_message(method: _M) -> _M:
    """Chainlit's own rule: a chat's writes wait for its first message (none if it never comes)."""
    return cast(_M, queue_until_user_message()(method))


# Chainlit's step upsert itself, without its queue_until_user_message wrapper (applied already).
_CHAINLIT_CREATE_STEP = SQLAlchemyDataLayer.create_step.__wrapped__


class SQLiteDataLayer(SQLAlchemyDataLayer):
    """Chainlit's SQL data layer on SQLite: lists and dicts stored as JSON text and read back.

    Chainlit persists each step write (a step's creation, then every update) in a task of its
    own, each its own transaction. Under a busy chat those tasks fell behind and piled up, each
    holding its chat's closed session through its context (the soak: 1,900 pending write tasks
    two minutes into the load, 2,270 ninety seconds later). So here a step
    write only records the step's latest state and returns; one writer task writes everything
    recorded meanwhile in one transaction, oldest first. What waits is at most one dict per
    step, and a step's creation can no longer land after its update and blank it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: dict[str, StepDict] = {}  # step id -> its latest state, not yet written
        self._writer: asyncio.Task[None] | None = None
        self._batch: ContextVar[AsyncSession | None] = ContextVar("rag_history_batch", default=None)
        self._threads_seen: OrderedDict[str, None] = OrderedDict()  # threads known to exist
        sqlalchemy.event.listen(self.engine.sync_engine, "connect", sqlite_pragmas)

    @_until_first_message
    async def create_step(self, step_dict: StepDict) -> None:
        self._pending[str(step_dict.get("id"))] = step_dict  # a newer state replaces the queued one
        if self._writer is None or self._writer.done():
            # An empty context: the writer must not keep the chat that started it alive.
            self._writer = asyncio.create_task(self._write_pending(), context=Context())

    @_until_first_message
    async def update_step(self, step_dict: StepDict) -> None:
        await self.create_step(step_dict)

    async def flush(self) -> None:
        """Wait until every step recorded so far is written."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def _write_pending(self) -> None:
        while self._pending:
            batch = list(self._pending.values())
            self._pending.clear()
            if not await self._write_batch(batch):
                for step in batch:  # one bad row must not lose the others: one at a time
                    await _CHAINLIT_CREATE_STEP(self, step)

    async def _write_batch(self, steps: list[StepDict]) -> bool:
        async with self.async_session() as session:
            token = self._batch.set(session)
            try:
                await session.begin()
                for step in steps:
                    await _CHAINLIT_CREATE_STEP(self, dict(step))
                await session.commit()
            except Exception:
                log.warning(
                    "writing %d chat history steps at once failed", len(steps), exc_info=True
                )
                await session.rollback()
                for step in steps:  # their threads may have been rolled back with them
                    self._threads_seen.pop(str(step.get("threadId")), None)
                return False
            finally:
                self._batch.reset(token)
        return True

    async def execute_sql(self, query: str, parameters: dict[str, Any]) -> Any:
        session = self._batch.get()
        if session is None:
            return await super().execute_sql(query, sqlite_params(parameters))
        statement = sqlalchemy.text(query)
        result = cast(
            CursorResult[Any], await session.execute(statement, sqlite_params(parameters))
        )
        if result.returns_rows:
            return self.clean_result([dict(row._mapping) for row in result.fetchall()])
        return result.rowcount

    async def close(self) -> None:
        await self.flush()  # the server stops: write what is recorded first
        await super().close()

    async def delete_step(self, step_id: str) -> None:
        self._pending.pop(step_id, None)
        await self.flush()
        await super().delete_step(step_id)

    async def get_thread(self, thread_id: str) -> ThreadDict | None:
        await self.flush()  # a thread reopened right away shows its last answer
        return await super().get_thread(thread_id)

    async def update_thread(
        self,
        thread_id: str,
        name: str | None = None,
        user_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        tags: list[str] | None = None,
    ) -> None:
        # Chainlit calls this with the bare id before every step write, only to make sure the
        # thread exists (a SELECT in its own transaction): skip it for threads known to exist.
        bare = name is None and user_id is None and metadata is None and tags is None
        if bare and thread_id in self._threads_seen:
            return
        await super().update_thread(thread_id, name, user_id, metadata, tags)
        self._threads_seen[thread_id] = None
        while len(self._threads_seen) > THREADS_SEEN_MAX:
            self._threads_seen.popitem(last=False)

    async def delete_thread(self, thread_id: str) -> None:
        await self.flush()
        self._threads_seen.pop(thread_id, None)
        await super().delete_thread(thread_id)

    async def get_all_user_threads(
        self, user_id: str | None = None, thread_id: str | None = None
    ) -> list[ThreadDict] | None:
        await self.flush()
        threads = await super().get_all_user_threads(user_id=user_id, thread_id=thread_id)
        if threads is None:
            return None
        return [decode_thread(t) for t in threads]  # type: ignore[misc]


class ElementFiles(BaseStorageClient):
    """Element contents (cited passages, charts, attachments) of stored threads, on local disk.

    Without a storage client Chainlit keeps no elements, and a resumed answer's [1] would open
    nothing. Files live in <data_dir>/history-files and are served by GET /history/files/….
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    async def upload_file(
        self,
        object_key: str,
        data: bytes | str,
        mime: str = "application/octet-stream",
        overwrite: bool = True,
        content_disposition: str | None = None,
    ) -> dict[str, Any]:
        path = stored_file(self.root, object_key)
        if overwrite or not path.exists():
            raw = data.encode("utf-8") if isinstance(data, str) else data
            await asyncio.to_thread(_write_file, path, raw)
        return {"object_key": object_key, "url": await self.get_read_url(object_key)}

    async def delete_file(self, object_key: str) -> bool:
        try:
            stored_file(self.root, object_key).unlink()
        except (ValueError, OSError):
            return False
        return True

    async def get_read_url(self, object_key: str) -> str:
        return file_url(object_key, chainlit_config.run.root_path)

    async def close(self) -> None:
        return None


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)


def data_layer(ctx: AppContext) -> SQLAlchemyDataLayer:
    """The data layer Chainlit stores threads through."""
    return SQLiteDataLayer(
        conninfo=conninfo(ctx.history_db), storage_provider=ElementFiles(ctx.element_files)
    )
