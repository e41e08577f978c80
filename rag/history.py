"""Chat history and sign-in: the SQLite schema Chainlit's SQLAlchemy data layer expects, users.

Chainlit's ``SQLAlchemyDataLayer`` (chainlit/data/sql_alchemy.py) writes raw SQL against five
tables it never creates. ``ensure_schema`` creates them in a SQLite file (idempotent), with the
column names that file uses (quoted camelCase). SQLite has no arrays or JSON columns, so
``sqlite_params`` turns list/dict parameters into JSON text on the way in and ``decode_thread``
turns them back on the way out.

Sign-in is off unless both CHAINLIT_AUTH_SECRET and RAG_USERS ("alice:pw1,bob:pw2") are set:
Chainlit lists a user's threads only for a signed-in user, so history shows in the sidebar only
then. ``options_from_settings`` rebuilds a session's question options from the chat settings a
resumed thread saved, so the thread continues with the settings it had.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from rag.assistant import AskOptions
from rag.errors import ConfigError

DB_NAME = "chat.db"
DEMO_SEED = 42

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


def _json_or(value: Any, kind: type) -> Any:
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
    out["tags"] = _json_or(out.get("tags"), list)
    out["metadata"] = _json_or(out.get("metadata"), dict)
    steps = []
    for step in out.get("steps") or []:
        s = dict(step)
        for key in ("metadata", "generation"):
            s[key] = _json_or(s.get(key), dict)
        s["tags"] = _json_or(s.get("tags"), list)
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
    """The URL app.py serves a stored element file at."""
    return f"{root_path}{FILES_ROUTE}/{quote(object_key, safe='/')}"


# -- sign-in -----------------------------------------------------------------------------------

_USER_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")


@dataclass(frozen=True)
class Users:
    """The accounts allowed to sign in; passwords are kept as SHA-256 digests only."""

    digests: Mapping[str, bytes]

    def check(self, username: str, password: str) -> bool:
        """True when the name is known and the password matches (constant-time comparison)."""
        wanted = self.digests.get(username)
        given = hashlib.sha256(password.encode("utf-8")).digest()
        if wanted is None:
            hmac.compare_digest(given, given)  # same work for unknown names
            return False
        return hmac.compare_digest(wanted, given)

    @property
    def names(self) -> list[str]:
        return sorted(self.digests)


def parse_users(spec: str) -> Users:
    """Parse RAG_USERS ("alice:pw1,bob:pw2") or raise ConfigError naming the bad entry."""
    digests: dict[str, bytes] = {}
    for n, raw in enumerate(spec.split(","), 1):
        entry = raw.strip()
        if not entry:
            continue
        name, sep, password = entry.partition(":")
        name = name.strip()
        if not sep or not password:
            raise ConfigError(
                f"RAG_USERS entry {n} ({name or entry!r}) has no password; "
                'write users as "name:password" separated by commas, e.g. "alice:s3cret,bob:pa55"'
            )
        if not _USER_NAME.fullmatch(name):
            raise ConfigError(
                f"RAG_USERS entry {n}: user name {name!r} is not valid; use 1-64 letters, "
                "digits or . _ @ - (no spaces, commas or colons)"
            )
        if name in digests:
            raise ConfigError(f"RAG_USERS names user {name!r} twice; keep one entry per user")
        digests[name] = hashlib.sha256(password.encode("utf-8")).digest()
    if not digests:
        raise ConfigError(
            'RAG_USERS is set but names no user; write "name:password" pairs separated by '
            "commas, or unset it to run without sign-in"
        )
    return Users(digests)


@dataclass(frozen=True)
class AuthSetup:
    """Whether sign-in is on, and why not when it is off (for the start-up log)."""

    users: Users | None
    reason: str

    @property
    def enabled(self) -> bool:
        return self.users is not None


def auth_setup(environ: Mapping[str, str]) -> AuthSetup:
    """Sign-in is on when CHAINLIT_AUTH_SECRET and RAG_USERS are both set; a bad RAG_USERS raises."""
    secret = environ.get("CHAINLIT_AUTH_SECRET", "").strip()
    spec = environ.get("RAG_USERS", "").strip()
    if not spec:
        return AuthSetup(
            None,
            "sign-in is off (RAG_USERS is not set): chat history is stored, but Chainlit lists "
            "threads in the sidebar only for signed-in users",
        )
    users = parse_users(spec)
    if not secret:
        return AuthSetup(
            None,
            "sign-in is off: RAG_USERS is set but CHAINLIT_AUTH_SECRET is not; create a secret "
            "with `chainlit create-secret` and export it to turn sign-in on",
        )
    return AuthSetup(
        users, f"sign-in is on for {len(users.names)} user(s): {', '.join(users.names)}"
    )


# -- resuming a thread -------------------------------------------------------------------------

SETTINGS_KEY = "rag_settings"  # where app.py records the settings panel's values on each answer


def settings_from_thread(thread: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a resumed thread continues with: those of its last answer.

    Each answer's step metadata records the settings panel's values it was asked with. Chainlit
    also saves the session's settings in the thread's metadata, but only when the browser
    disconnects, which can land after a reload has already resumed the thread (and a resumed
    session then saves its own values over them); the answers' record has no such race.
    """
    for step in reversed(list(thread.get("steps") or [])):
        meta = _json_or(step.get("metadata"), dict) if isinstance(step, Mapping) else None
        if isinstance(meta, dict) and isinstance(meta.get(SETTINGS_KEY), dict):
            return dict(meta[SETTINGS_KEY])
    meta = _json_or(thread.get("metadata"), dict)
    saved = meta.get("chat_settings") if isinstance(meta, dict) else None
    return dict(saved) if isinstance(saved, dict) else {}


def _number(value: Any) -> float | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _choice(value: Any, choices: tuple[str, ...]) -> Any:
    return value if isinstance(value, str) and value in choices else None


def options_from_settings(
    settings: Mapping[str, Any] | None,
    *,
    retrievers: tuple[str, ...] = ("lexical", "bm25", "embedding", "hybrid"),
    default_mode: str | None = None,
) -> AskOptions:
    """AskOptions from the chat settings panel's values (fresh or saved with a thread).

    Unknown or malformed values are dropped (rag.yaml's defaults apply), so an old thread saved
    by another version never stops a resumed chat.
    """
    s = settings or {}
    demo = s.get("demo") is True
    top_k = _number(s.get("top_k"))
    min_chars = _number(s.get("min_draft_chars"))
    weak = _number(s.get("weak_context"))
    temperature = _number(s.get("temperature"))
    mode = _choice(s.get("mode"), ("auto", "never", "always", "compare")) or _choice(
        default_mode, ("auto", "never", "always", "compare")
    )
    return AskOptions(
        retriever=_choice(s.get("retriever"), retrievers),
        top_k=int(top_k) if top_k is not None and top_k >= 1 else None,
        mode=mode,
        strategy=_choice(s.get("strategy"), ("answer", "refine")),
        temperature=0.0 if demo else temperature,
        seed=DEMO_SEED if demo else None,
        min_draft_chars=int(min_chars) if min_chars is not None and min_chars >= 0 else None,
        weak_context=weak if weak is not None and weak >= 0 else None,
    )
