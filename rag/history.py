"""Chat history: the SQLite schema Chainlit's SQLAlchemy data layer expects, and element files.

Chainlit's ``SQLAlchemyDataLayer`` (chainlit/data/sql_alchemy.py) writes raw SQL against five
tables it never creates. ``ensure_schema`` creates them in a SQLite file (idempotent), with the
column names that file uses (quoted camelCase). SQLite has no arrays or JSON columns, so
``sqlite_params`` turns list/dict parameters into JSON text on the way in and ``decode_thread``
turns them back on the way out.

Sign-in lives in rag/signin.py, the mapping of saved chat settings in rag/chat_settings.py.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from rag.errors import ConfigError

DB_NAME = "chat.db"

# Column names and order follow chainlit/data/sql_alchemy.py (Chainlit 2.12) and the schema in
# https://docs.chainlit.io/data-layers/sqlalchemy, with Postgres types mapped to SQLite:
# UUID -> TEXT, JSONB / TEXT[] -> TEXT holding JSON, BOOLEAN -> INTEGER affinity.
SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS users (
    "id" TEXT PRIMARY KEY,
    "identifier" TEXT NOT NULL UNIQUE,
    "metadata" TEXT NOT NULL DEFAULT '{}',
    "createdAt" TEXT
)""",
    """CREATE TABLE IF NOT EXISTS threads (
    "id" TEXT PRIMARY KEY,
    "createdAt" TEXT,
    "name" TEXT,
    "userId" TEXT,
    "userIdentifier" TEXT,
    "tags" TEXT,
    "metadata" TEXT,
    FOREIGN KEY ("userId") REFERENCES users("id") ON DELETE CASCADE
)""",
    """CREATE TABLE IF NOT EXISTS steps (
    "id" TEXT PRIMARY KEY,
    "name" TEXT NOT NULL,
    "type" TEXT NOT NULL,
    "threadId" TEXT NOT NULL,
    "parentId" TEXT,
    "streaming" BOOLEAN NOT NULL,
    "waitForAnswer" BOOLEAN,
    "isError" BOOLEAN,
    "metadata" TEXT,
    "tags" TEXT,
    "input" TEXT,
    "output" TEXT,
    "createdAt" TEXT,
    "command" TEXT,
    "modes" TEXT,
    "start" TEXT,
    "end" TEXT,
    "generation" TEXT,
    "showInput" TEXT,
    "language" TEXT,
    "indent" INTEGER,
    "defaultOpen" BOOLEAN,
    "autoCollapse" BOOLEAN,
    "icon" TEXT,
    FOREIGN KEY ("threadId") REFERENCES threads("id") ON DELETE CASCADE
)""",
    """CREATE TABLE IF NOT EXISTS elements (
    "id" TEXT PRIMARY KEY,
    "threadId" TEXT,
    "type" TEXT,
    "url" TEXT,
    "chainlitKey" TEXT,
    "name" TEXT NOT NULL,
    "display" TEXT,
    "objectKey" TEXT,
    "size" TEXT,
    "page" INTEGER,
    "language" TEXT,
    "forId" TEXT,
    "mime" TEXT,
    "props" TEXT,
    "autoPlay" BOOLEAN,
    "playerConfig" TEXT,
    FOREIGN KEY ("threadId") REFERENCES threads("id") ON DELETE CASCADE
)""",
    """CREATE TABLE IF NOT EXISTS feedbacks (
    "id" TEXT PRIMARY KEY,
    "forId" TEXT NOT NULL,
    "threadId" TEXT NOT NULL,
    "value" INTEGER NOT NULL,
    "comment" TEXT,
    FOREIGN KEY ("threadId") REFERENCES threads("id") ON DELETE CASCADE
)""",
    'CREATE INDEX IF NOT EXISTS idx_threads_user ON threads ("userId")',
    'CREATE INDEX IF NOT EXISTS idx_steps_thread ON steps ("threadId")',
    'CREATE INDEX IF NOT EXISTS idx_elements_thread ON elements ("threadId")',
    'CREATE INDEX IF NOT EXISTS idx_feedbacks_for ON feedbacks ("forId")',
)

TABLES = ("users", "threads", "steps", "elements", "feedbacks")


def db_path(data_dir: Path) -> Path:
    """Where the chat history lives: <data_dir>/chat.db."""
    return data_dir / DB_NAME


