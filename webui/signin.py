"""The password check behind Chainlit's sign-in form (accounts from RAG_USERS, rag/signin.py)."""

from __future__ import annotations

import logging

import chainlit as cl

from rag.signin import Users

log = logging.getLogger("rag.app")


def sign_in(users: Users, username: str, password: str) -> cl.User | None:
    """The Chainlit user for a right password; None (and a log line) for a wrong one."""
    if users.check(username, password):
        return cl.User(identifier=username, metadata={"provider": "credentials"})
    log.warning("sign-in refused for %r", username)
    return None
