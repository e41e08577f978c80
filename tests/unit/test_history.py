"""rag/history.py (the SQLite schema, Chainlit's own data layer on it), rag/signin.py and
rag/chat_settings.py (resumed settings)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from rag.assistant import AskOptions
from rag.chat_settings import (
    DEMO_SEED,
    SETTINGS_KEY,
    options_from_settings,
    settings_from_thread,
)
from rag.errors import ConfigError
from rag.history import (
    TABLES,
    conninfo,
    db_path,
    decode_thread,
    ensure_schema,
    file_url,
    may_read,
    sqlite_params,
    stored_file,
)
from rag.signin import auth_setup, parse_users


def columns(path: Path, table: str) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


# -- schema --------------------------------------------------------------------------------------


def test_schema_has_the_tables_and_columns_chainlit_writes(tmp_path: Path) -> None:
    path = db_path(tmp_path / "data")
    ensure_schema(path)  # creates the data folder too
    assert path == tmp_path / "data" / "chat.db" and path.is_file()
    with sqlite3.connect(path) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert set(TABLES) <= names
    assert {"id", "identifier", "metadata", "createdAt"} <= columns(path, "users")
    assert {"userId", "userIdentifier", "tags", "metadata", "name"} <= columns(path, "threads")
    # Every key of Chainlit 2.12's StepDict that create_step may write is a column.
    assert {
        "threadId", "parentId", "streaming", "waitForAnswer", "isError", "metadata", "tags",
        "input", "output", "createdAt", "command", "modes", "start", "end", "generation",
        "showInput", "language", "defaultOpen", "autoCollapse",
    } <= columns(path, "steps")  # fmt: skip
    assert {"threadId", "chainlitKey", "objectKey", "forId", "mime", "props", "playerConfig"} <= (
        columns(path, "elements")
    )
    assert {"id", "forId", "threadId", "value", "comment"} <= columns(path, "feedbacks")


def test_ensure_schema_is_idempotent_and_keeps_rows(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    ensure_schema(path)
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO users (id, identifier, metadata) VALUES ('u1', 'alice', '{}')")
    ensure_schema(path)
    ensure_schema(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT identifier FROM users").fetchall() == [("alice",)]


def test_ensure_schema_adds_step_columns_missing_from_an_older_file(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    with sqlite3.connect(path) as conn:  # a steps table from before Chainlit 2.1
        conn.execute('CREATE TABLE steps ("id" TEXT PRIMARY KEY, "name" TEXT, "type" TEXT)')
    ensure_schema(path)
    assert {"command", "modes", "defaultOpen", "autoCollapse"} <= columns(path, "steps")


def test_unwritable_data_dir_names_the_file_and_the_fix(tmp_path: Path) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the data folder should be")
    with pytest.raises(ConfigError, match=r"chat\.db.*RAG__DATA_DIR"):
        ensure_schema(blocker / "chat.db")


def test_conninfo_is_an_absolute_aiosqlite_url(tmp_path: Path) -> None:
    url = conninfo(tmp_path / "chat.db")
    assert url == f"sqlite+aiosqlite:///{(tmp_path / 'chat.db').resolve()}"
    assert url.startswith("sqlite+aiosqlite:////")  # three slashes + an absolute path


def test_sqlite_params_and_decode_thread_round_trip_lists_and_dicts() -> None:
    params = sqlite_params({"tags": ["Compare"], "metadata": {"a": 1}, "n": 2, "s": "x", "z": None})
    assert params == {"tags": '["Compare"]', "metadata": '{"a": 1}', "n": 2, "s": "x", "z": None}
    thread = decode_thread(
        {
            "id": "t",
            "tags": '["Compare"]',
            "metadata": '{"chat_profile": "Compare"}',
            "steps": [{"metadata": "{}", "generation": None, "tags": None, "isError": 0}],
        }
    )
    assert thread["tags"] == ["Compare"]
    assert thread["metadata"] == {"chat_profile": "Compare"}
    assert thread["steps"][0]["metadata"] == {} and thread["steps"][0]["isError"] is False
    # Text that merely looks like JSON is left alone.
    assert (
        decode_thread({"tags": "[not json", "metadata": "{}", "steps": []})["tags"] == "[not json"
    )


def test_chainlit_sqlalchemy_data_layer_works_on_the_schema(tmp_path: Path) -> None:
    """The real SQLAlchemyDataLayer (as app.py wraps it) stores and lists a user's thread."""
    from chainlit.context import init_http_context
    from chainlit.data.sql_alchemy import SQLAlchemyDataLayer
    from chainlit.types import Feedback, Pagination, ThreadFilter
    from chainlit.user import User

    class Layer(SQLAlchemyDataLayer):  # the same two overrides as app.py's _SQLiteDataLayer
        async def execute_sql(self, query: str, parameters: dict[str, Any]) -> Any:
            return await super().execute_sql(query, sqlite_params(parameters))

        async def get_all_user_threads(
            self, user_id: str | None = None, thread_id: str | None = None
        ) -> Any:
            threads = await super().get_all_user_threads(user_id=user_id, thread_id=thread_id)
            return None if threads is None else [decode_thread(t) for t in threads]

    path = tmp_path / "chat.db"
    ensure_schema(path)

    async def scenario() -> tuple[Any, Any, Any]:
        init_http_context()  # outside a websocket session the layer writes at once
        layer = Layer(conninfo(path))
        try:
            user = await layer.create_user(User(identifier="alice"))
            assert user is not None
            settings = {"retriever": "bm25", "top_k": 5.0}
            await layer.update_thread(
                "t1", name="Who approves releases?", user_id=user.id, tags=["Compare"],
                metadata={"chat_settings": settings, "chat_profile": "Compare"},
            )  # fmt: skip
            step: dict[str, Any] = {
                "id": "s1", "threadId": "t1", "name": "alice", "type": "user_message",
                "output": "Who approves releases?", "createdAt": "2026-01-01T00:00:00Z",
                "streaming": False, "metadata": {}, "tags": ["q"], "modes": {"m": "v"},
                "defaultOpen": True, "autoCollapse": False, "showInput": False,
            }  # fmt: skip
            await layer.create_step(step)  # type: ignore[arg-type]
            await layer.upsert_feedback(
                Feedback(forId="s1", threadId="t1", value=1, comment="good")
            )
            listed = await layer.list_threads(Pagination(first=10), ThreadFilter(userId=user.id))
            thread = await layer.get_thread("t1")
            author = await layer.get_thread_author("t1")
            return listed, thread, author
        finally:
            await layer.close()

    listed, thread, author = asyncio.run(scenario())
    assert [t["id"] for t in listed.data] == ["t1"]
    assert author == "alice"
    assert thread["tags"] == ["Compare"]
    assert thread["metadata"]["chat_settings"] == {"retriever": "bm25", "top_k": 5.0}
    (step,) = thread["steps"]
    assert step["output"] == "Who approves releases?" and step["streaming"] is False
    assert step["feedback"]["value"] == 1


