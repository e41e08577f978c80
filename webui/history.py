"""Chat history for Chainlit: its SQL data layer on SQLite, and element files on local disk.

The schema and the JSON mapping live in rag/history.py; this module adapts Chainlit's classes.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from pathlib import Path
from typing import Any

import sqlalchemy
from chainlit.config import config as chainlit_config
from chainlit.data.sql_alchemy import SQLAlchemyDataLayer
from chainlit.data.storage_clients.base import BaseStorageClient
from chainlit.types import ThreadDict

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


class SQLiteDataLayer(SQLAlchemyDataLayer):
    """Chainlit's SQL data layer on SQLite: lists and dicts stored as JSON text and read back.

    Chainlit persists each step write in its own task, so a step's creation (empty output) can
    land after its update (with the output) and blank it in the stored thread. Step writes here
    go through one lock, in the order Chainlit issued them.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._step_writes = asyncio.Lock()
        self._step_seq: dict[str, int] = {}  # step id -> number of its latest queued write
        self._threads_seen: OrderedDict[str, None] = OrderedDict()  # threads known to exist
        sqlalchemy.event.listen(self.engine.sync_engine, "connect", sqlite_pragmas)

    async def create_step(self, step_dict: Any) -> None:
        # Every write carries the whole step, so of several queued writes of one step only the
        # last is needed. Without this the writes of a busy chat (each its own transaction)
        # fell behind and queued up without bound, holding closed sessions in memory (the soak).
        step_id = str(step_dict.get("id"))
        seq = self._step_seq.get(step_id, 0) + 1
        self._step_seq[step_id] = seq
        async with self._step_writes:  # FIFO: the tasks reach it in the order they were created
            if self._step_seq.get(step_id) != seq:
                return  # a newer write of this step is queued behind this one
            del self._step_seq[step_id]
            await super().create_step(step_dict)

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
        self._threads_seen.pop(thread_id, None)
        await super().delete_thread(thread_id)

    async def execute_sql(self, query: str, parameters: dict[str, Any]) -> Any:
        return await super().execute_sql(query, sqlite_params(parameters))

    async def get_all_user_threads(
        self, user_id: str | None = None, thread_id: str | None = None
    ) -> list[ThreadDict] | None:
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