def ensure_schema(path: Path) -> None:
    """Create the history database and its tables if missing; safe to call on every start.

    Columns that newer Chainlit releases added to ``steps`` are added to an older file too.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(path)) as conn, conn:
            for statement in SCHEMA:
                conn.execute(statement)
            # WAL: a commit appends to the log instead of rewriting pages and syncing twice.
            # Chainlit commits every step write on its own, and with the default rollback
            # journal those writes fell behind a busy chat and queued up in memory (the soak).
            conn.execute("PRAGMA journal_mode=WAL")
            have = {row[1] for row in conn.execute("PRAGMA table_info(steps)")}
            for column, kind in _STEP_COLUMNS_ADDED_LATER:
                if column not in have:
                    conn.execute(f'ALTER TABLE steps ADD COLUMN "{column}" {kind}')
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(
            f"cannot create the chat history database {path}: {exc}. Check that data_dir "
            "(RAG__DATA_DIR) is a writable folder, or delete a corrupt chat.db to start afresh."
        ) from None


_STEP_COLUMNS_ADDED_LATER = (
    ("command", "TEXT"),
    ("modes", "TEXT"),
    ("defaultOpen", "BOOLEAN"),
    ("autoCollapse", "BOOLEAN"),
    ("icon", "TEXT"),
)


def conninfo(path: Path) -> str:
    """The SQLAlchemy URL of the history database (async driver aiosqlite, absolute path)."""
    return f"sqlite+aiosqlite:///{path.resolve()}"


def sqlite_pragmas(dbapi_connection: Any, _record: Any = None) -> None:
    """Per-connection settings (an SQLAlchemy "connect" listener): WAL syncs at checkpoints only."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=5000")
    finally:
        cursor.close()


def sqlite_params(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Query parameters SQLite can bind: lists and dicts (tags, modes, props) become JSON text."""
    return {
        key: json.dumps(value, ensure_ascii=False) if isinstance(value, list | dict) else value
        for key, value in parameters.items()
    }


def json_or(value: Any, kind: type) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            return value
        return decoded if isinstance(decoded, kind) else value
    return value


_BOOLEAN_STEP_FIELDS = ("streaming", "waitForAnswer", "isError", "defaultOpen", "autoCollapse")


def decode_thread(thread: Mapping[str, Any]) -> dict[str, Any]:
    """A thread read from SQLite with its JSON text columns turned back into lists and dicts."""
    out = dict(thread)
    out["tags"] = json_or(out.get("tags"), list)
    out["metadata"] = json_or(out.get("metadata"), dict)
    steps = []
    for step in out.get("steps") or []:
        s = dict(step)
        for key in ("metadata", "generation"):
            s[key] = json_or(s.get(key), dict)
        s["tags"] = json_or(s.get("tags"), list)
        for key in _BOOLEAN_STEP_FIELDS:  # SQLite returns 0/1; the UI expects true/false
            if isinstance(s.get(key), int) and not isinstance(s.get(key), bool):
                s[key] = bool(s[key])
        steps.append(s)
    out["steps"] = steps
    return out


# -- element files -------------------------------------------------------------------------------

FILES_DIR = "history-files"  # under data_dir: the contents of the elements of stored threads
FILES_ROUTE = "/history/files"


def stored_file(root: Path, object_key: str) -> Path:
    """Where the element file `object_key` lives under `root`; ValueError if it would escape."""
    base = root.resolve()
    if not object_key or "\x00" in object_key or object_key.startswith("/"):
        raise ValueError(f"not a stored file key: {object_key!r}")
    path = (base / object_key).resolve()
    if path == base or not path.is_relative_to(base):
        raise ValueError(f"not a stored file key: {object_key!r}")
    return path


def may_read(object_key: str, user_id: str | None) -> bool:
    """Chainlit keys element files "<user id>/<element id>/<name>": only that user reads them.

    Without sign-in (``user_id`` None) there are no owners to tell apart.
    """
    return user_id is None or object_key.split("/", 1)[0] == user_id


def file_url(object_key: str, root_path: str = "") -> str:
    """The URL webui/routes.py serves a stored element file at."""
    return f"{root_path}{FILES_ROUTE}/{quote(object_key, safe='/')}"