# -- sign-in -------------------------------------------------------------------------------------


def test_users_parse_and_check_passwords() -> None:
    users = parse_users(" alice:pw1 , bob:p:w:2 ,")
    assert users.names == ["alice", "bob"]
    assert users.check("alice", "pw1")
    assert users.check("bob", "p:w:2")  # everything after the first colon is the password
    assert not users.check("alice", "pw2")
    assert not users.check("carol", "pw1")
    assert "pw1" not in repr(users)  # only digests are kept


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("alice", r"entry 1 \('alice'\) has no password.*name:password"),
        ("alice:pw,bob:", r"entry 2 \('bob'\) has no password"),
        ("al ice:pw", r"user name 'al ice' is not valid"),
        ("alice:pw,alice:other", r"names user 'alice' twice"),
        (" , ", r"names no user"),
    ],
)
def test_bad_users_spec_says_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_users(spec)


def test_sign_in_needs_both_the_secret_and_users() -> None:
    assert not auth_setup({}).enabled
    assert "RAG_USERS is not set" in auth_setup({"CHAINLIT_AUTH_SECRET": "s"}).reason
    no_secret = auth_setup({"RAG_USERS": "alice:pw"})
    assert not no_secret.enabled and "chainlit create-secret" in no_secret.reason
    on = auth_setup({"RAG_USERS": "alice:pw", "CHAINLIT_AUTH_SECRET": "s"})
    assert on.enabled and on.users is not None and on.users.check("alice", "pw")
    with pytest.raises(ConfigError, match="has no password"):
        auth_setup({"RAG_USERS": "alice", "CHAINLIT_AUTH_SECRET": "s"})


# -- resumed settings ----------------------------------------------------------------------------


def test_options_from_saved_settings() -> None:
    saved = {
        "retriever": "bm25", "top_k": 7.0, "mode": "never", "strategy": "refine",
        "min_draft_chars": 80.0, "weak_context": 0.5, "temperature": 0.3, "demo": False,
    }  # fmt: skip
    assert options_from_settings(saved) == AskOptions(
        retriever="bm25", top_k=7, mode="never", strategy="refine", temperature=0.3,
        min_draft_chars=80, weak_context=0.5,
    )  # fmt: skip


def test_options_demo_mode_and_defaults() -> None:
    demo = options_from_settings({"demo": True, "temperature": 0.9, "weak_context": -1})
    assert demo.temperature == 0.0 and demo.seed == DEMO_SEED and demo.weak_context is None
    assert options_from_settings(None) == AskOptions()
    assert options_from_settings({}, default_mode="compare").mode == "compare"


def test_options_drop_unknown_or_malformed_values() -> None:
    opts = options_from_settings(
        {"retriever": "milvus-old", "top_k": "many", "mode": "sideways", "temperature": None}
    )
    assert opts == AskOptions()


def test_resumed_thread_continues_with_its_last_answers_settings() -> None:
    thread = {
        "metadata": {"chat_settings": {"retriever": "lexical"}},  # saved at disconnect: may lag
        "steps": [
            {"type": "assistant_message", "metadata": {SETTINGS_KEY: {"retriever": "hybrid"}}},
            {
                "type": "assistant_message",
                "metadata": f'{{"{SETTINGS_KEY}": {{"retriever": "bm25"}}}}',
            },
            {"type": "assistant_message", "metadata": {}},  # e.g. a notice: no record
        ],
    }
    assert settings_from_thread(thread) == {"retriever": "bm25"}
    assert settings_from_thread({"metadata": '{"chat_settings": {"top_k": 3}}', "steps": []}) == {
        "top_k": 3
    }
    assert settings_from_thread({"steps": None}) == {}


def test_element_files_stay_under_their_folder_and_with_their_owner(tmp_path: Path) -> None:
    root = tmp_path / "history-files"
    key = "user-1/element-9/[1]"
    assert stored_file(root, key) == (root / "user-1" / "element-9" / "[1]").resolve()
    for bad in ("", "../chat.db", "user-1/../../x", "/etc/passwd", "a\x00b", "."):
        with pytest.raises(ValueError, match="not a stored file key"):
            stored_file(root, bad)
    assert may_read(key, "user-1")
    assert not may_read(key, "user-2")
    assert may_read(key, None)  # sign-in off: no owners to tell apart
    assert file_url(key) == "/history/files/user-1/element-9/%5B1%5D"
    assert file_url(key, "/docs") == "/docs/history/files/user-1/element-9/%5B1%5D"
