"""Patches to Chainlit's server: an index.html that loads nothing remote, a files folder per data_dir."""

from __future__ import annotations

import re
from pathlib import Path

import chainlit.config
import chainlit.server

# Chainlit's index.html preconnects to Google Fonts and loads KaTeX's CSS from a CDN. This app
# runs offline (latex = false, no custom fonts), so both tags are dropped: the page then loads
# nothing from outside this server (tests/e2e/test_offline_page.py checks it).
_REMOTE_LINK = re.compile(r'\s*<link\b[^>]*\bhref="https?://[^"]*"[^>]*>')
_chainlit_html = chainlit.server.get_html_template


def without_remote_links(html: str) -> str:
    """``html`` without <link> tags that point at another server."""
    return _REMOTE_LINK.sub("", html)


def _offline_html(root_path: str) -> str:
    return without_remote_links(_chainlit_html(root_path))


def serve_offline_html() -> None:
    """Make Chainlit serve the chat page without its remote font and CSS links."""
    chainlit.server.get_html_template = _offline_html


def use_session_files(folder: Path) -> None:
    """Keep Chainlit's per-session files under ``folder``, not <app folder>/.files.

    Chainlit deletes <app folder>/.files when a server started from this folder stops, even
    while another one still serves from it (`make test` next to `make run`, parallel test
    servers): elements then fail with FileNotFoundError. Each data_dir gets its own folder
    instead; Chainlit still removes a session's subfolder when the session ends.
    """
    folder.mkdir(parents=True, exist_ok=True)
    chainlit.config.FILES_DIRECTORY = folder
