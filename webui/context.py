"""AppContext: what the hooks share, built once at start-up and passed down (no module globals)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rag import load_config
from rag.assistant import Assistant, build_assistant
from rag.config import Config
from rag.history import FILES_DIR, db_path, ensure_schema
from rag.signin import AuthSetup, auth_setup

log = logging.getLogger("rag.app")

APP_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class AppContext:
    """The configuration, the assistant and the places the web UI reads and writes."""

    cfg: Config
    assistant: Assistant
    auth: AuthSetup
    history_db: Path  # the SQLite file of chat history
    element_files: Path  # contents of the elements of stored threads
    session_files: Path  # Chainlit's per-session files (uploads, element contents)
    playground_html: Path


def build_context(environ: Mapping[str, str] = os.environ) -> AppContext:
    """Load rag.yaml, wire the assistant, create the history schema and check sign-in."""
    cfg = load_config(environ.get("RAG_CONFIG", "rag.yaml"), environ)
    assistant = build_assistant(cfg, progress=log.info)
    history_db = db_path(cfg.data_dir)
    ensure_schema(history_db)  # tables created on first start; a clear error if read-only
    auth = auth_setup(environ)  # a malformed RAG_USERS stops start-up with the entry it dislikes
    log.info("chat history in %s; %s", history_db, auth.reason)
    return AppContext(
        cfg=cfg,
        assistant=assistant,
        auth=auth,
        history_db=history_db,
        element_files=cfg.data_dir.resolve() / FILES_DIR,
        session_files=cfg.data_dir.resolve() / "session-files",
        playground_html=APP_DIR / "public" / "playground.html",
    )
