"""Sign-in: the accounts of RAG_USERS, checked against SHA-256 digests.

Sign-in is off unless both CHAINLIT_AUTH_SECRET and RAG_USERS ("alice:pw1,bob:pw2") are set:
Chainlit lists a user's threads only for a signed-in user, so history shows in the sidebar only
then.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

from rag.errors import ConfigError

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
